//! Re-routing of holds a counter sale left short (what it keeps between passes is
//! `reroute_state.rs`).
//!
//! A counter sale, wastage or count is a fact: it is recorded even when it leaves an outlet
//! with fewer units than its live holds. Then, newest hold first, each hold that the outlet
//! can no longer cover is moved whole to the cheapest other outlet serving its delivery PIN
//! that can fill it: held there first (with a key derived from the old hold's id, so a
//! second attempt replays the first), then released here with status `rerouted` and
//! `rerouted_to`. Holds that no outlet can take (no PIN, or nobody has the stock) are
//! marked at risk: `/metrics` counts them, `GET /v1/reservations/{id}` says `at_risk`, and
//! the storefront stream announces both outcomes.
//!
//! One pass per outlet at a time. A pass runs after every movement that leaves a shortfall,
//! and a sweep every `SWEEP_EVERY` repeats it for any outlet still short or still holding
//! at-risk holds, which also finishes what a restart cut off.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{place, Hold, Target};
use crate::actors::outlet::{Cancel, GetReservation, HeldIds, Reroute};
use crate::domain::{now_ms, OutletId, ReservationId, ReservationStatus, Sku};
use crate::error::Error;
use crate::hub::LiveEvent;
use crate::services::Services;
use crate::store::{Outcome, ResRecord};
use crate::zones::{Pin, ZoneOutlet};

/// How often outlets still short (or with at-risk holds) are looked at again.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Sweeps that may leave an outlet to its movements in flight before it runs anyway (an
/// outlet whose POS never pauses would otherwise never be swept).
const SWEEP_DEFERRALS_MAX: u32 = 3;

/// A hold moved to another outlet.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub id: ReservationId,
    pub rerouted_to: ReservationId,
    pub to_outlet: OutletId,
}

/// What one pass did for an outlet.
#[derive(Debug, Default, Serialize)]
pub struct Relief {
    pub rerouted: Vec<Moved>,
    pub at_risk: Vec<ReservationId>,
}

/// What became of one uncovered hold.
enum Fate {
    Moved(Moved),
    /// Nobody could take it; it stays here, at risk.
    Stays,
    /// It ended while being moved (confirmed, cancelled or expired): nothing to keep.
    Ended,
}

/// Attempts to move one hold before it is left at risk until the next pass.
const ATTEMPTS_PER_PASS: u32 = 3;

/// Moves or marks every hold `outlet` can no longer cover. Never fails: what it cannot do
/// now stays at risk and is tried again by the sweep.
pub async fn relieve(services: &Services, outlet: &OutletId) -> Relief {
    let state = &services.reroute;
    let Some(pass) = state.pass(outlet) else {
        return Relief::default();
    };
    let _pass = pass.lock().await;
    let mut relief = Relief::default();
    let uncovered = match uncovered_holds(services, outlet).await {
        Ok(u) => u,
        Err(e) => {
            warn!(%outlet, error = %format!("{e:#}"), "reading holds to re-route failed; the sweep tries again");
            return relief;
        }
    };
    let live: HashSet<&ReservationId> = uncovered.iter().map(|(r, _)| &r.id).collect();
    state.keep_attempts(outlet, &live);
    let mut at_risk = HashMap::new();
    let count = |outcome: &str| {
        (services
            .shared
            .metrics
            .reroutes
            .with_label_values(&[outcome]))
        .inc();
    };
    for (res, units) in uncovered {
        match move_hold(services, outlet, &res).await {
            Ok(Fate::Moved(moved)) => {
                info!(%outlet, id = %moved.id, to = %moved.rerouted_to, "hold re-routed");
                count("rerouted");
                publish_rerouted(services, &res, &moved);
                relief.rerouted.push(moved);
            }
            // Its units went with it (a confirm keeps the shortfall; the next pass takes
            // the next hold for it).
            Ok(Fate::Ended) => count("ended"),
            Ok(Fate::Stays) => {
                at_risk.insert(res.id.clone(), units);
                relief.at_risk.push(res.id.clone());
            }
            Err(e) => {
                warn!(%outlet, id = %res.id, error = %format!("{e:#}"), "re-routing a hold failed; it stays at risk");
                count("failed_attempt");
                at_risk.insert(res.id.clone(), units);
                relief.at_risk.push(res.id.clone());
            }
        }
    }
    mark(services, outlet, at_risk);
    relief
}

