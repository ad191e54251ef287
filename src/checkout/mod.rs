//! The checkout core: hold a cart at an outlet or by delivery PIN, read it, confirm it on
//! payment, cancel it. Every edge (HTTP, the WhatsApp worker, re-routing) holds through
//! [`place`]; what it returns are domain values (`ResRecord`, [`Placed`], [`Error`]), which
//! each edge renders as it speaks.
//!
//! A hold's key is claimed chain-wide for the outlet that takes it (`RedisStore::claim`), so
//! a retry of the same key reaches the same outlet and gets its first answer. A routed hold
//! is leased for the time it routes, because routing may give a claim back and take another.

pub mod reroute;

use serde::Serialize;

use crate::actors::outlet::{Cancel, Committed, Confirm, GetReservation, OutletError, Reserve};
use crate::catalogue::OutletKind;
use crate::domain::{
    digest, Channel, IdempotencyKey, Line, OutletId, ReservationId, ReservationStatus,
};
use crate::error::{Alternative, Error, Similar};
use crate::keys::ClaimKind;
use crate::services::Services;
use crate::store::{By, Outcome, ResRecord, ShortLine};
use crate::zones::{Pin, ZoneOutlet};

/// Keys the service makes for itself (re-routes, WhatsApp orders); clients may not use them.
pub const REROUTE_KEY_PREFIX: &str = "rr-";
pub const WHATSAPP_KEY_PREFIX: &str = "wa-";
/// Moves of a re-routed reservation a cancel (or the WhatsApp caps, counting a hold)
/// follows.
pub const REROUTE_HOPS_MAX: usize = 4;

/// Where to hold a cart.
pub enum Target {
    Outlet(OutletId),
    /// A delivery PIN and the outlets serving it, cheapest first.
    Pin(Pin, Vec<ZoneOutlet>),
}

/// A validated hold request, ready to try at an outlet: the outlet actor's message and the
/// digest that tells a replay of its key from a reuse.
pub struct Hold {
    reserve: Reserve,
    /// A client's request at the HTTP edge: an outlet another process owns is not passed
    /// over, the request goes to its owner (http/forward.rs). A hold of a background task
    /// (a re-route, a WhatsApp order) has nobody to forward it and passes over such outlets.
    forwardable: bool,
}

/// A hold taken (or the replay of the first answer to its key).
pub struct Placed {
    /// The reservation as it was held (status `held`, whatever it is now).
    pub res: ResRecord,
    /// For a routed hold: the PIN, and the chosen outlet's delivery cost to it.
    pub pin: Option<Pin>,
    pub delivery_cost: Option<i64>,
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
    /// A new hold, or the replay of the first answer.
    Held(Box<ResRecord>),
    Short(Vec<ShortLine>),
}

impl Hold {
    pub fn new(
        target: &Target,
        idem: IdempotencyKey,
        lines: Vec<Line>,
        channel: Channel,
        ttl_secs: i64,
        customer_ref: Option<String>,
        by: By,
    ) -> Self {
        let (outlet, pin) = match target {
            Target::Outlet(o) => (Some(o), None),
            Target::Pin(p, _) => (None, Some(p)),
        };
        let canonical = Canonical {
            outlet,
            pin,
            lines: &lines,
            channel,
            ttl_secs,
            customer_ref: customer_ref.as_deref(),
        };
        Self {
            reserve: Reserve {
                sheddable: true,
                hash: digest(&serde_json::to_vec(&canonical).expect("serializes")),
                idem,
                lines,
                ttl_ms: ttl_secs * 1000,
                channel,
                customer_ref,
                pin: pin.map(|p| p.as_str().to_owned()),
                by,
            },
            forwardable: false,
        }
    }

    /// Marks a client's request at the HTTP edge (see `forwardable`).
    pub fn forwardable(mut self) -> Self {
        self.forwardable = true;
        self
    }

