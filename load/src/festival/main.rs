//! The festival simulator: an open-loop day of festival traffic against a running shelfsync,
//! then an audit of what the service recorded.
//!
//! Every operation stream (web holds, POS counter sales over MQTT, WhatsApp orders through the
//! signed webhook) has its intended send times fixed in advance at the target rate. Each
//! request is sent at its intended time whatever the service does (spawned, bounded by an
//! in-flight cap; a request over the cap is counted as `client_overload`, never skipped
//! silently), and its latency is measured from the intended send time, so a slow service
//! shows as latency rather than as fewer requests (no coordinated omission).
//!
//! Counter sales use a quarter of the SKUs and the web and WhatsApp streams the rest, so the
//! simulator's own traffic never sells over the counter units a web customer holds: any
//! oversell the audit finds is the service's, not the load's design.
//!
//! Bounded in count and time; it stops by itself and exits non-zero if the audit fails.

mod audit;
mod mqtt;
mod plot;
mod push;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

#[derive(Parser, Clone)]
#[command(about = "Festival day simulator: open-loop mixed load, then an audit")]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Storefront key (holds, confirms, cancels).
    #[arg(long, default_value = "demo-storefront-key-change-me")]
    pub key: String,
    /// Admin key (discovery, metrics, ledger reads for the audit).
    #[arg(long, default_value = "demo-admin-key-change-me")]
    pub admin_key: String,
    /// The service's `whatsapp.app_secret`.
    #[arg(long, default_value = "demo-app-secret-change-me")]
    pub app_secret: String,
    /// Web holds per second on a normal day...
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// ...times this on the festival day.
    #[arg(long, default_value_t = 6.0)]
    pub spike: f64,
    /// POS counter sales per second (over MQTT).
    #[arg(long, default_value_t = 10.0)]
    pub pos_rate: f64,
    /// WhatsApp orders per second (through the webhook).
    #[arg(long, default_value_t = 2.0)]
    pub whatsapp_rate: f64,
    /// Kitchen deliveries per second (`receipt` movements over HTTP, admin key).
    #[arg(long, default_value_t = 2.0)]
    pub movement_rate: f64,
    /// Storefront customers browsing over SSE (each streams one outlet's stock).
    #[arg(long, default_value_t = 200)]
    pub sse_clients: usize,
    /// Length of the load phase.
    #[arg(long, default_value_t = 30)]
    pub secs: u64,
    /// SKUs with stock used per outlet.
    #[arg(long, default_value_t = 20)]
    pub skus: usize,
    /// Share of holds made by delivery PIN (the rest by outlet).
    #[arg(long, default_value_t = 0.3)]
    pub pin_share: f64,
    /// Share of holds confirmed after the think time...
    #[arg(long, default_value_t = 0.6)]
    pub confirm_share: f64,
    /// ...and cancelled; the rest are left to expire.
    #[arg(long, default_value_t = 0.2)]
    pub cancel_share: f64,
    /// Mean think time between a hold's answer and its confirm or cancel.
    #[arg(long, default_value_t = 500)]
    pub think_ms: u64,
    /// Hold time of the holds left to expire (they expire within the run).
    #[arg(long, default_value_t = 5)]
    pub abandon_ttl_secs: u64,
    /// Hold time of the holds that are confirmed or cancelled.
    #[arg(long, default_value_t = 60)]
    pub ttl_secs: u64,
    /// Requests in flight at once (HTTP requests and unacknowledged POS publishes).
    #[arg(long, default_value_t = 512)]
    pub inflight_max: usize,
    #[arg(long, default_value = "127.0.0.1")]
    pub mqtt_host: String,
    /// The broker's port (`make run` starts the project's broker on 1884).
    #[arg(long, default_value_t = 1884)]
    pub mqtt_port: u16,
    /// The service's `mqtt.topic_prefix`.
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// The service's process id when it runs on this machine: its CPU and memory are then
    /// read from /proc at 10 ms precision instead of from `/metrics` (whole CPU seconds).
    #[arg(long)]
    pub service_pid: Option<u32>,
    /// Other processes to sample beside the service (CPU and memory from /proc), as
    /// NAME=PID: `--pid redis=123 --pid mongodb=456 --pid broker=789`.
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Width of the timeline buckets (latency over time in the report's plot), in seconds:
    /// 1 for a short run, more for a soak.
    #[arg(long, default_value_t = 1)]
    pub bucket_secs: u64,
    /// How long the audit waits for the ledger outbox to drain after the load.
    #[arg(long, default_value_t = 60)]
    pub drain_secs: u64,
    /// Seed of the simulator's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the JSON report goes (default `load/out/festival-<unix time>.json`).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid} is not a process id"))?;
    Ok((name.to_owned(), pid))
}