/// Holds `res`'s cart at the cheapest other outlet serving its PIN, then releases it
/// here. The new hold's key is derived from `res`'s id and an attempt number: a repeated
/// pass replays the same new hold; a new hold that was given back (or expired) is never
/// reused, the next attempt makes another.
async fn move_hold(
    services: &Services,
    outlet: &OutletId,
    res: &ResRecord,
) -> anyhow::Result<Fate> {
    let Some(pin) = res.pin.as_deref().and_then(|p| Pin::parse("pin", p).ok()) else {
        return Ok(Fate::Stays);
    };
    let serving: Vec<ZoneOutlet> = (services.zones.serving(&pin).into_iter())
        .filter(|z| &z.outlet != outlet)
        .collect();
    if serving.is_empty() {
        return Ok(Fate::Stays);
    }
    let state = &services.reroute;
    for _ in 0..ATTEMPTS_PER_PASS {
        let hold = Hold::rerouting(res, state.attempt(&res.id), &pin, now_ms());
        let target = Target::Pin(pin.clone(), serving.clone());
        let to = match place(services, target, &hold).await {
            Ok(placed) => placed.res.id,
            Err(Error::OutOfStock { .. }) => return Ok(Fate::Stays),
            Err(e) => return Err(anyhow::Error::from(e).context("holding at another outlet")),
        };
        // A replay answers as it first did: make sure that hold is still live.
        let live = services.outlet(&to.outlet())?;
        let now = live.send(GetReservation { id: to.clone() }).await??;
        if now.is_none_or(|r| r.status != ReservationStatus::Held) {
            state.next_attempt(&res.id);
            continue;
        }
        let fate = release_moved(services, outlet, res, &to).await;
        if fate.is_err() {
            // Give the new hold back; the next pass tries again with a fresh key.
            state.next_attempt(&res.id);
            give_back(services, &to).await;
        }
        if matches!(fate, Ok(Fate::Moved(_) | Fate::Ended)) {
            state.forget_attempts(&res.id);
        }
        return fate;
    }
    Ok(Fate::Stays)
}

/// Releases `res` here as re-routed to `to`; if it ended meanwhile, gives `to` back.
async fn release_moved(
    services: &Services,
    outlet: &OutletId,
    res: &ResRecord,
    to: &ReservationId,
) -> anyhow::Result<Fate> {
    let msg = Reroute {
        id: res.id.clone(),
        to: to.clone(),
    };
    let outcome = services.outlet(outlet)?.send(msg).await??.outcome;
    let moved = Moved {
        id: res.id.clone(),
        to_outlet: to.outlet(),
        rerouted_to: to.clone(),
    };
    match outcome {
        Outcome::Ok { .. } => Ok(Fate::Moved(moved)),
        Outcome::Noop { res: now } if now.rerouted_to.as_ref() == Some(to) => {
            Ok(Fate::Moved(moved))
        }
        Outcome::Noop { .. } => {
            give_back(services, to).await;
            Ok(Fate::Ended)
        }
        other => anyhow::bail!("unexpected re-route outcome {other:?}"),
    }
}

