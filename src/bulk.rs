//! Bulk movements: many validated movements (a whole outlet's count, a kitchen's dispatch to
//! many outlets as transfers) applied together, each idempotent by its own `event_id` and
//! answered on its own.
//!
//! Each line is what `POST /v1/movements` would do with it, in the same order of steps, so a
//! line sent in bulk and again on its own is one movement:
//!
//! 1. every line's `event_id` is claimed for its outlet (a key used for another outlet is that
//!    line's `conflict`);
//! 2. the lines are grouped by outlet and handed to the outlet's actor, in their order, in
//!    chunks of `outlet.batch_size_max` (`ApplyMovements`): one chunk is one Redis script call,
//!    and the outlet's other requests queue between chunks; the outlets go at once. After a
//!    chunk that could not be applied, the outlet's later lines are not sent (`unavailable`),
//!    so that a retry applies them in order;
//! 3. each outlet waits until its changes are durable in the ledger (the last seq of each
//!    durability generation); a line is answered `applied` or `replay` only then;
//! 4. a transfer's receiving halves follow, grouped by receiving outlet in the same way, once
//!    the sending half of each is durable; a line whose sending half was refused has no
//!    receiving half. So that this order cannot differ from the request's, an upload may not
//!    move stock into an outlet that has lines of its own in it (http/bulk.rs refuses it);
//! 5. an outlet whose fresh counts or write-offs left holds short runs one re-routing pass.
//!
//! A line of an outlet another process owns is answered `unavailable` (bulk requests are not
//! forwarded between processes: send those lines to the owner, or again).

use std::collections::BTreeMap;

use futures_util::{future, stream, StreamExt};

use crate::actors::outlet::{ApplyMovement, ApplyMovements, OutletError};
use crate::checkout::reroute::{relieve, Relief};
use crate::domain::{LedgerKind, Movement, OutletId, TRANSFER_IN_PREFIX};
use crate::error::Error;
use crate::keys::ClaimKind;
use crate::movements::{half, ledger_kind, settle};
use crate::services::Services;
use crate::store::{By, MovementResult};

/// Event-id claims in flight at once.
const CLAIMS_IN_FLIGHT: usize = 64;

/// What became of one line.
pub struct LineAnswer {
    /// The line's index in the request.
    pub index: usize,
    /// The result at the line's outlet, and whether it was applied now (false: a replay).
    pub outcome: Result<(MovementResult, bool), Error>,
    /// A transfer's receiving outlet and its result there.
    pub to: Option<(OutletId, Result<MovementResult, Error>)>,
}

pub struct BulkReport {
    /// In the order of the request.
    pub lines: Vec<LineAnswer>,
    pub relief: Relief,
}

/// Applies validated movements; answers every line (see the module's doc for the order).
pub async fn apply(services: &Services, movements: &[Movement], by: By) -> BulkReport {
    let mut answers: Vec<LineAnswer> = (0..movements.len())
        .map(|index| LineAnswer {
            index,
            outcome: Err(Error::Unavailable("not applied".into())),
            to: None,
        })
        .collect();
    let retain = services.settings.movements.retain_secs;
    let claims: Vec<(usize, Result<bool, Error>)> = stream::iter(movements.iter().enumerate())
        .map(|(i, m)| async move {
            let claimed = services
                .claim_key(ClaimKind::Event, m.event_id.as_str(), &m.outlet, retain)
                .await;
            (i, claimed)
        })
        .buffer_unordered(CLAIMS_IN_FLIGHT)
        .collect()
        .await;
    let mut sending: BTreeMap<OutletId, Vec<(usize, ApplyMovement)>> = BTreeMap::new();
    for (i, claimed) in claims {
        let m = &movements[i];
        if let Err(e) = claimed {
            answers[i].outcome = Err(e);
            continue;
        }
        // Both halves' outlets before either is applied, as for one movement.
        if let Some(Err(e)) = m.to_outlet.as_ref().map(|to| services.outlet(to)) {
            answers[i].outcome = Err(e.not_forwarded());
            continue;
        }
        let msg = half(
            m,
            &m.body_hash(),
            ledger_kind(m.kind),
            m.event_id.to_string(),
            m.to_outlet.clone(),
            None,
            &by,
        );
        sending.entry(m.outlet.clone()).or_default().push((i, msg));
    }
    let outlets: Vec<OutletId> = sending.keys().cloned().collect();
    let guards: Vec<_> = (outlets.iter())
        .map(|o| services.reroute.movement_in_flight(o))
        .collect();
    let sent = future::join_all(
        sending
            .into_iter()
            .map(|(outlet, lines)| apply_at(services, outlet, lines)),
    )
    .await;
    let mut short = Vec::new();
    let mut receiving: BTreeMap<OutletId, Vec<(usize, ApplyMovement)>> = BTreeMap::new();
    for (outlet, results) in sent {
        let mut left_short = false;
        for (i, outcome) in results {
            let m = &movements[i];
            if let Ok((r, fresh)) = &outcome {
                left_short |= *fresh && r.shortfall.is_some();
                if let Some(to) = &m.to_outlet {
                    let key = format!("{TRANSFER_IN_PREFIX}{}", m.event_id);
                    let msg = half(
                        m,
                        &m.body_hash(),
                        LedgerKind::TransferIn,
                        key,
                        Some(m.outlet.clone()),
                        Some(&r.lots),
                        &by,
                    );
                    receiving.entry(to.clone()).or_default().push((i, msg));
                }
            }
            answers[i].outcome = outcome;
        }
        if left_short {
            short.push(outlet);
        }
    }
    let mut relief = Relief::default();
    for outlet in &short {
        let r = relieve(services, outlet).await;
        relief.rerouted.extend(r.rerouted);
        relief.at_risk.extend(r.at_risk);
    }
    drop(guards);
    let received = future::join_all(
        receiving
            .into_iter()
            .map(|(outlet, lines)| apply_at(services, outlet, lines)),
    )
    .await;
    for (outlet, results) in received {
        for (i, outcome) in results {
            answers[i].to = Some((outlet.clone(), outcome.map(|(r, _)| r)));
        }
    }
    BulkReport {
        lines: answers,
        relief,
    }
}

