//! The checkout path: hold a cart, read it, confirm it on payment, cancel it.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::stock::{can_serve, parse_lines, RawLine};
use super::{json_body, AppState};
use crate::actors::outlet::{Cancel, Committed, Confirm, GetReservation, OutletError, Reserve};
use crate::catalogue::OutletKind;
use crate::domain::{
    digest, rfc3339_ms, Channel, EventId, IdempotencyKey, Invalid, Line, OutletId, ReservationId,
    ReservationStatus,
};
use crate::keys::ClaimKind;
use crate::services::Services;
use crate::store::{Outcome, ResRecord, ShortLine};
use crate::zones::{Pin, ZoneOutlet};

const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Keys the service makes for itself (re-routes, WhatsApp orders); clients may not use them.
pub(crate) const REROUTE_KEY_PREFIX: &str = "rr-";
pub(crate) const WHATSAPP_KEY_PREFIX: &str = "wa-";
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

/// The canonical form of a hold request; its digest tells a replay from a reuse of the key.
/// A routed request is hashed with its PIN, so its replay matches wherever it was held.
#[derive(Serialize)]
struct Canonical<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    outlet: Option<&'a OutletId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<&'a Pin>,
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
    if let Some(to) = &r.rerouted_to {
        v["rerouted_to"] = json!(to);
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
fn alternatives(state: &Services, outlet: &OutletId, lines: &[Line]) -> Vec<Value> {
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
        (Some(o), None) => Target::Outlet(state.catalogue.known_outlet("outlet", o)?),
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
        let chars = c.chars().count();
        if chars == 0 || chars > CUSTOMER_REF_LEN_MAX || c.chars().any(char::is_control) {
            return Err(
                Invalid::new("customer_ref", "must be 1 to 128 printable characters").into(),
            );
        }
    }
    let hold = Hold::new(&target, idem, lines, channel, ttl_secs, body.customer_ref);
    Ok(HttpResponse::Created().json(place(&state, target, &hold).await?))
}

/// Holds a validated cart where `target` says; the `201` body, or why not.
pub(crate) async fn place(
    state: &Services,
    target: Target,
    hold: &Hold,
) -> Result<Value, ApiError> {
    match target {
        Target::Outlet(outlet) => match hold.try_at(state, &outlet).await? {
            Tried::Held(v) => Ok(v),
            Tried::Short(short) => Err(ApiError::OutOfStock {
                lines: short,
                alternatives: alternatives(state, &outlet, &hold.lines),
            }),
        },
        Target::Pin(pin, serving) => route(state, hold, &pin, &serving).await,
    }
}

pub(crate) enum Target {
    Outlet(OutletId),
    /// A delivery PIN and the outlets serving it, cheapest first.
    Pin(Pin, Vec<ZoneOutlet>),
}

/// A validated hold request, ready to try at an outlet.
pub(crate) struct Hold {
    /// A customer's new hold (refused first under load); false for a re-route.
    sheddable: bool,
    idem: IdempotencyKey,
    hash: String,
    lines: Vec<Line>,
    ttl_ms: i64,
    channel: Channel,
    customer_ref: Option<String>,
    pin: Option<String>,
}

/// What a re-route hashes: the hold it moves and the cart, never the remaining time, so a
/// second attempt for the same hold replays the first.
#[derive(Serialize)]
struct RerouteCanonical<'a> {
    rerouted_from: &'a ReservationId,
    pin: &'a str,
    lines: &'a [Line],
    channel: Channel,
    customer_ref: Option<&'a str>,
}

enum Tried {
    /// The 201 body (a new hold, or the replay of the first answer).
    Held(Value),
    Short(Vec<ShortLine>),
}

impl Hold {
    pub(crate) fn new(
        target: &Target,
        idem: IdempotencyKey,
        lines: Vec<Line>,
        channel: Channel,
        ttl_secs: i64,
        customer_ref: Option<String>,
    ) -> Self {
        let canonical = Canonical {
            outlet: match target {
                Target::Outlet(o) => Some(o),
                Target::Pin(..) => None,
            },
            pin: match target {
                Target::Pin(p, _) => Some(p),
                Target::Outlet(_) => None,
            },
            lines: &lines,
            channel,
            ttl_secs,
            customer_ref: customer_ref.as_deref(),
        };
        Self {
            sheddable: true,
            hash: digest(&serde_json::to_vec(&canonical).expect("serializes")),
            idem,
            lines,
            ttl_ms: ttl_secs * 1000,
            channel,
            customer_ref,
            pin: match target {
                Target::Pin(p, _) => Some(p.as_str().to_owned()),
                Target::Outlet(_) => None,
            },
        }
    }

