//! Several `shelfsync serve` processes on one Redis prefix, MongoDB database and broker:
//! outlet ownership by lease, fencing, failover and hand-over (ARCHITECTURE.md, Several
//! processes). Real processes, so that they can be paused (SIGSTOP) and killed (SIGKILL).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::procs::{Proc, RedisCluster};
use common::*;
use serde_json::{json, Value};
use shelfsync::actors::ownership::owner_of;
use shelfsync::domain::OutletId;
use shelfsync::store::{BatchArgs, Op, ReleaseReason};

const ADMIN: &str = "demo-admin-key-change-me";
const STOREFRONT: &str = "demo-storefront-key-change-me";
/// The service's default. It was 2 s, so that the tests waited little; but a process renews
/// its leases in the same round that takes new outlets, and taking one reads the ledger
/// (`provably_durable`): on a SecantusDB that has run the whole suite, a round stalled past
/// two thirds of a 2 s lease, every lease lapsed, each outlet was reloaded on its next write,
/// and the dead process's outlets were not all taken in a minute (the nodes' logs, make test
/// at 660706d). See ARCHITECTURE.md, Several processes.
const LEASE_MS: u64 = 6000;
/// How long the live processes may take to own every outlet again after one stopped, was
/// killed or came back: a few leases when all is well, but under the whole suite a
/// SecantusDB that has run for a while answers the new owners' ledger lookups slowly. A
/// bound, not the figure: the tests print the gaps they saw.
const SETTLE_SECS: u64 = 60;

struct Node {
    name: &'static str,
    proc: Proc,
    url: String,
}

impl Node {
    async fn start(settings: &shelfsync::Settings, name: &'static str) -> Self {
        Self::start_with(settings, name, &[]).await
    }

