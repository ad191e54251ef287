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
//!
//! This file runs the phases (discover, start the push clients, send, wait for the expiries,
//! audit, report); the parts, by responsibility: `args.rs`, `world.rs` (what the run reads
//! first), `schedule.rs` (open-loop sending), `ops.rs` and `mqtt.rs` (the generators),
//! `push.rs` (SSE browsers, the MQTT display), `stats.rs`, `resources.rs` (/proc and
//! /metrics), `audit.rs` (with `lots.rs`), `report.rs` and `plot.rs`.

mod args;
mod audit;
mod lots;
mod mqtt;
mod ops;
mod plot;
mod push;
mod report;
mod resources;
mod schedule;
mod stats;
mod world;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use args::Args;
use ops::{hold_op, movement_op, whatsapp_op, Ctx};
use report::{fmt_opt, ms_cell, operations_table, print_latency_row};
use resources::sample_resources;
use schedule::{with_ctx, Schedule};
use stats::{percentiles, Stats, Timeline, BUCKET_SECS, OPS};
use world::discover;

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
    if args.shelf_life_days > 0 {
        world::give_shelf_lives(&args, &http, &world).await?;
    }
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
    let ops = operations_table(&stats, sent_secs);
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
    let (service, others) = resources.summary(sent_secs);
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