    /// The hold that takes over `res`'s cart at another outlet serving `pin`, for what is
    /// left of its time. Its key is derived from `res`'s id, so trying twice holds once.
    pub fn rerouting(res: &ResRecord, attempt: u32, pin: &Pin, now_ms: i64) -> Self {
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
            reserve: Reserve {
                sheddable: false,
                idem: IdempotencyKey::parse("idem", &key).expect("a digest is a valid key"),
                hash: digest(&serde_json::to_vec(&canonical).expect("serializes")),
                lines: res.lines.clone(),
                ttl_ms: (res.expires_at - now_ms).max(1000),
                channel: res.channel,
                customer_ref: res.customer_ref.clone(),
                pin: Some(pin.as_str().to_owned()),
                by: "reroute".into(),
            },
            forwardable: false,
        }
    }

    fn key(&self) -> &str {
        self.reserve.idem.as_str()
    }

    fn lines(&self) -> &[Line] {
        &self.reserve.lines
    }

    /// Claims the key for `outlet` and holds the cart there. A customer's new hold is
    /// refused, with nothing claimed, while the outlet's ledger is past its lag budget or its
    /// queue is half full; the retry of a key the outlet already holds is not (it gets its
    /// first answer, or is decided as it would have been).
    async fn try_at(&self, services: &Services, outlet: &OutletId) -> Result<Tried, Error> {
        let key = self.key();
        let claims = &services.shared.store;
        // Owned elsewhere: refused before any claim is made, so that the owner, which this
        // request is forwarded to, decides it as the first to see the key.
        let actor = services.outlet(outlet)?;
        if self.reserve.sheddable {
            if let Err(shed) = services.admit_hold(outlet) {
                let owner = (claims.claim_owner(ClaimKind::Reservation, key).await)
                    .map_err(Error::store)?;
                if owner.as_deref() != Some(outlet.as_str()) {
                    services.shed(outlet, "hold", crate::metrics::shed_reason::LEDGER_LAG);
                    return Err(shed);
                }
            }
        }
        let retain = services.settings.reservations.retain_secs;
        let fresh = services
            .claim_key(ClaimKind::Reservation, key, outlet, retain)
            .await?;
        let committed = actor.send(self.reserve.clone()).await?;
        let Committed { outcome, .. } = match committed {
            // Refused before anything was decided: a claim this call made is given back, so
            // the client's retry (here or elsewhere) finds its key unused.
            Err(refused @ (OutletError::Overloaded(_) | OutletError::Moved(_))) => {
                if fresh {
                    (claims
                        .release_claim(ClaimKind::Reservation, key, outlet)
                        .await)
                        .map_err(Error::store)?;
                }
                return Err(refused.into());
            }
            other => other?,
        };
        let count = |outcome: &str| count(services, "reserve", outcome);
        match outcome {
            Outcome::Ok { res: Some(res), .. } => {
                count("held");
                Ok(Tried::Held(Box::new(res)))
            }
            Outcome::Replay { res: Some(res), .. } => {
                count("replay");
                Ok(Tried::Held(Box::new(res)))
            }
            Outcome::OutOfStock { lines } => {
                count("out_of_stock");
                Ok(Tried::Short(lines))
            }
            Outcome::Conflict { message, .. } => {
                count("conflict");
                Err(Error::conflict(message))
            }
            other => Err(anyhow::anyhow!("unexpected reserve outcome {other:?}").into()),
        }
    }
}

/// Where a reservation was re-routed to, read from Redis without its outlet's owner: a
/// `rerouted` record never changes again, so any process may follow it.
async fn moved_to(services: &Services, id: &ReservationId) -> Result<Option<ReservationId>, Error> {
    let store = &services.shared.store;
    let (res, _) =
        (store.reservation(&store.keys(&id.outlet()), id).await).map_err(Error::store)?;
    Ok(res
        .filter(|r| r.status == ReservationStatus::Rerouted)
        .and_then(|r| r.rerouted_to))
}

