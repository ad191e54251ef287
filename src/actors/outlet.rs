//! `OutletActor`: the single writer of one outlet inside this process.
//!
//! It takes requests in arrival order and commits them to Redis in batches: while one batch
//! is in flight, whatever arrives queues up and goes in the next (group commit), so many
//! requests cost one round trip. The Redis script decides every operation (it re-checks
//! every invariant); the actor replies only after Redis has the decision. It keeps the
//! committed counters in the shared `StockView` for reads and owns the expiry timers of its
//! live holds: one timer for the earliest deadline, moved when an earlier one arrives.
//!
//! Why no fast refusal from memory: an idempotent replay of a hold that took the last unit
//! must get its first answer, not "out of stock", and only the script knows every key. A
//! refusal costs a share of one round trip, which group commit makes small.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use anyhow::Context as _;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::Shared;
use crate::domain::{
    now_ms, Channel, IdempotencyKey, LedgerKind, Line, Lot, OutletId, ReservationId,
    ReservationStatus, Sku,
};
use crate::hub::LiveEvent;
use crate::keys::OutletKeys;
use crate::store::{
    BatchArgs, BatchReply, By, Fenced, HealLine, LotIn, Op, Outcome, ReleaseReason, ResRecord,
    RestoreMode, Snapshot,
};

/// After a failed reload, wait this long before the next try.
const RELOAD_RETRY: Duration = Duration::from_millis(500);
/// Expiry releases refused because the ledger is behind are tried again after this.
const RELEASE_RETRY: Duration = Duration::from_secs(1);

/// Hold a cart. The actor picks the reservation id and computes `expires_at`.
#[derive(Message, Clone)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Reserve {
    /// A customer's new hold, refused first under load. A re-route is not: it moves a cart
    /// that is already held, after a counter sale.
    pub sheddable: bool,
    pub idem: IdempotencyKey,
    pub hash: String,
    pub lines: Vec<Line>,
    pub ttl_ms: i64,
    pub channel: Channel,
    pub customer_ref: Option<String>,
    /// The delivery PIN of a routed hold.
    pub pin: Option<String>,
    pub by: By,
}

/// Turn a hold into a sale.
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Confirm {
    pub id: ReservationId,
    pub payment_ref: String,
    pub by: By,
}

/// Release a hold at the customer's request.
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Cancel {
    pub id: ReservationId,
    pub by: By,
}

/// Apply one movement (or one half of a transfer) to this outlet.
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct ApplyMovement {
    pub key: String,
    pub hash: String,
    pub kind: LedgerKind,
    pub sku: Sku,
    pub qty: i64,
    pub event_id: String,
    pub event_at_ms: i64,
    pub note: Option<String>,
    pub counterpart: Option<OutletId>,
    /// The lot units going out come from (see `Op::Movement`).
    pub lot: Option<String>,
    /// The lots units coming in go into.
    pub lots: Vec<LotIn>,
    pub by: By,
}

/// Apply many movements to this outlet, in order, as consecutive entries of its queue (so
/// they share batches); one answer per movement. Refused whole, nothing queued, when the
/// queue has no room for all of them.
#[derive(Message)]
#[rtype(result = "Result<Vec<Result<Committed, OutletError>>, OutletError>")]
pub struct ApplyMovements(pub Vec<ApplyMovement>);

/// Release a live hold because the hold `to` at another outlet took over its cart.
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Reroute {
    pub id: ReservationId,
    pub to: ReservationId,
}

/// The ids of the outlet's live holds, as its expiry timers know them.
#[derive(Message)]
#[rtype(result = "Vec<ReservationId>")]
pub struct HeldIds;

/// Read a reservation, live or finished (within its retention).
#[derive(Message)]
#[rtype(result = "Result<Option<ResRecord>, OutletError>")]
pub struct GetReservation {
    pub id: ReservationId,
}

/// The reconciler's read of every counter at one seq, in the outlet's order.
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Audit;

/// The reconciler's correction of drifted counters (deltas), valid only for the load its
/// audit saw (`Committed::load`).
#[derive(Message)]
#[rtype(result = "Result<Committed, OutletError>")]
pub struct Heal {
    pub load: u64,
    pub lines: Vec<HealLine>,
}

/// Answers once nothing is queued or in flight (graceful shutdown, import).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The outlet's lease under `token` is gone (lost, or handed over): stop acting for it.
/// What is queued is answered "moved" with nothing applied.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StepDown {
    pub token: u64,
}

