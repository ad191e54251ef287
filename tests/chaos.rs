//! Chaos: a steady mixed load (web holds, confirms, cancels, expiries, receipts over HTTP and
//! POS sales over MQTT) against a real `shelfsync serve` process with its own Redis,
//! SecantusDB and Mosquitto, while faults are injected in turn: kill -9 of the service and
//! a restart, Redis restarted empty, SecantusDB restarted, the broker restarted. Afterwards
//! the ledger must explain everything that was acknowledged, and Redis must equal it.
//!
//! `make test` runs the short form (2 rounds of the 4 faults); `make chaos` the long one
//! (`SHELFSYNC_CHAOS_ROUNDS`, `SHELFSYNC_CHAOS_PHASE_SECS`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::procs::*;
use common::*;
use mongodb::bson::doc;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::json;
use shelfsync::domain::{LedgerKind, OutletId};
use shelfsync::ledger::{LedgerEntry, Projection};

const OUTLETS: [&str; 2] = [OUTLET, OTHER_OUTLET];
const SKUS: [&str; 3] = [SKU, SKU2, SKU3];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Servers {
    dir: PathBuf,
    redis: Proc,
    mongo: Proc,
    broker: Proc,
}

impl Servers {
    async fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("shelfsync-chaos-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("mongo")).unwrap();
        std::fs::create_dir_all(dir.join("mqtt")).unwrap();
        let redis = start_redis().await;
        let mongo = start_mongo(&dir).await;
        // Persistent, so that a restart keeps what it acknowledged: the queue of shelfsync's
        // session and its messages in flight. `user root` keeps a broker started by root able
        // to write its database here (it drops to `mosquitto` otherwise); ignored for others.
        let mqtt_port = free_port();
        let conf = dir.join("mqtt/mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {mqtt_port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n\
                 persistence true\npersistence_location {}/\nuser root\n",
                dir.join("mqtt").display()
            ),
        )
        .unwrap();
        let broker = Proc::start("mosquitto", mqtt_port, move || {
            let mut c = Command::new("mosquitto");
            c.arg("-c").arg(&conf);
            c
        })
        .await;
        Self {
            dir,
            redis,
            mongo,
            broker,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.redis.signal("-KILL");
        self.mongo.signal("-KILL");
        self.broker.signal("-KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The service as its own process.
struct Service {
    proc: Proc,
    url: String,
}

fn service_env(settings: &shelfsync::Settings, c: &mut Command) {
    let root = env!("CARGO_MANIFEST_DIR");
    c.current_dir(root)
        .env("SHELFSYNC_CONFIG", format!("{root}/config.toml"))
        .env("SHELFSYNC__HTTP__PORT", settings.http.port.to_string())
        .env("SHELFSYNC__REDIS__URL", settings.redis.url.expose())
        .env("SHELFSYNC__REDIS__KEY_PREFIX", &settings.redis.key_prefix)
        .env("SHELFSYNC__MONGO__URI", settings.mongo.uri.expose())
        .env("SHELFSYNC__MONGO__DATABASE", &settings.mongo.database)
        .env("SHELFSYNC__MQTT__PORT", settings.mqtt.port.to_string())
        .env("SHELFSYNC__MQTT__CLIENT_ID", &settings.mqtt.client_id)
        .env("SHELFSYNC__MQTT__TOPIC_PREFIX", &settings.mqtt.topic_prefix)
        .env("SHELFSYNC__RECONCILER__INTERVAL_SECS", "2")
        // Checkpoints often, so that restarts rebuild from them.
        .env("SHELFSYNC__RECONCILER__CHECKPOINT_EVERY_DOCS", "50")
        .env("SHELFSYNC__LEDGER__DURABLE_WAIT_SECS", "5")
        .env("SHELFSYNC__LEDGER__POLL_INTERVAL_MS", "200")
        .env("RUST_LOG", "warn");
}

impl Service {
    async fn start(settings: &shelfsync::Settings) -> Self {
        let s = settings.clone();
        let proc = Proc::start("shelfsync", settings.http.port, move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_shelfsync"));
            c.arg("serve");
            service_env(&s, &mut c);
            c
        })
        .await;
        Self {
            proc,
            url: format!("http://127.0.0.1:{}", settings.http.port),
        }
    }
}

#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    confirmed: HashSet<String>,
    pos_acked: HashSet<String>,
}

impl Tally {
    fn count(&mut self, what: &str) {
        *self.counts.entry(what.to_owned()).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Tally>>;

fn outcome(res: &Result<reqwest::Response, reqwest::Error>) -> String {
    match res {
        Ok(r) => r.status().as_u16().to_string(),
        Err(_) => "no answer".into(),
    }
}

/// Posts `body` until it gets a final answer (not 503, not a lost connection), at most
/// `tries` times, as a client holding an idempotency key would; counts every answer.
async fn until_final(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    what: &str,
    tally: &Shared,
    tries: u32,
) -> String {
    let mut code = String::new();
    for _ in 0..tries {
        let res = http.post(url).bearer_auth(key).json(body).send().await;
        code = outcome(&res);
        tally.lock().unwrap().count(&format!("{what} {code}"));
        if code != "503" && code != "no answer" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    code
}

/// A web customer: hold, then confirm, cancel or walk away. A confirm without a final
/// answer is retried with the same request, as a storefront would.
async fn customer(url: String, tally: Shared, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let (outlet, sku, qty, choice) = {
            let mut rng = rand::thread_rng();
            (
                OUTLETS[rng.gen_range(0..2)],
                SKUS[rng.gen_range(0..3)],
                rng.gen_range(1..=3),
                rng.gen_range(0..10),
            )
        };
        let body = json!({"outlet": outlet, "lines": [{"sku": sku, "qty": qty}], "ttl_secs": 2});
        let res = http
            .post(format!("{url}/v1/reservations"))
            .bearer_auth(STOREFRONT)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await;
        tally
            .lock()
            .unwrap()
            .count(&format!("hold {}", outcome(&res)));
        let Ok(res) = res else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if res.status() != StatusCode::CREATED {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let id = res.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (path, body) = match choice {
            0..=4 => ("confirm", json!({"payment_ref": format!("pay-{n}")})),
            5..=6 => ("cancel", json!({})),
            _ => continue, // expires
        };
        let path_url = format!("{url}/v1/reservations/{id}/{path}");
        let code = until_final(&http, &path_url, STOREFRONT, &body, path, &tally, 10).await;
        if code == "200" && path == "confirm" {
            tally.lock().unwrap().confirmed.insert(id);
        }
    }
}

/// A counter POS: sales over MQTT, QoS 1, one at a time with `mosquitto_pub`, whose exit
/// status 0 means the broker acknowledged the message.
async fn pos(port: u16, topic_prefix: String, tally: Shared, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let event_id = format!(
            "chaos-pos-{n}-t{}",
            shelfsync::domain::now_ms() % 10_000_000
        );
        let sku = SKUS[n as usize % 3];
        let payload = json!({"event_id": event_id, "sku": sku, "kind": "sale_counter", "qty": 1,
            "at": recent_at()})
        .to_string();
        let topic = format!("{topic_prefix}pos/{OUTLET}/movements");
        let status = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-V",
                "mqttv5",
            ])
            .args(["-t", &topic, "-m", &payload])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        {
            let mut t = tally.lock().unwrap();
            if status.success() {
                t.count("pos acked by the broker");
                t.pos_acked.insert(event_id);
            } else {
                t.count("pos refused or unreachable broker");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A kitchen delivery now and then, so holds keep finding stock; retried with its event id
/// until it has a final answer.
async fn restock(url: String, tally: Shared, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        for outlet in OUTLETS {
            for sku in SKUS {
                let body = json!({"event_id": format!("chaos-receipt-{n}-{outlet}-{sku}"), "outlet": outlet,
                    "sku": sku, "kind": "receipt", "qty": 15, "at": recent_at()});
                let movements = format!("{url}/v1/movements");
                until_final(&http, &movements, ADMIN, &body, "receipt", &tally, 20).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ledger_entries(settings: &shelfsync::Settings, outlet: &str) -> Vec<LedgerEntry> {
    let ledger = ledger(settings).await;
    let mut p = Projection::default();
    let outlet = OutletId::parse("o", outlet).unwrap();
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page = ledger.page(&outlet, None, after, 5000).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().seq as u64;
        for e in page {
            // While the service writes, a later document may show before an earlier one: stop
            // at the gap (after the run, `shelfsync check` proves there is none).
            if p.apply(&e).is_err() {
                return entries;
            }
            entries.push(e);
        }
    }
    entries
}

#[actix_web::test]
async fn chaos() {
    let rounds = env_or("SHELFSYNC_CHAOS_ROUNDS", 2);
    let phase = Duration::from_secs(env_or("SHELFSYNC_CHAOS_PHASE_SECS", 4));
    let mut servers = Servers::start().await;
    let mut settings = test_settings();
    settings.http.port = free_port();
    settings.redis.url = redis_url(&servers.redis);
    settings.mongo.uri = mongo_uri(&servers.mongo);
    settings.mqtt.port = servers.broker.port;
    let mut service = Service::start(&settings).await;
    let url = service.url.clone();
    let http = reqwest::Client::new();
    assert!(
        eventually(60, || async {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await,
        "the service got ready"
    );
    for outlet in OUTLETS {
        for sku in SKUS {
            let body = json!({"event_id": format!("chaos-open-{outlet}-{sku}"), "outlet": outlet,
                "sku": sku, "kind": "count", "qty": 60, "at": recent_at()});
            let res = http
                .post(format!("{url}/v1/movements"))
                .bearer_auth(ADMIN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
        }
    }

    let tally: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        load.push(tokio::spawn(customer(
            url.clone(),
            tally.clone(),
            stop.clone(),
        )));
    }
    load.push(tokio::spawn(pos(
        servers.broker.port,
        settings.mqtt.topic_prefix.clone(),
        tally.clone(),
        stop.clone(),
    )));
    load.push(tokio::spawn(restock(
        url.clone(),
        tally.clone(),
        stop.clone(),
    )));

    let started = Instant::now();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut fault_log = Vec::new();
    for _ in 0..rounds {
        for fault in [
            "kill -9 shelfsync, restart",
            "restart Redis empty",
            "restart SecantusDB",
            "restart the broker",
        ] {
            tokio::time::sleep(phase).await;
            match fault {
                "kill -9 shelfsync, restart" => service.proc.restart("-KILL").await,
                "restart Redis empty" => servers.redis.restart("-KILL").await,
                "restart SecantusDB" => servers.mongo.restart("-TERM").await,
                _ => servers.broker.restart("-TERM").await,
            }
            *faults.entry(fault).or_default() += 1;
            fault_log.push((shelfsync::domain::now_ms() % 10_000_000, fault));
        }
    }
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();

    // Let every expiry fire, every outbox drain, and every POS message be delivered.
    let acked: Vec<String> = tally.lock().unwrap().pos_acked.iter().cloned().collect();
    let all_pos_in_ledger = eventually(60, || async {
        let ids: HashSet<String> = ledger_entries(&settings, OUTLET)
            .await
            .into_iter()
            .filter_map(|e| e.event_id)
            .collect();
        acked.iter().all(|id| ids.contains(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    service.proc.signal("-TERM");

    // Redis equals the ledger, with no gap.
    let check = cli(&settings, &["check"]);
    let check_out = String::from_utf8_lossy(&check.stdout).to_string();

    // The reconciler's findings over the whole run.
    let drift = documents(&settings, "drift").await;

    // Replay the ledger: every hold found its units available; every 2xx confirm and every
    // acknowledged POS sale is in it exactly once.
    let mut sales: HashMap<String, u32> = HashMap::new();
    let mut pos_seen: HashMap<String, u32> = HashMap::new();
    let mut ledger_documents = 0;
    let mut expired = 0;
    for outlet in OUTLETS {
        let mut p = Projection::default();
        for e in ledger_entries(&settings, outlet).await {
            ledger_documents += 1;
            p.apply(&e).unwrap();
            match e.kind {
                LedgerKind::ReservationHeld => {
                    for line in &e.lines {
                        let c = p.counters[&line.sku];
                        assert!(
                            c.available() >= 0,
                            "{outlet} seq {}: a hold took {} of {} beyond what was available",
                            e.seq,
                            line.d_reserved,
                            line.sku.as_str()
                        );
                    }
                }
                LedgerKind::SaleWeb => {
                    *sales.entry(e.reservation.unwrap().to_string()).or_default() += 1;
                }
                LedgerKind::ReservationReleased
                    if e.reason == Some(shelfsync::store::ReleaseReason::Expired) =>
                {
                    expired += 1
                }
                LedgerKind::SaleCounter => {
                    *pos_seen.entry(e.event_id.unwrap()).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());

    println!("\nchaos: {rounds} rounds, {load_secs:.0} s of load");
    println!("{:<40} {:>8}", "fault injected", "times");
    for (fault, n) in &faults {
        println!("{fault:<40} {n:>8}");
    }
    println!("{:<40} {:>8}", "operation outcome", "count");
    for (what, n) in &tally.counts {
        println!("{what:<40} {n:>8}");
    }
    println!("{:<40} {:>8}", "ledger documents", ledger_documents);
    println!("{:<40} {:>8}", "holds expired (ledger)", expired);
    println!(
        "{:<40} {:>8}",
        "confirms answered 200",
        tally.confirmed.len()
    );
    println!(
        "{:<40} {:>8}",
        "POS sales acked by the broker",
        tally.pos_acked.len()
    );
    let healed = drift
        .iter()
        .filter(|d| d.get_bool("healed").unwrap_or(false))
        .count();
    println!("{:<40} {:>8}", "drift found (reconciler)", drift.len());
    println!("{:<40} {:>8}", "drift healed (reconciler)", healed);
    println!("shelfsync check:\n{check_out}");

    for (fault, n) in &faults {
        assert!(*n >= 1, "{fault} was never injected");
    }
    assert!(
        tally.confirmed.len() >= 5,
        "too little load got through to mean anything: {:?}",
        tally.counts
    );
    assert!(tally.pos_acked.len() >= 5, "{:?}", tally.counts);
    if !all_pos_in_ledger {
        let mut missing: Vec<&String> = tally
            .pos_acked
            .iter()
            .filter(|id| !pos_seen.contains_key(*id))
            .collect();
        missing.sort();
        let rejected = documents(&settings, "rejected").await;
        panic!("acknowledged POS sales never reached the ledger: {missing:?}; faults at {fault_log:?}; rejected: {rejected:?}");
    }
    for id in &tally.confirmed {
        assert_eq!(sales.get(id), Some(&1), "confirm {id} answered 200");
    }
    for (id, n) in &sales {
        assert_eq!(*n, 1, "{id} sold {n} times");
    }
    for id in &tally.pos_acked {
        assert_eq!(pos_seen.get(id), Some(&1), "POS sale {id}");
    }
    for (id, n) in &pos_seen {
        assert_eq!(*n, 1, "POS sale {id} applied {n} times");
    }
    assert!(check.status.success(), "shelfsync check:\n{check_out}");
    assert!(drift.is_empty(), "the reconciler found drift: {drift:?}");
    drop(servers);
}

/// MongoDB down for a while: holds go on from Redis, the outbox grows to its bound and then
/// refuses, confirms and movements answer 503 after their wait with the change kept, and
/// when MongoDB is back everything drains and a retried confirm gets its final answer.
#[actix_web::test]
async fn mongodb_down_holds_go_on_confirms_wait_then_complete() {
    let dir = std::env::temp_dir().join(format!(
        "shelfsync-mongo-down-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mut mongo = start_mongo(&dir).await;
    let mut settings = test_settings();
    settings.mongo.uri = mongo_uri(&mongo);
    settings.ledger.durable_wait_secs = 1;
    settings.ledger.outbox_max = 6;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 20).await;
    let first = app.hold(OUTLET, SKU, 2, 300).await;
    let id = first["id"].as_str().unwrap().to_owned();
    // Both are in the ledger and out of the outbox before MongoDB goes.
    let store = redis_store(&app.settings).await;
    let keys = store.keys(&OutletId::parse("o", OUTLET).unwrap());
    assert!(
        eventually(10, || async {
            store.first_outbox_seq(&keys).await.unwrap().is_none()
                && ledger_projection(&app.settings, OUTLET).await.seq == 2
        })
        .await
    );

    mongo.signal("-KILL");
    // Holds keep working from Redis while the outbox has room...
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(app.hold(OUTLET, SKU, 1, 300).await);
    }
    // ...a confirm waits, then says what happened...
    let confirm = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay-down"}),
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = confirm.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("retry with the same key"),
        "{body}"
    );
    // ...and past the outbox bound new writes are refused, nothing applied.
    let refused = app
        .reserve(
            "past-the-bound",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let before = app.stock(OUTLET, SKU).await;

    mongo.spawn().await;
    let retried = eventually(30, || async {
        app.post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay-down"}),
        )
        .await
        .status()
            == StatusCode::OK
    })
    .await;
    assert!(retried, "the confirm completes once MongoDB is back");
    assert_eq!(app.reservation(&id).await["status"], "confirmed");
    assert_eq!(
        (before["on_hand"].as_i64(), before["reserved"].as_i64()),
        (Some(18), Some(5)),
        "the confirm is applied in Redis; the refused hold reserved nothing"
    );
    let settings = app.stop().await;
    let entries = ledger_entries(&settings, OUTLET).await;
    let sales = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::SaleWeb)
        .count();
    let holds = entries
        .iter()
        .filter(|e| e.kind == LedgerKind::ReservationHeld)
        .count();
    assert_eq!((sales, holds), (1, 6));
    let check = cli(&settings, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    drop(mongo);
    let _ = std::fs::remove_dir_all(&dir);
}