/// The operations the report lists.
pub const OPS: [&str; 6] = [
    "hold", "confirm", "cancel", "movement", "pos_sale", "whatsapp",
];

/// Buckets a timeline keeps (about 25 KB each): 30 minutes of one-second buckets, five hours
/// of ten-second ones.
pub const TIMELINE_BUCKETS_MAX: usize = 1800;

static BUCKET_SECS: OnceLock<u64> = OnceLock::new();

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
    fn new() -> Self {
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
    Arc<Mutex<HashMap<&'static str, OpStats>>>,
    Arc<OnceLock<Instant>>,
);

impl Stats {
    fn new() -> Self {
        Self(
            Arc::new(Mutex::new(
                OPS.iter().map(|op| (*op, OpStats::new())).collect(),
            )),
            Arc::default(),
        )
    }

    /// Sets the load's start, from which the timeline counts seconds.
    fn started(&self, start: Instant) {
        let _ = self.1.set(start);
    }

    fn with<R>(&self, op: &'static str, f: impl FnOnce(&mut OpStats) -> R) -> R {
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

/// splitmix64: the simulator's deterministic choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) for the `n`th choice of kind `k`.
fn draw(seed: u64, k: u64, n: u64) -> f64 {
    (mix(seed ^ mix(k ^ mix(n))) >> 11) as f64 / (1u64 << 53) as f64
}

pub struct World {
    pub outlets: Vec<String>,
    /// (outlet, sku) the web and WhatsApp streams hold.
    pub web: Vec<(String, String)>,
    /// (outlet, sku, available at the start) the counter sells.
    pub counter: Vec<(String, String, i64)>,
    /// PINs with the web SKUs of the outlets serving them.
    pub pins: Vec<(String, Vec<String>)>,
    pub web_skus: Vec<String>,
    /// Per outlet, the last seq before the run.
    pub start_seq: BTreeMap<String, u64>,
    /// Per outlet, every SKU's (on_hand, reserved) before the run: the audit folds the run's
    /// ledger documents onto these.
    pub start_stock: BTreeMap<String, HashMap<String, (i64, i64)>>,
}

/// GET as `key`; a `429` is waited out (its `Retry-After`, at most 50 times): the audit's
/// reads can outrun the admin key's rate limit.
async fn get_json(http: &reqwest::Client, url: String, key: &str) -> anyhow::Result<Value> {
    let mut tries = 0;
    let res = loop {
        let res = http
            .get(&url)
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("GET {url} (is shelfsync running? make run)"))?;
        if res.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || tries == 50 {
            break res;
        }
        tries += 1;
        let wait = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 5);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    };
    anyhow::ensure!(
        res.status().is_success(),
        "GET {url} answered {}",
        res.status()
    );
    Ok(res.json().await?)
}