/// A decision Redis has, and the durability generation it belongs to (see `Durability`).
#[derive(Debug, Clone)]
pub struct Committed {
    pub outcome: Outcome,
    pub generation: u64,
    /// How many times the actor had loaded the outlet from Redis or the ledger when this was
    /// decided; a reload in between makes numbers read before it stale.
    pub load: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OutletError {
    /// Nothing was decided; the request may be retried with the same key.
    #[error("{0}")]
    Unavailable(String),
    /// A new hold refused to keep room for everything else; nothing was decided.
    #[error("{0}")]
    Overloaded(String),
    /// This process does not own the outlet (any more): nothing was decided; the client
    /// retries, and meets the new owner.
    #[error("{0}")]
    Moved(String),
}

/// Bounds and retention an outlet works with (from settings).
#[derive(Debug, Clone)]
pub struct OutletLimits {
    pub batch_size_max: usize,
    pub pending_max: usize,
    pub mailbox_capacity: usize,
    pub res_retain_ms: i64,
    pub event_retain_ms: i64,
    pub outbox_max: u64,
}

struct Pending {
    op: Op,
    /// `None` for the actor's own operations (expiry releases).
    reply: Option<oneshot::Sender<Result<Committed, OutletError>>>,
}

pub struct OutletActor {
    outlet: OutletId,
    /// The fencing token of this process's lease on the outlet; every script checks it.
    token: u64,
    /// The lease is gone: nothing more is sent to Redis.
    stepped_down: bool,
    keys: OutletKeys,
    shared: Shared,
    limits: OutletLimits,
    /// The outlet seq of the last change this actor saw committed.
    seq: u64,
    /// Loads of the outlet's state so far (see `Committed::load`).
    loads: u64,
    /// Live holds and their deadlines.
    held: HashMap<ReservationId, i64>,
    /// Deadlines not yet handed to a release, earliest first.
    expiry: BTreeSet<(i64, ReservationId)>,
    /// Lot expiries not yet handed to an `expire_lot`, earliest first, and each SKU's of them
    /// (to replace a SKU's when its lots change).
    lot_expiry: BTreeSet<(i64, Sku, String)>,
    lots_due: HashMap<Sku, Vec<(i64, String)>>,
    /// Lot expiries handed to an `expire_lot` (queued, in a batch or deferred) and not yet
    /// done: a SKU's later rows still show the lot, which must not queue it again.
    expiring: HashSet<(Sku, String)>,
    wake: Option<(i64, SpawnHandle)>,
    pending: VecDeque<Pending>,
    /// A batch or a reload is in flight.
    busy: bool,
    /// A reload is in flight: new requests get 503 until it is done (what was already
    /// queued waits for it).
    reloading: bool,
    /// The in-memory state may differ from Redis (an error, a refused invariant, lost keys).
    needs_reload: bool,
    drain_waiters: Vec<oneshot::Sender<()>>,
    /// The actor's own operations (expiry releases, lot expiries) waiting for the ledger to
    /// catch up, or for a hold on the lot to be released.
    deferred: Vec<Op>,
    /// Holds whose Redis record broke an invariant: not expired automatically again (that
    /// would loop); logged loudly and left for an operator and the reconciler.
    quarantined: HashSet<ReservationId>,
}

impl OutletActor {
    pub fn new(outlet: OutletId, shared: Shared, limits: OutletLimits, token: u64) -> Self {
        Self {
            keys: shared.store.keys(&outlet),
            outlet,
            token,
            stepped_down: false,
            shared,
            limits,
            seq: 0,
            loads: 0,
            held: HashMap::new(),
            expiry: BTreeSet::new(),
            lot_expiry: BTreeSet::new(),
            lots_due: HashMap::new(),
            expiring: HashSet::new(),
            wake: None,
            pending: VecDeque::new(),
            busy: false,
            reloading: false,
            needs_reload: true,
            drain_waiters: Vec::new(),
            deferred: Vec::new(),
            quarantined: HashSet::new(),
        }
    }

    fn enqueue(
        &mut self,
        op: Op,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Committed, OutletError>> {
        if let Some(refused) = self.no_room(1, op.name()) {
            return Box::pin(async move { Err(refused) });
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push_back(Pending {
            op,
            reply: Some(tx),
        });
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(OutletError::Unavailable("the outlet stopped".into())))
        })
    }

    /// Why `n` more operations named `op` cannot be queued now, if they cannot: the lease is
    /// gone, the outlet is reloading, or the queue has no room for all of them.
    fn no_room(&mut self, n: usize, op: &str) -> Option<OutletError> {
        if self.stepped_down {
            return Some(self.moved());
        }
        if self.reloading {
            self.unavailable("reload");
            return Some(OutletError::Unavailable(
                "the outlet is being reloaded (rebuilt from the ledger if Redis lost it); try again shortly".into(),
            ));
        }
        if self.pending.len() + n > self.limits.pending_max {
            self.unavailable("queue_full");
            self.shed(op, crate::metrics::shed_reason::OUTLET_QUEUE);
            return Some(OutletError::Unavailable(
                "the outlet is overloaded; try again".into(),
            ));
        }
        None
    }

    /// New holds may fill at most half of the queue: the other half is kept for counter
    /// sales and the other facts, confirms, cancels and expiries.
    fn refuse_hold(&self) -> Option<ResponseFuture<Result<Committed, OutletError>>> {
        if self.pending.len() < self.limits.pending_max / 2 {
            return None;
        }
        self.shed("hold", crate::metrics::shed_reason::OUTLET_QUEUE);
        Some(Box::pin(async {
            Err(OutletError::Overloaded(
                "the outlet's queue is half full: new holds wait until it drains; try again shortly"
                    .into(),
            ))
        }))
    }

    fn shed(&self, operation: &str, reason: &str) {
        self.shared
            .metrics
            .shed
            .with_label_values(&[self.outlet.as_str(), operation, reason])
            .inc();
    }

    fn unavailable(&self, cause: &str) {
        self.shared
            .metrics
            .outlet_unavailable
            .with_label_values(&[self.outlet.as_str(), cause])
            .inc();
    }

