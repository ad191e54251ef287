//! A quick load run against a running shelfsync: concurrent storefront clients hold
//! one-line carts and cancel them (so stock is not used up), then the tool prints holds per
//! second and latency percentiles. Bounded in count and time; it stops by itself.
//!
//! This is the closed-loop smoke form; the festival simulator grows from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Quick hold/cancel load against a running shelfsync")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "demo-storefront-key-change-me")]
    key: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// ...or this many holds, whichever comes first.
    #[arg(long, default_value_t = 200_000)]
    holds_max: u64,
    /// Instead of hold/cancel: place this many holds that are left to expire, and report how
    /// long after the last deadline the last of them was released.
    #[arg(long)]
    expiry_holds: Option<u64>,
    /// Hold time of the expiry run.
    #[arg(long, default_value_t = 20)]
    expiry_ttl_secs: u64,
    /// Instead of hold/cancel: publish this many POS receipts over MQTT and report the rate at
    /// which shelfsync applied them durably.
    #[arg(long)]
    mqtt_pos: Option<u64>,
    /// Instead of hold/cancel: make this many holds (each cancelled) and report the latency
    /// from each hold's answer to its value reaching a `stock/#` subscriber.
    #[arg(long)]
    mqtt_latency_holds: Option<u64>,
    #[arg(long, default_value = "127.0.0.1")]
    mqtt_host: String,
    /// The broker's port (`make run` starts the project's broker on 1884).
    #[arg(long, default_value_t = 1884)]
    mqtt_port: u16,
    /// Instead of hold/cancel: keep this many SSE clients on one outlet, make holds there,
    /// and report the latency from each hold's answer to each client receiving it.
    #[arg(long)]
    sse_clients: Option<usize>,
    /// Holds of the SSE run.
    #[arg(long, default_value_t = 300)]
    sse_holds: u64,
    /// The service's `mqtt.topic_prefix`.
    #[arg(long, default_value = "")]
    topic_prefix: String,
}

