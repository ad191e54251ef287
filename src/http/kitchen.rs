//! The kitchen plan (kitchen.rs): `GET /v1/kitchen/plan`, and `PUT
//! /v1/kitchen/plan/{outlet}/{sku}` for the head cook's own numbers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::openapi::{CookNumberBody, Error, KitchenPlan};
use crate::domain::{now_ms, Invalid};
use crate::kitchen::{self, PlanInputs};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    outlet: Option<String>,
    window_hours: Option<u32>,
}

/// What to send each shop for the next window, per SKU it sells: expected sales, less the
/// free units that sell before they expire, less what live holds have, plus safety stock
/// (README, Kitchen plan), beside the head cook's own number where he entered one.
#[utoipa::path(get, path = "/v1/kitchen/plan", tag = "stock",
    security(("api_key" = [])),
    params(
        ("outlet" = Option<String>, Query, description = "One outlet (default: every shop the key may read)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("window_hours" = Option<u32>, Query, description = "Hours from now the plan covers, 1 to 168 (default kitchen.window_hours)"),
    ),
    responses(
        (status = 200, description = "The plan", body = KitchenPlan),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's ledger", body = Error),
        (status = 422, description = "Unknown outlet or a window out of range (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "The ledger or Redis did not answer (`Retry-After`)", body = Error),
    ))]
pub async fn plan(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<PlanQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let catalogue = state.catalogue.now();
    let window = kitchen::window(q.window_hours, state.settings.kitchen.window_hours)?;
    let shops = kitchen::shops(&catalogue);
    let outlets = caller.outlets_for(Action::ReadLedger, &catalogue, q.outlet.as_deref(), shops)?;
    let inputs = PlanInputs {
        forecasts: &state.forecasts,
        ledger: &state.shared.ledger,
        store: &state.shared.store,
        stock: &state.shared.stock,
        catalogue: &catalogue,
        settings: &state.settings,
    };
    let plan = (kitchen::plan(&inputs, &outlets, window, now_ms()).await)
        .map_err(crate::error::Error::store)?;
    Ok(HttpResponse::Ok().json(plan))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookRequest {
    /// Units; `null` clears the number. Required: an empty body clears nothing.
    #[serde(default, deserialize_with = "present")]
    qty: Option<Option<i64>>,
}

/// A field that is there, `null` or not (absent: `None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Enters (or with `qty: null` clears) the head cook's number for one shop and SKU; the plan
/// shows it beside its own suggestion. Idempotent: the same body again changes nothing but
/// the time.
#[utoipa::path(put, path = "/v1/kitchen/plan/{outlet}/{sku}", tag = "stock",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Path, description = "Outlet id", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("sku" = String, Path, description = "SKU id", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "kaju-katli-1kg"),
    ),
    request_body = CookNumberBody,
    responses(
        (status = 200, description = "The number as kept (`{}` once cleared)", body = CookNumberBody),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not plan this outlet (admin, or a manager of it)", body = Error),
        (status = 422, description = "Unknown outlet or SKU, or a qty out of 0 to 1,000,000 (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "Redis did not answer (`Retry-After`)", body = Error),
    ))]
pub async fn put_cook(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (outlet, sku) = path.into_inner();
    let catalogue = state.catalogue.now();
    let outlet = catalogue.known_outlet("outlet", &outlet)?;
    let sku = catalogue.known_sku("sku", &sku)?;
    caller.require(Action::PlanKitchen, Some(&outlet))?;
    let body: CookRequest = json_body(&req, payload, &state).await?;
    let qty = body
        .qty
        .ok_or_else(|| Invalid::new("qty", "is required: units, or null to clear"))?;
    if qty.is_some_and(|qty| !(0..=1_000_000).contains(&qty)) {
        return Err(Invalid::new("qty", "must be 0 to 1000000 units, or null to clear").into());
    }
    let kept = kitchen::set_cook(
        &state.shared.store,
        &outlet,
        &sku,
        qty,
        &caller.0.label,
        now_ms(),
    )
    .await
    .map_err(crate::error::Error::store)?;
    Ok(match kept {
        Some(number) => HttpResponse::Ok().json(number),
        None => HttpResponse::Ok().json(serde_json::json!({})),
    })
}
