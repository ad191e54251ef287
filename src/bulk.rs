//! Bulk movements: many validated movements (a whole outlet's count, a kitchen's dispatch to
//! many outlets as transfers) applied together, each idempotent by its own `event_id` and
//! answered on its own.
//!
//! Each line is what `POST /v1/movements` would do with it, in the same order of steps, so a
//! line sent in bulk and again on its own is one movement:
//!
//! 1. every line's `event_id` is claimed for its outlet (a key used for another outlet is that
//!    line's `conflict`);
//! 2. the lines are grouped by outlet and handed to the outlet's actor in chunks of
//!    `outlet.batch_size_max` (`ApplyMovements`): one chunk is one Redis script call, and the
//!    outlet's other requests queue between chunks; the outlets go at once;
//! 3. each outlet waits until its last change is durable in the ledger; a line is answered
//!    `applied` or `replay` only then;
//! 4. a transfer's receiving halves follow, grouped by receiving outlet in the same way, once
//!    the sending half of each is durable; a line whose sending half was refused has no
//!    receiving half;
//! 5. an outlet whose fresh counts or write-offs left holds short runs one re-routing pass.
//!
//! A line of an outlet another process owns is answered `unavailable` (bulk requests are not
//! forwarded between processes: send those lines to the owner, or again).

use std::collections::BTreeMap;

use futures_util::{future, stream, StreamExt};

use crate::actors::outlet::{ApplyMovement, ApplyMovements};
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

/// Applies one outlet's lines in chunks of `outlet.batch_size_max` through its actor, then
/// waits until the last change is durable. Every line is answered.
async fn apply_at(
    services: &Services,
    outlet: OutletId,
    lines: Vec<(usize, ApplyMovement)>,
) -> (
    OutletId,
    Vec<(usize, Result<(MovementResult, bool), Error>)>,
) {
    let mut answers = Vec::with_capacity(lines.len());
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
    let chunk = services.settings.outlet.batch_size_max.max(1);
    let mut lines = lines.into_iter().peekable();
    let mut last: Option<(u64, u64)> = None;
    while lines.peek().is_some() {
        let part: Vec<(usize, ApplyMovement)> = lines.by_ref().take(chunk).collect();
        let (index, msgs): (Vec<usize>, Vec<ApplyMovement>) = part.into_iter().unzip();
        let kinds: Vec<LedgerKind> = msgs.iter().map(|m| m.kind).collect();
        match actor.send(ApplyMovements(msgs)).await {
            Ok(Ok(decided)) => {
                for ((i, kind), d) in index.into_iter().zip(kinds).zip(decided) {
                    let outcome = d.map_err(Error::from).and_then(|c| {
                        let generation = c.generation;
                        let settled = settle(services, kind, c.outcome)?;
                        last = Some(last.map_or((settled.0.seq, generation), |(s, g)| {
                            (s.max(settled.0.seq), g.max(generation))
                        }));
                        Ok(settled)
                    });
                    answers.push((i, outcome));
                }
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                for i in index {
                    answers.push((i, Err(Error::Unavailable(message.clone()))));
                }
            }
            Err(e) => {
                for i in index {
                    answers.push((
                        i,
                        Err(Error::Unavailable(format!("the outlet stopped: {e}"))),
                    ));
                }
            }
        }
    }
    if let Some((seq, generation)) = last {
        let durable = (services.shared.durable)
            .wait(&outlet, seq, generation, services.durable_wait())
            .await;
        if let Err(e) = durable {
            let e = Error::from(e);
            let message = e.to_string();
            for (_, outcome) in answers.iter_mut().filter(|(_, o)| o.is_ok()) {
                *outcome = Err(Error::Unavailable(message.clone()));
            }
        }
    }
    (outlet, answers)
}