async fn discover(args: &Args, http: &reqwest::Client) -> anyhow::Result<World> {
    let outlets = get_json(http, format!("{}/v1/outlets", args.url), &args.admin_key).await?;
    let mut targets = Vec::new();
    let mut start_seq = BTreeMap::new();
    let mut start_stock = BTreeMap::new();
    let mut ids = Vec::new();
    for o in outlets.as_array().context("outlets")? {
        let id = o["id"].as_str().context("outlet id")?.to_owned();
        // The audit folds the run onto this read, so it must be one state: read until two
        // reads in a row agree (no change landed in between, none was half seen).
        let url = format!("{}/v1/outlets/{id}/stock", args.url);
        let mut rows = get_json(http, url.clone(), &args.admin_key).await?;
        for _ in 0..20 {
            let again = get_json(http, url.clone(), &args.admin_key).await?;
            if again == rows {
                break;
            }
            rows = again;
        }
        let rows = rows.as_array().context("stock")?;
        let seq = rows.iter().filter_map(|r| r["seq"].as_u64()).max();
        start_seq.insert(id.clone(), seq.unwrap_or(0));
        let counters: HashMap<String, (i64, i64)> = rows
            .iter()
            .filter_map(|r| {
                let c = (r["on_hand"].as_i64()?, r["reserved"].as_i64()?);
                Some((r["sku"].as_str()?.to_owned(), c))
            })
            .collect();
        start_stock.insert(id.clone(), counters);
        for r in rows
            .iter()
            .filter(|r| r["available"].as_i64().unwrap_or(0) > 0)
            .take(args.skus)
        {
            let sku = r["sku"].as_str().context("sku")?.to_owned();
            targets.push((id.clone(), sku, r["available"].as_i64().unwrap_or(0)));
        }
        ids.push(id);
    }
    let all: BTreeSet<&String> = targets.iter().map(|(_, s, _)| s).collect();
    let counter_skus: BTreeSet<String> = all.iter().step_by(4).map(|s| (*s).clone()).collect();
    let web_skus: Vec<String> = all
        .iter()
        .filter(|s| !counter_skus.contains(**s))
        .map(|s| (*s).clone())
        .collect();
    let (counter, web): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|(_, s, _)| counter_skus.contains(s));
    let web: Vec<(String, String)> = web.into_iter().map(|(o, s, _)| (o, s)).collect();
    anyhow::ensure!(
        !web.is_empty() && !counter.is_empty(),
        "not enough stock to simulate; run `make run` (it imports the demo chain)"
    );
    let zones = get_json(http, format!("{}/v1/zones", args.url), &args.admin_key).await?;
    let mut pins = Vec::new();
    for z in zones.as_array().context("zones")? {
        let pin = z["pin"].as_str().context("pin")?.to_owned();
        let served: BTreeSet<&str> = z["outlets"]
            .as_array()
            .map(|v| v.iter().filter_map(|o| o["outlet"].as_str()).collect())
            .unwrap_or_default();
        let skus: BTreeSet<String> = web
            .iter()
            .filter(|(o, _)| served.contains(o.as_str()))
            .map(|(_, s)| s.clone())
            .collect();
        if !skus.is_empty() {
            pins.push((pin, skus.into_iter().collect()));
        }
    }
    Ok(World {
        outlets: ids,
        web,
        counter,
        pins,
        web_skus,
        start_seq,
        start_stock,
    })
}

/// When the load's streams run: from `start` for `secs`, sharing the in-flight slots.
#[derive(Clone)]
struct Schedule {
    start: Instant,
    secs: u64,
    slots: Arc<Semaphore>,
    stats: Stats,
}

impl Schedule {
    /// Sends operations `op` at `rate` per second (none when `rate` is 0), each at its
    /// intended time, in a task of their own; `f` gets the operation's number, its intended
    /// send time and its in-flight permit. The task answers with the operations still running.
    fn spawn<F, Fut>(
        &self,
        op: &'static str,
        rate: f64,
        f: F,
    ) -> tokio::task::JoinHandle<JoinSet<()>>
    where
        F: Fn(u64, Instant, OwnedSemaphorePermit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let s = self.clone();
        let count = if rate > 0.0 {
            (rate * s.secs as f64).round() as u64
        } else {
            0
        };
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            for i in 0..count {
                let intended = s.start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(intended.into()).await;
                s.stats.offered(op);
                match s.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(f(i, intended, permit));
                    }
                    Err(_) => s.stats.overload(op),
                }
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            tasks
        })
    }
}

/// An operation of the run as `Schedule::spawn` calls it.
fn with_ctx<Fut: 'static>(
    ctx: &Arc<Ctx>,
    op: fn(Arc<Ctx>, u64, Instant, OwnedSemaphorePermit) -> Fut,
) -> impl Fn(u64, Instant, OwnedSemaphorePermit) -> Fut + Send + 'static {
    let ctx = ctx.clone();
    move |i, t, p| op(ctx.clone(), i, t, p)
}

