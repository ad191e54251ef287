//! Push latency: storefront customers browsing over SSE, and one MQTT subscriber of the
//! retained `stock/#` values (as an outlet's shelf display or a channel adapter would be).
//!
//! Each client notes when a stock value of `(outlet, seq)` reached it, by this machine's wall
//! clock. After the run the audit reads the ledger, whose document of that seq carries the
//! commit time (`at`, set by the outlet actor when it sent the batch to Redis): the difference
//! is the commit-to-client latency, Redis round trip, fan-out and delivery included. Both
//! clocks are the same machine's here; against a service on another host they must be synced
//! (NTP) and the figures are only as good as that.
//!
//! Receipts are sampled by seq (`seq % every == 0`, the same seqs for every client) so that
//! many clients at a high rate stay within a fixed memory budget; the report gives `every`.
//! A client that the service drops reconnects (fresh snapshot) and counts the reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::args::Args;
use crate::world::World;

/// The longest SSE line a browser takes (a whole outlet's snapshot is well under 1 MB);
/// past it the stream is dropped and reconnected, so a stream without line ends cannot grow
/// the buffer without bound.
const LINE_MAX: usize = 16 << 20;

/// SKUs a browsing customer's page streams.
const BROWSED_SKUS: usize = 20;

/// Receipts kept per channel at most; past it they are counted, not kept.
const RECEIPTS_MAX: usize = 2_000_000;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// When `(outlet, seq)` values reached the clients of one channel.
pub struct Receipts {
    every: u64,
    kept: Mutex<Vec<(Arc<str>, u64, i64)>>,
    /// Values received (sampled or not).
    pub events: AtomicU64,
    /// Sampled receipts past `RECEIPTS_MAX`: the latency then covers the run's start only.
    pub unkept: AtomicU64,
    /// Receipts stamped before their commit (a clock step, or a wrong join): counted as the
    /// floor and reported; on one host there should be none.
    pub early: AtomicU64,
}

impl Receipts {
    fn new(every: u64) -> Self {
        Self {
            every: every.max(1),
            kept: Mutex::new(Vec::new()),
            events: AtomicU64::new(0),
            unkept: AtomicU64::new(0),
            early: AtomicU64::new(0),
        }
    }

