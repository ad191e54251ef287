//! The outlet agent (`shelfsync-agent`) between a till and shelfsync, as real processes: the
//! agent binary, the broker, shelfsync, Redis and MongoDB. What the till was answered `202`
//! for reaches the ledger exactly once, whatever happens to the agent, the broker or the link
//! (the link's part is in `tests/flaky.rs`).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use serde_json::json;

#[actix_web::test]
async fn a_voucher_lands_once_and_the_till_reads_stock_with_its_sale() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OUTLET, SKU2, 5).await;
    assert!(mqtt_ready(&app).await);
    let mut agent = AgentProc::new(AgentConfig::for_app(&app), None);
    agent.start();
    let mut till = Till::new(agent.url());

    till.sell("INV/2026/1", &[(SKU, 2), (SKU2, 1)], 10).await;
    let again = Till::voucher("INV/2026/1", &[(SKU, 2), (SKU2, 1)]);
    let (status, body) = till.post(&again).await.unwrap();
    assert_eq!(
        (status, body["duplicate"].clone()),
        (202, json!(true)),
        "{body}"
    );
    let other = Till::voucher("INV/2026/1", &[(SKU, 3)]);
    let (status, body) = till.post(&other).await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("conflict")),
        "{body}"
    );
    let zero = Till::voucher("INV/2026/2", &[(SKU, 0)]);
    let (status, body) = till.post(&zero).await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "lines[0].qty");
    let (status, _) = till.post(&json!("not a voucher")).await.unwrap();
    assert_eq!(status, 422);
    // The agent does not know the catalogue: shelfsync refuses this line, and the agent keeps
    // it for a person.
    till.sell("INV/2026/3", &[("no-such-sku", 1)], 10).await;

    assert!(till.drained(20).await, "the agent settles every line");
    let rejected = till.recorded.remove("INV/2026/3").unwrap();
    let sold = till.each_line_once(&app).await;
    assert!(!ledger_event_counts(&app.settings, OUTLET)
        .await
        .contains_key(&rejected.events[0]));
    assert_eq!(sold[SKU], 2);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 8);
    let status = till.status().await.unwrap();
    assert_eq!(status["rejected_kept"], 1, "{status}");
    assert_eq!(status["rejected"][0]["voucher"], "INV/2026/3");
    assert_eq!(status["rejected"][0]["code"], "validation_failed");
    till.reads_settled(SKU, 8, 10).await;
    assert_eq!(
        till.metric("shelfsync_agent_sales_total{outcome=\"duplicate\"}")
            .await,
        1.0
    );
    assert_eq!(
        till.metric("shelfsync_agent_events_settled_total{result=\"applied\"}")
            .await,
        2.0
    );
    drop(agent);
    app.finish().await;
}

/// A broker's PUBACK is not shelfsync's word. With shelfsync stopped, the broker takes the
/// agent's sale (PUBACK) and queues it for shelfsync's session; then the broker dies without
/// persistence and comes back empty, and that copy is gone. Meanwhile the till reads stock
/// marked stale, with its own sale in it. Only shelfsync's ack settles a sale, so the agent
/// sends it again on the new session and it lands once.
#[actix_web::test]
async fn a_sale_the_broker_took_and_lost_is_sent_again_and_the_till_reads_stale_stock_meanwhile() {
    let mut broker = TestBroker::start().await;
    let mut settings = test_settings();
    settings.mqtt.port = broker.port;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let mut agent = AgentProc::new(
        AgentConfig::for_app(&app).with("FORWARD__RESEND_SECS", 2),
        None,
    );
    agent.start();
    let mut till = Till::new(agent.url());
    till.sell("INV/1", &[(SKU, 1)], 10).await;
    assert!(till.drained(15).await);
    assert!(
        eventually(10, || async { till.stock(SKU).await["on_hand"] == 9 }).await,
        "{}",
        till.stock(SKU).await
    );

    let settings = app.stop().await;
    till.sell("INV/2", &[(SKU, 2)], 10).await;
    let took = "shelfsync_agent_broker_acks_total";
    assert!(
        eventually(10, || async { till.metric(took).await == 2.0 }).await,
        "the broker took the sale (PUBACK)"
    );
    broker.kill();
    assert!(
        eventually(10, || async {
            till.status().await.unwrap()["link"]["up"] == false
        })
        .await
    );
    let read = till.stock(SKU).await;
    assert_eq!(
        (
            read["on_hand"].clone(),
            read["local_delta"].clone(),
            read["stale"].clone()
        ),
        (json!(7), json!(-2), json!(true)),
        "{read}"
    );
    assert_eq!(till.status().await.unwrap()["pending"]["events"], 1);

    broker.restart().await;
    let app = spawn_app_with(settings).await;
    assert!(till.drained(30).await, "{}", till.status().await.unwrap());
    till.each_line_once(&app).await;
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 7);
    till.reads_settled(SKU, 7, 15).await;
    drop(agent);
    app.finish().await;
}

