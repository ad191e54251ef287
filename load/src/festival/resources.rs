//! The service's (and other processes') CPU and RSS from /proc while the run goes, and what
//! the report says of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::args::Args;
use crate::audit;

/// The service's CPU seconds and RSS bytes from /proc (Linux; USER_HZ is 100 there).
pub(crate) fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, pages * 4096.0))
}

/// What `sample_resources` saw, each point at its seconds since the load's start.
#[derive(Default)]
pub(crate) struct Samples {
    /// The service: (t, CPU % of one core, RSS MB).
    pub(crate) usage: Vec<(f64, f64, f64)>,
    /// The `--pid` processes, by name: (t, CPU % of one core, RSS MB).
    pub(crate) procs: BTreeMap<String, Vec<(f64, f64, f64)>>,
    /// (t, outbox entries waiting for the ledger, all outlets).
    pub(crate) outbox: Vec<(f64, f64)>,
    /// (t, ledger documents written since the service started).
    pub(crate) written: Vec<(f64, f64)>,
    /// (t, the most behind outlet's ledger lag in s, new holds shed per second since the
    /// last sample).
    pub(crate) ledger: Vec<(f64, f64, f64)>,
    /// (t, mean ledger insert_many ms since the last sample), when there was one.
    pub(crate) insert: Vec<(f64, f64)>,
    /// The first and the last `/metrics` read.
    pub(crate) first: Option<audit::Metrics>,
    pub(crate) last: Option<audit::Metrics>,
}

/// CPU % of one core between two readings `(when, CPU seconds)`.
pub(crate) fn cpu_percent(from: (Instant, f64), to: (Instant, f64)) -> f64 {
    (to.1 - from.1) / to.0.duration_since(from.0).as_secs_f64().max(1e-6) * 100.0
}

/// The service's CPU and memory, its ledger (outbox, lag, shed holds, insert latency) and
/// the `--pid` processes' CPU and memory, sampled every second while `running`. The service's
/// CPU and memory come from /proc with `--service-pid`, else from its `/metrics`
/// (`shelfsync_process_*`), whose CPU counter has whole seconds: each point then averages
/// the last five seconds.
pub(crate) async fn sample_resources(
    http: reqwest::Client,
    args: Args,
    start: Instant,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> Samples {
    let mut samples = Samples::default();
    let window = if args.service_pid.is_some() { 1 } else { 5 };
    let mut past: std::collections::VecDeque<(Instant, f64)> = Default::default();
    let mut procs_past: HashMap<String, (Instant, f64)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // After a slow `/metrics` read, the next sample waits its second rather than following at
    // once (a burst of ticks would make CPU % jump).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while running.load(Ordering::Relaxed) {
        tick.tick().await;
        // /proc first, at the tick, so the HTTP read's time does not skew the interval.
        let now = Instant::now();
        let proc = args.service_pid.and_then(proc_usage);
        for (name, pid) in &args.pids {
            let Some((cpu, rss)) = proc_usage(*pid) else {
                continue;
            };
            let at = now.saturating_duration_since(start).as_secs_f64();
            if let Some(before) = procs_past.insert(name.clone(), (now, cpu)) {
                let pct = cpu_percent(before, (now, cpu));
                let points = samples.procs.entry(name.clone()).or_default();
                points.push((at, pct, rss / 1e6));
            }
        }
        let metrics = audit::metrics(&http, &args).await.ok();
        let since = now.saturating_duration_since(start).as_secs_f64();
        if let Some(m) = &metrics {
            samples.outbox.push((since, m.outbox_entries));
            if let Some(n) = m.ledger_documents {
                samples.written.push((since, n));
            }
            if let Some(prev) = &samples.last {
                let shed = (m.shed_holds - prev.shed_holds).max(0.0);
                samples.ledger.push((since, m.lag_max_secs, shed));
                let n = m.inserts - prev.inserts;
                if n > 0.0 {
                    samples
                        .insert
                        .push((since, (m.insert_secs - prev.insert_secs) / n * 1000.0));
                }
            }
        }
        let usage = match args.service_pid {
            Some(_) => proc,
            None => metrics.as_ref().and_then(|m| m.cpu_secs.zip(m.rss_bytes)),
        };
        if let Some(m) = metrics {
            if samples.first.is_none() {
                samples.first = Some(m.clone());
            }
            samples.last = Some(m);
        }
        let Some((cpu, rss)) = usage else {
            continue;
        };
        if past.len() == window {
            let (t, c) = past.pop_front().expect("window");
            let pct = cpu_percent((t, c), (now, cpu));
            let mid = (t.saturating_duration_since(start).as_secs_f64() + since) / 2.0;
            samples.usage.push((mid, pct, rss / 1e6));
        }
        past.push_back((now, cpu));
    }
    samples
}