    /// The hold that takes over `res`'s cart at another outlet serving `pin`, for what is
    /// left of its time. Its key is derived from `res`'s id, so trying twice holds once.
    pub(crate) fn rerouting(res: &ResRecord, attempt: u32, pin: &Pin, now_ms: i64) -> Self {
        let canonical = RerouteCanonical {
            rerouted_from: &res.id,
            pin: pin.as_str(),
            lines: &res.lines,
            channel: res.channel,
            customer_ref: res.customer_ref.as_deref(),
        };
        let key = format!(
            "{REROUTE_KEY_PREFIX}{}",
            digest(format!("{}:{attempt}", res.id).as_bytes())
        );
        Self {
            sheddable: false,
            idem: IdempotencyKey::parse("idem", &key).expect("a digest is a valid key"),
            hash: digest(&serde_json::to_vec(&canonical).expect("serializes")),
            lines: res.lines.clone(),
            ttl_ms: (res.expires_at - now_ms).max(1000),
            channel: res.channel,
            customer_ref: res.customer_ref.clone(),
            pin: Some(pin.as_str().to_owned()),
        }
    }

    /// Claims the key for `outlet` and holds the cart there. A customer's new hold is
    /// refused, with nothing claimed, while the outlet's ledger is past its lag budget or its
    /// queue is half full; the retry of a key the outlet already holds is not (it gets its
    /// first answer, or is decided as it would have been).
    async fn try_at(&self, state: &Services, outlet: &OutletId) -> Result<Tried, ApiError> {
        let key = self.idem.as_str();
        if self.sheddable {
            if let Err(shed) = state.admit_hold(outlet) {
                let owner = state
                    .claims
                    .claim_owner(ClaimKind::Reservation, key)
                    .await
                    .map_err(ApiError::store)?;
                if owner.as_deref() != Some(outlet.as_str()) {
                    state.shed(outlet, "hold", "ledger_lag");
                    return Err(shed);
                }
            }
        }
        let retain = state.settings.reservations.retain_secs;
        let fresh = state
            .claim_key(ClaimKind::Reservation, key, outlet, retain)
            .await?;
        let msg = Reserve {
            sheddable: self.sheddable,
            idem: self.idem.clone(),
            hash: self.hash.clone(),
            lines: self.lines.clone(),
            ttl_ms: self.ttl_ms,
            channel: self.channel,
            customer_ref: self.customer_ref.clone(),
            pin: self.pin.clone(),
        };
        let committed = state.outlet(outlet)?.send(msg).await?;
        let Committed { outcome, .. } = match committed {
            // Refused before anything was decided: a claim this call made is given back, so
            // the client's retry (here or elsewhere) finds its key unused.
            Err(refused @ OutletError::Overloaded(_)) => {
                if fresh {
                    state
                        .claims
                        .release_claim(ClaimKind::Reservation, key, outlet)
                        .await
                        .map_err(ApiError::store)?;
                }
                return Err(refused.into());
            }
            other => other?,
        };
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
                Ok(Tried::Held(held_json(&res)))
            }
            Outcome::Replay { res: Some(res), .. } => {
                counter("replay");
                Ok(Tried::Held(held_json(&res)))
            }
            Outcome::OutOfStock { lines } => {
                counter("out_of_stock");
                Ok(Tried::Short(lines))
            }
            Outcome::Conflict { message, .. } => {
                counter("conflict");
                Err(ApiError::conflict(message))
            }
            other => Err(anyhow::anyhow!("unexpected reserve outcome {other:?}").into()),
        }
    }
}

/// Holds a routed cart at the cheapest outlet serving the PIN that can fill all of it,
/// trying the next when one loses a race for the last units. A replay goes to the outlet
/// that holds the key's claim, so it gets its first answer.
pub(crate) async fn route(
    state: &Services,
    hold: &Hold,
    pin: &Pin,
    serving: &[ZoneOutlet],
) -> Result<Value, ApiError> {
    // Routing may give up a claim and take another, so two requests with one key must not
    // route at once: the second is told to retry (nothing was changed).
    let key = hold.idem.as_str();
    let lease = state
        .claims
        .lease(ClaimKind::Reservation, key)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::Unavailable(
                "a request with this Idempotency-Key is in progress; retry with the same key"
                    .into(),
            )
        })?;
    let routed = route_leased(state, hold, pin, serving).await;
    if let Err(e) = state
        .claims
        .unlease(ClaimKind::Reservation, key, &lease)
        .await
    {
        tracing::warn!(error = %format!("{e:#}"), "releasing a routing lease failed; it expires by itself");
    }
    routed
}