/// kill -9 of the agent at random moments while the till posts (mid-request, mid-commit,
/// mid-forward, mid-ack); the till sends every unanswered voucher again, as its webhook queue
/// does. Every voucher answered `202` is in the ledger once per line, none twice.
#[actix_web::test]
async fn kill_9_at_random_points_while_the_till_posts_loses_and_doubles_nothing() {
    const LANES: usize = 4;
    const KILLS: usize = 10;
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 100_000).await;
    app.set_stock(OUTLET, SKU2, 100_000).await;
    assert!(mqtt_ready(&app).await);
    let before = (
        app.stock(OUTLET, SKU).await["on_hand"].as_i64().unwrap(),
        app.stock(OUTLET, SKU2).await["on_hand"].as_i64().unwrap(),
    );
    let mut agent = AgentProc::new(
        AgentConfig::for_app(&app).with("FORWARD__RESEND_SECS", 3),
        None,
    );
    agent.start();
    let url = agent.url();
    let mut till = Till::new(url.clone());
    let started = Instant::now();

    // The killer runs on a thread of its own (starting an agent waits for it); the tills post
    // until it is done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killing = done.clone();
    let killer = std::thread::spawn(move || {
        let mut rng = rand::thread_rng();
        for _ in 0..KILLS {
            std::thread::sleep(Duration::from_millis(rng.gen_range(200..1_500)));
            agent.kill();
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
            agent.start();
        }
        killing.store(true, std::sync::atomic::Ordering::Release);
        agent
    });
    // Four tills post all along, so that the kills find the agent busy: mid-request,
    // mid-commit, between the commit and the answer.
    let lanes = (0..LANES).map(|lane| {
        let mut till = Till::new(url.clone());
        let done = done.clone();
        async move {
            for i in (lane..).step_by(LANES) {
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let lines: &[(&str, i64)] = match i % 3 {
                    0 => &[(SKU, 1)],
                    1 => &[(SKU, 2), (SKU2, 1)],
                    _ => &[(SKU2, 3), (SKU, 1), (SKU2, 1)],
                };
                till.sell(&format!("K/{i}"), lines, 60).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            till
        }
    });
    for lane in futures_util::future::join_all(lanes).await {
        till.recorded.extend(lane.recorded);
        till.retries += lane.retries;
        till.duplicates += lane.duplicates;
    }
    let agent = killer.join().unwrap();

    assert!(till.drained(120).await, "{}", till.status().await.unwrap());
    let sold = till.each_line_once(&app).await;
    let after = (
        app.stock(OUTLET, SKU).await["on_hand"].as_i64().unwrap(),
        app.stock(OUTLET, SKU2).await["on_hand"].as_i64().unwrap(),
    );
    assert_eq!(before.0 - after.0, sold[SKU]);
    assert_eq!(before.1 - after.1, sold[SKU2]);
    println!(
        "kill -9: {} vouchers ({} units) in {:.1} s through {KILLS} kills; the till sent {} again \
         ({} of them had been recorded before the agent died unanswered); every line in the ledger once",
        till.recorded.len(),
        sold.values().sum::<i64>(),
        started.elapsed().as_secs_f64(),
        till.retries,
        till.duplicates,
    );
    drop(agent);
    app.finish().await;
}

