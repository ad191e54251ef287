//! The checkout path's handlers: hold a cart, read it, confirm it on payment, cancel it.
//! They validate and authorize; `checkout` does the work; the answers are rendered here.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::stock::{parse_lines, LinesFor, RawLine};
use crate::checkout::{self, Hold, Placed, Target, REROUTE_KEY_PREFIX, WHATSAPP_KEY_PREFIX};
use crate::domain::{Channel, EventId, IdempotencyKey, Invalid, ReservationId, ReservationStatus};
use crate::wire::reservation_json;
use crate::zones::Pin;

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const CUSTOMER_REF_LEN_MAX: usize = 128;

/// A cart to hold, all lines or none: at `outlet`, or (`pin`) at the cheapest outlet serving
/// the delivery PIN that can fill all of it now. Exactly one of `outlet` and `pin`.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar")]
    outlet: Option<String>,
    /// Delivery PIN code (routed hold).
    #[schema(pattern = "^[1-9][0-9]{5}$", example = "452010")]
    pin: Option<String>,
    /// 1 to `reservations.lines_max` (50 by default) lines, each SKU once.
    #[schema(min_items = 1, max_items = 50)]
    lines: Vec<RawLine>,
    /// `web` when absent.
    #[schema(pattern = "^(web|whatsapp|counter)$", example = "web")]
    channel: Option<String>,
    /// Hold time: 1 to `reservations.ttl_secs_max` (900 by default); the configured 90 when
    /// absent.
    #[schema(minimum = 1, maximum = 900, example = 90)]
    ttl_secs: Option<i64>,
    /// 1 to 128 characters, no control characters.
    #[schema(min_length = 1, max_length = 128)]
    customer_ref: Option<String>,
}

/// The answer to a successful hold; a replay gets exactly this again.
fn placed_json(placed: &Placed) -> Value {
    let r = &placed.res;
    let mut v = reservation_json(r);
    v["status"] = json!(ReservationStatus::Held);
    v.as_object_mut().expect("object").remove("payment_ref");
    v["seq"] = json!(r.held_seq);
    if let Some(pin) = &placed.pin {
        v["pin"] = json!(pin);
    }
    if let Some(cost) = placed.delivery_cost {
        v["delivery_cost"] = json!(cost);
    }
    v
}

/// Holds a cart (API.md, Reservations). A repeat with the same `Idempotency-Key` and body
/// returns the first answer and holds nothing more.
#[utoipa::path(post, path = "/v1/reservations", tag = "reservations", operation_id = "create_reservation",
    security(("api_key" = [])),
    params(("Idempotency-Key" = String, Header, description = "The hold's idempotency key",
        pattern = "^[A-Za-z0-9_-]{1,64}$", example = "checkout-7f3a")),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Held (or the replay of the first answer)", body = super::openapi::Held,
            links(
                ("get" = (operation_id = "get_reservation", parameters(("id" = "$response.body#/id")))),
                ("confirm" = (operation_id = "confirm_reservation", parameters(("id" = "$response.body#/id")))),
                ("cancel" = (operation_id = "cancel_reservation", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not reserve", body = super::openapi::Error),
        (status = 409, description = "`out_of_stock` (nothing held), or `conflict`: the key was used with another body or outlet", body = super::openapi::HoldRefused),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = super::openapi::Error),
        (status = 422, description = "Invalid header or body (the field is named)", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "An outlet or Redis cannot answer now; nothing was held", body = super::openapi::Error),
    ))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::Reserve, None)?;
    let idem = req
        .headers()
        .get(IDEMPOTENCY_HEADER)
        .ok_or_else(|| Invalid::new(IDEMPOTENCY_HEADER, "is required"))?
        .to_str()
        .map_err(|_| Invalid::new(IDEMPOTENCY_HEADER, "must be ASCII"))?;
    let idem = IdempotencyKey::parse(IDEMPOTENCY_HEADER, idem)?;
    if [REROUTE_KEY_PREFIX, WHATSAPP_KEY_PREFIX]
        .iter()
        .any(|p| idem.as_str().starts_with(p))
    {
        return Err(Invalid::new(
            IDEMPOTENCY_HEADER,
            format!("keys starting with {REROUTE_KEY_PREFIX} or {WHATSAPP_KEY_PREFIX} are the service's own"),
        )
        .into());
    }
    let body: CreateRequest = json_body(&req, payload, &state).await?;
    let target = match (&body.outlet, &body.pin) {
        (Some(o), None) => Target::Outlet(state.catalogue.now().known_outlet("outlet", o)?),
        (None, Some(p)) => {
            let pin = Pin::parse("pin", p)?;
            let serving = state.zones.serving(&pin);
            if serving.is_empty() {
                return Err(Invalid::new("pin", format!("no outlet delivers to {p}")).into());
            }
            Target::Pin(pin, serving)
        }
        _ => return Err(Invalid::new("outlet", "give exactly one of outlet and pin").into()),
    };
    let lines = parse_lines(&state, &body.lines, LinesFor::Hold)?;
    let channel = Channel::parse("channel", body.channel.as_deref().unwrap_or("web"))?;
    let limits = &state.settings.reservations;
    let ttl_secs = body.ttl_secs.unwrap_or(limits.ttl_secs as i64);
    if !(1..=limits.ttl_secs_max as i64).contains(&ttl_secs) {
        return Err(
            Invalid::new("ttl_secs", format!("must be 1 to {}", limits.ttl_secs_max)).into(),
        );
    }
    if let Some(c) = &body.customer_ref {
        let chars = c.chars().count();
        if chars == 0 || chars > CUSTOMER_REF_LEN_MAX || c.chars().any(char::is_control) {
            return Err(
                Invalid::new("customer_ref", "must be 1 to 128 printable characters").into(),
            );
        }
    }
    let mut hold = Hold::new(
        &target,
        idem,
        lines,
        channel,
        ttl_secs,
        body.customer_ref,
        caller.by(),
    );
    // A hold forwarded here already took its one hop: it passes over an outlet a third
    // process owns rather than answer 503.
    let forwarded = actix_web::HttpMessage::extensions(&req)
        .get::<super::auth::Forwarded>()
        .is_some();
    if !forwarded {
        hold = hold.forwardable();
    }
    let placed = checkout::place(&state, target, &hold).await?;
    Ok(HttpResponse::Created().json(placed_json(&placed)))
}

