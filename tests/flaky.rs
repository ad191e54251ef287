//! Flaky links: an outlet on tier-2 broadband that drops, and phones. Each client runs in a
//! network namespace of the test's own behind a 256 kbit/s veth link that is cut and mended
//! (`common::netns`); the service stays on this side.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

const RATE_KBIT: u32 = 256;
const RUN: Duration = Duration::from_secs(120);
const CUT_EVERY: Duration = Duration::from_secs(20);
const CUT_FOR: Duration = Duration::from_secs(5);
/// A client that hears nothing (not even a keep-alive) this long takes the stream for dead
/// and reconnects: the advice to clients on such links (README, Live streams).
const SILENCE_MAX: Duration = Duration::from_millis(2500);

/// What one display holds and what its link carried.
#[derive(Default, Clone)]
struct Display {
    /// (outlet, sku) -> (on_hand, reserved, seq)
    rows: HashMap<(String, String), (i64, i64, u64)>,
    bytes: u64,
    connects: u32,
    snapshots: u32,
    resumes: u32,
}

impl Display {
    fn put(&mut self, row: &Value) {
        let key = (
            row["outlet"].as_str().unwrap().to_owned(),
            row["sku"].as_str().unwrap().to_owned(),
        );
        let value = (
            row["on_hand"].as_i64().unwrap(),
            row["reserved"].as_i64().unwrap(),
            row["seq"].as_u64().unwrap(),
        );
        let slot = self.rows.entry(key).or_insert(value);
        if value.2 >= slot.2 {
            *slot = value;
        }
    }

    fn apply(&mut self, event: &str, data: &Value) {
        match event {
            "snapshot" => {
                self.snapshots += 1;
                self.rows.clear();
                data.as_array()
                    .unwrap()
                    .iter()
                    .for_each(|row| self.put(row));
            }
            "stock" => self.put(data),
            "resumed" => self.resumes += 1,
            _ => {}
        }
    }
}