/// A till whose webhook stalls half-way through its body is cut off at
/// `http.body_read_secs`, and nothing of it is recorded.
#[actix_web::test]
async fn a_webhook_body_that_stalls_half_way_is_cut_off_and_nothing_is_recorded() {
    let broker = TestBroker::start().await;
    let mut agent = AgentProc::new(
        AgentConfig::standalone(broker.port).with("HTTP__BODY_READ_SECS", 2),
        None,
    );
    agent.start();
    let till = Till::new(agent.url());
    let body = Till::voucher("STALL/1", &[(SKU, 1)]).to_string();
    let port = agent.config.port;
    let (answer, took) = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST /v1/sales HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
        let sent = Instant::now();
        let mut answer = String::new();
        // Read to the end: the agent answers and closes the connection (within the 20 s
        // read timeout, or the read fails with the answer missing).
        let _ = s.read_to_string(&mut answer);
        (answer, sent.elapsed())
    })
    .await
    .unwrap();
    println!("a stalled body was answered after {took:?} (http.body_read_secs 2)");
    // Only the body deadline answers 408: the connection was cut off by it, not by the test.
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let status = till.status().await.unwrap();
    assert_eq!(
        (
            status["vouchers_kept"].clone(),
            status["pending"]["events"].clone()
        ),
        (json!(0), json!(0))
    );
    assert_eq!(
        till.metric("shelfsync_agent_sales_total{outcome=\"request_timeout\"}")
            .await,
        1.0
    );
    // The agent takes the next voucher as usual.
    let (status, _) = till
        .post(&Till::voucher("STALL/2", &[(SKU, 1)]))
        .await
        .unwrap();
    assert_eq!(status, 202);
}

/// Past `store.pending_max` events waiting for shelfsync (here: no broker at all), a new
/// voucher is refused with `503 store_full` and Retry-After, counted, and the till keeps it;
/// a voucher already recorded is still answered.
#[actix_web::test]
async fn a_full_store_refuses_new_vouchers_with_503_and_counts_them() {
    let mut agent = AgentProc::new(
        AgentConfig::standalone(free_port()).with("STORE__PENDING_MAX", 3),
        None,
    );
    agent.start();
    let mut till = Till::new(agent.url());
    till.sell("F/1", &[(SKU, 1), (SKU2, 1)], 5).await;
    let res = (till.http.post(format!("{}/v1/sales", till.url)))
        .json(&Till::voucher("F/2", &[(SKU, 1), (SKU2, 1)]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "store_full", "{body}");
    let (status, _) = till
        .post(&Till::voucher("F/1", &[(SKU, 1), (SKU2, 1)]))
        .await
        .unwrap();
    assert_eq!(status, 202, "a recorded voucher is answered as before");
    assert_eq!(
        till.metric("shelfsync_agent_sales_total{outcome=\"store_full\"}")
            .await,
        1.0
    );
    let status = till.status().await.unwrap();
    assert_eq!(
        (
            status["pending"]["events"].clone(),
            status["link"]["up"].clone()
        ),
        (json!(2), json!(false))
    );
    // The same, for a person, from the command line.
    let out = std::process::Command::new(agent_bin())
        .args(["status", "--url", &agent.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("DOWN"), "{text}");
    assert!(text.contains("pending     2 events"), "{text}");
}

/// Where MQTT is not allowed: the same events over `POST /v1/movements` with the outlet's
/// POS key; the answer settles them, and the stock follows shelfsync's SSE stream.
#[actix_web::test]
async fn over_http_the_agent_lands_each_line_once_and_follows_stock() {
    let mut settings = test_settings();
    settings.streams.keepalive_secs = 1;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 10).await;
    let mut agent = AgentProc::new(
        AgentConfig {
            via: "http",
            ..AgentConfig::for_app(&app)
        }
        .with("SHELFSYNC__STREAM_SILENCE_SECS", 5),
        None,
    );
    agent.start();
    let mut till = Till::new(agent.url());
    till.sell("H/1", &[(SKU, 2)], 10).await;
    till.sell("H/2", &[(SKU, 1)], 10).await;
    till.sell("H/3", &[("no-such-sku", 1)], 10).await;
    assert!(till.drained(20).await, "{}", till.status().await.unwrap());
    let rejected = till.recorded.remove("H/3").unwrap();
    till.each_line_once(&app).await;
    let status = till.status().await.unwrap();
    assert_eq!(
        status["rejected"][0]["event_id"],
        rejected.events[0].as_str()
    );
    assert_eq!(status["rejected"][0]["code"], "validation_failed");
    till.reads_settled(SKU, 7, 10).await;
    // A change no till made (a web hold) reaches the till's read over the stream.
    app.hold(OUTLET, SKU, 2, 300).await;
    assert!(
        eventually(10, || async {
            let s = till.stock(SKU).await;
            s["reserved"] == 2 && s["available"] == 5
        })
        .await,
        "{}",
        till.stock(SKU).await
    );
    drop(agent);
    app.finish().await;
}
