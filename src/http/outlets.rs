//! The chain's outlets and kitchens: read one with its history, and (admin) add one or set its
//! name and city while the service runs (live_catalogue.rs). `GET /v1/outlets` is with the
//! stock reads (stock.rs).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::openapi::{Error, OutletInfo};
use super::skus::{edit_error, with_history};
use crate::catalogue::{Outlet, OutletKind};
use crate::domain::OutletId;

/// One outlet, with every version its edits made (`history`, oldest first; the CSV's own is
/// version 0 and is not listed).
#[utoipa::path(get, path = "/v1/outlets/{outlet}", tag = "catalogue", operation_id = "get_outlet",
    security(("api_key" = [])),
    params(("outlet" = String, Path, description = "Outlet id", pattern = "^[A-Za-z0-9_-]{1,41}$",
        example = "indore-vijay-nagar")),
    responses(
        (status = 200, description = "The outlet and its history", body = OutletInfo),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 404, description = "No such outlet", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB is unreachable", body = Error),
    ))]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let raw = path.into_inner();
    let catalogue = state.catalogue.now();
    let outlet = OutletId::parse("outlet", &raw)
        .ok()
        .and_then(|o| catalogue.outlet(&o).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no outlet '{raw}'")))?;
    let history =
        (state.catalogue.outlet_history(&outlet.id).await).map_err(crate::error::Error::store)?;
    let body = with_history(&outlet, history);
    Ok(HttpResponse::Ok().json(body))
}

/// How long a PUT adding an outlet waits for this process to be ready for it.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An outlet's fields from now on.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutletRequest {
    /// 1 to 120 bytes of printable text.
    #[schema(example = "Bhopal MP Nagar")]
    name: String,
    /// 1 to 120 bytes of printable text.
    #[schema(example = "Bhopal")]
    city: String,
    /// `outlet` (a shop) or `kitchen`; fixed once the outlet exists.
    kind: OutletKind,
}

/// `PUT /v1/outlets/{outlet}`: adds an outlet or kitchen, or sets its name and city (its kind
/// stays). Idempotent: the same fields again keep the version. The process that takes the
/// edit makes room for a new outlet before it answers, and owns it at once when it is the
/// outlet's owner; the other processes within `catalogue.refresh_ms`. A new outlet starts
/// with no stock (receipts, counts or transfers give it some) and in no delivery zone
/// (`PUT /v1/zones/{pin}` adds it to one).
#[utoipa::path(put, path = "/v1/outlets/{outlet}", tag = "catalogue", operation_id = "put_outlet",
    security(("api_key" = [])),
    params(("outlet" = String, Path, description = "Outlet id", pattern = "^[A-Za-z0-9_-]{1,41}$",
        example = "bhopal-mp-nagar")),
    request_body = OutletRequest,
    responses(
        (status = 200, description = "The outlet as it is now (a new version if it changed)", body = OutletInfo),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "Only an admin key may edit the catalogue", body = Error),
        (status = 409, description = "The outlet was changed at the same moment; read it and retry", body = Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = Error),
        (status = 422, description = "Invalid outlet id or body, a change of kind, or a new outlet past `catalogue.outlets_max` (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB could not take the edit, or it is taken and this process is not yet ready for the new outlet (send it again)", body = Error),
    ))]
pub async fn put(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageCatalogue, None)?;
    // The id is checked before the body: a bad id is named as the path's.
    OutletId::parse_catalogue("outlet", &path)?;
    let body: OutletRequest = json_body(&req, payload, &state).await?;
    let edit = Outlet::new(&path, &body.name, &body.city, body.kind)?;
    let max = state.settings.catalogue.outlets_max;
    let set = state.catalogue.set_outlet(edit, &caller.0.label, max).await;
    let outlet = set.map_err(edit_error)?;
    if !state.outlet_ready(&outlet.id, READY_WAIT).await {
        // The edit is stored; the core's task keeps trying (app.rs).
        return Err(crate::error::Error::Unavailable(format!(
            "outlet {} is added, but this process could not make room for it within {} s \
             (Redis or MongoDB slow or down); it keeps trying: send the same PUT again to see it \
             ready",
            outlet.id,
            READY_WAIT.as_secs()
        ))
        .into());
    }
    Ok(HttpResponse::Ok().json(outlet))
}