    /// Starts the next round trip if none is in flight: a reload when the mirror may be
    /// stale, else the next batch.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.stepped_down || self.busy || (self.pending.is_empty() && !self.needs_reload) {
            return;
        }
        self.busy = true;
        if self.needs_reload {
            self.reloading = true;
            let fut = recover(
                self.shared.clone(),
                self.outlet.clone(),
                self.keys.clone(),
                self.limits.clone(),
                self.seq,
                self.token,
            );
            ctx.spawn(fut.into_actor(self).map(|result, act, ctx| {
                act.busy = false;
                act.reloading = false;
                match result {
                    Ok(snapshot) => {
                        act.needs_reload = false;
                        act.install(snapshot, ctx);
                        act.flush(ctx);
                    }
                    Err(e) if e.downcast_ref::<Fenced>().is_some() => {
                        act.refence(Vec::new(), ctx);
                    }
                    Err(e) => {
                        error!(outlet = %act.outlet, error = %format!("{e:#}"), "loading the outlet failed; retrying");
                        act.fail_pending("the outlet's store is unreachable");
                        ctx.run_later(RELOAD_RETRY, |act, ctx| act.flush(ctx));
                    }
                }
                act.answer_drain_waiters();
            }));
            return;
        }
        let n = self.pending.len().min(self.limits.batch_size_max);
        let mut batch: Vec<Pending> = self.pending.drain(..n).collect();
        let loads = self.loads;
        batch.retain_mut(|p| match &p.op {
            Op::Heal { load, .. } if *load != loads => {
                if let Some(tx) = p.reply.take() {
                    let _ = tx.send(Err(OutletError::Unavailable(
                        "the outlet was reloaded after the audit; heal dropped".into(),
                    )));
                }
                false
            }
            _ => true,
        });
        if batch.is_empty() {
            self.busy = false;
            return self.flush(ctx);
        }
        let store = self.shared.store.clone();
        let keys = self.keys.clone();
        let outlet = self.outlet.clone();
        let seen_seq = self.seq;
        let limits = self.limits.clone();
        let token = self.token;
        let node = self.shared.owners.node.clone();
        // The batch's time: its ledger documents carry it, and the ledger lag counts from it.
        let at_ms = now_ms();
        let fut = async move {
            let ops: Vec<&Op> = batch.iter().map(|p| &p.op).collect();
            let args = BatchArgs {
                outlet: outlet.as_str(),
                now_ms: at_ms,
                seen_seq,
                res_retain_ms: limits.res_retain_ms,
                event_retain_ms: limits.event_retain_ms,
                outbox_max: limits.outbox_max,
                token,
                node: &node,
            };
            let reply = store.apply(&keys, &args, &ops).await;
            (batch, reply)
        };
        ctx.spawn(fut.into_actor(self).map(move |(batch, reply), act, ctx| {
            act.busy = false;
            act.finish(batch, reply, at_ms, ctx);
            act.flush(ctx);
            act.answer_drain_waiters();
        }));
    }

    fn finish(
        &mut self,
        batch: Vec<Pending>,
        reply: anyhow::Result<BatchReply>,
        at_ms: i64,
        ctx: &mut Context<Self>,
    ) {
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // The script may or may not have run: reload before the next batch, and let
                // callers retry with their idempotency keys.
                warn!(outlet = %self.outlet, error = %format!("{e:#}"), "outlet batch failed");
                self.needs_reload = true;
                self.unavailable("redis");
                reply_all(
                    batch,
                    "the outlet's store is unreachable; retry with the same key",
                );
                return;
            }
        };
        if reply.fenced {
            self.refence(batch, ctx);
            return;
        }
        if reply.lost {
            warn!(outlet = %self.outlet, "the outlet's Redis state is missing; rebuilding from the ledger");
            self.needs_reload = true;
            for p in batch.into_iter().rev() {
                self.pending.push_front(p);
            }
            return;
        }
        if reply.backlog {
            self.unavailable("ledger_backlog");
            for p in &batch {
                self.shed(p.op.name(), crate::metrics::shed_reason::OUTBOX_FULL);
            }
            let own: Vec<Op> = (batch.iter())
                .filter(|p| p.reply.is_none())
                .map(|p| p.op.clone())
                .collect();
            self.defer(own, ctx);
            reply_all(batch, "the ledger is behind; try again shortly");
            return;
        }
        self.shared
            .metrics
            .outlet_batch_ops
            .with_label_values(&[self.outlet.as_str()])
            .observe(batch.len() as f64);
        let mut wrote = false;
        let generation = self.shared.durable.generation(&self.outlet);
        let load = self.loads;
        for (p, outcome) in batch.into_iter().zip(reply.results) {
            wrote |= self.absorb(&p.op, &outcome, ctx);
            let answer = match outcome {
                Outcome::Broken { .. } => Err(OutletError::Unavailable(
                    "the outlet found an inconsistency and is reloading; try again".into(),
                )),
                outcome => Ok(Committed {
                    outcome,
                    generation,
                    load,
                }),
            };
            if let Some(tx) = p.reply {
                let _ = tx.send(answer);
            }
        }
        if wrote {
            self.shared.durable.committed(&self.outlet, self.seq, at_ms);
            self.shared.signal.mark(&self.outlet);
        }
        self.reschedule(ctx);
    }

    /// Tries the actor's own operations again after `RELEASE_RETRY` (one timer for all).
    fn defer(&mut self, ops: Vec<Op>, ctx: &mut Context<Self>) {
        let retry_was_scheduled = !self.deferred.is_empty();
        self.deferred.extend(ops);
        if !retry_was_scheduled && !self.deferred.is_empty() {
            ctx.run_later(RELEASE_RETRY, |act, ctx| {
                for op in std::mem::take(&mut act.deferred) {
                    act.pending.push_back(Pending { op, reply: None });
                }
                act.flush(ctx);
            });
        }
    }

    /// Keeps a SKU's lot expiries in the queue in step with its lots.
    fn track_lots(&mut self, sku: &Sku, lots: &[Lot]) {
        for (at, lot) in self.lots_due.remove(sku).unwrap_or_default() {
            self.lot_expiry.remove(&(at, sku.clone(), lot));
        }
        if lots.is_empty() {
            return;
        }
        let due: Vec<(i64, String)> = (lots.iter())
            .filter(|l| !self.expiring.contains(&(sku.clone(), l.lot.clone())))
            .map(|l| (l.expires_at, l.lot.clone()))
            .collect();
        for (at, lot) in &due {
            self.lot_expiry.insert((*at, sku.clone(), lot.clone()));
        }
        self.lots_due.insert(sku.clone(), due);
    }

    /// Tells the alert engine which SKUs changed and what sold (a counter sale's units, a
    /// confirmed hold's lines).
    fn tell_alerts(&self, op: &Op, outcome: &Outcome) {
        let inbox = &self.shared.alerts;
        for row in outcome.stock() {
            inbox.changed(&self.outlet, &row.sku);
        }
        match (op, outcome) {
            (
                Op::Movement {
                    kind: LedgerKind::SaleCounter,
                    sku,
                    qty,
                    event_at,
                    ..
                },
                Outcome::Ok { .. },
            ) => inbox.sold(&self.outlet, sku, *event_at, *qty),
            (Op::Confirm { .. }, Outcome::Ok { res: Some(res), .. }) => {
                let at = res.ended_at.unwrap_or_else(crate::domain::now_ms);
                for line in &res.lines {
                    inbox.sold(&self.outlet, &line.sku, at, line.qty.get());
                }
            }
            _ => {}
        }
    }

    /// Takes a committed outcome into the mirror; true when it wrote to the outbox.
    fn absorb(&mut self, op: &Op, outcome: &Outcome, ctx: &mut Context<Self>) -> bool {
        self.check_invariants(op, outcome);
        if let Op::ExpireLot { sku, lot, .. } = op {
            match outcome {
                // Its hold is due for release too (a hold never takes a lot that expires
                // before the hold does): the expiry comes again after the release.
                Outcome::Skipped { reason } if reason == "held" => {
                    self.defer(vec![op.clone()], ctx)
                }
                // The clock went back since it was queued, or the lot of that name is another
                // one now (emptied, then received again): back in the queue at its time now.
                Outcome::Skipped { reason } if reason == "not_due" => {
                    self.expiring.remove(&(sku.clone(), lot.clone()));
                    let lots = self.shared.stock.lots(&self.outlet, sku);
                    self.track_lots(sku, &lots);
                }
                _ => {
                    self.expiring.remove(&(sku.clone(), lot.clone()));
                }
            }
        }
        if let (
            Op::ExpireLot { .. },
            Outcome::Ok {
                result: Some(r), ..
            },
        ) = (op, outcome)
        {
            let written_off: i64 = r.lots.iter().map(|d| -d.d_qty).sum();
            (self.shared.metrics.lot_expired_units)
                .with_label_values(&[self.outlet.as_str()])
                .inc_by(written_off.max(0) as u64);
        }
        for row in outcome.stock() {
            let after = row.counters();
            self.track_lots(&row.sku, &row.lots);
            (self.shared.stock).record(&self.outlet, &row.sku, after, row.lots());
            self.shared
                .feed
                .stock_changed(&self.outlet, &row.sku, after);
            let event = LiveEvent::Stock {
                outlet: self.outlet.clone(),
                sku: row.sku.clone(),
                counters: after,
            };
            self.shared.hub.publish(event);
        }
        // After the stock view has the change: the engine judges from it.
        self.tell_alerts(op, outcome);
        if let (Op::Confirm { .. }, Outcome::Ok { res: Some(res), .. }) = (op, outcome) {
            self.shared.feed.order_confirmed(res.clone());
            self.shared
                .hub
                .publish(LiveEvent::Order(std::sync::Arc::new(res.clone())));
        }
        if let Some(res) = outcome.reservation() {
            self.track(res);
        }
        match outcome {
            Outcome::Ok { seq, .. } | Outcome::Expired { seq: Some(seq), .. } => {
                self.seq = *seq;
                if matches!(
                    op,
                    Op::Release {
                        reason: ReleaseReason::Expired,
                        ..
                    }
                ) {
                    self.shared.metrics.expirations.inc();
                }
                true
            }
            Outcome::Broken { message } => {
                error!(outlet = %self.outlet, %message, "an outlet invariant did not hold in Redis; reloading");
                if let Op::Release { id, .. } | Op::Confirm { id, .. } = op {
                    self.quarantined.insert(id.clone());
                }
                self.needs_reload = true;
                false
            }
            _ => false,
        }
    }

    /// What this actor, the outlet's single writer, keeps true of every change it commits
    /// (ARCHITECTURE.md, Architecture invariants), checked before the change reaches the
    /// stock view, the feed or the hub. A change that breaks one is a bug in the scripts or a
    /// second writer: the process stops (`invariant`) rather than go on from it.
    fn check_invariants(&self, op: &Op, outcome: &Outcome) {
        let was_held =
            |id: &ReservationId| self.held.contains_key(id) || self.quarantined.contains(id);
        let broken = broken_invariant(self.seq, was_held, op, outcome);
        invariant(broken.is_none(), || {
            format!("outlet {}: {}", self.outlet, broken.unwrap_or_default())
        });
    }

    /// Keeps the live-hold set and the expiry queue in step with a reservation's status.
    fn track(&mut self, res: &ResRecord) {
        if res.status == ReservationStatus::Held && !self.quarantined.contains(&res.id) {
            self.held.insert(res.id.clone(), res.expires_at);
            self.expiry.insert((res.expires_at, res.id.clone()));
        } else if let Some(at) = self.held.remove(&res.id) {
            self.expiry.remove(&(at, res.id.clone()));
        }
    }

    fn install(&mut self, snapshot: Snapshot, ctx: &mut Context<Self>) {
        if snapshot.seq < self.seq {
            // Seqs above this one will be given out again: waiters for the lost ones must not
            // take the new documents for theirs.
            warn!(outlet = %self.outlet, from = self.seq, to = snapshot.seq, "outlet state went back; new durability generation");
            self.shared.durable.new_generation(&self.outlet);
        }
        self.seq = snapshot.seq;
        self.shared.durable.loaded(&self.outlet, snapshot.seq);
        self.loads += 1;
        let mut lots = snapshot.lots;
        let rows: Vec<_> = (snapshot.counters.into_iter())
            .map(|(sku, c)| {
                let lots = lots.remove(&sku).unwrap_or_default();
                (sku, c, lots)
            })
            .collect();
        self.held.clear();
        self.expiry.clear();
        self.lot_expiry.clear();
        self.lots_due.clear();
        // What is queued or deferred still runs (a lot gone by then is skipped as `gone`).
        self.expiring.clear();
        for p in self.pending.iter().map(|p| &p.op).chain(&self.deferred) {
            if let Op::ExpireLot { sku, lot, .. } = p {
                self.expiring.insert((sku.clone(), lot.clone()));
            }
        }
        for (sku, _, lots) in &rows {
            self.track_lots(sku, lots);
        }
        (self.shared.stock).replace(
            &self.outlet,
            (rows.into_iter()).map(|(sku, c, lots)| (sku, c, lots.into())),
        );
        for res in &snapshot.held {
            self.track(res);
        }
        info!(outlet = %self.outlet, seq = self.seq, holds = self.held.len(), "outlet loaded");
        self.reschedule(ctx);
    }

    /// Keeps one timer, for the earliest deadline of a hold or a lot.
    fn reschedule(&mut self, ctx: &mut Context<Self>) {
        let hold = self.expiry.first().map(|(at, _)| *at);
        let lot = self.lot_expiry.first().map(|(at, ..)| *at);
        let Some(at) = hold.into_iter().chain(lot).min() else {
            if let Some((_, handle)) = self.wake.take() {
                ctx.cancel_future(handle);
            }
            return;
        };
        if self
            .wake
            .as_ref()
            .is_some_and(|(scheduled, _)| *scheduled <= at)
        {
            return;
        }
        if let Some((_, handle)) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        // +1 ms: the script releases only when now >= expires_at.
        let delay = Duration::from_millis((at - now_ms()).max(0) as u64 + 1);
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wake = None;
            act.expire_due(ctx);
        });
        self.wake = Some((at, handle));
    }

    fn expire_due(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        while self.expiry.first().is_some_and(|(at, _)| *at <= now) {
            let (_, id) = self.expiry.pop_first().expect("checked first");
            let op = Op::Release {
                id,
                reason: ReleaseReason::Expired,
                rerouted_to: None,
                by: "expiry".into(),
            };
            self.pending.push_back(Pending { op, reply: None });
        }
        // After the releases: a hold due now lets go of its lots' units before they expire.
        while self.lot_expiry.first().is_some_and(|(at, ..)| *at <= now) {
            let (at, sku, lot) = self.lot_expiry.pop_first().expect("checked first");
            if let Some(due) = self.lots_due.get_mut(&sku) {
                due.retain(|d| *d != (at, lot.clone()));
            }
            self.expiring.insert((sku.clone(), lot.clone()));
            let op = Op::ExpireLot {
                sku,
                lot,
                by: "expiry".into(),
            };
            self.pending.push_back(Pending { op, reply: None });
        }
        self.flush(ctx);
        self.reschedule(ctx);
    }

    fn moved(&self) -> OutletError {
        OutletError::Moved(format!(
            "outlet {} is moving to another process of the service; nothing was changed, try \
             again shortly",
            self.outlet
        ))
    }

    /// A script refused this actor's token: its lease lapsed (a pause, Redis unreachable or
    /// restarted empty) or another process took it. If nobody else holds the lease now, this
    /// process takes it again under a new token and reloads the outlet before the batch runs
    /// again (another owner may have written meanwhile); else it steps down.
    fn refence(&mut self, batch: Vec<Pending>, ctx: &mut Context<Self>) {
        self.shared
            .metrics
            .fenced_writes
            .with_label_values(&[self.outlet.as_str()])
            .inc();
        for p in batch.into_iter().rev() {
            self.pending.push_front(p);
        }
        self.retake(ctx);
    }

    fn retake(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let (store, keys) = (self.shared.store.clone(), self.keys.clone());
        let owners = self.shared.owners.clone();
        let fut = async move {
            let ttl = owners.lease.as_millis() as u64;
            // Only a free lease: one held under this node id is a newer run's.
            store.acquire_lease(&keys, &owners.node, ttl, false).await
        };
        ctx.spawn(fut.into_actor(self).map(|taken, act, ctx| {
            // Busy until the lease is settled: nothing else goes to Redis meanwhile.
            act.busy = taken.is_err();
            let owners = act.shared.owners.clone();
            match taken {
                Ok(Some(token)) if owners.owns(&act.outlet) => {
                    warn!(outlet = %act.outlet, old = act.token, token, "the outlet's lease had lapsed; taken again, reloading");
                    owners.retoken(&act.outlet, act.token, token);
                    act.count_ownership("renewed");
                    act.token = token;
                    act.needs_reload = true;
                    act.flush(ctx);
                }
                Ok(taken) => {
                    if let Some(token) = taken {
                        // Stepped down meanwhile: give back what was just taken.
                        let (store, keys, node) = (act.shared.store.clone(), act.keys.clone(), owners.node.clone());
                        actix::spawn(async move { let _ = store.release_lease(&keys, &node, token).await; });
                    }
                    warn!(outlet = %act.outlet, token = act.token, "another process owns the outlet now (fenced); stepping down");
                    if owners.remove_if(&act.outlet, act.token) {
                        act.count_ownership("lost");
                    }
                    act.step_down(ctx);
                }
                Err(e) => {
                    warn!(outlet = %act.outlet, error = %format!("{e:#}"), "taking the outlet's lease again failed; retrying");
                    act.needs_reload = true;
                    // `busy` stays set: the retry is the only round trip in flight.
                    ctx.run_later(RELOAD_RETRY, |act, ctx| act.retake(ctx));
                }
            }
            act.answer_drain_waiters();
        }));
    }

    fn count_ownership(&self, change: &str) {
        self.shared
            .metrics
            .ownership_changes
            .with_label_values(&[self.outlet.as_str(), change])
            .inc();
    }

    /// Stops acting for the outlet: what is queued is answered "moved" (nothing of it was
    /// applied), confirms and movements still waiting for their ledger document answer 503
    /// (recorded; the new owner's writer writes it, and a retry gets the final answer), and
    /// the actor stops, with its timers.
    fn step_down(&mut self, ctx: &mut Context<Self>) {
        if self.stepped_down {
            return;
        }
        self.stepped_down = true;
        let moved = self.moved();
        for p in self.pending.drain(..) {
            if let Some(tx) = p.reply {
                let _ = tx.send(Err(moved.clone()));
            }
        }
        self.shared.durable.new_generation(&self.outlet);
        let metrics = &self.shared.metrics;
        (metrics.owned_outlets)
            .with_label_values(&[self.shared.owners.node.as_str(), self.outlet.as_str()])
            .set(0);
        // Holds at risk are the owner's to report (from its next re-route pass on).
        for gauge in [&metrics.at_risk_holds, &metrics.at_risk_units] {
            gauge.with_label_values(&[self.outlet.as_str()]).set(0);
        }
        info!(outlet = %self.outlet, token = self.token, "stepped down from the outlet");
        for tx in self.drain_waiters.drain(..) {
            let _ = tx.send(());
        }
        ctx.stop();
    }

    fn fail_pending(&mut self, message: &str) {
        self.unavailable("reload");
        reply_all(self.pending.drain(..).collect(), message);
    }

    fn answer_drain_waiters(&mut self) {
        if !self.busy && self.pending.is_empty() {
            for tx in self.drain_waiters.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

fn reply_all(batch: Vec<Pending>, message: &str) {
    for p in batch {
        if let Some(tx) = p.reply {
            let _ = tx.send(Err(OutletError::Unavailable(message.to_owned())));
        }
    }
}

/// Reads the outlet from Redis. When Redis is missing anything the actor (`seen_seq`) or the
/// ledger has seen, decides under the ledger gate, so that no writer pass is half-way: if the
/// ledger is ahead of Redis, the outlet is rebuilt from the ledger; otherwise Redis keeps what
/// it has (what it lost was never durable, and its waiters are failed by the new generation).
async fn recover(
    shared: Shared,
    outlet: OutletId,
    keys: OutletKeys,
    limits: OutletLimits,
    seen_seq: u64,
    token: u64,
) -> anyhow::Result<Snapshot> {
    if let Some(snapshot) = shared.store.snapshot(&keys).await? {
        if snapshot.seq >= seen_seq.max(shared.durable.get(&outlet)) {
            return Ok(snapshot);
        }
    }
    let _gate = shared.ledger_gate.lock().await;
    let in_ledger = shared.ledger.max_seq(&outlet).await?;
    let current = shared.store.snapshot(&keys).await?;
    if let Some(snapshot) = current.as_ref().filter(|s| s.seq >= in_ledger) {
        return Ok(snapshot.clone());
    }
    if in_ledger == 0 {
        return Ok(Snapshot::default());
    }
    let started = std::time::Instant::now();
    let loaded = crate::rebuild::load_projection(
        &shared.ledger,
        &outlet,
        true,
        Some(in_ledger),
        crate::ledger::Pace::FULL,
        |_| {},
    )
    .await?;
    let projection = &loaded.projection;
    let plan = projection.restore_plan(now_ms(), limits.res_retain_ms, limits.event_retain_ms)?;
    let behind = current.is_some();
    let mode = match behind {
        true => RestoreMode::Replace,
        false => RestoreMode::IfMissing,
    };
    let fence = (shared.owners.node.as_str(), token);
    shared.store.restore(&outlet, &plan, mode, fence).await?;
    info!(
        %outlet,
        seq = projection.seq,
        skus = projection.counters.len(),
        checkpoint_seq = loaded.checkpoint_seq,
        folded = loaded.folded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        redis_was_behind = behind,
        "outlet rebuilt from the ledger"
    );
    shared
        .store
        .snapshot(&keys)
        .await?
        .context("the outlet's state vanished right after its restore")
}

impl Actor for OutletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.limits.mailbox_capacity);
        // Load (or rebuild) before the first message is handled.
        self.busy = true;
        let fut = recover(
            self.shared.clone(),
            self.outlet.clone(),
            self.keys.clone(),
            self.limits.clone(),
            0,
            self.token,
        );
        ctx.wait(fut.into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(snapshot) => {
                    act.needs_reload = false;
                    act.install(snapshot, ctx);
                }
                Err(e) if e.downcast_ref::<Fenced>().is_some() => act.refence(Vec::new(), ctx),
                Err(e) => {
                    // needs_reload stays set, so the retry (or the next request) loads it.
                    error!(outlet = %act.outlet, error = %format!("{e:#}"), "loading the outlet failed; retrying");
                    ctx.run_later(RELOAD_RETRY, |act, ctx| act.flush(ctx));
                }
            }
        }));
    }
}