/// A shop display over SSE that reconnects whenever its stream fails or falls silent,
/// naming the last event it saw when `resume` (as a browser's EventSource does).
async fn display(url: String, resume: bool, shown: Arc<Mutex<Display>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut last_id: Option<String> = None;
    while !stop.load(Ordering::Acquire) {
        let mut req = (http.get(format!("{url}/v1/stream")))
            .query(&[("outlets", DISPLAY_OUTLET)])
            .bearer_auth(VIEWER);
        if let (true, Some(id)) = (resume, &last_id) {
            req = req.header("Last-Event-ID", id);
        }
        let res = match tokio::time::timeout(Duration::from_secs(3), req.send()).await {
            Ok(Ok(res)) if res.status().is_success() => res,
            _ => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        shown.lock().unwrap().connects += 1;
        let mut parser = shelfsync_load::sse::Parser::new(16 << 20);
        let mut body = res.bytes_stream();
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(SILENCE_MAX, body.next()).await {
            let events = parser.push(&chunk).expect("a well-formed stream");
            let mut d = shown.lock().unwrap();
            d.bytes += chunk.len() as u64;
            for e in events {
                d.apply(&e.event, &serde_json::from_str(&e.data).unwrap());
            }
            drop(d);
            last_id = parser.last_event_id().map(str::to_owned);
            if stop.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

/// The shop display's outlet; the test's catalogue gives it `DISPLAY_SKUS` SKUs.
const DISPLAY_OUTLET: &str = "indore-palasia";
const DISPLAY_SKUS: usize = 6_400;
/// The festival simulator's default: 20 holds/s with a spike of 6.
const FESTIVAL_HOLDS_PER_SEC: u64 = 120;

/// The demo catalogue with `DISPLAY_OUTLET` grown to `DISPLAY_SKUS` SKUs in stock (a whole
/// shop's range, as the chain's real outlets have), in `dir`; the settings point at it.
fn shop_catalogue(settings: &mut shelfsync::Settings, dir: &std::path::Path) {
    let c = &mut settings.catalogue;
    let mut skus = std::fs::read_to_string(&c.skus_file).unwrap();
    let mut stock = std::fs::read_to_string(&c.stock_file).unwrap();
    let known: Vec<String> = (skus.lines().skip(1))
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    for i in known.len()..DISPLAY_SKUS {
        skus.push_str(&format!("shop-item-{i},Shop item {i},savouries\n"));
        stock.push_str(&format!("{DISPLAY_OUTLET},shop-item-{i},50\n"));
    }
    std::fs::write(dir.join("skus.csv"), skus).unwrap();
    std::fs::write(dir.join("stock.csv"), stock).unwrap();
    c.skus_file = dir.join("skus.csv");
    c.stock_file = dir.join("stock.csv");
}

/// Holds (each cancelled or left to expire) and kitchen receipts across the chain's outlets
/// at the festival's rate, open loop, until `until`; returns the requests it made.
async fn festival(app: &TestApp, outlets: &[String], skus: &[String], until: Instant) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / FESTIVAL_HOLDS_PER_SEC));
    let mut n = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let outlet = outlets[(n as usize * 7) % outlets.len()].clone();
        let sku = skus[(n as usize * 13) % skus.len()].clone();
        let (http, base) = (app.http.clone(), app.url.clone());
        tasks.spawn(async move {
            if n % 10 == 0 {
                let body = json!({"event_id": format!("rcpt-{n}"), "outlet": outlet, "sku": sku,
                    "kind": "receipt", "qty": 1, "at": recent_at()});
                let _ = http
                    .post(format!("{base}/v1/movements"))
                    .bearer_auth(ADMIN)
                    .json(&body)
                    .send()
                    .await;
                return;
            }
            let body = json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": 3});
            let held = http
                .post(format!("{base}/v1/reservations"))
                .bearer_auth(STOREFRONT)
                .header("Idempotency-Key", format!("f-{n}"))
                .json(&body)
                .send()
                .await;
            let Ok(held) = held else { return };
            let Ok(held) = held.json::<Value>().await else {
                return;
            };
            if let (0, Some(id)) = (n % 2, held["id"].as_str()) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = http
                    .post(format!("{base}/v1/reservations/{id}/cancel"))
                    .bearer_auth(STOREFRONT)
                    .send()
                    .await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    n
}

/// Every SKU of `outlet` with its numbers, as the service has them now.
async fn service_numbers(
    app: &TestApp,
    outlet: &str,
) -> HashMap<(String, String), (i64, i64, u64)> {
    let res = app
        .get(&format!("/v1/outlets/{outlet}/stock"), VIEWER)
        .await;
    let body: Value = res.json().await.unwrap();
    (body.as_array().expect("stock rows").iter())
        .map(|row| {
            (
                (outlet.to_owned(), row["sku"].as_str().unwrap().to_owned()),
                (
                    row["on_hand"].as_i64().unwrap(),
                    row["reserved"].as_i64().unwrap(),
                    row["seq"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Two shop displays of a 6,400-SKU outlet, one that resumes and one that does not, each on
/// a 256 kbit/s link of its own, both cut for 5 s every 20 s for 2 minutes under the
/// festival's rate of changes. The resuming one ends with exactly the service's numbers; the
/// bytes each received are printed. (A snapshot of the outlet is about 700 KB, 22 s of the
/// link: longer than the 15 s between cuts, so a display that starts over after each cut
/// never catches up while they go on.)
#[actix_web::test]
async fn an_sse_display_on_a_throttled_link_cut_every_20_s_ends_with_the_services_numbers() {
    let links = [
        common::netns::Link::new(RATE_KBIT),
        common::netns::Link::new(RATE_KBIT),
    ];
    let dir =
        std::env::temp_dir().join(format!("shelfsync-shop-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut settings = test_settings();
    settings.http.host = links[0].host_addr.to_string();
    settings.http.allow_demo_secrets = true;
    settings.streams.keepalive_secs = 1;
    shop_catalogue(&mut settings, &dir);
    let out = cli(&settings, &["import"]);
    assert!(out.status.success(), "import: {out:?}");
    let app = spawn_app_with(settings).await;
    let listed: Value = app.get("/v1/outlets", VIEWER).await.json().await.unwrap();
    let outlets: Vec<String> = (listed.as_array().unwrap().iter())
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    let skus = catalogue_skus(40);

    // Both displays connect; the cuts start once the resuming one has its first snapshot.
    let with = Arc::new(Mutex::new(Display::default()));
    let without = Arc::new(Mutex::new(Display::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = [(true, with.clone()), (false, without.clone())]
        .into_iter()
        .zip(&links)
        .map(|((resume, shown), link)| {
            let (url, stop) = (app.url.clone(), stop.clone());
            link.spawn(move || display(url, resume, shown, stop))
        })
        .collect::<Vec<_>>();
    assert!(
        eventually(40, || async { with.lock().unwrap().snapshots == 1 }).await,
        "the first snapshot arrives over the link"
    );
    let warm = with.lock().unwrap().bytes;

    let started = Instant::now();
    let load_until = started + RUN;
    // The cuts: 5 s of every 20, from 15 s in; silent drops and the link down in turn.
    let cutter = {
        let cuts = (1..=RUN.as_secs() / CUT_EVERY.as_secs())
            .map(|k| (k, started + CUT_EVERY * k as u32 - CUT_FOR));
        let links = &links;
        async move {
            let mut kinds = Vec::new();
            for (k, at) in cuts {
                tokio::time::sleep_until(at.into()).await;
                for link in links {
                    kinds.push(link.cut(k % 2 == 1));
                }
                tokio::time::sleep(CUT_FOR).await;
                links.iter().for_each(|l| l.mend());
            }
            kinds
        }
    };
    let (changes, kinds) = tokio::join!(festival(&app, &outlets, &skus, load_until), cutter);

    // Once the holds have expired the numbers stand still; the display must reach them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The service's numbers are read again each second: a hold may still expire meanwhile.
    let mut caught_up = false;
    let mut expected = HashMap::new();
    for _ in 0..30 {
        expected = service_numbers(&app, DISPLAY_OUTLET).await;
        if with.lock().unwrap().rows == expected {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(expected.len(), DISPLAY_SKUS);
    let (w, wo) = (
        with.lock().unwrap().clone(),
        without.lock().unwrap().clone(),
    );
    let other_caught_up = wo.rows == expected;
    println!(
        "flaky SSE: a {DISPLAY_SKUS}-SKU shop display, {changes} requests at {FESTIVAL_HOLDS_PER_SEC}/s in {} s over {RATE_KBIT} kbit/s cut {} s every {} s ({:?}); \
         with resume {} bytes ({} before the cuts; {} connects, {} snapshot, {} resumes); \
         without {} bytes ({} connects, {} snapshots received whole; its numbers right at the end: {other_caught_up})",
        RUN.as_secs(),
        CUT_FOR.as_secs(),
        CUT_EVERY.as_secs(),
        // Both links are cut alike: one kind per cut.
        kinds.iter().step_by(2).collect::<Vec<_>>(),
        w.bytes,
        warm,
        w.connects,
        w.snapshots,
        w.resumes,
        wo.bytes,
        wo.connects,
        wo.snapshots,
    );
    assert!(
        caught_up,
        "the resuming display ends with exactly the service's numbers"
    );
    assert_eq!(
        w.snapshots, 1,
        "only the first connect of the resuming display is a snapshot"
    );
    assert!(w.resumes >= 5, "every cut ended in a resume: {}", w.resumes);
    // The same cuts broke the other display's streams as often.
    assert!(
        wo.connects >= 5,
        "the cuts broke the other display's streams too"
    );
    stop.store(true, Ordering::Release);
    app.finish().await;
    for client in clients {
        tokio::task::spawn_blocking(move || client.join().unwrap())
            .await
            .unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The till posts 10 sales a second to its agent, while the agent's link to the broker (256
/// kbit/s) is cut three times for 10 s (a silent drop, the link down, a silent drop), and then
/// once for 40 s, past the keep-alive, so that the agent gives its connection up and makes a new
/// one. The till is answered throughout; every line reaches the ledger exactly once. Printed
/// per cut: the apply lag after the link came back (to shelfsync's ack of the last sale the
/// till made during the cut) and whether the agent made a new connection.
#[actix_web::test]
async fn an_agent_behind_a_throttled_link_cut_four_times_lands_every_sale_once() {
    const SALES_PER_SEC: u64 = 10;
    const TILL_RUN: Duration = Duration::from_secs(120);
    /// (from, for) in seconds.
    const CUTS: [(u64, u64); 4] = [(10, 10), (30, 10), (50, 10), (70, 40)];
    let link = common::netns::Link::new(RATE_KBIT);
    let host = link.host_addr.to_string();
    let broker = TestBroker::start_on_host(&host).await;
    let mut settings = test_settings();
    settings.mqtt.host = host.clone();
    settings.mqtt.port = broker.port;
    let app = spawn_app_with(settings).await;
    for sku in [SKU, SKU2, SKU3] {
        app.set_stock(OUTLET, sku, 100_000).await;
    }
    assert!(mqtt_ready(&app).await);
    // shelfsync's word on each sale, as it is published, seen from this side of the link.
    let mut acks = MqttClient::connect_to(&host, broker.port).await;
    let topics = shelfsync::mqtt::topics::Topics::new(&app.settings.mqtt.topic_prefix);
    acks.subscribe(&topics.acks(OUTLET)).await;
    let mut agent = AgentProc::new(
        AgentConfig {
            mqtt_host: host.clone(),
            mqtt_port: broker.port,
            ..AgentConfig::for_app(&app)
        },
        Some(link.ns.clone()),
    );
    agent.start();

    let started = Instant::now();
    let url = agent.url();
    // The till, at the outlet: in the namespace, beside its agent. Beside it, the agent's count
    // of lost connections, read every 250 ms from its status page.
    let till = link.spawn(move || async move {
        let mut till = Till::new(url.clone());
        let watcher = Till::new(url);
        let mut losses: Vec<(Instant, u64)> = Vec::new();
        let posting = async {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / SALES_PER_SEC));
            let mut n = 0;
            while started.elapsed() < TILL_RUN {
                tick.tick().await;
                n += 1;
                let lines: &[(&str, i64)] = match n % 3 {
                    0 => &[(SKU, 1)],
                    1 => &[(SKU2, 2), (SKU, 1)],
                    _ => &[(SKU3, 1)],
                };
                till.sell(&format!("F/{n}"), lines, 10).await;
            }
        };
        let watching = async {
            while started.elapsed() < TILL_RUN + Duration::from_secs(30) {
                if let Some(s) = watcher.status().await {
                    losses.push((Instant::now(), s["link"]["losses"].as_u64().unwrap_or(0)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        tokio::join!(posting, watching);
        let drained = till.drained(120).await;
        (till, drained, losses)
    });
    let mut cuts = Vec::new();
    for (k, (from, secs)) in CUTS.iter().enumerate() {
        tokio::time::sleep_until((started + Duration::from_secs(*from)).into()).await;
        let cut_at = Instant::now();
        let kind = link.cut(k % 2 == 0);
        tokio::time::sleep(Duration::from_secs(*secs)).await;
        link.mend();
        cuts.push((kind, *secs, cut_at, Instant::now()));
    }
    let (till, drained, losses) = tokio::task::spawn_blocking(move || till.join().unwrap())
        .await
        .unwrap();
    let losses_at = |t: Instant| {
        (losses.iter().rev())
            .find(|(at, _)| *at <= t)
            .map_or(0, |l| l.1)
    };
    assert!(drained, "the agent settled every sale");
    let sold = till.each_line_once(&app).await;

    // When shelfsync acked each event.
    let acked: HashMap<String, Instant> = (acks.drain().iter())
        .filter(|r| r.payload["result"] == "applied")
        .filter_map(|r| Some((r.payload["event_id"].as_str()?.to_owned(), r.at)))
        .fold(HashMap::new(), |mut m, (id, at)| {
            m.entry(id).or_insert(at);
            m
        });
    let mut report = Vec::new();
    let mut new_connections = Vec::new();
    for (kind, secs, cut_at, mended_at) in &cuts {
        let during: Vec<&Vec<String>> = (till.recorded.values())
            .filter(|v| v.at >= *cut_at && v.at < *mended_at)
            .map(|v| &v.events)
            .collect();
        assert!(
            !during.is_empty(),
            "the till was answered while the link was cut"
        );
        let last = (during.iter().flat_map(|ids| ids.iter()))
            .map(|id| *acked.get(id).unwrap_or_else(|| panic!("no ack for {id}")))
            .max()
            .unwrap();
        let reconnected = losses_at(last + Duration::from_secs(1)) > losses_at(*cut_at);
        new_connections.push(reconnected);
        report.push(format!(
            "{kind:?} {secs} s: {} vouchers during the cut, all applied {:.1} s after the link came back ({})",
            during.len(),
            last.saturating_duration_since(*mended_at).as_secs_f64(),
            if reconnected { "on a new connection" } else { "TCP carried the connection over" }
        ));
    }
    let mut answered = till.answered_in.clone();
    answered.sort();
    let ms = |q: f64| answered[((answered.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "flaky agent: {} vouchers ({} units, the till sent {} again; answered 202 in p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms) over {RATE_KBIT} kbit/s; every line in the ledger once; {}",
        till.recorded.len(),
        sold.values().sum::<i64>(),
        till.retries,
        ms(0.5),
        ms(0.99),
        ms(1.0),
        report.join("; ")
    );
    assert!(
        new_connections[3],
        "a 40 s cut is past the keep-alive: the agent makes a new connection"
    );
    drop(agent);
    app.finish().await;
}