async fn route_leased(
    state: &Services,
    hold: &Hold,
    pin: &Pin,
    serving: &[ZoneOutlet],
) -> Result<Value, ApiError> {
    let key = hold.idem.as_str();
    let owner = state
        .claims
        .claim_owner(ClaimKind::Reservation, key)
        .await
        .map_err(ApiError::store)?;
    // A key already used goes back to its outlet, even if the zone changed since.
    let candidates: Vec<(OutletId, Option<i64>)> = match &owner {
        Some(owner) => {
            let outlet = state.catalogue.known_outlet("outlet", owner).map_err(|_| {
                ApiError::conflict(format!("this key was already used for outlet {owner}"))
            })?;
            let cost = serving.iter().find(|z| z.outlet == outlet).map(|z| z.cost);
            vec![(outlet, cost)]
        }
        None => serving
            .iter()
            .map(|z| (z.outlet.clone(), Some(z.cost)))
            .collect(),
    };
    let mut first_short = None;
    let mut down = None;
    for (outlet, cost) in candidates {
        if owner.is_none() && !can_serve(state, &outlet, &hold.lines).0 {
            continue;
        }
        let tried = match hold.try_at(state, &outlet).await {
            // An outlet that cannot answer now, or sheds new holds: the next one may.
            Err(e @ (ApiError::Unavailable(_) | ApiError::Overloaded { .. }))
                if owner.is_none() =>
            {
                state
                    .claims
                    .release_claim(ClaimKind::Reservation, key, &outlet)
                    .await
                    .map_err(ApiError::store)?;
                // An outlet that sheds says when to come back (Retry-After): that answer wins.
                if !matches!(down, Some(ApiError::Overloaded { .. })) {
                    down = Some(e);
                }
                continue;
            }
            other => other?,
        };
        match tried {
            Tried::Held(mut v) => {
                v["pin"] = json!(pin);
                if let Some(cost) = cost {
                    v["delivery_cost"] = json!(cost);
                }
                return Ok(v);
            }
            Tried::Short(short) => {
                if owner.is_none() {
                    state
                        .claims
                        .release_claim(ClaimKind::Reservation, key, &outlet)
                        .await
                        .map_err(ApiError::store)?;
                }
                first_short.get_or_insert(short);
            }
        }
    }
    if let Some(e) = down {
        return Err(e);
    }
    let cheapest = &serving[0].outlet;
    let lines = first_short.unwrap_or_else(|| shortage(state, cheapest, &hold.lines));
    // The outlets serving the PIN that could fill part of the cart.
    let alternatives = serving
        .iter()
        .filter_map(|z| {
            let some = (hold.lines.iter()).any(|l| state.stock.available(&z.outlet, &l.sku) > 0);
            let (all, per_line) = can_serve(state, &z.outlet, &hold.lines);
            some.then(
                || json!({"outlet": z.outlet, "can_serve": all, "cost": z.cost, "lines": per_line}),
            )
        })
        .collect();
    Err(ApiError::OutOfStock {
        lines,
        alternatives,
    })
}

/// The lines `outlet` is short of, by its committed counters.
fn shortage(state: &Services, outlet: &OutletId, lines: &[Line]) -> Vec<ShortLine> {
    lines
        .iter()
        .filter_map(|l| {
            let available = state.stock.available(outlet, &l.sku);
            (available < l.qty.get()).then(|| ShortLine {
                sku: l.sku.clone(),
                requested: l.qty.get(),
                available,
            })
        })
        .collect()
}

fn path_id(raw: &str) -> Result<ReservationId, ApiError> {
    ReservationId::parse("id", raw)
        .map_err(|_| ApiError::NotFound(format!("no reservation '{raw}'")))
}

fn not_found(id: &ReservationId) -> ApiError {
    ApiError::NotFound(format!("no reservation '{id}'"))
}

/// A reservation as it is now.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "reservations", operation_id = "get_reservation",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Reservation id (it carries its outlet)",
        pattern = "^[A-Za-z0-9_-]{1,41}-[A-Za-z0-9]{22}$")),
    responses(
        (status = 200, description = "The reservation", body = super::openapi::Reservation),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not read reservations", body = super::openapi::Error),
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
    let outlet = state
        .outlets
        .get(&id.outlet())
        .ok_or_else(|| not_found(&id))?;
    let res = outlet.send(GetReservation { id: id.clone() }).await??;
    let res = res.ok_or_else(|| not_found(&id))?;
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
    let mut id = path_id(&path)?;
    // A re-routed reservation's cart is held under `rerouted_to`: cancelling it cancels that
    // hold (following at most a few moves) and answers with it.
    for _ in 0..REROUTE_HOPS_MAX {
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
        match (res.status, &res.rerouted_to) {
            (ReservationStatus::Rerouted, Some(to)) => id = to.clone(),
            (ReservationStatus::Confirmed, _) => {
                let details = Some(json!({"reservation": reservation_json(&res)}));
                return Err(ApiError::Conflict {
                    message: "the reservation is confirmed".into(),
                    details,
                });
            }
            _ => return Ok(HttpResponse::Ok().json(reservation_json(&res))),
        }
    }
    Err(ApiError::conflict(format!(
        "the reservation was re-routed more than {REROUTE_HOPS_MAX} times; cancel {id}"
    )))
}

/// Moves of a re-routed reservation a cancel follows.
const REROUTE_HOPS_MAX: usize = 4;