    fn note(&self, outlet: &Arc<str>, seq: u64, at_us: i64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        // (`%`: `is_multiple_of` is newer than the crate's rust-version.)
        #[allow(clippy::manual_is_multiple_of)]
        if seq % self.every != 0 {
            return;
        }
        let mut kept = self.kept.lock().expect("receipts");
        if kept.len() < RECEIPTS_MAX {
            kept.push((outlet.clone(), seq, at_us));
        } else {
            self.unkept.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Joins the receipts with the commit times (`(outlet, seq)` → ms since the epoch) into
    /// a latency histogram (µs) and a timeline by commit time since `start_ms`.
    /// Receipts of seqs the map lacks (values from before the run) are left out.
    pub fn latency(
        &self,
        commits: &HashMap<(String, u64), i64>,
        start_ms: i64,
    ) -> (Histogram<u64>, crate::stats::Timeline, u64) {
        let mut all = Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        let mut by_sec = crate::stats::Timeline::default();
        let mut matched = 0;
        for (outlet, seq, at_us) in self.kept.lock().expect("receipts").iter() {
            let Some(&commit_ms) = commits.get(&(outlet.to_string(), *seq)) else {
                continue;
            };
            matched += 1;
            // A commit time is whole milliseconds (truncated), so a latency is over by less
            // than 1 ms; a receipt stamped before its commit (the clock stepped back between
            // the two) counts as the histogram's floor.
            let delta = at_us - commit_ms * 1000;
            if delta < 0 {
                self.early.fetch_add(1, Ordering::Relaxed);
            }
            let us = delta.clamp(1, 600_000_000) as u64;
            let _ = all.record(us);
            by_sec.record((commit_ms - start_ms) as f64 / 1000.0, us);
        }
        (all, by_sec, matched)
    }

    pub fn every(&self) -> u64 {
        self.every
    }
}

#[derive(Deserialize)]
struct StockEvent {
    outlet: String,
    seq: u64,
}

/// The browsing customers and the MQTT subscriber, running until `stop`.
pub struct Push {
    pub sse: Arc<Receipts>,
    pub mqtt: Arc<Receipts>,
    pub sse_connected: Arc<AtomicU64>,
    pub sse_reconnects: Arc<AtomicU64>,
    pub sse_errors: Arc<Mutex<HashMap<String, u64>>>,
    pub mqtt_reconnects: Arc<AtomicU64>,
    pub clients: usize,
    tasks: JoinSet<()>,
    mqtt_client: Option<shelfsync_load::mqtt::Client>,
}

impl Push {
    /// Opens `args.sse_clients` SSE streams (ramped, 100 per 100 ms) and the MQTT
    /// subscriber, and waits until each stream had its snapshot or 30 s. Browser `c` streams
    /// outlet `c mod n`: every tenth the whole outlet (a shop display, a dashboard), the
    /// others `BROWSED_SKUS` of its web SKUs (a category page).
    pub async fn start(args: &Args, run: &str, world: &World, every: u64) -> anyhow::Result<Self> {
        let mut p = Self {
            sse: Arc::new(Receipts::new(every)),
            mqtt: Arc::new(Receipts::new(every)),
            sse_connected: Arc::default(),
            sse_reconnects: Arc::default(),
            sse_errors: Arc::default(),
            mqtt_reconnects: Arc::default(),
            clients: args.sse_clients,
            tasks: JoinSet::new(),
            mqtt_client: None,
        };
        if args.sse_clients > 0 {
            // One connection per client, as browsers have: no shared pool.
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?;
            let mut by_outlet: HashMap<&str, Vec<&str>> = HashMap::new();
            for (o, sku) in &world.web {
                by_outlet.entry(o).or_default().push(sku);
            }
            for c in 0..args.sse_clients {
                let outlet = &world.outlets[c % world.outlets.len()];
                let skus = by_outlet.get(outlet.as_str()).map_or(&[][..], |v| &v[..]);
                let url = if c % 10 == 0 || skus.is_empty() {
                    format!("{}/v1/stream?outlets={outlet}", args.url)
                } else {
                    let page: Vec<&str> = (0..BROWSED_SKUS.min(skus.len()))
                        .map(|k| skus[(c / world.outlets.len() * BROWSED_SKUS + k) % skus.len()])
                        .collect();
                    format!(
                        "{}/v1/stream?outlets={outlet}&skus={}",
                        args.url,
                        page.join(",")
                    )
                };
                let (http, key) = (http.clone(), args.key.clone());
                let (receipts, connected, reconnects, errors) = (
                    p.sse.clone(),
                    p.sse_connected.clone(),
                    p.sse_reconnects.clone(),
                    p.sse_errors.clone(),
                );
                p.tasks.spawn(async move {
                    browse(http, url, key, receipts, connected, reconnects, errors).await
                });
                if c % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let until = tokio::time::Instant::now() + Duration::from_secs(30);
            while (p.sse_connected.load(Ordering::Relaxed) as usize) < args.sse_clients
                && tokio::time::Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        p.mqtt_client =
            Some(subscribe(args, run, p.mqtt.clone(), p.mqtt_reconnects.clone()).await?);
        Ok(p)
    }

    /// Closes every stream and the subscriber.
    pub async fn stop(&mut self) {
        if let Some(c) = self.mqtt_client.take() {
            let _ = c.disconnect().await;
        }
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    pub fn summary(&self) -> Value {
        json!({"sse_clients": self.clients,
            "sse_connected": self.sse_connected.load(Ordering::Relaxed),
            "sse_reconnects": self.sse_reconnects.load(Ordering::Relaxed),
            "sse_errors": *self.sse_errors.lock().expect("errors"),
            "sse_events": self.sse.events.load(Ordering::Relaxed),
            "mqtt_events": self.mqtt.events.load(Ordering::Relaxed),
            "mqtt_reconnects": self.mqtt_reconnects.load(Ordering::Relaxed),
            "sample_every_seq": self.sse.every(),
            "unkept_receipts": self.sse.unkept.load(Ordering::Relaxed) + self.mqtt.unkept.load(Ordering::Relaxed),
            "early_receipts": self.sse.early.load(Ordering::Relaxed) + self.mqtt.early.load(Ordering::Relaxed)})
    }
}

/// One browsing customer: an SSE stream of one outlet; reconnects after a drop (counted), as
/// a browser's EventSource does.
async fn browse(
    http: reqwest::Client,
    url: String,
    key: String,
    receipts: Arc<Receipts>,
    connected: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    errors: Arc<Mutex<HashMap<String, u64>>>,
) {
    // `counted`: this browser had a snapshot once (it is in `connected`); `streamed`: it had
    // a stream once, so a new connect is a reconnect.
    let (mut counted, mut streamed) = (false, false);
    let mut attempt = 0u32;
    let mut outlets: HashMap<String, Arc<str>> = HashMap::new();
    loop {
        if attempt > 0 {
            if streamed {
                reconnects.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        attempt += 1;
        let error = match http.get(&url).bearer_auth(&key).send().await {
            Err(e) => format!("connect: {}", e.without_url()),
            Ok(res) if !res.status().is_success() => format!("status {}", res.status().as_u16()),
            Ok(res) => {
                streamed = true;
                shelfsync_load::sse::read(res, LINE_MAX, |e, _| {
                    match e.event.as_str() {
                        "snapshot" if !counted => {
                            counted = true;
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        "stock" => {
                            if let Ok(stock) = serde_json::from_str::<StockEvent>(&e.data) {
                                let outlet = outlets
                                    .entry(stock.outlet)
                                    .or_insert_with_key(|k| Arc::from(k.as_str()))
                                    .clone();
                                receipts.note(&outlet, stock.seq, now_us());
                            }
                        }
                        _ => {}
                    }
                    true
                })
                .await
            }
        };
        *errors.lock().expect("errors").entry(error).or_default() += 1;
    }
}

/// The MQTT subscriber of every stock value (`{prefix}stock/#`, QoS 1). Its session starts
/// clean, so after a reconnect it subscribes again (counted in `reconnects`).
async fn subscribe(
    args: &Args,
    run: &str,
    receipts: Arc<Receipts>,
    reconnects: Arc<AtomicU64>,
) -> anyhow::Result<shelfsync_load::mqtt::Client> {
    let prefix = format!("{}stock/", args.topic_prefix);
    // No retained values on subscribing (MQTT 5 retain handling 2): they are from before the
    // run, and a chain's worth of them (13 x 6,400) would queue ahead of the live ones.
    let mut filter = Filter::new(format!("{prefix}#"), QoS::AtLeastOnce);
    filter.retain_forward_rule = RetainForwardRule::Never;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    // The client's handle, for re-subscribing from the event loop once it is connected.
    let resubscriber: Arc<Mutex<Option<AsyncClient>>> = Arc::default();
    let again = (filter.clone(), resubscriber.clone());
    let mut outlets: HashMap<String, Arc<str>> = HashMap::new();
    // The newest seq seen per topic (outlet and SKU).
    let mut newest: HashMap<String, u64> = HashMap::new();
    let mut connected_once = false;
    let options = crate::mqtt::options(args, &format!("shelfsync-festival-display-{run}"));
    let client = shelfsync_load::mqtt::connect(options, 1000, move |event| match event {
        Event::Incoming(Packet::ConnAck(_)) => {
            if connected_once {
                reconnects.fetch_add(1, Ordering::Relaxed);
                if let Some(c) = again.1.lock().expect("resubscriber").as_ref() {
                    let _ = c.try_subscribe_many([again.0.clone()]);
                }
            }
            connected_once = true;
        }
        Event::Incoming(Packet::SubAck(_)) => {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
        }
        Event::Incoming(Packet::Publish(p)) => {
            let at_us = now_us();
            let topic = String::from_utf8_lossy(&p.topic);
            let Some(outlet) = topic
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('/').next())
            else {
                return;
            };
            let Some(seq) = serde_json::from_slice::<Value>(&p.payload)
                .ok()
                .and_then(|v| v["seq"].as_u64())
            else {
                return;
            };
            // A value not newer than the SKU's last is a republication (the service's
            // retained refresh), not a push: a display drops it (API.md), and its latency
            // would be counted from the SKU's last change.
            let newest = newest.entry(topic.to_string()).or_insert(0);
            if seq <= *newest {
                return;
            }
            *newest = seq;
            let outlet = outlets
                .entry(outlet.to_owned())
                .or_insert_with_key(|k| Arc::from(k.as_str()))
                .clone();
            receipts.note(&outlet, seq, at_us);
        }
        _ => {}
    })
    .await?;
    *resubscriber.lock().expect("resubscriber") = Some(client.client.clone());
    client.subscribe_many([filter]).await?;
    tokio::time::timeout(Duration::from_secs(10), ready_rx).await??;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_join_the_commit_of_their_seq_and_nothing_else() {
        let r = Receipts::new(1);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        // Commit of a/5 at 10,000 ms; received 3 ms and 40 ms later by two clients.
        r.note(&a, 5, 10_003_000);
        r.note(&a, 5, 10_040_000);
        // The same seq at another outlet is another document.
        r.note(&b, 5, 10_001_000);
        // A value from before the run (not in the commits) is left out.
        r.note(&a, 4, 10_000_500);
        // Stamped before its commit (a clock step): the floor, not a negative latency.
        r.note(&b, 7, 11_999_800);
        let commits: HashMap<(String, u64), i64> = [
            (("a".to_owned(), 5), 10_000),
            (("b".to_owned(), 5), 9_000),
            (("b".to_owned(), 7), 12_000),
        ]
        .into();
        let (all, by_sec, matched) = r.latency(&commits, 9_000);
        assert_eq!(matched, 4);
        assert_eq!(all.len(), 4);
        assert_eq!(all.min(), 1);
        // The slowest: b/5, committed at 9,000 ms and received 1,001 ms later.
        assert!((1_000_000..1_003_000).contains(&all.max()), "{}", all.max());
        // a/5 committed 1 s after the start, b/5 at it, b/7 3 s after.
        assert_eq!(by_sec.counts(), [1, 2, 0, 1]);
        assert_eq!(r.events.load(Ordering::Relaxed), 5);
        assert_eq!(
            r.early.load(Ordering::Relaxed),
            1,
            "the clock-step receipt is counted"
        );
    }

    #[test]
    fn sampling_keeps_the_same_seqs_from_every_client() {
        let r = Receipts::new(3);
        let a: Arc<str> = Arc::from("a");
        // Two clients receive seqs 1..=9 of the same outlet, interleaved.
        for seq in 1..=9 {
            r.note(&a, seq, 1_000);
            r.note(&a, seq, 1_001);
        }
        let kept: Vec<u64> = r.kept.lock().unwrap().iter().map(|k| k.1).collect();
        assert_eq!(kept, [3, 3, 6, 6, 9, 9]);
        assert_eq!(r.events.load(Ordering::Relaxed), 18);
    }
}
