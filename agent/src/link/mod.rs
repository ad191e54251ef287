//! The link to shelfsync: forwards every pending event until shelfsync answers for it, and
//! brings the outlet's stock back. Two transports share what is here: MQTT 5 (`mqtt.rs`,
//! the default) and HTTP (`http.rs`, where MQTT is not allowed; the stock then comes over
//! shelfsync's SSE stream, `stream.rs`).
//!
//! An event is settled only by shelfsync's own word (an ack on `acks/{outlet}`, or the
//! answer to `POST /v1/movements`), never by a broker's PUBACK: a broker that drops a
//! message it took (a full queue, a restart without persistence) must not lose a sale. An
//! event with no word after `forward.resend_secs` is sent again; its event id makes every
//! copy after the first a no-op at shelfsync, which answers it again.

pub mod http;
pub mod mqtt;
pub mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::store::{blocking, Fate, StockValue, Store};
use shelfsync::domain::now_ms;

/// How often the stock values received are written to the store (one transaction each).
const STOCK_FLUSH: Duration = Duration::from_millis(250);
/// The most stock values waiting for their write; a SKU's newer value replaces its older one,
/// so this is only reached by an outlet with more SKUs than this.
const STOCK_WAITING_MAX: usize = 100_000;
/// Acks settled per store transaction at most.
const SETTLE_BATCH_MAX: usize = 1_000;

/// The link's state, for the status page and the stock read.
pub struct LinkState {
    up: AtomicBool,
    /// When the link last went up or down, ms since the epoch.
    since_ms: AtomicI64,
    /// When anything last came from the other end (a packet, an answer).
    heard_ms: AtomicI64,
    metrics: Arc<Metrics>,
}

impl LinkState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            up: AtomicBool::new(false),
            since_ms: AtomicI64::new(0),
            heard_ms: AtomicI64::new(0),
            metrics,
        }
    }

    pub fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            self.since_ms.store(now_ms(), Ordering::Release);
            self.metrics.link_up.set(i64::from(up));
            if up {
                info!("the link to shelfsync is up");
            } else {
                self.metrics.link_losses.inc();
            }
        }
        if up {
            self.heard();
        }
    }

    pub fn heard(&self) {
        self.heard_ms.store(now_ms(), Ordering::Release);
    }

    pub fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn since_ms(&self) -> i64 {
        self.since_ms.load(Ordering::Acquire)
    }

    pub fn heard_ms(&self) -> i64 {
        self.heard_ms.load(Ordering::Acquire)
    }
}

/// An event sent and not yet answered.
struct Sent {
    seq: i64,
    payload: String,
    at: tokio::time::Instant,
}

/// The events in flight to shelfsync and the way to settle them; shared by a transport's
/// sender and whatever receives shelfsync's answers.
pub struct Outbox {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Woken when a sale is recorded or an answer frees room.
    pub wake: Notify,
    inflight: Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    sent: HashMap<String, Sent>,
    /// The highest store seq handed out; pending events past it are new.
    cursor: i64,
    /// One more at every `restart`: a batch read from the store across a restart is not
    /// handed out (it would move the cursor back past what the restart asked to send again).
    generation: u64,
}

