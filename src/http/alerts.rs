//! `GET /v1/alerts`: the sell-out and low-stock alerts raised now (alerts.rs).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::{AlertList, Error};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    outlet: Option<String>,
}

/// The alerts raised now, earliest first: of one outlet, or of every outlet the key may read
/// the ledger of. Each stays until its condition no longer holds (README, Alerts); its
/// raising and clearing are also sent as SSE `alert` events, WebSocket `type: alert`
/// messages, on MQTT `alerts/{outlet}` and to the configured webhook.
#[utoipa::path(get, path = "/v1/alerts", tag = "stock",
    security(("api_key" = [])),
    params(
        ("outlet" = Option<String>, Query, description = "Outlet id (default: every outlet the key may read)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
    ),
    responses(
        (status = 200, description = "The raised alerts", body = AlertList),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's ledger", body = Error),
        (status = 422, description = "Unknown outlet", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "Redis did not answer (`Retry-After`)", body = Error),
    ))]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<AlertsQuery>,
) -> Result<HttpResponse, ApiError> {
    let catalogue = state.catalogue.now();
    let all = catalogue.outlets.iter().map(|o| o.id.clone());
    let named = query.into_inner().outlet;
    let outlets = caller.outlets_for(Action::ReadLedger, &catalogue, named.as_deref(), all)?;
    let alerts = (crate::alerts::raised(&state.shared.store, &outlets).await)
        .map_err(crate::error::Error::store)?;
    Ok(HttpResponse::Ok().json(json!({ "alerts": alerts })))
}