/// `201` or `409 out_of_stock`: the status and, for errors, the API's code.
async fn status_of(res: reqwest::Result<reqwest::Response>) -> (String, Option<Value>) {
    match res {
        Err(e) if e.is_timeout() => ("timeout".into(), None),
        Err(_) => ("connection_error".into(), None),
        Ok(r) => {
            let code = r.status().as_u16();
            let body: Option<Value> = r.json().await.ok();
            if code < 300 {
                (code.to_string(), body)
            } else {
                let err = body
                    .as_ref()
                    .and_then(|b| b["error"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                (format!("{code} {err}"), body)
            }
        }
    }
}

struct Ctx {
    args: Args,
    http: reqwest::Client,
    world: World,
    stats: Stats,
    slots: Arc<Semaphore>,
    run: String,
    /// Latest `expires_at` (ms) of the holds left to expire.
    last_expiry_ms: AtomicI64,
}

async fn hold_op(ctx: Arc<Ctx>, i: u64, intended: Instant, permit: OwnedSemaphorePermit) {
    let a = &ctx.args;
    let w = &ctx.world;
    let by_pin = !w.pins.is_empty() && draw(a.seed, 1, i) < a.pin_share;
    let fate = draw(a.seed, 2, i);
    let abandon = fate >= a.confirm_share + a.cancel_share;
    let ttl = if abandon {
        a.abandon_ttl_secs
    } else {
        a.ttl_secs
    };
    let mut body = if by_pin {
        let (pin, skus) = &w.pins[(mix(a.seed ^ 3 ^ mix(i)) % w.pins.len() as u64) as usize];
        let sku = &skus[(mix(a.seed ^ 4 ^ mix(i)) % skus.len() as u64) as usize];
        json!({"pin": pin, "lines": [{"sku": sku, "qty": 1}]})
    } else {
        let (outlet, sku) = &w.web[(mix(a.seed ^ 5 ^ mix(i)) % w.web.len() as u64) as usize];
        json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}]})
    };
    body["ttl_secs"] = json!(ttl);
    body["channel"] = json!("web");
    let res = ctx
        .http
        .post(format!("{}/v1/reservations", a.url))
        .bearer_auth(&a.key)
        .header("Idempotency-Key", format!("fest-{}-{i}", ctx.run))
        .json(&body)
        .send()
        .await;
    let (status, answer) = status_of(res).await;
    let held = status == "201";
    ctx.stats.answer("hold", intended, status, held);
    drop(permit);
    let Some(id) = answer.filter(|_| held).and_then(|b| {
        if abandon {
            if let Some(ms) = b["expires_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                ctx.last_expiry_ms
                    .fetch_max(ms.timestamp_millis(), Ordering::Relaxed);
            }
        }
        b["id"].as_str().map(str::to_owned)
    }) else {
        return;
    };
    if abandon {
        return;
    }
    let think = (draw(a.seed, 6, i) * 2.0 * a.think_ms as f64) as u64;
    tokio::time::sleep(Duration::from_millis(think)).await;
    let op = if fate < a.confirm_share {
        "confirm"
    } else {
        "cancel"
    };
    let intended = Instant::now();
    ctx.stats.offered(op);
    let Ok(_permit) = ctx.slots.clone().try_acquire_owned() else {
        ctx.stats.overload(op);
        return;
    };
    let req = ctx
        .http
        .post(format!("{}/v1/reservations/{id}/{op}", a.url))
        .bearer_auth(&a.key);
    let req = if op == "confirm" {
        req.json(&json!({"payment_ref": format!("pay-{}-{i}", ctx.run)}))
    } else {
        req
    };
    let (status, _) = status_of(req.send().await).await;
    let ok = status == "200";
    ctx.stats.answer(op, intended, status, ok);
}

/// A Meta-shaped webhook body with one order message.
fn whatsapp_body(id: &str, sender: &str, items: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Festival shopper"}, "wa_id": sender}],
            "messages": [{"from": sender, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
                "type": "order", "order": {"catalog_id": "194836987003835", "text": "festival order",
                "product_items": items}}]},
        "field": "messages"}]}]})
}

/// `sha256=` + hex HMAC-SHA256 of the raw body under the app secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn whatsapp_op(ctx: Arc<Ctx>, i: u64, intended: Instant, permit: OwnedSemaphorePermit) {
    let a = &ctx.args;
    // Two senders mapped to PINs in the demo config, and one that is not (default outlet).
    let senders = ["919800000001", "919800000002", "919800000099"];
    let sender = senders[(mix(a.seed ^ 7 ^ mix(i)) % 3) as usize];
    let skus = &ctx.world.web_skus;
    let lines = 1 + (mix(a.seed ^ 8 ^ mix(i)) % 2) as usize;
    let mut chosen = BTreeSet::new();
    for l in 0..lines {
        chosen
            .insert(&skus[(mix(a.seed ^ 9 ^ mix(i * 4 + l as u64)) % skus.len() as u64) as usize]);
    }
    let items: Vec<Value> = chosen
        .iter()
        .map(|s| json!({"product_retailer_id": s, "quantity": 1, "item_price": 450, "currency": "INR"}))
        .collect();
    let body = whatsapp_body(&format!("wamid.fest-{}-{i}", ctx.run), sender, json!(items));
    let raw = serde_json::to_vec(&body).expect("json");
    let res = ctx
        .http
        .post(format!("{}/v1/webhooks/whatsapp", a.url))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(&a.app_secret, &raw))
        .body(raw)
        .send()
        .await;
    let (status, _) = status_of(res).await;
    let ok = status == "200";
    ctx.stats.answer("whatsapp", intended, status, ok);
    drop(permit);
}

