//! The checkout path: hold a cart, read it, confirm it on payment, cancel it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::stock::{can_serve, parse_lines, RawLine};
use super::{json_body, AppState};
use crate::actors::outlet::{Cancel, Committed, Confirm, GetReservation, Reserve};
use crate::catalogue::OutletKind;
use crate::domain::{
    digest, rfc3339_ms, Channel, EventId, IdempotencyKey, Invalid, Line, OutletId, ReservationId,
    ReservationStatus,
};
use crate::keys::ClaimKind;
use crate::store::{Outcome, ResRecord};

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const CUSTOMER_REF_LEN_MAX: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    outlet: Option<String>,
    pin: Option<String>,
    lines: Vec<RawLine>,
    channel: Option<String>,
    ttl_secs: Option<i64>,
    customer_ref: Option<String>,
}

/// The canonical form of a hold request; its digest tells a replay from a reuse of the key.
#[derive(Serialize)]
struct Canonical<'a> {
    outlet: &'a OutletId,
    lines: &'a [Line],
    channel: Channel,
    ttl_secs: i64,
    customer_ref: Option<&'a str>,
}

pub(crate) fn reservation_json(r: &ResRecord) -> Value {
    let mut v = json!({
        "id": r.id, "outlet": r.id.outlet(), "status": r.status, "lines": r.lines,
        "expires_at": rfc3339_ms(r.expires_at), "channel": r.channel,
        "created_at": rfc3339_ms(r.created_at),
    });
    if let Some(c) = &r.customer_ref {
        v["customer_ref"] = json!(c);
    }
    if let Some(p) = &r.payment_ref {
        v["payment_ref"] = json!(p);
    }
    v
}

/// The answer to a successful hold; a replay gets exactly this again.
fn held_json(r: &ResRecord) -> Value {
    let mut v = reservation_json(r);
    v["status"] = json!(ReservationStatus::Held);
    v.as_object_mut().expect("object").remove("payment_ref");
    v["seq"] = json!(r.held_seq);
    v
}

/// Other shops in the same city that could fill the whole cart right now.
fn alternatives(state: &AppState, outlet: &OutletId, lines: &[Line]) -> Vec<Value> {
    let Some(city) = state.catalogue.outlet(outlet).map(|o| o.city.as_str()) else {
        return Vec::new();
    };
    state
        .catalogue
        .outlets
        .iter()
        .filter(|o| &o.id != outlet && o.city == city && o.kind == OutletKind::Outlet)
        .filter(|o| can_serve(state, &o.id, lines).0)
        .map(|o| json!({"outlet": o.id, "can_serve": true}))
        .collect()
}

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
    let body: CreateRequest = json_body(&req, payload, &state).await?;
    let outlet = match (&body.outlet, &body.pin) {
        (Some(o), None) => state.catalogue.known_outlet("outlet", o)?,
        (None, Some(_)) => {
            return Err(
                Invalid::new("pin", "delivery zones are not configured; give an outlet").into(),
            )
        }
        _ => return Err(Invalid::new("outlet", "give exactly one of outlet and pin").into()),
    };
    let lines = parse_lines(&state, &body.lines)?;
    let channel = Channel::parse("channel", body.channel.as_deref().unwrap_or("web"))?;
    let limits = &state.settings.reservations;
    let ttl_secs = body.ttl_secs.unwrap_or(limits.ttl_secs as i64);
    if !(1..=limits.ttl_secs_max as i64).contains(&ttl_secs) {
        return Err(
            Invalid::new("ttl_secs", format!("must be 1 to {}", limits.ttl_secs_max)).into(),
        );
    }
    if let Some(c) = &body.customer_ref {
        if c.is_empty() || c.len() > CUSTOMER_REF_LEN_MAX || c.chars().any(char::is_control) {
            return Err(
                Invalid::new("customer_ref", "must be 1 to 128 printable characters").into(),
            );
        }
    }
    let canonical = Canonical {
        outlet: &outlet,
        lines: &lines,
        channel,
        ttl_secs,
        customer_ref: body.customer_ref.as_deref(),
    };
    let hash = digest(&serde_json::to_vec(&canonical).expect("serializes"));
    state
        .claim_key(
            ClaimKind::Reservation,
            idem.as_str(),
            &outlet,
            limits.retain_secs,
        )
        .await?;
    let msg = Reserve {
        idem,
        hash,
        lines: lines.clone(),
        ttl_ms: ttl_secs * 1000,
        channel,
        customer_ref: body.customer_ref,
    };
    let Committed { outcome, .. } = state.outlet(&outlet)?.send(msg).await??;
    let counter = |outcome: &str| {
        state
            .metrics
            .reservations
            .with_label_values(&["reserve", outcome])
            .inc()
    };
    match outcome {
        Outcome::Ok { res: Some(res), .. } => {
            counter("held");
            Ok(HttpResponse::Created().json(held_json(&res)))
        }
        Outcome::Replay { res: Some(res), .. } => {
            counter("replay");
            Ok(HttpResponse::Created().json(held_json(&res)))
        }
        Outcome::OutOfStock { lines: short } => {
            counter("out_of_stock");
            Err(ApiError::OutOfStock {
                lines: short,
                alternatives: alternatives(&state, &outlet, &lines),
            })
        }
        Outcome::Conflict { message, .. } => {
            counter("conflict");
            Err(ApiError::conflict(message))
        }
        other => Err(anyhow::anyhow!("unexpected reserve outcome {other:?}").into()),
    }
}