fn path_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse("id", raw)
        .map_err(|_| ApiError::not_found(format!("no reservation '{raw}'")))
}

/// A reservation as it is now.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "get_reservation",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Reservation id (it carries its outlet)",
        pattern = "^[A-Za-z0-9_-]{1,41}-[A-Za-z0-9]{22}$")),
    responses(
        (status = 200, description = "The reservation", body = super::openapi::Reservation),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not read reservations, or not at this outlet", body = super::openapi::Error),
        (status = 404, description = "No such reservation", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "The outlet is rebuilding or Redis is unreachable", body = super::openapi::Error),
    ))]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadReservation, None)?;
    let id = path_id(&path)?;
    // A key scoped to outlets reads only their reservations (customer and payment refs).
    caller.require(Action::ReadReservation, Some(&id.outlet()))?;
    let res = checkout::get(&state, &id).await?;
    let mut body = reservation_json(&res);
    if res.status == ReservationStatus::Held && state.reroute.is_at_risk(&id) {
        body["at_risk"] = json!(true);
    }
    Ok(HttpResponse::Ok().json(body))
}

/// The payment that pays for the hold.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The payment provider's reference; again with the same one: the same 200.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "pay_123")]
    payment_ref: String,
}

/// Confirms a held reservation on payment; answered once the sale is durable in the ledger.
#[utoipa::path(post, path = "/v1/reservations/{id}/confirm", tag = "reservations", operation_id = "confirm_reservation",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Reservation id",
        pattern = "^[A-Za-z0-9_-]{1,41}-[A-Za-z0-9]{22}$")),
    request_body = ConfirmRequest,
    responses(
        (status = 200, description = "Confirmed (status `confirmed`)", body = super::openapi::Reservation),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not reserve", body = super::openapi::Error),
        (status = 404, description = "No such reservation", body = super::openapi::Error),
        (status = 409, description = "Cancelled, or confirmed with another `payment_ref`", body = super::openapi::ReservationError),
        (status = 410, description = "`reservation_expired`: the hold expired first", body = super::openapi::ReservationError),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = super::openapi::Error),
        (status = 422, description = "Invalid body (the field is named)", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "Not durable in time (retry with the same `payment_ref`), or the outlet cannot answer", body = super::openapi::Error),
    ))]
pub async fn confirm(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::Reserve, None)?;
    let id = path_id(&path)?;
    let body: ConfirmRequest = json_body(&req, payload, &state).await?;
    // Payment references are opaque ids of the payment provider.
    let payment_ref = EventId::parse("payment_ref", &body.payment_ref)?.to_string();
    let res = checkout::confirm(&state, &id, payment_ref, caller.by()).await?;
    Ok(HttpResponse::Ok().json(reservation_json(&res)))
}

/// Cancels a hold; idempotent. After the expiry timer released it: 200 with status `expired`.
#[utoipa::path(post, path = "/v1/reservations/{id}/cancel", tag = "reservations", operation_id = "cancel_reservation",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Reservation id",
        pattern = "^[A-Za-z0-9_-]{1,41}-[A-Za-z0-9]{22}$")),
    responses(
        (status = 200, description = "Cancelled (or already expired)", body = super::openapi::Reservation),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not reserve", body = super::openapi::Error),
        (status = 404, description = "No such reservation", body = super::openapi::Error),
        (status = 409, description = "The reservation is confirmed", body = super::openapi::ReservationError),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "The outlet cannot answer now", body = super::openapi::Error),
    ))]
pub async fn cancel(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::Reserve, None)?;
    let id = path_id(&path)?;
    let res = checkout::cancel(&state, &id, caller.by()).await?;
    Ok(HttpResponse::Ok().json(reservation_json(&res)))
}