/// Whether `e` says another process owns the outlet.
fn elsewhere(e: &Error) -> bool {
    matches!(
        e,
        Error::Overloaded {
            elsewhere: Some(_),
            ..
        }
    )
}

fn count(services: &Services, operation: &str, outcome: &str) {
    (services.shared.metrics.reservations)
        .with_label_values(&[operation, outcome])
        .inc();
}

/// Holds a validated cart where `target` says, all lines or none. Out of stock answers with
/// the lines short and where else the cart could be filled.
pub async fn place(services: &Services, target: Target, hold: &Hold) -> Result<Placed, Error> {
    match target {
        Target::Outlet(outlet) => match hold.try_at(services, &outlet).await? {
            Tried::Held(res) => Ok(Placed {
                res: *res,
                pin: None,
                delivery_cost: None,
            }),
            Tried::Short(short) => Err(Error::OutOfStock {
                similar: similar(services, &outlet, &short),
                lines: short,
                alternatives: alternatives(services, &outlet, hold.lines()),
            }),
        },
        Target::Pin(pin, serving) => route(services, hold, pin, &serving).await,
    }
}

/// Holds a routed cart at the cheapest outlet serving the PIN that can fill all of it,
/// trying the next when one loses a race for the last units. A replay goes to the outlet
/// that holds the key's claim, so it gets its first answer.
async fn route(
    services: &Services,
    hold: &Hold,
    pin: Pin,
    serving: &[ZoneOutlet],
) -> Result<Placed, Error> {
    // Routing may give up a claim and take another, so two requests with one key must not
    // route at once: the second is told to retry (nothing was changed).
    let key = hold.key();
    let claims = &services.shared.store;
    let lease = (claims.lease(ClaimKind::Reservation, key).await)
        .map_err(Error::store)?
        .ok_or_else(|| {
            Error::Unavailable(
                "a request with this Idempotency-Key is in progress; retry with the same key"
                    .into(),
            )
        })?;
    let routed = route_leased(services, hold, pin, serving).await;
    if let Err(e) = claims.unlease(ClaimKind::Reservation, key, &lease).await {
        tracing::warn!(error = %format!("{e:#}"), "releasing a routing lease failed; it expires by itself");
    }
    routed
}

async fn route_leased(
    services: &Services,
    hold: &Hold,
    pin: Pin,
    serving: &[ZoneOutlet],
) -> Result<Placed, Error> {
    let key = hold.key();
    let claims = &services.shared.store;
    let owner = (claims.claim_owner(ClaimKind::Reservation, key).await).map_err(Error::store)?;
    // A key already used goes back to its outlet, even if the zone changed since.
    let candidates: Vec<(OutletId, Option<i64>)> = match &owner {
        Some(owner) => {
            let outlet = services
                .catalogue
                .now()
                .known_outlet("outlet", owner)
                .map_err(|_| {
                    Error::conflict(format!("this key was already used for outlet {owner}"))
                })?;
            let cost = serving.iter().find(|z| z.outlet == outlet).map(|z| z.cost);
            vec![(outlet, cost)]
        }
        None => serving
            .iter()
            .map(|z| (z.outlet.clone(), Some(z.cost)))
            .collect(),
    };
    let stock = &services.shared.stock;
    let mut first_short = None;
    let mut down = None;
    for (outlet, cost) in candidates {
        if owner.is_none() && !stock.can_fill(&outlet, hold.lines()) {
            continue;
        }
        let tried = match hold.try_at(services, &outlet).await {
            // An outlet that cannot answer now, or sheds new holds: the next one may. One that
            // another process owns is passed over only by a background hold: a client's goes
            // to its owner (http/forward.rs), where the same outlet comes first.
            Err(e @ (Error::Unavailable(_) | Error::Overloaded { .. }))
                if owner.is_none() && !(hold.forwardable && elsewhere(&e)) =>
            {
                (claims
                    .release_claim(ClaimKind::Reservation, key, &outlet)
                    .await)
                    .map_err(Error::store)?;
                // An outlet that sheds says when to come back (Retry-After): that answer wins.
                if !matches!(down, Some(Error::Overloaded { .. })) {
                    down = Some(e);
                }
                continue;
            }
            other => other?,
        };
        match tried {
            Tried::Held(res) => {
                return Ok(Placed {
                    res: *res,
                    pin: Some(pin),
                    delivery_cost: cost,
                })
            }
            Tried::Short(short) => {
                if owner.is_none() {
                    (claims
                        .release_claim(ClaimKind::Reservation, key, &outlet)
                        .await)
                        .map_err(Error::store)?;
                }
                first_short.get_or_insert(short);
            }
        }
    }
    if let Some(e) = down {
        return Err(e);
    }
    let cheapest = &serving[0].outlet;
    let lines = first_short.unwrap_or_else(|| shortage(services, cheapest, hold.lines()));
    // The outlets serving the PIN that could fill part of the cart.
    let alternatives = serving
        .iter()
        .filter_map(|z| {
            let some = (hold.lines().iter()).any(|l| stock.available(&z.outlet, &l.sku) > 0);
            let (all, per_line) = stock.cover(&z.outlet, hold.lines());
            some.then(|| Alternative {
                outlet: z.outlet.clone(),
                can_serve: all,
                cost: Some(z.cost),
                lines: Some(per_line),
            })
        })
        .collect();
    Err(Error::OutOfStock {
        similar: similar(services, cheapest, &lines),
        lines,
        alternatives,
    })
}