/// A kitchen delivery: a `receipt` of 1 to 3 units of a web SKU at its outlet.
async fn movement_op(ctx: Arc<Ctx>, i: u64, intended: Instant, permit: OwnedSemaphorePermit) {
    let a = &ctx.args;
    let w = &ctx.world;
    let (outlet, sku) = &w.web[(mix(a.seed ^ 12 ^ mix(i)) % w.web.len() as u64) as usize];
    let body = json!({"event_id": format!("fest-{}-mv-{i}", ctx.run), "outlet": outlet,
        "sku": sku, "kind": "receipt", "qty": 1 + mix(a.seed ^ 13 ^ mix(i)) % 3,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "note": "festival kitchen delivery"});
    let res = ctx
        .http
        .post(format!("{}/v1/movements", a.url))
        .bearer_auth(&a.admin_key)
        .json(&body)
        .send()
        .await;
    let (status, _) = status_of(res).await;
    let ok = status == "201";
    ctx.stats.answer("movement", intended, status, ok);
    drop(permit);
}

/// The service's CPU seconds and RSS bytes from /proc (Linux; USER_HZ is 100 there).
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((ticks / 100.0, pages * 4096.0))
}

/// What `sample_resources` saw, each point at its seconds since the load's start.
#[derive(Default)]
struct Samples {
    /// The service: (t, CPU % of one core, RSS MB).
    usage: Vec<(f64, f64, f64)>,
    /// The `--pid` processes, by name: (t, CPU % of one core, RSS MB).
    procs: BTreeMap<String, Vec<(f64, f64, f64)>>,
    /// (t, outbox entries waiting for the ledger, all outlets).
    outbox: Vec<(f64, f64)>,
    /// (t, ledger documents written since the service started).
    written: Vec<(f64, f64)>,
    /// (t, the most behind outlet's ledger lag in s, new holds shed per second since the
    /// last sample).
    ledger: Vec<(f64, f64, f64)>,
    /// (t, mean ledger insert_many ms since the last sample), when there was one.
    insert: Vec<(f64, f64)>,
    /// The first and the last `/metrics` read.
    first: Option<audit::Metrics>,
    last: Option<audit::Metrics>,
}

/// CPU % of one core between two readings `(when, CPU seconds)`.
fn cpu_percent(from: (Instant, f64), to: (Instant, f64)) -> f64 {
    (to.1 - from.1) / to.0.duration_since(from.0).as_secs_f64().max(1e-6) * 100.0
}