fn path_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse("id", raw)
        .map_err(|_| ApiError::NotFound(format!("no reservation '{raw}'")))
}

fn not_found(id: &ReservationId) -> ApiError {
    ApiError::NotFound(format!("no reservation '{id}'"))
}

pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadReservation, None)?;
    let id = path_id(&path)?;
    let outlet = state
        .outlets
        .get(&id.outlet())
        .ok_or_else(|| not_found(&id))?;
    let res = outlet.send(GetReservation { id: id.clone() }).await??;
    let res = res.ok_or_else(|| not_found(&id))?;
    Ok(HttpResponse::Ok().json(reservation_json(&res)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    payment_ref: String,
}

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
    let outlet_id = id.outlet();
    let outlet = state
        .outlets
        .get(&outlet_id)
        .ok_or_else(|| not_found(&id))?;
    let Committed {
        outcome,
        generation,
        ..
    } = outlet
        .send(Confirm {
            id: id.clone(),
            payment_ref,
        })
        .await??;
    let counter = |outcome: &str| {
        state
            .metrics
            .reservations
            .with_label_values(&["confirm", outcome])
            .inc()
    };
    let (res, seq) = match outcome {
        Outcome::Ok {
            res: Some(res),
            seq,
            ..
        } => {
            counter("confirmed");
            (res, seq)
        }
        Outcome::Replay { res: Some(res), .. } => {
            counter("replay");
            let seq = res.ended_seq.unwrap_or(res.held_seq);
            (res, seq)
        }
        Outcome::Expired { res, .. } => {
            counter("expired");
            return Err(ApiError::Expired {
                reservation: reservation_json(&res),
            });
        }
        Outcome::Conflict { message, res } => {
            counter("conflict");
            let details = res.map(|r| json!({"reservation": reservation_json(&r)}));
            return Err(ApiError::Conflict { message, details });
        }
        Outcome::NotFound => return Err(not_found(&id)),
        other => return Err(anyhow::anyhow!("unexpected confirm outcome {other:?}").into()),
    };
    state
        .durable
        .wait(&outlet_id, seq, generation, state.durable_wait())
        .await?;
    Ok(HttpResponse::Ok().json(reservation_json(&res)))
}

pub async fn cancel(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::Reserve, None)?;
    let id = path_id(&path)?;
    let outlet = state
        .outlets
        .get(&id.outlet())
        .ok_or_else(|| not_found(&id))?;
    let Committed { outcome, .. } = outlet.send(Cancel { id: id.clone() }).await??;
    let res = match outcome {
        Outcome::Ok { res: Some(res), .. } | Outcome::Noop { res } => res,
        Outcome::NotFound => return Err(not_found(&id)),
        other => return Err(anyhow::anyhow!("unexpected cancel outcome {other:?}").into()),
    };
    state
        .metrics
        .reservations
        .with_label_values(&["cancel", &format!("{:?}", res.status).to_lowercase()])
        .inc();
    if res.status == ReservationStatus::Confirmed {
        let details = Some(json!({"reservation": reservation_json(&res)}));
        return Err(ApiError::Conflict {
            message: "the reservation is confirmed".into(),
            details,
        });
    }
    Ok(HttpResponse::Ok().json(reservation_json(&res)))
}