/// How many similar items are offered per short line.
const SIMILAR_PER_LINE: usize = 3;

/// For each short line, up to `SIMILAR_PER_LINE` active SKUs like it (same category and pack
/// size) that `outlet` has enough of for the line, most available first.
pub fn similar(services: &Services, outlet: &OutletId, short: &[ShortLine]) -> Vec<Similar> {
    let catalogue = services.catalogue.now();
    let stock = &services.shared.stock;
    let mut offered = Vec::new();
    for line in short {
        let mut here: Vec<Similar> = (catalogue.similar(&line.sku).into_iter())
            .map(|s| Similar {
                for_sku: line.sku.clone(),
                sku: s.sku.clone(),
                name: s.name.clone(),
                available: stock.available(outlet, &s.sku),
            })
            .filter(|s| s.available >= line.requested)
            .collect();
        here.sort_by(|a, b| b.available.cmp(&a.available).then(a.sku.cmp(&b.sku)));
        here.truncate(SIMILAR_PER_LINE);
        offered.extend(here);
    }
    offered
}

/// Other shops in the same city that could fill the whole cart right now.
fn alternatives(services: &Services, outlet: &OutletId, lines: &[Line]) -> Vec<Alternative> {
    let catalogue = services.catalogue.now();
    let Some(city) = catalogue.outlet(outlet).map(|o| o.city.as_str()) else {
        return Vec::new();
    };
    (catalogue.outlets.iter())
        .filter(|o| &o.id != outlet && o.city == city && o.kind == OutletKind::Outlet)
        .filter(|o| services.shared.stock.can_fill(&o.id, lines))
        .map(|o| Alternative {
            outlet: o.id.clone(),
            can_serve: true,
            cost: None,
            lines: None,
        })
        .collect()
}

/// The lines `outlet` is short of, by its committed counters.
fn shortage(services: &Services, outlet: &OutletId, lines: &[Line]) -> Vec<ShortLine> {
    lines
        .iter()
        .filter_map(|l| {
            let available = services.shared.stock.available(outlet, &l.sku);
            (available < l.qty.get()).then(|| ShortLine {
                sku: l.sku.clone(),
                requested: l.qty.get(),
                available,
            })
        })
        .collect()
}

fn not_found(id: &ReservationId) -> Error {
    Error::NotFound(format!("no reservation '{id}'"))
}

/// The actor of the outlet a reservation id names: `404` for an outlet the chain does not
/// have.
fn reservation_outlet(
    services: &Services,
    id: &ReservationId,
) -> Result<actix::Addr<crate::actors::OutletActor>, Error> {
    services.outlet(&id.outlet()).map_err(|e| match e {
        Error::NotFound(_) => not_found(id),
        e => e,
    })
}

