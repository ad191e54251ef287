//! What the run measures: per operation, latency from the intended send time (whole run
//! and by time bucket) and every status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// The operations the report lists.
pub const OPS: [&str; 6] = [
    "hold", "confirm", "cancel", "movement", "pos_sale", "whatsapp",
];

/// Buckets a timeline keeps (about 25 KB each): 30 minutes of one-second buckets, five hours
/// of ten-second ones.
pub const TIMELINE_BUCKETS_MAX: usize = 1800;

pub(crate) static BUCKET_SECS: OnceLock<u64> = OnceLock::new();

/// Latency histograms by time bucket of the run (`--bucket-secs` wide, from the load's start;
/// coarser than the whole run's histogram: there are many).
#[derive(Default)]
pub struct Timeline(Vec<Histogram<u64>>);

impl Timeline {
    /// A bucket's width in seconds.
    pub fn width() -> f64 {
        *BUCKET_SECS.get().unwrap_or(&1) as f64
    }

    /// Records `us` at `secs` since the load's start; past the last bucket it is left out
    /// (the run's whole histogram still has it).
    pub fn record(&mut self, secs: f64, us: u64) {
        let i = (secs.max(0.0) / Self::width()) as usize;
        if i >= TIMELINE_BUCKETS_MAX {
            return;
        }
        while self.0.len() <= i {
            self.0
                .push(Histogram::new_with_bounds(1, 600_000_000, 2).expect("histogram"));
        }
        let _ = self.0[i].record(us);
    }

    /// How many values each bucket has, from the first.
    #[cfg(test)]
    pub fn counts(&self) -> Vec<u64> {
        self.0.iter().map(|h| h.len()).collect()
    }

    /// (bucket middle in seconds, p50 ms, p99 ms) of each non-empty bucket.
    pub fn points(&self) -> Vec<(f64, f64, f64)> {
        let w = Self::width();
        self.0
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| {
                (
                    (i as f64 + 0.5) * w,
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                )
            })
            .collect()
    }
}

/// One operation's tally: latency from the intended send time, answers by status.
pub struct OpStats {
    pub offered: u64,
    pub overload: u64,
    pub ok: u64,
    pub statuses: BTreeMap<String, u64>,
    pub hist: Histogram<u64>,
    /// Latency by the intended send time since the load started.
    pub timeline: Timeline,
}

impl OpStats {
    pub(crate) fn new() -> Self {
        Self {
            offered: 0,
            overload: 0,
            ok: 0,
            statuses: BTreeMap::new(),
            hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram"),
            timeline: Timeline::default(),
        }
    }
}

#[derive(Clone)]
pub struct Stats(
    pub(crate) Arc<Mutex<HashMap<&'static str, OpStats>>>,
    Arc<OnceLock<Instant>>,
);

impl Stats {
    pub(crate) fn new() -> Self {
        Self(
            Arc::new(Mutex::new(
                OPS.iter().map(|op| (*op, OpStats::new())).collect(),
            )),
            Arc::default(),
        )
    }

    /// Sets the load's start, from which the timeline counts seconds.
    pub(crate) fn started(&self, start: Instant) {
        let _ = self.1.set(start);
    }

    pub(crate) fn with<R>(&self, op: &'static str, f: impl FnOnce(&mut OpStats) -> R) -> R {
        f(self.0.lock().expect("stats").get_mut(op).expect("known op"))
    }

    pub fn offered(&self, op: &'static str) {
        self.with(op, |s| s.offered += 1);
    }

    pub fn overload(&self, op: &'static str) {
        self.with(op, |s| {
            s.overload += 1;
            *s.statuses.entry("client_overload".into()).or_default() += 1;
        });
    }

    /// Records an answer (`status` like `201` or `409 out_of_stock`) and its latency.
    pub fn answer(&self, op: &'static str, intended: Instant, status: String, ok: bool) {
        let micros = intended.elapsed().as_micros().clamp(1, 600_000_000) as u64;
        let secs = self.1.get().map_or(0.0, |start| {
            intended.saturating_duration_since(*start).as_secs_f64()
        });
        self.with(op, |s| {
            if ok {
                s.ok += 1;
            }
            let _ = s.hist.record(micros);
            s.timeline.record(secs, micros);
            *s.statuses.entry(status).or_default() += 1;
        });
    }

    /// Counts an outcome that is neither an answer nor an overload (e.g. nothing to sell).
    pub fn note(&self, op: &'static str, status: &str) {
        self.with(op, |s| *s.statuses.entry(status.into()).or_default() += 1);
    }
}

pub(crate) fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({"p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()), "count": h.len()})
}