/// The least-squares slope of `points` (y per x), `None` with fewer than 3 points.
pub(crate) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx * 10.0).round() / 10.0)
}

/// Mean and peak CPU and peak RSS of the service over the samples.
pub(crate) fn service_summary(points: &[(f64, f64, f64)]) -> Value {
    if points.is_empty() {
        return json!({"samples": 0, "cpu_percent_mean": null, "cpu_percent_max": null, "rss_mb_max": null});
    }
    let n = points.len() as f64;
    let round = |v: f64| (v * 10.0).round() / 10.0;
    json!({"samples": points.len(),
        "cpu_percent_mean": round(points.iter().map(|p| p.1).sum::<f64>() / n),
        "cpu_percent_max": round(points.iter().map(|p| p.1).fold(0.0, f64::max)),
        "rss_mb_max": round(points.iter().map(|p| p.2).fold(0.0, f64::max)),
        "rss_mb_last": round(points[points.len() - 1].2)})
}

impl Samples {
    /// The service's figures over the load phase (CPU, RSS, the outbox and how fast it grew,
    /// ledger documents written, the ledger's lag, shed holds, insert latency) and the
    /// `--pid` processes' CPU and RSS.
    pub(crate) fn summary(&self, sent_secs: f64) -> (Value, serde_json::Map<String, Value>) {
        // CPU over the load phase only (the sampler also covers the wait for expiries).
        let load_usage: Vec<_> = self
            .usage
            .iter()
            .copied()
            .filter(|(t, _, _)| *t <= sent_secs)
            .collect();
        let mut service = service_summary(&load_usage);
        service["rss_mb_max"] =
            json!((self.usage.iter().map(|p| p.2).fold(0.0, f64::max) * 10.0).round() / 10.0);
        // The ledger's lag: the outbox at most, and at the end of the load (its last sample
        // then); a sustained rate is one whose outbox does not grow.
        let outbox_at = |secs: f64| {
            self.outbox
                .iter()
                .take_while(|(t, _)| *t <= secs)
                .last()
                .map(|(_, n)| *n)
        };
        service["outbox_max"] = json!(self.outbox.iter().map(|(_, n)| *n).fold(0.0, f64::max));
        service["outbox_mid_load"] = json!(outbox_at(sent_secs / 2.0));
        service["outbox_end_of_load"] = json!(outbox_at(sent_secs));
        // Over the load's second half (least squares): how fast the outbox grew, and how many
        // ledger documents per second were written. A rate is sustained when the ledger writes
        // what the load offers. (The outbox gauge is read by the writer as it drains, so it lags;
        // the written count is exact.)
        let second_half = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
            points
                .iter()
                .copied()
                .filter(|(t, _)| *t >= sent_secs / 2.0 && *t <= sent_secs)
                .collect()
        };
        service["outbox_growth_per_sec"] = json!(slope(&second_half(&self.outbox)));
        service["ledger_docs_written_per_sec"] = json!(slope(&second_half(&self.written)));
        // Overload: the ledger's lag at most, the holds the service shed, the inserts' latency.
        let round2 = |v: f64| (v * 100.0).round() / 100.0;
        service["ledger_lag_max_secs"] =
            json!(round2(self.ledger.iter().map(|q| q.1).fold(0.0, f64::max)));
        if let (Some(first), Some(last)) = (&self.first, &self.last) {
            let n = last.inserts - first.inserts;
            service["holds_shed"] = json!(last.shed_holds - first.shed_holds);
            service["ledger_inserts"] = json!(n);
            service["ledger_insert_ms"] = json!({
                "mean": (n > 0.0).then(|| round2((last.insert_secs - first.insert_secs) / n * 1000.0)),
                "p50_bucket": last.insert_quantile_ms(first, 0.5),
                "p99_bucket": last.insert_quantile_ms(first, 0.99),
                "max_mean_per_sample": self.insert.iter().map(|q| q.1).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))).map(round2),
            });
        }
        let mut others = serde_json::Map::new();
        for (name, points) in &self.procs {
            let load: Vec<_> = points
                .iter()
                .copied()
                .filter(|(t, _, _)| *t <= sent_secs)
                .collect();
            let mut summary = service_summary(&load);
            summary["rss_mb_max"] =
                json!((points.iter().map(|p| p.2).fold(0.0, f64::max) * 10.0).round() / 10.0);
            others.insert(name.clone(), summary);
        }
        (service, others)
    }
}