#[derive(Default)]
struct Counts {
    held: AtomicU64,
    out_of_stock: AtomicU64,
    other: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let auth = format!("Bearer {}", args.key);
    // Targets: every (outlet, sku) with stock available.
    let outlets: Vec<Value> = http
        .get(format!("{}/v1/outlets", args.url))
        .header("Authorization", &auth)
        .send()
        .await
        .context("is shelfsync running? (make run)")?
        .json()
        .await?;
    let mut targets = Vec::new();
    for o in &outlets {
        let id = o["id"].as_str().unwrap_or_default().to_owned();
        let rows: Vec<Value> = http
            .get(format!("{}/v1/outlets/{id}/stock", args.url))
            .header("Authorization", &auth)
            .send()
            .await?
            .json()
            .await?;
        for r in rows
            .iter()
            .filter(|r| r["available"].as_i64().unwrap_or(0) > 0)
        {
            targets.push((id.clone(), r["sku"].as_str().unwrap_or_default().to_owned()));
        }
    }
    anyhow::ensure!(
        !targets.is_empty(),
        "no stock to hold; run `make run` (it imports the demo chain)"
    );
    let targets = Arc::new(targets);
    if let Some(holds) = args.expiry_holds {
        return expiry_run(&args, &http, &auth, &outlets, targets, holds).await;
    }
    if let Some(n) = args.mqtt_pos {
        return mqtt::pos_run(&args, &http, &auth, &outlets, &targets, n).await;
    }
    if let Some(n) = args.sse_clients {
        return sse::latency_run(&args, &http, &auth, &targets, n).await;
    }
    if let Some(n) = args.mqtt_latency_holds {
        return mqtt::latency_run(&args, &http, &auth, targets, n).await;
    }
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (http, auth, url) = (http.clone(), auth.clone(), args.url.clone());
        let (targets, counts, issued) = (targets.clone(), counts.clone(), issued.clone());
        let holds_max = args.holds_max;
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut i = c;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < holds_max {
                let (outlet, sku) = &targets[i % targets.len()];
                i += 7919;
                let t = Instant::now();
                let res = http
                    .post(format!("{url}/v1/reservations"))
                    .header("Authorization", &auth)
                    .header("Idempotency-Key", format!("load-{}-{}-{c}-{i}", std::process::id(), t.elapsed().as_nanos()))
                    .json(&json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": 60}))
                    .send()
                    .await;
                let _ = hist.record(t.elapsed().as_micros() as u64);
                match res {
                    Ok(r) if r.status() == 201 => {
                        counts.held.fetch_add(1, Ordering::Relaxed);
                        let body: Value = r.json().await.unwrap_or_default();
                        if let Some(id) = body["id"].as_str() {
                            let _ = http
                                .post(format!("{url}/v1/reservations/{id}/cancel"))
                                .header("Authorization", &auth)
                                .send()
                                .await;
                        }
                    }
                    Ok(r) if r.status() == 409 => {
                        counts.out_of_stock.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        hist.add(t.await?)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let held = counts.held.load(Ordering::Relaxed);
    println!("clients {}  duration {:.1} s", args.clients, secs);
    println!(
        "holds {held} ({:.0}/s, each followed by a cancel)  out_of_stock {}  other {}",
        held as f64 / secs,
        counts.out_of_stock.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed)
    );
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "hold latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
    Ok(())
}

/// Sum of one counter (`reserved`, `on_hand`) over every outlet and SKU.
async fn stock_total(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    outlets: &[Value],
    field: &str,
) -> anyhow::Result<i64> {
    let mut total = 0;
    for o in outlets {
        let id = o["id"].as_str().unwrap_or_default();
        let rows: Vec<Value> = http
            .get(format!("{url}/v1/outlets/{id}/stock"))
            .header("Authorization", auth)
            .send()
            .await?
            .json()
            .await?;
        total += rows
            .iter()
            .map(|r| r[field].as_i64().unwrap_or(0))
            .sum::<i64>();
    }
    Ok(total)
}

/// Places `holds` one-unit holds, leaves them to expire, and measures the release lag.
async fn expiry_run(
    args: &Args,
    http: &reqwest::Client,
    auth: &str,
    outlets: &[Value],
    targets: Arc<Vec<(String, String)>>,
    holds: u64,
) -> anyhow::Result<()> {
    let baseline = stock_total(http, &args.url, auth, outlets, "reserved").await?;
    let next = Arc::new(AtomicU64::new(0));
    let last_deadline = Arc::new(std::sync::Mutex::new(String::new()));
    let placed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (http, auth, url) = (http.clone(), auth.to_owned(), args.url.clone());
        let (targets, next, last_deadline, placed) = (
            targets.clone(),
            next.clone(),
            last_deadline.clone(),
            placed.clone(),
        );
        let ttl = args.expiry_ttl_secs;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= holds {
                    break;
                }
                let (outlet, sku) = &targets[(i as usize * 7919) % targets.len()];
                let res = http
                    .post(format!("{url}/v1/reservations"))
                    .header("Authorization", &auth)
                    .header("Idempotency-Key", format!("expiry-{}-{c}-{i}", std::process::id()))
                    .json(&json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": ttl}))
                    .send()
                    .await;
                if let Ok(r) = res {
                    if r.status() == 201 {
                        let body: Value = r.json().await.unwrap_or_default();
                        let at = body["expires_at"].as_str().unwrap_or_default().to_owned();
                        let mut last = last_deadline.lock().expect("lock");
                        if at > *last {
                            *last = at;
                        }
                        placed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let placed = placed.load(Ordering::Relaxed);
    let live = stock_total(http, &args.url, auth, outlets, "reserved").await? - baseline;
    println!(
        "placed {placed} holds in {:.1} s; {live} units live at once",
        started.elapsed().as_secs_f64()
    );
    let last = last_deadline.lock().expect("lock").clone();
    let last = chrono::DateTime::parse_from_rfc3339(&last)?.with_timezone(&chrono::Utc);
    let mut released_at = None;
    let give_up = Instant::now() + Duration::from_secs(args.expiry_ttl_secs + 30);
    while Instant::now() < give_up {
        if stock_total(http, &args.url, auth, outlets, "reserved").await? <= baseline {
            released_at = Some(chrono::Utc::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match released_at {
        Some(at) => {
            let lag_ms = (at - last).num_milliseconds();
            println!(
                "every hold released {lag_ms} ms after the last expires_at (polling every 50 ms)"
            );
        }
        None => println!("holds still reserved 30 s after the last deadline"),
    }
    Ok(())
}

/// MQTT figures: POS intake rate and commit-to-subscriber latency.
mod mqtt {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use hdrhistogram::Histogram;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::Event;
    use serde_json::{json, Value};

    use super::{stock_total, Args};

    type Seen = Arc<Mutex<HashMap<(String, String), Vec<(u64, Instant)>>>>;

    async fn connect(
        args: &Args,
        name: &str,
        seen: Option<Seen>,
    ) -> anyhow::Result<shelfsync_load::mqtt::Client> {
        let id = format!("shelfsync-load-{name}-{}", std::process::id());
        let options = shelfsync_load::mqtt::options(id, &args.mqtt_host, args.mqtt_port);
        let prefix = args.topic_prefix.clone();
        shelfsync_load::mqtt::connect(options, 100_000, move |event| {
            let Event::Incoming(Packet::Publish(p)) = event else {
                return;
            };
            let at = Instant::now();
            let (Some(seen), Ok(v)) = (&seen, serde_json::from_slice::<Value>(&p.payload)) else {
                return;
            };
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            let mut parts = topic
                .strip_prefix(&prefix)
                .unwrap_or(&topic)
                .split('/')
                .skip(1);
            if let (Some(o), Some(s), Some(seq)) = (parts.next(), parts.next(), v["seq"].as_u64()) {
                seen.lock()
                    .expect("lock")
                    .entry((o.to_owned(), s.to_owned()))
                    .or_default()
                    .push((seq, at));
            }
        })
        .await
    }

    /// Publishes `n` receipts of one unit (QoS 1) and waits until all are applied.
    pub async fn pos_run(
        args: &Args,
        http: &reqwest::Client,
        auth: &str,
        outlets: &[Value],
        targets: &[(String, String)],
        n: u64,
    ) -> anyhow::Result<()> {
        let before = stock_total(http, &args.url, auth, outlets, "on_hand").await?;
        let pos = connect(args, "pos", None).await?;
        let started = Instant::now();
        let run = std::process::id();
        for i in 0..n {
            let (outlet, sku) = &targets[(i as usize * 7919) % targets.len()];
            let body = json!({"event_id": format!("load-{run}-{i}"), "sku": sku, "kind": "receipt", "qty": 1,
                "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
            pos.publish(
                format!("{}pos/{outlet}/movements", args.topic_prefix),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await?;
        }
        let published = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if stock_total(http, &args.url, auth, outlets, "on_hand").await? - before >= n as i64 {
                let secs = started.elapsed().as_secs_f64();
                println!("published {n} POS receipts in {published:.2} s; all applied durably after {secs:.2} s: {:.0} messages/s", n as f64 / secs);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("not every receipt was applied within 120 s")
    }

    /// Holds (each then cancelled) and the delay until a `stock/#` subscriber sees each hold's seq.
    pub async fn latency_run(
        args: &Args,
        http: &reqwest::Client,
        auth: &str,
        targets: Arc<Vec<(String, String)>>,
        n: u64,
    ) -> anyhow::Result<()> {
        let seen: Seen = Arc::default();
        let sub = connect(args, "sub", Some(seen.clone())).await?;
        sub.subscribe(format!("{}stock/#", args.topic_prefix), QoS::AtMostOnce)
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await; // the retained flood passes
        let holds = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..args.clients {
            let (http, auth, url, targets, holds, next) = (
                http.clone(),
                auth.to_owned(),
                args.url.clone(),
                targets.clone(),
                holds.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (outlet, sku) = targets[(i as usize * 7919) % targets.len()].clone();
                    let res = http.post(format!("{url}/v1/reservations")).header("Authorization", &auth)
                        .header("Idempotency-Key", format!("lat-{}-{c}-{i}", std::process::id()))
                        .json(&json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": 60})).send().await;
                    let answered = Instant::now();
                    let Ok(res) = res else { continue };
                    if res.status() != 201 { continue }
                    let body: Value = res.json().await.unwrap_or_default();
                    if let (Some(seq), Some(id)) = (body["seq"].as_u64(), body["id"].as_str()) {
                        holds.lock().expect("lock").push((outlet, sku, seq, answered));
                        let _ = http.post(format!("{url}/v1/reservations/{id}/cancel")).header("Authorization", &auth).send().await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = seen.lock().expect("lock");
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut missing = 0;
        for (outlet, sku, seq, answered) in holds.lock().expect("lock").iter() {
            let arrival = seen
                .get(&(outlet.clone(), sku.clone()))
                .and_then(|v| v.iter().filter(|(s, _)| s >= seq).map(|(_, t)| *t).min());
            match arrival {
                Some(t) => {
                    hist.record(t.saturating_duration_since(*answered).as_micros().max(1) as u64)?
                }
                None => missing += 1,
            }
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "holds {}  seen by the subscriber {}  missing {missing}",
            hist.len() + missing,
            hist.len()
        );
        println!("commit (hold answered) to stock/# subscriber, ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}", ms(0.5), ms(0.9), ms(0.99), hist.max() as f64 / 1000.0);
        Ok(())
    }
}

/// SSE figures: change-to-client latency with many clients.
mod sse {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use hdrhistogram::Histogram;
    use serde_json::{json, Value};

    use super::Args;

    type Arrivals = Arc<Mutex<HashMap<(String, u64), Instant>>>;

    /// The longest stream line a client accepts (an outlet's snapshot fits).
    const LINE_MAX: usize = 16 << 20;

    pub async fn latency_run(
        args: &Args,
        http: &reqwest::Client,
        auth: &str,
        targets: &[(String, String)],
        clients: usize,
    ) -> anyhow::Result<()> {
        let outlet = targets[0].0.clone();
        let skus: Vec<String> = targets
            .iter()
            .filter(|(o, _)| *o == outlet)
            .map(|(_, s)| s.clone())
            .collect();
        let key = auth.trim_start_matches("Bearer ").to_owned();
        let mut arrivals: Vec<Arrivals> = Vec::new();
        let mut snapshots = Vec::new();
        for _ in 0..clients {
            let res = http
                .get(format!("{}/v1/stream?outlets={outlet}&key={key}", args.url))
                .send()
                .await?;
            anyhow::ensure!(res.status() == 200, "stream answered {}", res.status());
            let seen: Arrivals = Arc::default();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            let seen2 = seen.clone();
            let mut ready_tx = Some(ready_tx);
            tokio::spawn(shelfsync_load::sse::read(res, LINE_MAX, move |e, at| {
                match e.event.as_str() {
                    "snapshot" => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    "stock" => {
                        if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                            if let (Some(sku), Some(seq)) = (v["sku"].as_str(), v["seq"].as_u64()) {
                                seen2
                                    .lock()
                                    .expect("lock")
                                    .insert((sku.to_owned(), seq), at);
                            }
                        }
                    }
                    _ => {}
                }
                true
            }));
            snapshots.push(ready_rx);
            arrivals.push(seen);
        }
        for s in snapshots {
            tokio::time::timeout(Duration::from_secs(30), s).await??;
        }
        println!("{clients} SSE clients on {outlet} have their snapshot");
        let mut holds = Vec::new();
        for i in 0..args.sse_holds {
            let sku = &skus[i as usize % skus.len()];
            let sent = Instant::now();
            let res = http
                .post(format!("{}/v1/reservations", args.url))
                .header("Authorization", auth)
                .header("Idempotency-Key", format!("sse-{}-{i}", std::process::id()))
                .json(&json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}], "ttl_secs": 30}))
                .send()
                .await?;
            let answered = Instant::now();
            if res.status() == 201 {
                let body: Value = res.json().await?;
                holds.push((
                    sku.clone(),
                    body["seq"].as_u64().unwrap_or(0),
                    sent,
                    answered,
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The commit lies between the request's send and its answer: the event may reach the
        // clients before the answer reaches us. Both bounds are reported.
        let mut from_answer = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut from_send = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut missing = 0u64;
        for seen in &arrivals {
            let seen = seen.lock().expect("lock");
            for (sku, seq, sent, answered) in &holds {
                match seen.get(&(sku.clone(), *seq)) {
                    Some(at) => {
                        from_answer.record(
                            at.saturating_duration_since(*answered).as_micros().max(1) as u64,
                        )?;
                        from_send
                            .record(at.saturating_duration_since(*sent).as_micros().max(1) as u64)?;
                    }
                    None => missing += 1,
                }
            }
        }
        println!(
            "{} holds x {clients} clients: {} deliveries, {missing} missing",
            holds.len(),
            from_answer.len()
        );
        for (name, h) in [("hold answered", &from_answer), ("hold sent", &from_send)] {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "{name} -> SSE client, ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                ms(0.5),
                ms(0.9),
                ms(0.99),
                h.max() as f64 / 1000.0
            );
        }
        Ok(())
    }
}