impl Handler<Reserve> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: Reserve, ctx: &mut Self::Context) -> Self::Result {
        if msg.sheddable {
            if let Some(refused) = self.refuse_hold() {
                return refused;
            }
        }
        let op = Op::Reserve {
            id: ReservationId::new(&self.outlet),
            idem: msg.idem,
            hash: msg.hash,
            lines: msg.lines,
            expires_at: now_ms() + msg.ttl_ms,
            channel: msg.channel,
            customer_ref: msg.customer_ref,
            pin: msg.pin,
            by: msg.by,
        };
        self.enqueue(op, ctx)
    }
}

impl Handler<Confirm> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: Confirm, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(
            Op::Confirm {
                id: msg.id,
                payment_ref: msg.payment_ref,
                by: msg.by,
            },
            ctx,
        )
    }
}

impl Handler<Cancel> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(
            Op::Release {
                id: msg.id,
                reason: ReleaseReason::Cancelled,
                rerouted_to: None,
                by: msg.by,
            },
            ctx,
        )
    }
}

impl Handler<ApplyMovement> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: ApplyMovement, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(msg.into_op(), ctx)
    }
}

impl ApplyMovement {
    fn into_op(self) -> Op {
        Op::Movement {
            key: self.key,
            hash: self.hash,
            kind: self.kind,
            sku: self.sku,
            qty: self.qty,
            event_id: self.event_id,
            event_at: self.event_at_ms,
            note: self.note,
            counterpart: self.counterpart.map(|o| o.to_string()),
            lot: self.lot,
            lots: self.lots,
            by: self.by,
        }
    }
}

