//! Delivery zones: read them, and (admin) set the outlets of a PIN.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::openapi::{Error, Zone as ZoneDoc};
use super::skus::edit_error;
use crate::domain::{Invalid, OutletId};
use crate::zones::{Pin, ZoneOutlet, COST_MAX};

/// Zones per page of `GET /v1/zones` is not bounded: the table is one row per PIN the chain
/// delivers to (hundreds), and it lives in memory.
#[utoipa::path(get, path = "/v1/zones", tag = "zones", operation_id = "list_zones",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every PIN the chain delivers to, with its outlets", body = [ZoneDoc]),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn list(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    Ok(HttpResponse::Ok().json(state.zones.all()))
}

/// The outlets delivering to a PIN, cheapest first.
#[utoipa::path(get, path = "/v1/zones/{pin}", tag = "zones", operation_id = "get_zone",
    security(("api_key" = [])),
    params(("pin" = String, Path, description = "Delivery PIN code", pattern = "^[1-9][0-9]{5}$",
        example = "452010")),
    responses(
        (status = 200, description = "The PIN's zone", body = ZoneDoc),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 404, description = "No outlet delivers to the PIN", body = Error),
        (status = 422, description = "Not a PIN code", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let pin = Pin::parse("pin", &path)?;
    let zone = state
        .zones
        .get(&pin)
        .ok_or_else(|| ApiError::not_found(format!("no outlet delivers to {}", pin.as_str())))?;
    Ok(HttpResponse::Ok().json(zone))
}

/// The outlets of a PIN from now on; an empty list stops deliveries to it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZoneRequest {
    /// Known outlets (each once), at most as many as the chain has.
    outlets: Vec<RawZoneOutlet>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RawZoneOutlet {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar")]
    outlet: String,
    /// Delivery cost in whole rupees.
    #[schema(minimum = 0, maximum = 100000, example = 40)]
    cost: i64,
}

/// `PUT /v1/zones/{pin}` `{"outlets": [{"outlet", "cost"}]}`: the PIN's outlets from now on
/// (an empty list stops deliveries to it). Idempotent: the same list again keeps its version.
#[utoipa::path(put, path = "/v1/zones/{pin}", tag = "zones", operation_id = "put_zone",
    security(("api_key" = [])),
    params(("pin" = String, Path, description = "Delivery PIN code", pattern = "^[1-9][0-9]{5}$",
        example = "452010")),
    request_body = ZoneRequest,
    responses(
        (status = 200, description = "The PIN's zone as it is now (a new version if it changed)", body = ZoneDoc),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "Only an admin key may edit zones", body = Error),
        (status = 409, description = "The zone was changed at the same moment; read it and retry", body = Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = Error),
        (status = 422, description = "Invalid PIN or body (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB could not take the edit; nothing changed", body = Error),
    ))]
pub async fn put(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageZones, None)?;
    let pin = Pin::parse("pin", &path)?;
    let body: ZoneRequest = json_body(&req, payload, &state).await?;
    if body.outlets.len() > state.catalogue.now().outlets.len() {
        return Err(Invalid::new("outlets", "names more outlets than the chain has").into());
    }
    let outlets = body
        .outlets
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            if !(0..=COST_MAX).contains(&o.cost) {
                return Err(Invalid::new(
                    format!("outlets[{i}].cost"),
                    format!("must be 0 to {COST_MAX}"),
                ));
            }
            Ok(ZoneOutlet {
                outlet: OutletId::parse(&format!("outlets[{i}].outlet"), &o.outlet)?,
                cost: o.cost,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    let zone = state
        .zones
        .set(&state.catalogue.now(), pin, outlets, &caller.0.label)
        .await
        .map_err(edit_error)?;
    Ok(HttpResponse::Ok().json(zone))
}
