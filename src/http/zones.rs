//! Delivery zones: read them, and (admin) set the outlets of a PIN.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::{json_body, AppState};
use crate::domain::{Invalid, OutletId};
use crate::zones::{Pin, ZoneError, ZoneOutlet, COST_MAX};

/// Zones per page of `GET /v1/zones` is not bounded: the table is one row per PIN the chain
/// delivers to (hundreds), and it lives in memory.
pub async fn list(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    Ok(HttpResponse::Ok().json(state.zones.all()))
}

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
        .ok_or_else(|| ApiError::NotFound(format!("no outlet delivers to {}", pin.as_str())))?;
    Ok(HttpResponse::Ok().json(zone))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRequest {
    outlets: Vec<RawZoneOutlet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZoneOutlet {
    outlet: String,
    cost: i64,
}

/// `PUT /v1/zones/{pin}` `{"outlets": [{"outlet", "cost"}]}`: the PIN's outlets from now on
/// (an empty list stops deliveries to it). Idempotent: the same list again keeps its version.
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
    if body.outlets.len() > state.catalogue.outlets.len() {
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
        .set(&state.catalogue, pin, outlets, &caller.0.label)
        .await
        .map_err(|e| match e {
            ZoneError::Invalid(i) => ApiError::Validation(i),
            ZoneError::Raced(_) => ApiError::conflict(e.to_string()),
            ZoneError::Store(e) => ApiError::Unavailable(format!("{e:#}")),
        })?;
    Ok(HttpResponse::Ok().json(zone))
}