impl Outbox {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            wake: Notify::new(),
            inflight: Mutex::new(InFlight::default()),
        })
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inflight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what was in flight: everything pending is sent again from the start (a new
    /// session at the broker, whose acks queued for the old one are gone).
    pub fn restart(&self) {
        let mut f = self.inflight();
        f.sent.clear();
        f.cursor = 0;
        f.generation += 1;
    }

    pub fn in_flight(&self) -> usize {
        self.inflight().sent.len()
    }

    /// Up to `room` pending events not yet sent, now marked sent: `(event_id, payload)`.
    pub async fn next(&self, room: usize) -> anyhow::Result<Vec<(String, String)>> {
        if room == 0 {
            return Ok(Vec::new());
        }
        let (cursor, generation) = {
            let f = self.inflight();
            (f.cursor, f.generation)
        };
        let batch = blocking(&self.store, move |s| s.pending_after(cursor, room)).await?;
        let mut f = self.inflight();
        if f.generation != generation {
            // Restarted meanwhile: the next call reads from the start.
            return Ok(Vec::new());
        }
        let now = tokio::time::Instant::now();
        let mut out = Vec::with_capacity(batch.len());
        for p in batch {
            f.cursor = f.cursor.max(p.seq);
            if f.sent.contains_key(&p.event_id) {
                continue;
            }
            f.sent.insert(
                p.event_id.clone(),
                Sent {
                    seq: p.seq,
                    payload: p.payload.clone(),
                    at: now,
                },
            );
            out.push((p.event_id, p.payload));
        }
        self.metrics
            .sent
            .with_label_values(&["first"])
            .inc_by(out.len() as u64);
        Ok(out)
    }

    /// Events handed out by `next` or `overdue` that were not sent after all: they go first
    /// in the next round.
    pub fn unsend(&self, event_ids: &[String]) {
        let mut f = self.inflight();
        for id in event_ids {
            if let Some(s) = f.sent.remove(id) {
                f.cursor = f.cursor.min(s.seq - 1);
            }
        }
    }

    /// Events sent longer ago than `after` with no answer, now marked sent again.
    pub fn overdue(&self, after: Duration) -> Vec<(String, String)> {
        let mut f = self.inflight();
        let now = tokio::time::Instant::now();
        let mut out: Vec<(i64, String, String)> = (f.sent.iter_mut())
            .filter(|(_, s)| now.duration_since(s.at) >= after)
            .map(|(id, s)| {
                s.at = now;
                (s.seq, id.clone(), s.payload.clone())
            })
            .collect();
        out.sort_unstable();
        self.metrics
            .sent
            .with_label_values(&["resend"])
            .inc_by(out.len() as u64);
        out.into_iter().map(|(_, id, p)| (id, p)).collect()
    }

    /// Takes shelfsync's answers into the store; what they settle leaves the window.
    pub async fn settle(&self, fates: Vec<(String, Fate)>) -> anyhow::Result<()> {
        if fates.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let ids: Vec<String> = fates.iter().map(|(id, _)| id.clone()).collect();
        let settled = blocking(&self.store, move |s| s.settle(&fates, now)).await?;
        {
            let mut f = self.inflight();
            for id in &ids {
                f.sent.remove(id);
            }
        }
        for s in &settled {
            let result = if s.applied { "applied" } else { "rejected" };
            self.metrics.settled.with_label_values(&[result]).inc();
            if s.applied {
                self.metrics
                    .apply_seconds
                    .observe((now - s.created_ms).max(0) as f64 / 1000.0);
            } else {
                warn!(event_id = %s.event_id, "shelfsync rejected a sale's line; it is kept for the operator (status page)");
            }
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// Takes answers from `rx` and settles them in batches. A store error is retried with the
/// batch in hand; meanwhile `rx` fills, and what finds it full is dropped by its sender (the
/// lines stay pending and are answered again).
pub async fn settle_from(outbox: Arc<Outbox>, mut rx: tokio::sync::mpsc::Receiver<(String, Fate)>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < SETTLE_BATCH_MAX {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        while let Err(e) = outbox.settle(batch.clone()).await {
            error!(error = %format!("{e:#}"), "settling answers in the store failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}

/// Stock values on their way to the store: the newest per SKU, written every `STOCK_FLUSH`.
pub struct StockInbox {
    waiting: Mutex<HashMap<String, StockValue>>,
    /// At most this many SKUs wait.
    max: usize,
    metrics: Arc<Metrics>,
}

impl StockInbox {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_max(STOCK_WAITING_MAX, metrics)
    }

    fn with_max(max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            max,
            metrics,
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, StockValue>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `value` unless a newer one of its SKU waits. A value of yet another SKU past
    /// the bound is dropped and counted (`stock_dropped_total`); the next value of that SKU,
    /// or the next reseed, brings it.
    pub fn put(&self, value: StockValue) {
        let mut w = self.waiting();
        match w.get(&value.sku) {
            Some(old) if old.seq > value.seq => {}
            None if w.len() >= self.max => self.metrics.stock_dropped.inc(),
            _ => {
                w.insert(value.sku.clone(), value);
            }
        }
    }

    fn take(&self) -> Vec<StockValue> {
        self.waiting().drain().map(|(_, v)| v).collect()
    }
}

/// Writes the stock values received, every `STOCK_FLUSH`.
pub async fn write_stock(inbox: Arc<StockInbox>, store: Arc<Store>) {
    let mut tick = tokio::time::interval(STOCK_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let values = inbox.take();
        if values.is_empty() {
            continue;
        }
        let n = values.len() as u64;
        let kept = values.clone();
        let now = now_ms();
        match blocking(&store, move |s| s.put_stock(&values, now)).await {
            Ok(()) => inbox.metrics.stock_updates.inc_by(n),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "writing stock values failed; keeping them for the next write");
                kept.into_iter().for_each(|v| inbox.put(v));
            }
        }
    }
}

/// Capped exponential backoff with jitter (half to all of the delay).
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64) -> Self {
        let min = Duration::from_millis(min_ms);
        Self {
            min,
            max: Duration::from_millis(max_ms),
            next: min,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    pub async fn wait(&mut self) {
        let jittered = self.next.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
        tokio::time::sleep(jittered).await;
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(sku: &str, seq: i64) -> StockValue {
        StockValue {
            sku: sku.into(),
            on_hand: seq,
            reserved: 0,
            available: seq,
            seq,
            at: String::new(),
        }
    }

    #[test]
    fn the_stock_inbox_keeps_the_newest_per_sku_and_counts_what_it_drops_past_its_bound() {
        let metrics = Arc::new(Metrics::new());
        let inbox = StockInbox::with_max(2, metrics.clone());
        inbox.put(value("a", 2));
        inbox.put(value("a", 1));
        inbox.put(value("b", 1));
        inbox.put(value("c", 1));
        inbox.put(value("b", 3));
        assert_eq!(metrics.stock_dropped.get(), 1, "c found the inbox full");
        let mut taken = inbox.take();
        taken.sort_by(|x, y| x.sku.cmp(&y.sku));
        assert_eq!(taken, vec![value("a", 2), value("b", 3)]);
        inbox.put(value("c", 1));
        assert_eq!(inbox.take(), vec![value("c", 1)], "room again once written");
    }
}
