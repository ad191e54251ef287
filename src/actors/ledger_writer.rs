//! `LedgerWriter`: drains the outlets' outbox streams into the MongoDB ledger.
//!
//! Outlets mark themselves dirty after a commit; the writer reads each dirty outbox after
//! its durable watermark, inserts one unordered `insert_many` for all of them (a duplicate
//! key is "already written"), trims what is durable, and raises the watermarks that
//! confirms and movements wait on. A periodic pass reads every outbox, so nothing depends
//! on a nudge arriving. A failed batch is retried with backoff; nothing is trimmed before
//! it is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use actix::prelude::*;
use tracing::{error, warn};

use super::Shared;
use crate::domain::{now_ms, OutletId};
use crate::keys::OutletKeys;
use crate::ledger::LedgerEntry;

const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// Wakes the writer. At most one is ever waiting in its mailbox (see `OutboxSignal`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Nudge;

/// Drains every outbox completely (graceful shutdown, import). Answers with the error that
/// stopped it, if any.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct FlushAll;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Which outlets have new outbox entries, shared by the outlet actors and the writer; and
/// the outlets the writer drains, with their keys (an outlet added while running is added
/// here, `add`).
pub struct OutboxSignal {
    outlets: RwLock<SignalOutlets>,
    nudged: AtomicBool,
    writer: OnceLock<Recipient<Nudge>>,
}

#[derive(Default)]
struct SignalOutlets {
    index: HashMap<OutletId, usize>,
    keys: Vec<(OutletId, OutletKeys)>,
    dirty: Vec<AtomicBool>,
}

impl OutboxSignal {
    pub fn new(outlets: impl IntoIterator<Item = (OutletId, OutletKeys)>) -> Self {
        let signal = Self {
            outlets: RwLock::default(),
            nudged: AtomicBool::new(false),
            writer: OnceLock::new(),
        };
        for (o, keys) in outlets {
            signal.add(o, keys);
        }
        signal
    }