impl Handler<ApplyMovements> for OutletActor {
    type Result = ResponseFuture<Result<Vec<Result<Committed, OutletError>>, OutletError>>;

    fn handle(&mut self, msg: ApplyMovements, ctx: &mut Self::Context) -> Self::Result {
        if let Some(refused) = self.no_room(msg.0.len(), "movement") {
            return Box::pin(async move { Err(refused) });
        }
        let mut answers = Vec::with_capacity(msg.0.len());
        for m in msg.0 {
            let (tx, rx) = oneshot::channel();
            self.pending.push_back(Pending {
                op: m.into_op(),
                reply: Some(tx),
            });
            answers.push(rx);
        }
        self.flush(ctx);
        Box::pin(async move {
            let mut out = Vec::with_capacity(answers.len());
            for rx in answers {
                out.push(rx.await.unwrap_or_else(|_| {
                    Err(OutletError::Unavailable("the outlet stopped".into()))
                }));
            }
            Ok(out)
        })
    }
}

impl Handler<Reroute> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: Reroute, ctx: &mut Self::Context) -> Self::Result {
        let op = Op::Release {
            id: msg.id,
            reason: ReleaseReason::Rerouted,
            rerouted_to: Some(msg.to),
            by: "reroute".into(),
        };
        self.enqueue(op, ctx)
    }
}

