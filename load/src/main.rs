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