/// What one line came to at its outlet: its result and whether it was applied now, and the
/// durability generation it was decided in.
type Decided = (usize, Result<(MovementResult, bool), Error>, Option<u64>);

/// Applies one outlet's lines in order, in chunks of `outlet.batch_size_max` (at most half the
/// outlet's queue) through its actor, then waits until each generation's last change is
/// durable. Every line is answered. Once a chunk (or a line in it) could not be applied, the
/// lines after it are not sent (`unavailable`): a retry then applies them in their order.
async fn apply_at(
    services: &Services,
    outlet: OutletId,
    lines: Vec<(usize, ApplyMovement)>,
) -> (
    OutletId,
    Vec<(usize, Result<(MovementResult, bool), Error>)>,
) {
    let actor = match services.outlet(&outlet) {
        Ok(a) => a,
        Err(e) => {
            let message = e.not_forwarded().to_string();
            let refused = lines
                .into_iter()
                .map(|(i, _)| (i, Err(Error::Unavailable(message.clone()))));
            return (outlet, refused.collect());
        }
    };
    let limits = &services.settings.outlet;
    let chunk = limits.batch_size_max.min(limits.pending_max / 2).max(1);
    let mut decided: Vec<Decided> = Vec::with_capacity(lines.len());
    // The highest seq decided in each durability generation (a reload between chunks starts
    // a new one, whose seqs may repeat those of a lost one).
    let mut marks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut stopped: Option<String> = None;
    let mut lines = lines.into_iter().peekable();
    while lines.peek().is_some() {
        let part: Vec<(usize, ApplyMovement)> = lines.by_ref().take(chunk).collect();
        if let Some(why) = &stopped {
            for (i, _) in part {
                decided.push((i, Err(Error::Unavailable(why.clone())), None));
            }
            continue;
        }
        let (index, msgs): (Vec<usize>, Vec<ApplyMovement>) = part.into_iter().unzip();
        let kinds: Vec<LedgerKind> = msgs.iter().map(|m| m.kind).collect();
        let answers = match actor.send(ApplyMovements(msgs)).await {
            Ok(Ok(answers)) => answers,
            Ok(Err(e)) => vec![Err(e); index.len()],
            Err(e) => {
                let stopped = OutletError::Unavailable(format!("the outlet stopped: {e}"));
                vec![Err(stopped); index.len()]
            }
        };
        for ((i, kind), answer) in index.into_iter().zip(kinds).zip(answers) {
            match answer {
                Ok(c) => {
                    let outcome = settle(services, kind, c.outcome);
                    if let Ok((r, _)) = &outcome {
                        let mark = marks.entry(c.generation).or_default();
                        *mark = (*mark).max(r.seq);
                    }
                    decided.push((i, outcome, Some(c.generation)));
                }
                Err(e) => {
                    stopped.get_or_insert_with(|| format!("{e}; not applied, send the line again"));
                    decided.push((i, Err(Error::from(e)), None));
                }
            }
        }
    }
    let mut lost = BTreeMap::new();
    for (&generation, &seq) in &marks {
        let durable = (services.shared.durable)
            .wait(&outlet, seq, generation, services.durable_wait())
            .await;
        if let Err(e) = durable {
            lost.insert(generation, Error::from(e).to_string());
        }
    }
    let answers = decided
        .into_iter()
        .map(|(i, outcome, generation)| {
            let not_durable = generation.and_then(|g| lost.get(&g));
            match (outcome, not_durable) {
                (Ok(_), Some(message)) => (i, Err(Error::Unavailable(message.clone()))),
                (outcome, _) => (i, outcome),
            }
        })
        .collect();
    (outlet, answers)
}