impl Handler<HeldIds> for OutletActor {
    type Result = MessageResult<HeldIds>;

    fn handle(&mut self, _: HeldIds, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.held.keys().cloned().collect())
    }
}

impl Handler<GetReservation> for OutletActor {
    type Result = ResponseActFuture<Self, Result<Option<ResRecord>, OutletError>>;

    fn handle(&mut self, msg: GetReservation, _: &mut Self::Context) -> Self::Result {
        let store = self.shared.store.clone();
        let keys = self.keys.clone();
        let read = async move { store.reservation(&keys, &msg.id).await };
        Box::pin(read.into_actor(self).map(|read, act, ctx| {
            let (res, seq) = read.map_err(|e| {
                tracing::warn!(outlet = %act.outlet, error = %format!("{e:#}"), "reading a reservation failed");
                OutletError::Unavailable(crate::store::STORE_DOWN.into())
            })?;
            let known = act.seq.max(act.shared.durable.get(&act.outlet));
            if act.needs_reload || act.reloading || seq < known {
                // Redis lost the outlet's state: "not found" would be a wrong answer.
                act.needs_reload = true;
                act.flush(ctx);
                act.unavailable("reload");
                return Err(OutletError::Unavailable(
                    "the outlet is being rebuilt from the ledger; try again shortly".into(),
                ));
            }
            Ok(res)
        }))
    }
}