/// Replaces the outlet's at-risk holds; a hold newly at risk counts its units as oversold
/// once and is announced.
fn mark(services: &Services, outlet: &OutletId, now: HashMap<ReservationId, i64>) {
    // A pass that ran on while the outlet was handed over: its owner judges it now (the step
    // down cleared this process's gauges).
    if !services.shared.owners.owns(outlet) {
        return;
    }
    let (metrics, hub) = (&services.shared.metrics, &services.shared.hub);
    let labels = [outlet.as_str()];
    (metrics.at_risk_holds.with_label_values(&labels)).set(now.len() as i64);
    (metrics.at_risk_units.with_label_values(&labels)).set(now.values().sum());
    for (id, units) in services.reroute.replace_at_risk(outlet, now) {
        warn!(%outlet, %id, units, "a hold is at risk: this outlet cannot cover it and no other outlet could take it");
        metrics.oversells.inc_by(units as u64);
        (metrics.reroutes.with_label_values(&["at_risk"])).inc();
        let body = json!({"id": id, "outlet": outlet, "status": "held", "at_risk": true,
            "units": units});
        hub.publish(LiveEvent::Reservation {
            event: "at_risk",
            outlets: vec![outlet.clone()],
            body: Arc::new(body),
        });
    }
}

/// The outlet's live holds it can no longer cover, newest first, each with the units it
/// lacks: the newest holds of a short SKU are taken until they cover its shortfall.
async fn uncovered_holds(
    services: &Services,
    outlet: &OutletId,
) -> anyhow::Result<Vec<(ResRecord, i64)>> {
    let ids = services.outlet(outlet)?.send(HeldIds).await?;
    let store = &services.shared.store;
    let mut holds = store.reservations(&store.keys(outlet), &ids).await?;
    holds.retain(|r| r.status == ReservationStatus::Held);
    holds.sort_by_key(|r| std::cmp::Reverse(r.held_seq));
    let mut short: HashMap<Sku, i64> = HashMap::new();
    for line in holds.iter().flat_map(|r| &r.lines) {
        let available = services
            .shared
            .stock
            .get(outlet, &line.sku)
            .unwrap_or_default()
            .available();
        if available < 0 {
            short.insert(line.sku.clone(), -available);
        }
    }
    let mut uncovered = Vec::new();
    for res in holds {
        let mut units = 0;
        for line in &res.lines {
            if let Some(n) = short.get_mut(&line.sku).filter(|n| **n > 0) {
                let missing = line.qty.get().min(*n);
                units += missing;
                *n -= missing;
            }
        }
        if units > 0 {
            uncovered.push((res, units));
        }
    }
    Ok(uncovered)
}

/// Cancels a new hold that did not take over its cart. If that fails too, it expires with
/// the old hold's time.
async fn give_back(services: &Services, to: &ReservationId) {
    let cancelled = match services.outlet(&to.outlet()) {
        Ok(actor) => (actor
            .send(Cancel {
                id: to.clone(),
                by: "reroute".into(),
            })
            .await)
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = cancelled {
        warn!(id = %to, error = %format!("{e:#}"), "giving back a re-route's new hold failed; it expires with the old hold's time");
    }
}

fn publish_rerouted(services: &Services, res: &ResRecord, moved: &Moved) {
    let body: Value = json!({"id": moved.id, "outlet": res.id.outlet(), "status": "rerouted",
        "rerouted_to": moved.rerouted_to, "to_outlet": moved.to_outlet, "lines": res.lines});
    services.shared.hub.publish(LiveEvent::Reservation {
        event: "rerouted",
        outlets: vec![res.id.outlet(), moved.to_outlet.clone()],
        body: Arc::new(body),
    });
}

/// Every `SWEEP_EVERY`, a pass for each outlet still short of its holds or still holding
/// at-risk ones.
pub fn start_sweep(services: Arc<Services>) {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        let closing = services.shared.hub.closing();
        tokio::pin!(closing);
        let mut deferred: HashMap<OutletId, u32> = HashMap::new();
        loop {
            tokio::select! {
                _ = &mut closing => return,
                _ = tick.tick() => {}
            }
            let state = &services.reroute;
            for outlet in &services.shared.owners.ids() {
                let due = services.shared.stock.short_of_holds(outlet) || state.has_at_risk(outlet);
                if !due {
                    continue;
                }
                let waited = deferred.entry(outlet.clone()).or_default();
                if state.movements_in_flight(outlet) && *waited < SWEEP_DEFERRALS_MAX {
                    *waited += 1;
                    continue;
                }
                *waited = 0;
                relieve(&services, outlet).await;
            }
        }
    });
}