/// A reservation as it is now.
pub async fn get(services: &Services, id: &ReservationId) -> Result<ResRecord, Error> {
    let outlet = reservation_outlet(services, id)?;
    let res = outlet.send(GetReservation { id: id.clone() }).await??;
    res.ok_or_else(|| not_found(id))
}

/// Confirms a held reservation on payment; returns once the sale is durable in the ledger.
/// The same `payment_ref` again gets the same answer.
pub async fn confirm(
    services: &Services,
    id: &ReservationId,
    payment_ref: String,
    by: By,
) -> Result<ResRecord, Error> {
    let outlet_id = id.outlet();
    let outlet = reservation_outlet(services, id)?;
    let msg = Confirm {
        id: id.clone(),
        payment_ref,
        by,
    };
    let Committed {
        outcome,
        generation,
        ..
    } = outlet.send(msg).await??;
    let count = |outcome: &str| count(services, "confirm", outcome);
    let (res, seq) = match outcome {
        Outcome::Ok {
            res: Some(res),
            seq,
            ..
        } => {
            count("confirmed");
            (res, seq)
        }
        Outcome::Replay { res: Some(res), .. } => {
            count("replay");
            let seq = res.ended_seq.unwrap_or(res.held_seq);
            (res, seq)
        }
        Outcome::Expired { res, .. } => {
            count("expired");
            return Err(Error::Expired {
                reservation: Box::new(res),
            });
        }
        Outcome::Conflict { message, res } => {
            count("conflict");
            return Err(Error::Conflict {
                message,
                reservation: res.map(Box::new),
            });
        }
        Outcome::NotFound => return Err(not_found(id)),
        other => return Err(anyhow::anyhow!("unexpected confirm outcome {other:?}").into()),
    };
    (services.shared.durable)
        .wait(&outlet_id, seq, generation, services.durable_wait())
        .await?;
    Ok(res)
}

/// Cancels a hold; idempotent. After the expiry timer released it: the reservation, status
/// `expired`. A re-routed reservation's cart is held under `rerouted_to`: cancelling it
/// cancels that hold (following at most a few moves) and answers with it.
pub async fn cancel(services: &Services, id: &ReservationId, by: By) -> Result<ResRecord, Error> {
    let mut id = id.clone();
    for _ in 0..REROUTE_HOPS_MAX {
        let outlet = match reservation_outlet(services, &id) {
            Ok(outlet) => outlet,
            Err(e) if elsewhere(&e) => match moved_to(services, &id).await? {
                // A hop this process does not own but has moved on: the cancel follows it
                // here (so that a cancel forwarded to the owner of the cart's hold, with the
                // path of the first reservation, is not sent back).
                Some(to) => {
                    id = to;
                    continue;
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let Committed { outcome, .. } = outlet
            .send(Cancel {
                id: id.clone(),
                by: by.clone(),
            })
            .await??;
        let res = match outcome {
            Outcome::Ok { res: Some(res), .. } | Outcome::Noop { res } => res,
            Outcome::NotFound => return Err(not_found(&id)),
            other => return Err(anyhow::anyhow!("unexpected cancel outcome {other:?}").into()),
        };
        count(
            services,
            "cancel",
            &format!("{:?}", res.status).to_lowercase(),
        );
        match (res.status, &res.rerouted_to) {
            (ReservationStatus::Rerouted, Some(to)) => id = to.clone(),
            (ReservationStatus::Confirmed, _) => {
                return Err(Error::Conflict {
                    message: "the reservation is confirmed".into(),
                    reservation: Some(Box::new(res)),
                });
            }
            _ => return Ok(res),
        }
    }
    Err(Error::conflict(format!(
        "the reservation was re-routed more than {REROUTE_HOPS_MAX} times; cancel {id}"
    )))
}