impl Handler<Audit> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, _: Audit, ctx: &mut Self::Context) -> Self::Result {
        self.enqueue(Op::Audit, ctx)
    }
}

impl Handler<Heal> for OutletActor {
    type Result = ResponseFuture<Result<Committed, OutletError>>;

    fn handle(&mut self, msg: Heal, ctx: &mut Self::Context) -> Self::Result {
        let op = Op::Heal {
            lines: msg.lines,
            load: msg.load,
        };
        self.enqueue(op, ctx)
    }
}

impl Handler<Drain> for OutletActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.drain_waiters.push(tx);
        self.answer_drain_waiters();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Stop> for OutletActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<StepDown> for OutletActor {
    type Result = ();

    fn handle(&mut self, msg: StepDown, ctx: &mut Self::Context) {
        if msg.token == self.token {
            self.step_down(ctx);
        }
    }
}

/// The invariant a committed change breaks, if any, given the outlet's seq before it and
/// whether a reservation was live (held or quarantined) at the outlet:
/// - the seq never goes back (and each change has its own);
/// - a hold never takes a SKU below zero available;
/// - a hold's units go back once: the change that ends a hold (confirm, cancel, expiry,
///   re-route) finds it live here.
fn broken_invariant(
    last_seq: u64,
    was_held: impl Fn(&ReservationId) -> bool,
    op: &Op,
    outcome: &Outcome,
) -> Option<String> {
    let seq = match outcome {
        Outcome::Ok { seq, .. } | Outcome::Expired { seq: Some(seq), .. } => *seq,
        _ => return None,
    };
    if seq <= last_seq {
        return Some(format!("a change at seq {seq} after seq {last_seq}"));
    }
    if let Op::Reserve { .. } = op {
        if let Some(row) = outcome
            .stock()
            .iter()
            .find(|r| r.counters().available() < 0)
        {
            return Some(format!(
                "a hold left {} at {} available",
                row.sku,
                row.counters().available()
            ));
        }
    }
    let ended = match outcome {
        Outcome::Ok { res: Some(res), .. } | Outcome::Expired { res, .. } => Some(res),
        _ => None,
    };
    match ended.filter(|r| r.ended_seq == Some(seq)) {
        Some(res) if !was_held(&res.id) => Some(format!(
            "hold {} ended at seq {seq} but was not held",
            res.id
        )),
        _ => None,
    }
}