    /// An outlet for the writer to drain from now on (one it has already stays).
    pub fn add(&self, outlet: OutletId, keys: OutletKeys) {
        let mut outlets = self.write();
        if outlets.index.contains_key(&outlet) {
            return;
        }
        let i = outlets.keys.len();
        outlets.index.insert(outlet.clone(), i);
        outlets.keys.push((outlet, keys));
        outlets.dirty.push(AtomicBool::new(false));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SignalOutlets> {
        self.outlets.read().expect("signal lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SignalOutlets> {
        self.outlets.write().expect("signal lock")
    }

    /// The outlets known here, in the order they were added.
    pub fn ids(&self) -> Vec<OutletId> {
        self.read().keys.iter().map(|(o, _)| o.clone()).collect()
    }

    pub fn knows(&self, outlet: &OutletId) -> bool {
        self.read().index.contains_key(outlet)
    }

    fn len(&self) -> usize {
        self.read().keys.len()
    }

    fn outlet(&self, i: usize) -> (OutletId, OutletKeys) {
        self.read().keys[i].clone()
    }

    /// Marks the outlet dirty and wakes the writer unless a wake-up is already on its way, so
    /// the writer's mailbox never holds more than one `Nudge`.
    pub fn mark(&self, outlet: &OutletId) {
        let i = self.read().index.get(outlet).copied();
        if let Some(i) = i {
            self.mark_index(i);
        }
    }

    fn mark_index(&self, i: usize) {
        self.set_dirty(i);
        if !self.nudged.swap(true, Ordering::AcqRel) {
            if let Some(writer) = self.writer.get() {
                writer.do_send(Nudge);
            }
        }
    }

    fn set_dirty(&self, i: usize) {
        self.read().dirty[i].store(true, Ordering::Release);
    }

    fn take_dirty(&self) -> Vec<usize> {
        self.nudged.store(false, Ordering::Release);
        let outlets = self.read();
        (0..outlets.dirty.len())
            .filter(|&i| outlets.dirty[i].swap(false, Ordering::AcqRel))
            .collect()
    }
}

/// The last seq of `outlet` provably durable: everything before the oldest outbox entry
/// (outboxes are trimmed only after a successful insert), and never past the ledger's last
/// document. A writer starting on the outlet (at start, or in a process that just took its
/// lease) inserts from there; entries it finds already written are checked and skipped.
pub async fn provably_durable(
    store: &crate::store::RedisStore,
    ledger: &crate::ledger::Ledger,
    outlet: &OutletId,
) -> anyhow::Result<u64> {
    let in_ledger = ledger.max_seq(outlet).await?;
    let pending = store.first_outbox_seq(&store.keys(outlet)).await?;
    Ok(pending.map_or(in_ledger, |first| in_ledger.min(first - 1)))
}

#[derive(Clone)]
struct Core {
    shared: Shared,
    batch_size_max: usize,
}

impl Core {
    /// One pass over `which`: read, insert, trim, raise watermarks. Returns whether an outbox
    /// had more than this pass could take.
    async fn drain(&self, which: &[usize]) -> anyhow::Result<bool> {
        let _gate = self.shared.ledger_gate.lock().await;
        let metrics = &self.shared.metrics;
        let mut budget = self.batch_size_max;
        let mut docs = Vec::new();
        let mut tops = Vec::new();
        let mut more = false;
        // The outlet whose oldest change not yet durable is oldest goes first: with a fixed
        // order, an outlet with a backlog of a whole batch would take every pass's budget and
        // starve the others, whose facts would then wait far past the lag budget.
        let now = now_ms();
        let mut which: Vec<(usize, (OutletId, OutletKeys))> = (which.iter())
            .map(|&i| (i, self.shared.signal.outlet(i)))
            .collect();
        which.sort_by_cached_key(|(_, (outlet, _))| {
            std::cmp::Reverse(self.shared.durable.lag(outlet, now).age_ms)
        });
        for (i, (outlet, keys)) in &which {
            let i = *i;
            // Each outlet's owner writes its ledger (several processes share one Redis).
            if !self.shared.owners.owns(outlet) {
                continue;
            }
            if budget == 0 {
                self.shared.signal.mark_index(i);
                more = true;
                continue;
            }
            let after = self.shared.durable.get(outlet);
            let (entries, len) = self.shared.store.read_outbox(keys, after, budget).await?;
            metrics
                .ledger_outbox_entries
                .with_label_values(&[outlet.as_str()])
                .set(len as i64);
            let Some(last) = entries.last() else {
                metrics
                    .ledger_outbox_age_ms
                    .with_label_values(&[outlet.as_str()])
                    .set(0);
                continue;
            };
            // A document that cannot be read holds back its own outlet only (a bug: loud).
            let parsed: anyhow::Result<Vec<LedgerEntry>> = entries
                .iter()
                .map(|e| LedgerEntry::from_outbox(&e.json))
                .collect();
            let parsed = match parsed {
                Ok(p) => p,
                Err(e) => {
                    error!(%outlet, error = %format!("{e:#}"), "unreadable outbox document; this outlet's ledger is stuck");
                    metrics.ledger_write_errors.inc();
                    continue;
                }
            };
            if entries.len() == budget {
                self.shared.signal.mark_index(i);
                more = true;
            }
            tops.push((outlet.clone(), keys.clone(), last.seq));
            budget -= entries.len();
            metrics
                .ledger_outbox_age_ms
                .with_label_values(&[outlet.as_str()])
                .set(now_ms() - parsed[0].at_ms);
            docs.extend(parsed);
        }
        if docs.is_empty() {
            return Ok(more);
        }
        // Failed inserts count too: a server that takes 30 s to refuse is slow, not fast.
        let started = std::time::Instant::now();
        let inserted = self.shared.ledger.insert_batch(&docs).await;
        metrics
            .ledger_insert_seconds
            .observe(started.elapsed().as_secs_f64());
        inserted?;
        metrics.ledger_documents.inc_by(docs.len() as u64);
        for (outlet, keys, top) in tops {
            self.shared.durable.advance(&outlet, top);
            self.shared.store.trim_outbox(&keys, top).await?;
        }
        Ok(more)
    }

    fn all(&self) -> Vec<usize> {
        (0..self.shared.signal.len()).collect()
    }
}

pub struct LedgerWriter {
    core: Core,
    poll_interval: Duration,
    draining: bool,
    /// A nudge or poll arrived while a pass was in flight.
    again: bool,
    failures: u32,
}

impl LedgerWriter {
    /// A writer of the outlets in `shared.signal`, as many as it has at each pass.
    pub fn new(shared: Shared, batch_size_max: usize, poll_interval: Duration) -> Self {
        Self {
            core: Core {
                shared,
                batch_size_max,
            },
            poll_interval,
            draining: false,
            again: false,
            failures: 0,
        }
    }

    fn kick(&mut self, which: Vec<usize>, ctx: &mut Context<Self>) {
        if self.draining {
            self.again = true;
            for i in which {
                self.core.shared.signal.set_dirty(i);
            }
            return;
        }
        if which.is_empty() {
            return;
        }
        self.draining = true;
        let core = self.core.clone();
        let fut = async move {
            let result = core.drain(&which).await;
            (which, result)
        };
        ctx.spawn(fut.into_actor(self).map(|(which, result), act, ctx| {
            act.draining = false;
            match result {
                Ok(more) => {
                    act.failures = 0;
                    if more || std::mem::take(&mut act.again) {
                        let next = act.core.shared.signal.take_dirty();
                        act.kick(next, ctx);
                    }
                }
                Err(e) => {
                    act.failures += 1;
                    act.core.shared.metrics.ledger_write_errors.inc();
                    warn!(error = %format!("{e:#}"), failures = act.failures, "ledger batch failed; retrying");
                    let delay = RETRY_DELAY_MIN
                        .saturating_mul(2u32.saturating_pow(act.failures.min(16)))
                        .min(RETRY_DELAY_MAX);
                    ctx.run_later(delay, move |act, ctx| act.kick(which, ctx));
                }
            }
        }));
    }
}

impl Actor for LedgerWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let _ = self
            .core
            .shared
            .signal
            .writer
            .set(ctx.address().recipient());
        ctx.run_interval(self.poll_interval, |act, ctx| {
            let all = act.core.all();
            act.kick(all, ctx);
        });
        let all = self.core.all();
        self.kick(all, ctx);
    }
}

impl Supervised for LedgerWriter {
    fn restarting(&mut self, _: &mut Self::Context) {
        // The Redis and MongoDB handles reconnect by themselves; only pass state resets.
        self.draining = false;
        self.again = true;
        self.failures = 0;
    }
}

impl Handler<Nudge> for LedgerWriter {
    type Result = ();

    fn handle(&mut self, _: Nudge, ctx: &mut Self::Context) {
        let dirty = self.core.shared.signal.take_dirty();
        self.kick(dirty, ctx);
    }
}

impl Handler<FlushAll> for LedgerWriter {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, _: FlushAll, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move {
            let all = core.all();
            while core.drain(&all).await.map_err(|e| format!("{e:#}"))? {}
            Ok(())
        })
    }
}

impl Handler<Stop> for LedgerWriter {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