/// The service's CPU and memory, its ledger (outbox, lag, shed holds, insert latency) and
/// the `--pid` processes' CPU and memory, sampled every second while `running`. The service's
/// CPU and memory come from /proc with `--service-pid`, else from its `/metrics`
/// (`shelfsync_process_*`), whose CPU counter has whole seconds: each point then averages
/// the last five seconds.
async fn sample_resources(
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
fn slope(points: &[(f64, f64)]) -> Option<f64> {
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
fn service_summary(points: &[(f64, f64, f64)]) -> Value {
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

/// A row of the printed table that has only a count and latencies (push, POS apply).
fn print_latency_row(name: &str, count: u64, p: &Value) {
    let f = |k: &str| ms_cell(p, k);
    println!(
        "{name:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "-",
        count,
        "-",
        "-",
        "-",
        f("p50"),
        f("p90"),
        f("p99"),
        f("p99_9"),
        f("max")
    );
}

/// A latency figure of `percentiles` for the printed table.
fn ms_cell(p: &Value, k: &str) -> String {
    p[k].as_f64()
        .map(|v| format!("{v:.2}"))
        .unwrap_or_else(|| "-".into())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
    json!({"p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()), "count": h.len()})
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("festival: the audit FAILED");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("festival: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let _ = BUCKET_SECS.set(args.bucket_secs.max(1));
    anyhow::ensure!(
        args.rate > 0.0 && args.spike > 0.0,
        "--rate and --spike must be > 0"
    );
    anyhow::ensure!(
        args.confirm_share + args.cancel_share <= 1.0,
        "--confirm-share + --cancel-share must be at most 1"
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.inflight_max)
        .build()?;
    let world = discover(&args, &http).await?;
    let metrics_before = audit::metrics(&http, &args).await?;
    let oversell_before = metrics_before.oversell_units;
    let run = format!("{}-{}", chrono::Utc::now().timestamp(), std::process::id());
    println!(
        "festival {run}: {} outlets, {} web targets, {} counter targets, {} PINs; {:.0} holds/s ({} x {}), {} POS sales/s, {} WhatsApp orders/s for {} s",
        world.outlets.len(),
        world.web.len(),
        world.counter.len(),
        world.pins.len(),
        args.rate * args.spike,
        args.rate,
        args.spike,
        args.pos_rate,
        args.whatsapp_rate,
        args.secs
    );
    let stats = Stats::new();
    let slots = Arc::new(Semaphore::new(args.inflight_max));
    let ctx = Arc::new(Ctx {
        args: args.clone(),
        http: http.clone(),
        world,
        stats: stats.clone(),
        slots: slots.clone(),
        run: run.clone(),
        last_expiry_ms: AtomicI64::new(0),
    });
    let pos = mqtt::Pos::connect(&args, &run, &ctx.world, stats.clone()).await?;
    let hold_rate = args.rate * args.spike;
    let n = |rate: f64| (rate * args.secs as f64).round() as u64;
    // About how many stock values the browsers will receive; past a million, keep one seq
    // in `every` (see push.rs).
    let changes =
        n(hold_rate * 2.0 + args.pos_rate + args.whatsapp_rate * 2.0 + args.movement_rate);
    let receipts = changes as f64 * args.sse_clients as f64 / ctx.world.outlets.len() as f64;
    let every = (receipts / 1_000_000.0).ceil().max(1.0) as u64;
    let mut push = push::Push::start(&args, &run, &ctx.world, every).await?;
    println!(
        "{} of {} SSE browsers connected; MQTT stock subscriber connected",
        push.sse_connected.load(Ordering::Relaxed),
        args.sse_clients
    );
    let start = Instant::now() + Duration::from_millis(200);
    stats.started(start);
    let start_wall_ms = chrono::Utc::now().timestamp_millis() + 200;
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn(sample_resources(
        http.clone(),
        args.clone(),
        start,
        sampling.clone(),
    ));
    let schedule = Schedule {
        start,
        secs: args.secs,
        slots: slots.clone(),
        stats: stats.clone(),
    };
    let holds = schedule.spawn("hold", hold_rate, with_ctx(&ctx, hold_op));
    let whatsapp = schedule.spawn("whatsapp", args.whatsapp_rate, with_ctx(&ctx, whatsapp_op));
    let movements = schedule.spawn("movement", args.movement_rate, with_ctx(&ctx, movement_op));
    let sales = {
        let (pos, ctx) = (pos.clone(), ctx.clone());
        schedule.spawn("pos_sale", args.pos_rate, move |i, t, p| {
            let (pos, ctx) = (pos.clone(), ctx.clone());
            async move { pos.sell(&ctx.world, ctx.args.seed, i, t, p).await }
        })
    };
    let mut pending = Vec::new();
    for stream in [holds, whatsapp, movements, sales] {
        pending.push(stream.await?);
    }
    let sent_secs = start.elapsed().as_secs_f64();
    for mut tasks in pending {
        let _ = tokio::time::timeout(Duration::from_secs(90), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    let load_secs = start.elapsed().as_secs_f64();
    // Unacknowledged publishes get a little longer; what stays unacknowledged is counted.
    pos.wait_acks(Duration::from_secs(30)).await;
    println!("load phase done after {load_secs:.1} s; auditing");

    // Let the abandoned holds expire before the audit.
    let last_expiry = ctx.last_expiry_ms.load(Ordering::Relaxed);
    let wait_ms = last_expiry + 2000 - chrono::Utc::now().timestamp_millis();
    if wait_ms > 0 {
        tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    }
    sampling.store(false, Ordering::Relaxed);
    let resources = sampler.await.unwrap_or_default();
    push.stop().await;
    let acked = pos.acked();
    let (report, found) = audit::run(&args, &http, &ctx.world, oversell_before, &acked).await?;
    let commits = found.commits;

    let stats = stats.0.lock().expect("stats");
    let mut ops = serde_json::Map::new();
    println!(
        "\n{:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "operation",
        "offered",
        "ok",
        "offer/s",
        "ok/s",
        "overload",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    for op in OPS {
        let s = &stats[op];
        let rate = |n: u64| n as f64 / sent_secs.max(0.001);
        let p = percentiles(&s.hist);
        let f = |k: &str| ms_cell(&p, k);
        println!(
            "{op:<10} {:>8} {:>8} {:>9.1} {:>9.1} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            s.offered,
            s.ok,
            rate(s.offered),
            rate(s.ok),
            s.overload,
            f("p50"),
            f("p90"),
            f("p99"),
            f("p99_9"),
            f("max")
        );
        ops.insert(
            op.into(),
            json!({"offered": s.offered, "ok": s.ok, "client_overload": s.overload,
                "offered_per_sec": rate(s.offered), "achieved_per_sec": rate(s.ok),
                "latency_ms": p, "statuses": s.statuses}),
        );
    }
    // Commit-to-client push latency (see push.rs), printed under the operations.
    let mut series = Vec::new();
    let mut pushes = serde_json::Map::new();
    for (name, receipts) in [("push_sse", &push.sse), ("push_mqtt", &push.mqtt)] {
        let (h, by_sec, matched) = receipts.latency(&commits, start_wall_ms);
        let p = percentiles(&h);
        print_latency_row(name, matched, &p);
        pushes.insert(
            name.into(),
            json!({"matched_receipts": matched, "latency_ms": p}),
        );
        series.push(plot::Series {
            name: name.into(),
            points: by_sec.points(),
        });
    }
    // POS apply: from the sale's send time (its `at`) to its commit at the outlet.
    let mut apply = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
    let mut apply_timeline = Timeline::default();
    for &(sent, ms) in &found.pos_apply {
        let us = (ms.max(0) as u64 * 1000).clamp(1, 600_000_000);
        let _ = apply.record(us);
        apply_timeline.record((sent - start_wall_ms) as f64 / 1000.0, us);
    }
    let pos_apply = percentiles(&apply);
    print_latency_row("pos_apply", apply.len(), &pos_apply);
    series.push(plot::Series {
        name: "pos_apply".into(),
        points: apply_timeline.points(),
    });
    let mut push_doc = push.summary();
    push_doc["latency"] = Value::Object(pushes);
    println!(
        "(push rows: \"ok\" is receipts matched to the run's ledger documents; latency commit to client; pos_apply: acknowledged sales found in the ledger, latency send to commit; {} of {} SSE browsers connected, {} reconnects, one seq in {} sampled)",
        push.sse_connected.load(Ordering::Relaxed),
        args.sse_clients,
        push.sse_reconnects.load(Ordering::Relaxed),
        push.sse.every()
    );
    for op in ["hold", "confirm", "cancel", "movement", "pos_sale"] {
        series.push(plot::Series {
            name: op.into(),
            points: stats[op].timeline.points(),
        });
    }
    // CPU over the load phase only (the sampler also covers the wait for expiries).
    let load_usage: Vec<_> = resources
        .usage
        .iter()
        .copied()
        .filter(|(t, _, _)| *t <= sent_secs)
        .collect();
    let mut service = service_summary(&load_usage);
    service["rss_mb_max"] =
        json!((resources.usage.iter().map(|p| p.2).fold(0.0, f64::max) * 10.0).round() / 10.0);
    // The ledger's lag: the outbox at most, and at the end of the load (its last sample
    // then); a sustained rate is one whose outbox does not grow.
    let outbox_at = |secs: f64| {
        resources
            .outbox
            .iter()
            .take_while(|(t, _)| *t <= secs)
            .last()
            .map(|(_, n)| *n)
    };
    service["outbox_max"] = json!(resources.outbox.iter().map(|(_, n)| *n).fold(0.0, f64::max));
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
    service["outbox_growth_per_sec"] = json!(slope(&second_half(&resources.outbox)));
    service["ledger_docs_written_per_sec"] = json!(slope(&second_half(&resources.written)));
    // Overload: the ledger's lag at most, the holds the service shed, the inserts' latency.
    let round2 = |v: f64| (v * 100.0).round() / 100.0;
    service["ledger_lag_max_secs"] = json!(round2(
        resources.ledger.iter().map(|q| q.1).fold(0.0, f64::max)
    ));
    if let (Some(first), Some(last)) = (&resources.first, &resources.last) {
        let n = last.inserts - first.inserts;
        service["holds_shed"] = json!(last.shed_holds - first.shed_holds);
        service["ledger_inserts"] = json!(n);
        service["ledger_insert_ms"] = json!({
            "mean": (n > 0.0).then(|| round2((last.insert_secs - first.insert_secs) / n * 1000.0)),
            "p50_bucket": last.insert_quantile_ms(first, 0.5),
            "p99_bucket": last.insert_quantile_ms(first, 0.99),
            "max_mean_per_sample": resources.insert.iter().map(|q| q.1).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))).map(round2),
        });
    }
    let mut others = serde_json::Map::new();
    for (name, points) in &resources.procs {
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
    println!(
        "\nservice: CPU {} % of one core on average, {} % at most; RSS {} MB at most; ledger outbox {} entries at most, {} at the end of the load",
        fmt_opt(service["cpu_percent_mean"].as_f64()),
        fmt_opt(service["cpu_percent_max"].as_f64()),
        fmt_opt(service["rss_mb_max"].as_f64()),
        fmt_opt(service["outbox_max"].as_f64()),
        fmt_opt(service["outbox_end_of_load"].as_f64())
    );

    let hold_stats = &stats["hold"];
    let shed_answers: u64 = hold_stats
        .statuses
        .iter()
        .filter(|(k, _)| k.starts_with("503"))
        .map(|(_, n)| n)
        .sum();
    println!(
        "overload: holds offered {}, taken {}, answered 503 {} (the service shed {}); ledger lag {} s at most; ledger insert_many mean {} ms, p99 <= {} ms; POS apply p50 {} ms, p99 {} ms; POS sales acknowledged by the broker and missing from the ledger: {}",
        hold_stats.offered,
        hold_stats.ok,
        shed_answers,
        service["holds_shed"],
        service["ledger_lag_max_secs"],
        service["ledger_insert_ms"]["mean"],
        service["ledger_insert_ms"]["p99_bucket"],
        ms_cell(&pos_apply, "p50"),
        ms_cell(&pos_apply, "p99"),
        report["pos_missing"]
    );
    for (name, s) in &others {
        println!(
            "{name}: CPU {} % of one core on average, {} % at most; RSS {} MB at most",
            fmt_opt(s["cpu_percent_mean"].as_f64()),
            fmt_opt(s["cpu_percent_max"].as_f64()),
            fmt_opt(s["rss_mb_max"].as_f64())
        );
    }

    println!("\nanswers by status:");
    for op in OPS {
        println!("  {op:<10} {:?}", stats[op].statuses);
    }
    println!("\naudit:\n{}", serde_json::to_string_pretty(&report)?);
    let passed = report["passed"].as_bool().unwrap_or(false);
    println!("audit {}", if passed { "PASSED" } else { "FAILED" });
    let doc = json!({
        "run": run,
        "url": args.url,
        "config": {"rate": args.rate, "spike": args.spike, "hold_rate": hold_rate,
            "pos_rate": args.pos_rate, "whatsapp_rate": args.whatsapp_rate, "secs": args.secs,
            "skus": args.skus, "pin_share": args.pin_share, "confirm_share": args.confirm_share,
            "cancel_share": args.cancel_share, "think_ms": args.think_ms,
            "abandon_ttl_secs": args.abandon_ttl_secs, "ttl_secs": args.ttl_secs,
            "inflight_max": args.inflight_max, "movement_rate": args.movement_rate,
            "sse_clients": args.sse_clients, "drain_secs": args.drain_secs,
            "service_pid": args.service_pid, "seed": args.seed, "bucket_secs": args.bucket_secs},
        "send_secs": sent_secs,
        "load_secs": load_secs,
        "operations": ops,
        "push": push_doc,
        "pos_apply_ms": pos_apply,
        "service": service,
        "processes": others,
        "audit": report,
    });
    let out = args.out.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("out")
            .join(format!("festival-{}.json", chrono::Utc::now().timestamp()))
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("report: {}", out.display());
    let png = out.with_extension("png");
    let title = format!(
        "shelfsync festival {run}: {hold_rate:.0} holds/s, {} SSE browsers",
        args.sse_clients
    );
    let mut processes = vec![("service".to_owned(), resources.usage)];
    processes.extend(resources.procs);
    let resources = plot::Resources {
        processes,
        ledger: resources.ledger,
        insert: resources.insert,
    };
    match plot::latency_png(&png, &title, &series, &resources) {
        Ok(()) => println!("plot: {}", png.display()),
        // The figures are in the JSON; a missing font is not worth failing the run for.
        Err(e) => eprintln!("festival: no plot: {e:#}"),
    }
    Ok(passed)
}