/// Stops the process when `holds` is false. A panic would end only the actor's task (actix
/// runs it as one), leaving an outlet that answers 503 while `/readyz` stays green; an
/// outlet's state that broke an invariant must not be served or built on. The supervisor
/// (systemd, the container runtime) restarts the service, which loads the outlet again.
fn invariant(holds: bool, what: impl FnOnce() -> String) {
    if !holds {
        let what = what();
        error!(invariant = %what, "an outlet invariant is broken; stopping the process");
        eprintln!("shelfsync: an outlet invariant is broken: {what}");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Qty;
    use crate::store::{ReleaseReason, StockRow};

    fn outlet() -> OutletId {
        OutletId::parse("outlet", "indore-vijay-nagar").unwrap()
    }

    fn sku() -> Sku {
        Sku::parse("sku", "kaju-katli-1kg").unwrap()
    }

    fn hold(id: &ReservationId, status: ReservationStatus, ended_seq: Option<u64>) -> ResRecord {
        ResRecord {
            id: id.clone(),
            status,
            lines: vec![Line {
                sku: sku(),
                qty: Qty::parse("qty", 2, 100).unwrap(),
            }],
            expires_at: 1_000,
            channel: Channel::Web,
            customer_ref: None,
            idem: IdempotencyKey::parse("idem", "k1").unwrap(),
            hash: "h".into(),
            created_at: 0,
            held_seq: 5,
            payment_ref: None,
            ended_seq,
            ended_at: ended_seq.map(|_| 900),
            pin: None,
            rerouted_to: None,
            lots: Vec::new(),
        }
    }

    fn reserve(id: &ReservationId) -> Op {
        Op::Reserve {
            id: id.clone(),
            idem: IdempotencyKey::parse("idem", "k1").unwrap(),
            hash: "h".into(),
            lines: Vec::new(),
            expires_at: 1_000,
            channel: Channel::Web,
            customer_ref: None,
            pin: None,
            by: "test".into(),
        }
    }

    fn cancel(id: &ReservationId) -> Op {
        Op::Release {
            id: id.clone(),
            reason: ReleaseReason::Cancelled,
            rerouted_to: None,
            by: "test".into(),
        }
    }

    fn ok(seq: u64, res: ResRecord, available: i64) -> Outcome {
        Outcome::Ok {
            seq,
            res: Some(res),
            result: None,
            stock: vec![StockRow {
                sku: sku(),
                on_hand: 10,
                reserved: 10 - available,
                seq,
                lots: Vec::new(),
            }],
        }
    }

    #[test]
    fn a_hold_and_its_cancel_keep_every_invariant() {
        let id = ReservationId::new(&outlet());
        let held = ok(6, hold(&id, ReservationStatus::Held, None), 8);
        assert_eq!(broken_invariant(5, |_| false, &reserve(&id), &held), None);
        let cancelled = ok(7, hold(&id, ReservationStatus::Cancelled, Some(7)), 10);
        assert_eq!(
            broken_invariant(6, |_| true, &cancel(&id), &cancelled),
            None
        );
        // A replay or a no-op changed nothing: nothing to check.
        let noop = Outcome::Noop {
            res: hold(&id, ReservationStatus::Cancelled, Some(7)),
        };
        assert_eq!(broken_invariant(7, |_| false, &cancel(&id), &noop), None);
    }

    #[test]
    fn a_seq_that_does_not_move_forward_is_caught() {
        let id = ReservationId::new(&outlet());
        for seq in [4, 5] {
            let held = ok(seq, hold(&id, ReservationStatus::Held, None), 8);
            let broken = broken_invariant(5, |_| false, &reserve(&id), &held);
            assert!(
                broken.is_some_and(|b| b.contains("after seq 5")),
                "seq {seq}"
            );
        }
    }

    #[test]
    fn a_hold_that_leaves_a_sku_below_zero_is_caught() {
        let id = ReservationId::new(&outlet());
        let held = ok(6, hold(&id, ReservationStatus::Held, None), -1);
        let broken = broken_invariant(5, |_| false, &reserve(&id), &held);
        assert!(broken.is_some_and(|b| b.contains("at -1 available")));
        // A counter sale may (it is a fact, and the shortfall is reported).
        let sale = Op::Movement {
            key: "e1".into(),
            hash: "h".into(),
            kind: crate::domain::LedgerKind::SaleCounter,
            sku: sku(),
            qty: 11,
            event_id: "e1".into(),
            event_at: 0,
            note: None,
            counterpart: None,
            lot: None,
            lots: Vec::new(),
            by: "test".into(),
        };
        let sold = Outcome::Ok {
            seq: 6,
            res: None,
            result: None,
            stock: vec![StockRow {
                sku: sku(),
                on_hand: -1,
                reserved: 0,
                seq: 6,
                lots: Vec::new(),
            }],
        };
        assert_eq!(broken_invariant(5, |_| false, &sale, &sold), None);
    }

    #[test]
    fn a_hold_ended_twice_is_caught() {
        let id = ReservationId::new(&outlet());
        let cancelled = ok(7, hold(&id, ReservationStatus::Cancelled, Some(7)), 10);
        let broken = broken_invariant(6, |_| false, &cancel(&id), &cancelled);
        assert!(broken.is_some_and(|b| b.contains("was not held")));
        // Released at expiry by a late confirm (410): the same rule.
        let expired = Outcome::Expired {
            res: hold(&id, ReservationStatus::Expired, Some(7)),
            seq: Some(7),
            stock: Vec::new(),
        };
        let confirm = Op::Confirm {
            id: id.clone(),
            payment_ref: "pay_1".into(),
            by: "test".into(),
        };
        assert!(broken_invariant(6, |_| false, &confirm, &expired).is_some());
        assert_eq!(broken_invariant(6, |_| true, &confirm, &expired), None);
    }
}
