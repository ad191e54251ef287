//! `POST /v1/movements`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use crate::domain::OutletId;
use crate::movements::{apply, Applied, MovementRequest};

/// How long a movement naming an outlet this process has just read of waits for the process
/// to make room for it.
const JUST_ADDED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Records a movement at an outlet (API.md, Movements); answered once durable in the ledger.
/// A repeat with the same `event_id` and body returns the first answer.
#[utoipa::path(post, path = "/v1/movements", tag = "movements", operation_id = "create_movement",
    security(("api_key" = [])),
    request_body = super::openapi::MovementBody,
    responses(
        (status = 201, description = "Recorded; the outlet's counters after it", body = super::openapi::MovementAnswer),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key may not record this kind at this outlet", body = super::openapi::Error),
        (status = 409, description = "`conflict`: the `event_id` was used with another body or outlet; `out_of_stock`: a transfer of held units", body = super::openapi::HoldRefused),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = super::openapi::Error),
        (status = 422, description = "Invalid body (the field is named)", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "Recorded but not durable in time (retry with the same `event_id`), or the outlet cannot answer", body = super::openapi::Error),
    ))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let arrived = std::time::Instant::now();
    let body: MovementRequest = json_body(&req, payload, &state).await?;
    // A fact for an outlet added through another process, sent before this one read the
    // edit (an outlet agent over HTTP takes a 422 as final): read the edits first, and give
    // this process a moment to make room for the outlet.
    for named in [&body.outlet, &body.to_outlet].into_iter().flatten() {
        let Ok(outlet) = OutletId::parse("outlet", named) else {
            continue;
        };
        let known = state.catalogue.now().outlet(&outlet).is_some();
        if !known && state.catalogue.has_outlet_since(&outlet, arrived).await {
            state.outlet_ready(&outlet, JUST_ADDED_WAIT).await;
        }
    }
    let movement = body.parse(&state.catalogue.now(), &state.settings.movements)?;
    caller.require(Action::Move(movement.kind), Some(&movement.outlet))?;
    let applied = apply(&state, &movement, caller.by()).await?;
    Ok(HttpResponse::Created().json(applied_json(&applied)))
}

/// The `201` body: the outlet's counters after the movement, what it re-routed or left at
/// risk, and a transfer's receiving outlet.
fn applied_json(a: &Applied) -> Value {
    let mut body = serde_json::to_value(&a.result).expect("serializes");
    if let Some(relief) = &a.relief {
        body["rerouted"] = json!(relief.rerouted);
        body["at_risk"] = json!(relief.at_risk);
    }
    if let Some((to, r)) = &a.to {
        body["to"] = json!({"outlet": to, "seq": r.seq, "on_hand": r.on_hand,
            "reserved": r.reserved, "available": r.available});
    }
    body
}