    /// `start`, with more settings as environment variables.
    async fn start_with(
        settings: &shelfsync::Settings,
        name: &'static str,
        env: &[(&'static str, &'static str)],
    ) -> Self {
        let env = env.to_vec();
        let port = free_port();
        let s = settings.clone();
        // Warnings and errors, printed when the outlets do not settle (`spread`).
        let log = format!("{}/cluster-{port}-{name}.log", env!("CARGO_TARGET_TMPDIR"));
        let proc = Proc::start_logged("shelfsync", port, Some(log.into()), move || {
            let mut s = s.clone();
            s.cluster.node_id = name.into();
            s.mqtt.client_id = format!("{}-{name}", s.mqtt.client_id);
            let mut c = common::procs::serve_command(&s, port);
            c.env("SHELFSYNC__CLUSTER__LEASE_MS", LEASE_MS.to_string())
                .env("SHELFSYNC__LEDGER__POLL_INTERVAL_MS", "200")
                // No sales-history reads for the alert engine (these tests judge no alert):
                // 30 s after the first takeover they came during the restarts and kills, on the
                // same SecantusDB the takeovers read, and every process's rounds stalled.
                .env("SHELFSYNC__ALERTS__READ_AFTER_SECS", "3600")
                .envs(env.iter().copied());
            c
        })
        .await;
        Self {
            name,
            proc,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The outlets a node owns, by its `/readyz`; `None` when it does not answer.
async fn owns(node: &Node) -> Option<BTreeSet<String>> {
    let body: Value = http()
        .get(format!("{}/readyz", node.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    assert_eq!(body["node"], node.name);
    Some(
        body["owns"]
            .as_array()?
            .iter()
            .map(|o| o.as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Waits until the nodes own every outlet between them, each outlet once and where
/// rendezvous hashing puts it; returns who owns what.
async fn spread(nodes: &[&Node], outlets: usize, secs: u64) -> BTreeMap<String, &'static str> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut owner = BTreeMap::new();
        let mut twice = false;
        for n in nodes {
            for o in owns(n).await.unwrap_or_default() {
                twice |= owner.insert(o, n.name).is_some();
            }
        }
        // Settled: every outlet where rendezvous hashing over the live nodes puts it.
        let members: Vec<String> = nodes.iter().map(|n| n.name.to_owned()).collect();
        let settled = owner.iter().all(|(o, n)| {
            let o = OutletId::parse("outlet", o).unwrap();
            owner_of(&members, &o) == Some(*n)
        });
        if !twice && owner.len() == outlets && settled {
            return owner;
        }
        if Instant::now() >= deadline {
            for n in nodes {
                eprintln!(
                    "--- the log of node {} ---\n{}",
                    n.name,
                    n.proc.log_tail(40)
                );
            }
            panic!(
                "the outlets were not spread over {} nodes in {secs} s: {owner:?}",
                nodes.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn hold(
    node: &Node,
    idem: &str,
    outlet: &str,
    sku: &str,
    ttl_secs: u64,
) -> reqwest::Response {
    http()
        .post(format!("{}/v1/reservations", node.url))
        .bearer_auth(STOREFRONT)
        .header("Idempotency-Key", idem)
        .json(&json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": ttl_secs}))
        .send()
        .await
        .unwrap()
}

/// Sets on_hand of `sku` at `outlet` by a `count` movement through its owner.
async fn stocked(node: &Node, outlet: &str, sku: &str, qty: i64) {
    let body = json!({"event_id": format!("count-{outlet}-{sku}"), "outlet": outlet,
        "sku": sku, "kind": "count", "qty": qty, "at": recent_at()});
    let r = http()
        .post(format!("{}/v1/movements", node.url))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "count at {outlet}: {}",
        r.text().await.unwrap()
    );
}

async fn metric(node: &Node, series: &str) -> f64 {
    metric_with(node, series, "").await
}

/// The sum of a metric's series whose labels contain `label`.
async fn metric_with(node: &Node, name: &str, label: &str) -> f64 {
    let text = http()
        .get(format!("{}/metrics", node.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The ledger documents of one outlet, by kind and reservation.
async fn ledger_docs(settings: &shelfsync::Settings, outlet: &str) -> Vec<mongodb::bson::Document> {
    documents(settings, "ledger")
        .await
        .into_iter()
        .filter(|d| d.get_str("outlet").ok() == Some(outlet))
        .collect()
}

/// Fresh settings with the demo chain imported, and its number of outlets.
/// A SecantusDB of the test's own, fresh: the shared one of the whole suite has run every
/// earlier test's ledger by the time these run, and answers the takeovers' ledger reads
/// slowly enough to stall every process's ownership rounds (ARCHITECTURE.md, Several
/// processes). These tests are about ownership and fencing, not that server's age.
struct OwnDb {
    proc: Proc,
    dir: std::path::PathBuf,
}

impl OwnDb {
    async fn start(settings: &mut shelfsync::Settings) -> Self {
        let dir =
            std::env::temp_dir().join(format!("shelfsync-cluster-db-{}", uuid::Uuid::new_v4()));
        let proc = common::procs::start_mongo(&dir).await;
        settings.mongo.uri = common::procs::mongo_uri(&proc);
        Self { proc, dir }
    }
}

impl Drop for OwnDb {
    fn drop(&mut self) {
        self.proc.signal("-KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn chain() -> (shelfsync::Settings, usize, OwnDb) {
    let mut settings = test_settings();
    let db = OwnDb::start(&mut settings).await;
    let (settings, outlets) = imported(settings);
    (settings, outlets, db)
}

/// `settings` with the demo chain imported, and its number of outlets.
fn imported(settings: shelfsync::Settings) -> (shelfsync::Settings, usize) {
    let out = cli(&settings, &["import"]);
    assert!(out.status.success(), "import: {out:?}");
    let outlets = shelfsync::catalogue::Catalogue::load(&settings.catalogue)
        .unwrap()
        .outlets
        .len();
    (settings, outlets)
}

/// The node that owns the most outlets, and those outlets.
fn busiest(owner: &BTreeMap<String, &'static str>) -> (&'static str, Vec<String>) {
    let mut per: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for (o, n) in owner {
        per.entry(*n).or_default().push(o.clone());
    }
    per.into_iter().max_by_key(|(_, o)| o.len()).unwrap()
}

/// Waits until every node's MQTT session is up.
async fn connected(nodes: &[&Node]) {
    for n in nodes {
        let up = eventually(20, || async {
            metric(n, "shelfsync_mqtt_connected").await == 1.0
        })
        .await;
        assert!(up, "{} connected to the broker", n.name);
    }
}

/// Publishes a counter sale of `qty` of SKU at `outlet` as its POS would.
async fn pos_sale(
    pos: &MqttClient,
    settings: &shelfsync::Settings,
    outlet: &str,
    event: &str,
    qty: i64,
) {
    let body = json!({"event_id": event, "sku": SKU, "kind": "sale_counter", "qty": qty,
        "at": recent_at()});
    let topic = format!("{}pos/{outlet}/movements", settings.mqtt.topic_prefix);
    pos.publish(&topic, body.to_string()).await;
}

/// How many of the outlet's ledger documents have `field` = `value`.
async fn in_ledger(
    settings: &shelfsync::Settings,
    outlet: &str,
    field: &str,
    value: &str,
) -> usize {
    let n = by_key(settings, field, None).await;
    n.get(&(outlet.to_owned(), value.to_owned()))
        .copied()
        .unwrap_or(0)
}

fn checked(settings: &shelfsync::Settings) {
    let check = cli(settings, &["check"]);
    assert!(
        check.status.success(),
        "shelfsync check: {}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// The fencing check itself, at the script: a write under a token that an acquisition by
/// another node has superseded is refused and changes nothing, and so is a write under a
/// lease that lapsed, even when nobody took it.
#[tokio::test]
async fn a_write_under_a_superseded_token_is_refused_and_changes_nothing() {
    let settings = test_settings();
    let store = redis_store(&settings).await;
    let outlet = OutletId::parse("outlet", OUTLET).unwrap();
    let keys = store.keys(&outlet);
    let a = store
        .acquire_lease(&keys, "a", 60_000, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.acquire_lease(&keys, "b", 60_000, true).await.unwrap(),
        None
    );
    // Held by a live run of the same node: only a takeover (a restart) takes it.
    assert_eq!(
        store
            .acquire_lease(&keys, "a", 60_000, false)
            .await
            .unwrap(),
        None
    );
    let op = Op::Release {
        id: shelfsync::domain::ReservationId::new(&outlet),
        reason: ReleaseReason::Cancelled,
        rerouted_to: None,
        by: "test".into(),
    };
    let args = |token, node| BatchArgs {
        outlet: OUTLET,
        now_ms: shelfsync::domain::now_ms(),
        seen_seq: 0,
        res_retain_ms: 60_000,
        event_retain_ms: 60_000,
        outbox_max: 1000,
        token,
        node,
    };
    let reply = store.apply(&keys, &args(a, "a"), &[&op]).await.unwrap();
    assert!(!reply.fenced, "the owner's write is taken");
    // The lease lapses (a pause past it): the same token is refused although nobody took it.
    let mut conn = redis::Client::open(settings.redis.url.expose())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&keys.lease)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert!(
        store
            .apply(&keys, &args(a, "a"), &[&op])
            .await
            .unwrap()
            .fenced
    );
    let b = store
        .acquire_lease(&keys, "b", 60_000, false)
        .await
        .unwrap()
        .unwrap();
    assert!(b > a, "every acquisition raises the epoch: {a} then {b}");
    let before = store.snapshot(&keys).await.unwrap().map(|s| s.seq);
    let reply = store.apply(&keys, &args(a, "a"), &[&op]).await.unwrap();
    assert!(reply.fenced && reply.results.is_empty());
    assert_eq!(store.snapshot(&keys).await.unwrap().map(|s| s.seq), before);
    assert!(!store.renew_lease(&keys, "a", a, 60_000).await.unwrap());
    assert!(!store.release_lease(&keys, "a", a).await.unwrap());
    assert!(store.renew_lease(&keys, "b", b, 60_000).await.unwrap());
    assert!(
        !store
            .apply(&keys, &args(b, "b"), &[&op])
            .await
            .unwrap()
            .fenced
    );
    cleanup(&settings).await;
}

/// A process asked to stop while a client keeps one connection busy with one request after
/// another (a load balancer's pool, another process forwarding) exits long before its
/// `http.shutdown_timeout_secs` (600 s here): actix's graceful stop does not wait for a busy
/// keep-alive connection to go idle (a stop that did would hold the process, and the outlets
/// it owns, for the whole timeout). The other process then owns every outlet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_keep_alive_connection_does_not_hold_a_stopping_process() {
    let (settings, outlets, _db) = chain().await;
    let timeout = [("SHELFSYNC__HTTP__SHUTDOWN_TIMEOUT_SECS", "600")];
    let mut a = Node::start_with(&settings, "a", &timeout).await;
    let b = Node::start(&settings, "b").await;
    spread(&[&a, &b], outlets, 30).await;
    // One connection, kept busy with one request after another: answers are counted until
    // the process closes it.
    let port = a.proc.port;
    let done = AtomicBool::new(false);
    let busy = async {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = tokio::io::BufReader::new(read);
        let mut answers = 0u64;
        while !done.load(Ordering::Relaxed) {
            let asked = write.write_all(b"GET /healthz HTTP/1.1\r\nHost: shelfsync\r\n\r\n");
            if asked.await.is_err() {
                break;
            }
            let (mut line, mut length) = (String::new(), 0);
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return answers;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            if read.read_exact(&mut body).await.is_err() {
                break;
            }
            answers += 1;
        }
        answers
    };
    let stop = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = Instant::now();
        a.proc.term();
        let mut exited = false;
        while asked.elapsed() < Duration::from_secs(120) {
            if a.proc.exited() {
                exited = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done.store(true, Ordering::Relaxed);
        (exited, asked.elapsed())
    };
    let (answers, (exited, took)) = tokio::join!(busy, stop);
    println!("{answers} answers on one connection; exited {took:?} after SIGTERM");
    assert!(
        exited,
        "the process still ran 120 s after SIGTERM: the busy connection held it"
    );
    assert!(
        answers > 10,
        "the connection was not kept busy: {answers} answers"
    );
    spread(&[&b], outlets, SETTLE_SECS).await;
    cleanup(&settings).await;
}

/// SIGSTOP an owner past its lease; another process takes its outlets over and writes; on
/// SIGCONT the paused process's writes for them are refused, it steps down, and what it had
/// in flight (a request in its socket, an expiry timer that came due) is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_and_steps_down() {
    let (settings, outlets, _db) = chain().await;
    let a = Node::start(&settings, "a").await;
    spread(&[&a], outlets, 20).await;
    let b = Node::start(&settings, "b").await;
    let owner = spread(&[&a, &b], outlets, 30).await;
    let x = owner
        .iter()
        .find(|(_, n)| **n == "a")
        .map(|(o, _)| o.clone())
        .expect("a owns some outlet");
    stocked(&a, &x, SKU, 100).await;
    // A hold at x through its owner a, which expires while a is paused: a's timer comes due.
    let r = hold(&a, "paused-timer", &x, SKU, 2).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let timed: Value = r.json().await.unwrap();
    a.proc.pause();
    // A request that waits in a's socket while it is paused.
    let late = tokio::spawn({
        let (url, x) = (a.url.clone(), x.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/reservations"))
                .bearer_auth(STOREFRONT)
                .header("Idempotency-Key", "paused-late")
                .json(&json!({"outlet": x, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 60}))
                .timeout(Duration::from_secs(60))
                .send()
                .await
                .unwrap()
        }
    });
    let took = Instant::now();
    assert!(
        eventually(20, || async {
            owns(&b).await.is_some_and(|o| o.contains(&x))
        })
        .await,
        "b did not take {x} over from the paused a"
    );
    println!(
        "b owned {x} {} ms after a was paused",
        took.elapsed().as_millis()
    );
    // b writes at x.
    assert_eq!(hold(&b, "after-takeover", &x, SKU, 60).await.status(), 201);
    // b's timers release the expired hold a made.
    let released = eventually(10, || async {
        let r: Value = http()
            .get(format!(
                "{}/v1/reservations/{}",
                b.url,
                timed["id"].as_str().unwrap()
            ))
            .bearer_auth(STOREFRONT)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["status"] == "expired"
    })
    .await;
    assert!(
        released,
        "the new owner released the paused owner's expired hold"
    );
    a.proc.resume();
    let late = late.await.unwrap();
    // After SIGCONT, either a's actor tries the request under the lease it lost and is
    // refused (503, Retry-After), or a's ownership round comes first: a steps down and
    // forwards the request to b, the owner now, which holds it (201). Which one runs first
    // is the scheduler's; either way it is held once (the ledger check below).
    let late_id = match late.status().as_u16() {
        503 => {
            assert!(late.headers().contains_key("retry-after"));
            None
        }
        201 => Some(late.json::<Value>().await.unwrap()["id"].clone()),
        other => panic!("the paused owner answered {other} to the request it had in flight"),
    };
    println!("the request a had in flight: {late_id:?} (None: refused with 503)");
    // The client retries with the same key, at the owner now: the same hold.
    for _ in 0..2 {
        let again = hold(&b, "paused-late", &x, SKU, 60).await;
        assert_eq!(again.status(), 201);
        let id = again.json::<Value>().await.unwrap()["id"].clone();
        assert!(
            late_id.as_ref().is_none_or(|late| *late == id),
            "{late_id:?} then {id}"
        );
    }
    assert!(
        eventually(10, || async {
            owns(&a).await.is_some_and(|o| !o.contains(&x))
        })
        .await,
        "a stepped down from {x}"
    );
    let lost = metric(
        &a,
        &format!("shelfsync_ownership_changes_total{{change=\"lost\",outlet=\"{x}\"}}"),
    )
    .await;
    let fenced = metric(
        &a,
        &format!("shelfsync_fenced_writes_total{{outlet=\"{x}\"}}"),
    )
    .await;
    println!("a after SIGCONT: lost {lost}, fenced writes {fenced}");
    assert!(lost >= 1.0, "a counted losing {x}");
    // Let a's own round settle (it may take outlets back by rendezvous, gracefully), then
    // stop both and check the ledger.
    tokio::time::sleep(Duration::from_millis(LEASE_MS)).await;
    let (mut a, mut b) = (a, b);
    b.proc.signal("-TERM");
    a.proc.signal("-TERM");
    let docs = ledger_docs(&settings, &x).await;
    let of = |kind: &str, res: &str| {
        docs.iter()
            .filter(|d| d.get_str("kind").ok() == Some(kind))
            .filter(|d| d.get_str("reservation").ok() == Some(res))
            .count()
    };
    let timed_id = timed["id"].as_str().unwrap();
    assert_eq!(of("reservation_held", timed_id), 1);
    assert_eq!(
        of("reservation_released", timed_id),
        1,
        "expired exactly once"
    );
    let late_holds = docs
        .iter()
        .filter(|d| d.get_str("kind").ok() == Some("reservation_held"))
        .filter(|d| d.get_str("idempotency_key").ok() == Some("paused-late"))
        .count();
    assert_eq!(late_holds, 1, "the request a had in flight was held once");
    let mut seqs: Vec<i64> = docs.iter().map(|d| d.get_i64("seq").unwrap()).collect();
    seqs.sort();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no seq gap or repeat"
    );
    checked(&settings);
    cleanup(&settings).await;
}

/// Three processes; kill -9 the one that owns the most outlets while holds are live there.
/// The survivors own its outlets again within the lease, and release its holds when they
/// expire; the confirms it answered are in the ledger once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_owner_moves_its_outlets_and_releases_its_holds() {
    let (settings, outlets, _db) = chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let c = Node::start(&settings, "c").await;
    let owner = spread(&[&a, &b, &c], outlets, 40).await;
    let (busiest, theirs) = busiest(&owner);
    let nodes = [a, b, c];
    let victim = nodes.iter().position(|n| n.name == busiest).unwrap();
    // Holds at each of its outlets: some confirmed, the rest left to expire.
    let mut confirmed = Vec::new();
    for (i, o) in theirs.iter().enumerate() {
        stocked(&nodes[victim], o, SKU, 100).await;
        for k in 0..4 {
            let r = hold(&nodes[victim], &format!("kill-{i}-{k}"), o, SKU, 3).await;
            assert_eq!(r.status(), 201, "hold at {o}: {}", r.text().await.unwrap());
            let res: Value = r.json().await.unwrap();
            if k == 0 {
                let id = res["id"].as_str().unwrap().to_owned();
                let r = http()
                    .post(format!(
                        "{}/v1/reservations/{id}/confirm",
                        nodes[victim].url
                    ))
                    .bearer_auth(STOREFRONT)
                    .json(&json!({"payment_ref": format!("pay-{id}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "confirm at {o}");
                confirmed.push((o.clone(), id));
            }
        }
    }
    // POS sales at its outlets, the last ones published right before the kill: whichever
    // the victim had not applied, the survivors' copies apply after the takeover.
    let pos = MqttClient::connect(settings.mqtt.port).await;
    let mut sales = Vec::new();
    for o in &theirs {
        for k in 0..5 {
            let event = format!("kill-pos-{o}-{k}");
            pos_sale(&pos, &settings, o, &event, 1).await;
            sales.push((o.clone(), event));
        }
    }
    let mut nodes = nodes;
    let killed = Instant::now();
    nodes[victim].proc.signal("-KILL");
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    let after = spread(&survivors, outlets, SETTLE_SECS).await;
    let gap = killed.elapsed();
    println!(
        "kill -9 of {busiest} ({} outlets): owned again after {} ms (lease {LEASE_MS} ms)",
        theirs.len(),
        gap.as_millis()
    );
    // Owned again (within `spread`'s bound); the gap itself is measured by
    // load/failover.py, not asserted here.
    assert!(theirs.iter().all(|o| after[o] != busiest));
    // The holds expire (3 s) and the new owners release them: nothing stays reserved.
    let store = redis_store(&settings).await;
    let clean = eventually(20, || async {
        let mut reserved = 0;
        for o in &theirs {
            let outlet = OutletId::parse("outlet", o).unwrap();
            let snap = store.snapshot(&store.keys(&outlet)).await.unwrap().unwrap();
            reserved += snap.counters.values().map(|c| c.reserved).sum::<i64>();
        }
        reserved == 0
    })
    .await;
    assert!(
        clean,
        "the dead owner's holds were released by the survivors"
    );
    // Every sale the broker took is in the ledger exactly once.
    for (o, event) in &sales {
        let once = eventually(30, || async {
            let n = in_ledger(&settings, o, "event_id", event).await;
            assert!(n <= 1, "{event} applied twice");
            n == 1
        })
        .await;
        assert!(once, "the POS sale {event} at {o} reached the ledger");
    }
    for n in nodes.iter_mut() {
        n.proc.signal("-TERM");
    }
    for (o, id) in &confirmed {
        let sold = ledger_docs(&settings, o)
            .await
            .into_iter()
            .filter(|d| d.get_str("kind").ok() == Some("sale_web"))
            .filter(|d| d.get_str("reservation").ok() == Some(id.as_str()))
            .count();
        assert_eq!(sold, 1, "the confirm of {id} is in the ledger once");
    }
    checked(&settings);
    cleanup(&settings).await;
}

/// POS over MQTT with two processes: each subscribes to every outlet's POS topic, the
/// owner applies the sale, and the other lets its copy go once the owner's is durable,
/// instead of rejecting it (it was sent to the DLQ as "unavailable" before) or applying it
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pos_sale_is_applied_once_by_its_owner_and_let_go_by_the_other_process() {
    let (settings, outlets, _db) = chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let owner = spread(&[&a, &b], outlets, 30).await;
    connected(&[&a, &b]).await;
    let pos = MqttClient::connect(settings.mqtt.port).await;
    let mut sold = Vec::new();
    for name in ["a", "b"] {
        let x = owner.iter().find(|(_, n)| **n == name).unwrap().0.clone();
        let node = if name == "a" { &a } else { &b };
        stocked(node, &x, SKU, 50).await;
        let event = format!("pos-{name}-1");
        pos_sale(&pos, &settings, &x, &event, 2).await;
        sold.push((x, event));
    }
    // Each process lets go of the copy whose outlet the other owns.
    for n in [&a, &b] {
        assert!(
            eventually(30, || async {
                metric(
                    n,
                    "shelfsync_mqtt_messages_in_total{outcome=\"applied_by_owner\"}",
                )
                .await
                    >= 1.0
            })
            .await,
            "{} let its copy go once the owner had the sale",
            n.name
        );
        assert_eq!(
            metric(n, "shelfsync_mqtt_dlq_total").await,
            0.0,
            "nothing rejected"
        );
    }
    for (x, event) in &sold {
        let n = in_ledger(&settings, x, "event_id", event).await;
        assert_eq!(n, 1, "{event} at {x} is in the ledger once");
    }
    let (mut a, mut b) = (a, b);
    a.proc.signal("-TERM");
    b.proc.signal("-TERM");
    checked(&settings);
    cleanup(&settings).await;
}

/// Sends a request to `nodes[first]`, and to the others in turn while one answers `503`
/// (an outlet owned elsewhere, or moving) or does not answer (killed); the last answer, or
/// `None` when no node answered.
async fn to_any(
    urls: &[String],
    first: usize,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Option<reqwest::Response> {
    let mut last = None;
    for i in 0..urls.len() {
        let url = &urls[(first + i) % urls.len()];
        let Ok(r) = request(url).send().await else {
            continue;
        };
        if r.status() != 503 {
            return Some(r);
        }
        if !r.headers().contains_key("retry-after") {
            let from = r.headers().get("x-shelfsync-forwarded-to").cloned();
            panic!(
                "a 503 without Retry-After from {url} (forwarded to {from:?}): {}",
                r.text().await.unwrap_or_default()
            );
        }
        last = Some(r);
    }
    last
}

/// Sets `done` after `secs`.
async fn for_secs(secs: u64, done: &AtomicBool) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    done.store(true, Ordering::Relaxed);
}

/// What a mixed load had answered `2xx`.
#[derive(Default)]
struct Load {
    holds: usize,
    /// (outlet, reservation id) of every confirm answered `200`.
    confirmed: Vec<(String, String)>,
    /// (outlet, event id) of every movement answered `201`.
    moved: Vec<(String, String)>,
}

/// Mixed load from `workers` clients on every outlet through any node (`urls`) until `done`:
/// holds (left to expire, confirmed or cancelled) and receipts. Only `2xx`, `409` (out of
/// stock, or a hold that ended) and `503` with `Retry-After` are allowed answers.
async fn mixed_load(
    urls: &[String],
    outlets: &[String],
    workers: usize,
    done: &AtomicBool,
) -> Load {
    let skus = [SKU, SKU2, SKU3];
    let nodes = urls;
    let tasks = (0..workers).map(|w| async move {
        let mut load = Load::default();
        let mut i = 0usize;
        while !done.load(Ordering::Relaxed) {
            i += 1;
            let outlet = &outlets[(w * 7 + i) % outlets.len()];
            let sku = skus[(w + i) % skus.len()];
            let first = w + i;
            if i % 10 == 0 {
                let event = format!("rcv-{w}-{i}");
                let body = json!({"event_id": event, "outlet": outlet,
                    "sku": sku, "kind": "receipt", "qty": 3, "at": recent_at()});
                let r = to_any(nodes, first, |url| {
                    http()
                        .post(format!("{url}/v1/movements"))
                        .bearer_auth(ADMIN)
                        .json(&body)
                })
                .await;
                match r.map(|r| r.status().as_u16()) {
                    Some(201) => load.moved.push((outlet.clone(), event)),
                    None | Some(503) => {}
                    Some(other) => panic!("a receipt: {other}"),
                }
                continue;
            }
            let body = json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1 + i % 2}],
                "ttl_secs": 2});
            let idem = format!("load-{w}-{i}");
            let r = to_any(nodes, first, |url| {
                http()
                    .post(format!("{url}/v1/reservations"))
                    .bearer_auth(STOREFRONT)
                    .header("Idempotency-Key", &idem)
                    .json(&body)
            })
            .await;
            let r = match r {
                Some(r) if r.status() == 201 => r,
                Some(r) => {
                    assert!(
                        [409, 429, 503].contains(&r.status().as_u16()),
                        "a hold: {}",
                        r.status()
                    );
                    continue;
                }
                None => continue,
            };
            load.holds += 1;
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let end = match i % 3 {
                0 => Some(("confirm", json!({"payment_ref": format!("pay-{w}-{i}")}))),
                1 => Some(("cancel", json!({}))),
                _ => None,
            };
            if let Some((verb, body)) = end {
                let r = to_any(nodes, first + 1, |url| {
                    http()
                        .post(format!("{url}/v1/reservations/{id}/{verb}"))
                        .bearer_auth(STOREFRONT)
                        .json(&body)
                })
                .await;
                match r.map(|r| r.status().as_u16()) {
                    Some(200) if verb == "confirm" => load.confirmed.push((outlet.clone(), id)),
                    Some(200 | 409 | 503) | None => {}
                    Some(other) => panic!("{verb} {id}: {other}"),
                }
            }
        }
        load
    });
    let mut all = Load::default();
    for l in futures_util::future::join_all(tasks).await {
        all.holds += l.holds;
        all.confirmed.extend(l.confirmed);
        all.moved.extend(l.moved);
    }
    all
}

/// Every SKU's numbers at `outlet` as `node` reads them, by SKU.
async fn stock_read(node: &Node, outlet: &str) -> BTreeMap<String, (i64, i64, u64)> {
    let rows: Vec<Value> = http()
        .get(format!("{}/v1/outlets/{outlet}/stock", node.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let n = |f: &str| r[f].as_i64().unwrap();
            let sku = r["sku"].as_str().unwrap().to_owned();
            (sku, (n("on_hand"), n("reserved"), n("seq") as u64))
        })
        .collect()
}

/// The outlet's numbers as Redis has them.
async fn in_redis(
    settings: &shelfsync::Settings,
    outlet: &str,
) -> BTreeMap<String, (i64, i64, u64)> {
    redis_snapshot(settings, outlet)
        .await
        .counters
        .into_iter()
        .map(|(sku, c)| (sku.as_str().to_owned(), (c.on_hand, c.reserved, c.seq)))
        .collect()
}

/// Two processes under mixed load through both (a request for an outlet owned elsewhere is
/// sent again to the other process). Once the load stops and the holds expire, every stock
/// read from either process equals Redis, nothing stays reserved, and a live stream from the
/// process that does not own an outlet got its owner's numbers in seq order. A commit past a
/// gap on the channel makes a view read the outlet again, never take the commit.
#[tokio::test]
async fn after_load_on_two_processes_every_stock_read_from_either_equals_redis() {
    let (settings, outlets, _db) = chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let owner = spread(&[&a, &b], outlets, 30).await;
    let ids: Vec<String> = owner.keys().cloned().collect();
    let x = owner.iter().find(|(_, n)| **n == "a").unwrap().0.clone();
    let mut live = SseClient::connect_to(&http(), &b.url, &format!("outlets={x}"), ADMIN)
        .await
        .unwrap();
    let first = live.next(10).await.expect("the snapshot");
    assert_eq!(first.event, "snapshot");

    let done = AtomicBool::new(false);
    let urls = [a.url.clone(), b.url.clone()];
    let (load, ()) = tokio::join!(mixed_load(&urls, &ids, 6, &done), for_secs(6, &done));
    assert!(load.holds > 50, "the load made holds: {}", load.holds);

    // The holds' TTL is 2 s: after it every hold is confirmed, cancelled or expired.
    // Waits (bounded) until everything is settled; the asserts below say what differs.
    let _ = eventually(20, || async {
        for o in &ids {
            let redis = in_redis(&settings, o).await;
            if redis.values().any(|&(_, reserved, _)| reserved != 0) {
                return false;
            }
            for n in [&a, &b] {
                if stock_read(n, o).await != redis {
                    return false;
                }
            }
        }
        true
    })
    .await;
    for o in &ids {
        let redis = in_redis(&settings, o).await;
        assert!(
            redis.values().all(|&(_, reserved, _)| reserved == 0),
            "nothing stays reserved at {o}: {redis:?}"
        );
        for n in [&a, &b] {
            assert_eq!(
                stock_read(n, o).await,
                redis,
                "{} reads {o} as Redis has it (owner {})",
                n.name,
                owner[o]
            );
        }
    }
    assert!(metric(&b, "shelfsync_followed_commits_total{outcome=\"applied\"}").await > 0.0);

    // The live stream on b of an outlet a owns: per SKU, seqs only rise, and the last numbers
    // are Redis's.
    let mut last: BTreeMap<String, (i64, i64, u64)> = BTreeMap::new();
    while let Some(e) = live.next(2).await {
        if e.event != "stock" {
            continue;
        }
        let d = &e.data;
        assert_eq!(d["outlet"], x.as_str());
        let n = |f: &str| d[f].as_i64().unwrap();
        let sku = d["sku"].as_str().unwrap().to_owned();
        let now = (n("on_hand"), n("reserved"), n("seq") as u64);
        if let Some(before) = last.get(&sku) {
            assert!(now.2 > before.2, "{sku}: seq {} after {}", now.2, before.2);
        }
        last.insert(sku, now);
    }
    let redis = in_redis(&settings, &x).await;
    assert!(!last.is_empty(), "the stream on b carried {x}'s changes");
    for (sku, numbers) in &last {
        assert_eq!(
            Some(numbers),
            redis.get(sku),
            "the stream's last {sku} at {x}"
        );
    }

    // The subscription holds: no resubscription reads the outlets again while nothing fails.
    let starts = || metric_with(&b, "shelfsync_follower_resyncs_total", "reason=\"start\"");
    let before = starts().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(starts().await, before, "b stayed subscribed");

    // A commit past a gap (as after a lost message) is not taken: b reads x again.
    let gaps = format!("shelfsync_follower_resyncs_total{{outlet=\"{x}\",reason=\"gap\"}}");
    let resyncs = metric(&b, &gaps).await;
    let seq = redis.values().map(|c| c.2).max().unwrap();
    let fake = json!({"outlet": x, "from": seq + 5, "to": seq + 6,
        "stock": [{"sku": SKU, "on_hand": 999, "reserved": 0, "seq": seq + 6}], "orders": []});
    let client = redis::Client::open(settings.redis.url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}:commits", settings.redis.key_prefix))
        .arg(fake.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        eventually(10, || async { metric(&b, &gaps).await > resyncs }).await,
        "b resynced x after the gap"
    );
    assert_eq!(
        stock_read(&b, &x).await,
        redis,
        "b still reads x as Redis has it"
    );

    let (mut a, mut b) = (a, b);
    a.proc.signal("-TERM");
    b.proc.signal("-TERM");
    checked(&settings);
    cleanup(&settings).await;
}

/// POS sales over MQTT at every outlet, a round every 250 ms until `done`; the (outlet,
/// event id) of each.
async fn pos_sales(
    pos: &MqttClient,
    settings: &shelfsync::Settings,
    outlets: &[String],
    done: &AtomicBool,
) -> Vec<(String, String)> {
    let mut sold = Vec::new();
    let mut k = 0;
    while !done.load(Ordering::Relaxed) {
        for o in outlets {
            let event = format!("pos-{k}-{o}");
            pos_sale(pos, settings, o, &event, 1).await;
            sold.push((o.clone(), event));
        }
        k += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sold
}

/// The invariants after a failover or a restart under load: every hold ends; every confirm
/// answered `200`, every receipt answered `201` and every POS sale the broker acknowledged
/// is in the ledger exactly once; a replay of the ledger finds no seq gap and no oversell;
/// `shelfsync check` is clean (after `stop` stopped the processes).
async fn nothing_lost(
    settings: &shelfsync::Settings,
    outlets: &[String],
    load: &Load,
    pos: &MqttClient,
    sold: &[(String, String)],
    stop: impl FnOnce(),
) {
    assert!(
        load.holds > 50 && !load.confirmed.is_empty(),
        "the load ran"
    );
    assert!(
        eventually(20, || async {
            pos.acked.load(Ordering::Relaxed) >= sold.len()
        })
        .await,
        "the broker acknowledged every POS sale"
    );
    // Every hold ends (TTL 2 s): nothing a stopped or dead owner held stays reserved.
    let ended = eventually(30, || async {
        for o in outlets {
            let snap = redis_snapshot(settings, o).await;
            if snap.counters.values().any(|c| c.reserved != 0) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(ended, "every hold ended");
    // One read of the ledger per look (a look per sale would read it hundreds of times).
    let all_in = eventually(30, || async {
        let seen = by_key(settings, "event_id", None).await;
        sold.iter().all(|k| seen.get(k).copied().unwrap_or(0) >= 1)
    })
    .await;
    assert!(all_in, "every POS sale the broker took reached the ledger");
    stop();
    let events = by_key(settings, "event_id", None).await;
    for key in sold.iter().chain(&load.moved) {
        assert_eq!(events.get(key), Some(&1), "{key:?} is in the ledger once");
    }
    let sales = by_key(settings, "reservation", Some("sale_web")).await;
    for key in &load.confirmed {
        assert_eq!(
            sales.get(key),
            Some(&1),
            "the confirm of {key:?} is in the ledger once"
        );
    }
    replay_finds_no_oversell(settings).await;
    checked(settings);
    cleanup(settings).await;
}

/// How many ledger documents (of `kind`, if given) carry each (outlet, value of `field`).
async fn by_key(
    settings: &shelfsync::Settings,
    field: &str,
    kind: Option<&str>,
) -> BTreeMap<(String, String), usize> {
    let mut n = BTreeMap::new();
    for d in documents(settings, "ledger").await {
        if kind.is_some_and(|k| d.get_str("kind").ok() != Some(k)) {
            continue;
        }
        if let (Ok(o), Ok(v)) = (d.get_str("outlet"), d.get_str(field)) {
            *n.entry((o.to_owned(), v.to_owned())).or_default() += 1;
        }
    }
    n
}

/// Replays every outlet's ledger in seq order: no seq is missing or doubled, and no hold ever
/// took a SKU's available (on_hand - reserved) below zero (an oversell).
async fn replay_finds_no_oversell(settings: &shelfsync::Settings) {
    use shelfsync::ledger::LedgerEntry;
    let mut by_outlet: BTreeMap<String, Vec<LedgerEntry>> = BTreeMap::new();
    for d in documents(settings, "ledger").await {
        let e: LedgerEntry = mongodb::bson::from_document(d).unwrap();
        by_outlet
            .entry(e.outlet.as_str().to_owned())
            .or_default()
            .push(e);
    }
    assert!(!by_outlet.is_empty(), "the ledger has documents");
    for (outlet, mut docs) in by_outlet {
        docs.sort_by_key(|e| e.seq);
        let mut counters: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (i, e) in docs.iter().enumerate() {
            assert_eq!(
                e.seq,
                i as i64 + 1,
                "{outlet}: the ledger's seqs run 1, 2, 3..."
            );
            for l in &e.lines {
                let c = counters.entry(l.sku.as_str().to_owned()).or_default();
                c.0 += l.d_on_hand;
                c.1 += l.d_reserved;
                if l.d_reserved > 0 {
                    assert!(
                        c.0 - c.1 >= 0,
                        "{outlet} seq {}: a hold took {} below zero available ({c:?})",
                        e.seq,
                        l.sku
                    );
                }
            }
        }
    }
}

/// A real Redis Cluster of three masters and fresh settings on it with the demo chain
/// imported, and the chain's number of outlets.
async fn cluster_chain() -> (shelfsync::Settings, usize, RedisCluster, OwnDb) {
    let redis = RedisCluster::start().await;
    let mut settings = test_settings();
    let db = OwnDb::start(&mut settings).await;
    settings.redis.url = redis.url();
    settings.redis.cluster = true;
    let (settings, outlets) = imported(settings);
    (settings, outlets, redis, db)
}

/// The failover bar on a real Redis Cluster of three masters: three processes under mixed
/// load through any of them (holds confirmed, cancelled or left to expire, receipts, POS
/// sales over MQTT); kill -9 of the owner of the most outlets in the middle of it. Its
/// outlets are owned again (the gap is printed); every hold ends; every confirm answered
/// `200`, every receipt answered `201` and every POS sale the broker acknowledged is in the
/// ledger exactly once; a replay of the ledger finds no seq gap and no oversell; `shelfsync
/// check` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_kill_under_mixed_load_loses_and_doubles_nothing() {
    let (settings, outlets, redis, _db) = cluster_chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let c = Node::start(&settings, "c").await;
    let owner = spread(&[&a, &b, &c], outlets, 40).await;
    let ids: Vec<String> = owner.keys().cloned().collect();
    let (busiest, theirs) = busiest(&owner);
    let nodes = [a, b, c];
    connected(&nodes.iter().collect::<Vec<_>>()).await;
    let victim = nodes.iter().position(|n| n.name == busiest).unwrap();
    let pos = MqttClient::connect(settings.mqtt.port).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let done = AtomicBool::new(false);
    let kill = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let killed = Instant::now();
        nodes[victim].proc.kill();
        let survivors: Vec<&Node> = (nodes.iter().enumerate())
            .filter(|(i, _)| *i != victim)
            .map(|(_, n)| n)
            .collect();
        let after = spread(&survivors, outlets, SETTLE_SECS).await;
        let gap = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        done.store(true, Ordering::Relaxed);
        (gap, after)
    };
    let (load, sold, (gap, after)) = tokio::join!(
        mixed_load(&urls, &ids, 6, &done),
        pos_sales(&pos, &settings, &ids, &done),
        kill
    );
    println!(
        "redis cluster, kill -9 of {busiest} ({} outlets) under load: owned again after {} ms \
         (lease {LEASE_MS} ms); {} holds, {} confirms, {} receipts, {} POS sales",
        theirs.len(),
        gap.as_millis(),
        load.holds,
        load.confirmed.len(),
        load.moved.len(),
        sold.len()
    );
    assert!(theirs.iter().all(|o| after[o] != busiest));
    let mut nodes = nodes;
    nothing_lost(&settings, &ids, &load, &pos, &sold, || {
        for (i, n) in nodes.iter_mut().enumerate() {
            if i != victim {
                n.proc.signal("-TERM");
            }
        }
    })
    .await;
    drop(redis);
}

/// Any process answers any request: holds, reads, confirms, cancels and movements for an
/// outlet another process owns are forwarded to its owner, signed, and answered with its
/// answer; a request that claims to be forwarded without a valid signature is refused and
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_an_outlet_owned_elsewhere_is_forwarded_to_its_owner() {
    let (settings, outlets, _db) = chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let owner = spread(&[&a, &b], outlets, 30).await;
    let x = owner.iter().find(|(_, n)| **n == "a").unwrap().0.clone();
    // Everything through b; a owns x.
    stocked(&b, &x, SKU, 10).await;
    let via = |r: &reqwest::Response| {
        r.headers()
            .get("x-shelfsync-forwarded-to")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let r = hold(&b, "fwd-1", &x, SKU, 60).await;
    assert_eq!(r.status(), 201);
    assert_eq!(via(&r).as_deref(), Some("a"), "answered by the owner");
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = hold(&b, "fwd-1", &x, SKU, 60).await;
    assert_eq!(again.status(), 201, "the same key again: the same hold");
    assert_eq!(again.json::<Value>().await.unwrap()["id"], id.as_str());
    let got = http()
        .get(format!("{}/v1/reservations/{id}", b.url))
        .bearer_auth(STOREFRONT)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(via(&got).as_deref(), Some("a"));
    let confirm = http()
        .post(format!("{}/v1/reservations/{id}/confirm", b.url))
        .bearer_auth(STOREFRONT)
        .json(&json!({"payment_ref": "fwd-pay-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    assert_eq!(
        confirm.json::<Value>().await.unwrap()["status"],
        "confirmed"
    );
    let held = hold(&b, "fwd-2", &x, SKU, 60).await;
    let id2 = held.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = http()
        .post(format!("{}/v1/reservations/{id2}/cancel", b.url))
        .bearer_auth(STOREFRONT)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    // b's view follows a's commits: 10 stocked, 1 sold, nothing held.
    assert!(
        eventually(10, || async {
            let s = stock_read(&b, &x).await;
            s.get(SKU).is_some_and(|c| c.0 == 9 && c.1 == 0)
        })
        .await,
        "b reads what a committed"
    );
    assert!(
        metric(
            &b,
            "shelfsync_forwarded_requests_total{outcome=\"forwarded\"}"
        )
        .await
            >= 5.0
    );
    assert!(
        metric(
            &a,
            "shelfsync_forwarded_requests_total{outcome=\"received\"}"
        )
        .await
            >= 5.0
    );

    // A forged or stale signature: refused, nothing held.
    for forged in ["b 1 00", "b", "a 99999999999999 abcd"] {
        let r = http()
            .post(format!("{}/v1/reservations", a.url))
            .bearer_auth(STOREFRONT)
            .header("Idempotency-Key", "fwd-forged")
            .header("x-shelfsync-forwarded", forged)
            .json(&json!({"outlet": x, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 60}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "a forged signature {forged:?}");
    }
    let after = in_redis(&settings, &x).await;
    assert_eq!(after[SKU].1, 0, "nothing held by the forged requests");

    // A rightly signed request is taken once; the same signature again is a replay.
    let body = json!({"outlet": x, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 60}).to_string();
    let bearer = format!("Bearer {STOREFRONT}");
    let now = chrono::Utc::now().timestamp_millis();
    let signature = shelfsync::http::forward::sign(
        settings.cluster.secret.expose(),
        &shelfsync::http::forward::Signed {
            from: "b",
            to: "a",
            at_ms: now,
            method: "POST",
            path: "/v1/reservations",
            headers: [bearer.as_bytes(), b"fwd-signed", b"application/json"],
            body: body.as_bytes(),
        },
    );
    let send = || {
        http()
            .post(format!("{}/v1/reservations", a.url))
            .header("Authorization", &bearer)
            .header("Idempotency-Key", "fwd-signed")
            .header("Content-Type", "application/json")
            .header("x-shelfsync-forwarded", &signature)
            .body(body.clone())
            .send()
    };
    assert_eq!(
        send().await.unwrap().status(),
        201,
        "a signed request is taken"
    );
    let replayed = send().await.unwrap();
    assert_eq!(
        replayed.status(),
        403,
        "the same signature again is a replay"
    );
    assert_eq!(in_redis(&settings, &x).await[SKU].1, 1, "held once");
    assert_eq!(
        in_ledger(&settings, &x, "payment_ref", "fwd-pay-1").await,
        1
    );

    let (mut a, mut b) = (a, b);
    a.proc.signal("-TERM");
    b.proc.signal("-TERM");
    checked(&settings);
    cleanup(&settings).await;
}

/// A rolling restart of all three processes, one at a time (SIGTERM: each hands its outlets
/// over before it exits, then starts again under its own name), on a Redis Cluster under
/// mixed load and POS sales through any process: no answer is a 5xx other than `503` with
/// `Retry-After` (`mixed_load` checks each), and nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_answers_no_5xx_but_503_and_loses_nothing() {
    let (settings, outlets, redis, _db) = cluster_chain().await;
    let a = Node::start(&settings, "a").await;
    let b = Node::start(&settings, "b").await;
    let c = Node::start(&settings, "c").await;
    let owner = spread(&[&a, &b, &c], outlets, 40).await;
    let ids: Vec<String> = owner.keys().cloned().collect();
    let mut nodes = [a, b, c];
    let pos = MqttClient::connect(settings.mqtt.port).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let done = AtomicBool::new(false);
    let restarts = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..nodes.len() {
            let stopped = Instant::now();
            nodes[i].proc.signal("-TERM");
            let stop_ms = stopped.elapsed().as_millis();
            let others: Vec<&Node> = (nodes.iter().enumerate())
                .filter(|(k, _)| *k != i)
                .map(|(_, n)| n)
                .collect();
            spread(&others, outlets, SETTLE_SECS).await;
            let moved_ms = stopped.elapsed().as_millis();
            nodes[i].proc.spawn().await;
            spread(&nodes.iter().collect::<Vec<_>>(), outlets, SETTLE_SECS).await;
            println!(
                "restart of {}: stopped in {stop_ms} ms, its outlets owned elsewhere after \
                 {moved_ms} ms, all spread again after {} ms",
                nodes[i].name,
                stopped.elapsed().as_millis()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        done.store(true, Ordering::Relaxed);
    };
    let (load, sold, ()) = tokio::join!(
        mixed_load(&urls, &ids, 6, &done),
        pos_sales(&pos, &settings, &ids, &done),
        restarts
    );
    println!(
        "rolling restart under load: {} holds, {} confirms, {} receipts, {} POS sales",
        load.holds,
        load.confirmed.len(),
        load.moved.len(),
        sold.len()
    );
    nothing_lost(&settings, &ids, &load, &pos, &sold, || {
        for n in nodes.iter_mut() {
            n.proc.signal("-TERM");
        }
    })
    .await;
    drop(redis);
}
