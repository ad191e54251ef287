//! Live streams: SSE against the real service.

mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

#[actix_web::test]
async fn an_sse_client_gets_the_snapshot_then_each_change_in_seq_order() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OUTLET, SKU2, 4).await;
    let mut sse = SseClient::connect(&app, &format!("outlets={OUTLET}"), VIEWER)
        .await
        .unwrap();

    let snapshot = sse.next(5).await.expect("a snapshot first");
    for _ in 0..5 {
        app.hold(OUTLET, SKU, 1, 300).await;
    }

    assert_eq!(snapshot.event, "snapshot");
    let rows = snapshot.data.as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["sku"] == SKU)
        .expect("the SKU is in the snapshot");
    assert_eq!(
        (row["on_hand"].as_i64(), row["available"].as_i64()),
        (Some(10), Some(10))
    );
    assert!(rows.iter().all(|r| r["outlet"] == OUTLET));
    let mut seqs = Vec::new();
    for i in 1..=5 {
        let change = sse.next(5).await.expect("one stock event per change");
        assert_eq!(change.event, "stock");
        assert_eq!(change.data["sku"], SKU);
        assert_eq!(change.data["reserved"], i);
        assert_eq!(change.data["available"], 10 - i);
        seqs.push(change.data["seq"].as_u64().unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
    app.finish().await;
}

#[actix_web::test]
async fn a_filter_excludes_other_outlets_and_skus() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OTHER_OUTLET, SKU, 10).await;
    app.set_stock(OTHER_OUTLET, SKU2, 10).await;
    let mut sse = SseClient::connect(&app, &format!("outlets={OTHER_OUTLET}&skus={SKU2}"), VIEWER)
        .await
        .unwrap();
    let snapshot = sse.next(5).await.unwrap();

    app.hold(OUTLET, SKU, 1, 300).await;
    app.hold(OTHER_OUTLET, SKU, 1, 300).await;
    app.hold(OTHER_OUTLET, SKU2, 2, 300).await;

    assert_eq!(snapshot.data.as_array().unwrap().len(), 1);
    let first = sse.next(5).await.expect("the matching change");
    assert_eq!(
        (first.data["outlet"].as_str(), first.data["sku"].as_str()),
        (Some(OTHER_OUTLET), Some(SKU2))
    );
    assert_eq!(first.data["reserved"], 2);
    let unknown = app.get("/v1/stream?outlets=atlantis", VIEWER).await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

#[actix_web::test]
async fn five_hundred_concurrent_sse_clients_all_receive_a_change() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let query = format!("outlets={OUTLET}&skus={SKU}");
    let clients = join_all((0..500).map(|_| SseClient::connect(&app, &query, VIEWER))).await;
    let mut clients: Vec<_> = clients.into_iter().map(|c| c.unwrap()).collect();
    for c in clients.iter_mut() {
        assert_eq!(c.next(10).await.expect("snapshot").event, "snapshot");
    }

    let hold = app.hold(OUTLET, SKU, 3, 300).await;

    let seq = hold["seq"].as_u64().unwrap();
    let got = join_all(clients.iter_mut().map(|c| async move { c.next(10).await })).await;
    let received = got
        .iter()
        .filter(|e| {
            e.as_ref()
                .is_some_and(|e| e.data["seq"].as_u64() == Some(seq))
        })
        .count();
    assert_eq!(received, 500);
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
    assert!(
        metrics.contains(r#"shelfsync_stream_clients{kind="sse"} 500"#),
        "{metrics}"
    );
    app.finish().await;
}

#[actix_web::test]
async fn past_the_client_limit_a_stream_is_503() {
    let mut settings = test_settings();
    settings.streams.clients_max = 2;
    let app = spawn_app_with(settings).await;
    let _a = SseClient::connect(&app, "", VIEWER).await.unwrap();
    let _b = SseClient::connect(&app, "", VIEWER).await.unwrap();

    let third = SseClient::connect(&app, "", VIEWER).await;

    assert_eq!(third.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let no_key = app
        .http
        .get(format!("{}/v1/stream", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

#[actix_web::test]
async fn a_client_that_never_reads_is_dropped_while_a_normal_client_keeps_receiving() {
    let mut settings = test_settings();
    settings.streams.client_buffer_events = 32;
    settings.streams.stall_secs = 1;
    let app = spawn_app_with(settings).await;
    let skus = catalogue_skus(50);
    for sku in &skus {
        app.set_stock(OUTLET, sku, 100_000).await;
    }
    let stalled = stalled_sse(&app, &format!("outlets={OUTLET}"), VIEWER).await;
    let mut normal = SseClient::connect(&app, &format!("outlets={OUTLET}"), VIEWER)
        .await
        .unwrap();
    normal.next(5).await.expect("snapshot");

    // 700 carts of 50 lines: 35,000 changes (about 4.5 MB of events), more than the kernel's
    // socket buffers (up to 4 MB here) can absorb for the stalled reader.
    let lines: Vec<_> = skus.iter().map(|s| json!({"sku": s, "qty": 1})).collect();
    let holds = futures_util::stream::iter(0..700)
        .map(|i| {
            let (app, lines) = (&app, &lines);
            async move {
                app.reserve(
                    &format!("big-{i}"),
                    json!({"outlet": OUTLET, "lines": lines, "ttl_secs": 300}),
                )
                .await
                .status()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(holds.iter().all(|s| *s == StatusCode::CREATED));
    let mut received = 0;
    while received < 35_000 {
        let e = normal
            .next(10)
            .await
            .expect("the normal client keeps receiving");
        assert_eq!(e.event, "stock");
        received += 1;
    }

    let dropped = eventually(10, || async {
        let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
        metrics.contains(r#"shelfsync_stream_dropped_total{kind="sse"} 1"#)
            && metrics.contains(r#"shelfsync_stream_clients{kind="sse"} 1"#)
    })
    .await;
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
    let stream_lines: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("shelfsync_stream"))
        .collect();
    assert!(
        dropped,
        "the stalled client was dropped; the normal one is still there: {stream_lines:?}"
    );
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.finish().await;
}

#[actix_web::test]
async fn a_websocket_client_subscribes_changes_its_filter_and_sees_orders() {
    use futures_util::SinkExt;
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OTHER_OUTLET, SKU2, 10).await;
    let mut conn = ws_connect(&app, &format!("key={VIEWER}&outlets={OUTLET}")).await;

    let snapshot = ws_next(&mut conn).await;
    app.hold(OTHER_OUTLET, SKU2, 1, 300).await;
    let hold = app.hold(OUTLET, SKU, 2, 300).await;
    let first = ws_next(&mut conn).await;

    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot["stock"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outlet"] == OUTLET));
    assert_eq!(
        (first["type"].as_str(), first["outlet"].as_str()),
        (Some("stock"), Some(OUTLET)),
        "the other outlet is filtered out"
    );
    assert_eq!(first["reserved"], 2);

    let id = hold["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay_ws"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut order = None;
    for _ in 0..4 {
        let frame = ws_next(&mut conn).await;
        if frame["type"] == "order" {
            order = Some(frame);
            break;
        }
    }
    assert_eq!(order.expect("an order frame")["reservation"]["id"], id);

    let subscribe = json!({"subscribe": {"outlets": [OTHER_OUTLET], "skus": [SKU2]}}).to_string();
    conn.send(awc::ws::Message::Text(subscribe.into()))
        .await
        .unwrap();
    let fresh = ws_next(&mut conn).await;
    assert_eq!(fresh["type"], "snapshot");
    assert_eq!(fresh["stock"].as_array().unwrap().len(), 1);
    assert_eq!(fresh["stock"][0]["reserved"], 1);
    app.hold(OUTLET, SKU, 1, 300).await;
    app.hold(OTHER_OUTLET, SKU2, 3, 300).await;
    let next = ws_next(&mut conn).await;
    assert_eq!(
        (next["outlet"].as_str(), next["reserved"].as_i64()),
        (Some(OTHER_OUTLET), Some(4))
    );

    conn.send(awc::ws::Message::Text(
        "{\"subscribe\":{\"outlets\":[\"atlantis\"]}}".into(),
    ))
    .await
    .unwrap();
    let error = ws_next(&mut conn).await;
    assert_eq!(error["type"], "error");
    drop(conn);
    app.finish().await;
}

/// An SSE stream of the service, read with ids: each event with the id the stream gave last.
struct IdStream {
    body:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>>>>,
    parser: shelfsync_load::sse::Parser,
    raw: String,
    /// Events of a chunk read but not yet returned (a chunk may carry several).
    ready: std::collections::VecDeque<(String, serde_json::Value, String)>,
}

impl IdStream {
    async fn open(app: &TestApp, last_event_id: Option<&str>) -> Self {
        let mut req = (app.http.get(format!("{}/v1/stream", app.url)))
            .query(&[("outlets", OUTLET)])
            .bearer_auth(VIEWER);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        Self {
            body: Box::pin(res.bytes_stream()),
            parser: shelfsync_load::sse::Parser::new(16 << 20),
            raw: String::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    /// The next event with data: (name, data, the stream's last id then), within `secs`.
    async fn next(&mut self, secs: u64) -> Option<(String, serde_json::Value, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.raw.push_str(&String::from_utf8_lossy(&chunk));
            for e in self.parser.push(&chunk).unwrap() {
                let id = self.parser.last_event_id().unwrap_or_default().to_owned();
                (self.ready).push_back((e.event, serde_json::from_str(&e.data).unwrap(), id));
            }
        }
    }
}

/// A client that reconnects with `Last-Event-ID` gets a `resumed` event and then only what
/// it missed: the latest value of each SKU that changed, nothing twice, nothing older; an id
/// the hub does not hold gets a fresh snapshot. Every stream starts with a `retry:` hint.
#[actix_web::test]
async fn a_reconnect_with_last_event_id_gets_only_what_it_missed_and_an_unknown_id_a_snapshot() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OUTLET, SKU2, 4).await;
    let mut first = IdStream::open(&app, None).await;
    let (event, _, seen) = first.next(5).await.unwrap();
    assert_eq!(event, "snapshot");
    assert!(!seen.is_empty(), "the snapshot carries an id");
    assert!(
        first.raw.starts_with("retry: "),
        "{}",
        &first.raw[..40.min(first.raw.len())]
    );
    drop(first);

    // Missed while away: SKU twice, SKU2 once, which leaves SKU2 at 3 free units, the
    // low-stock mark: its alert is an event of the stream too, missed or live.
    app.hold(OUTLET, SKU, 1, 300).await;
    app.hold(OUTLET, SKU2, 1, 300).await;
    app.hold(OUTLET, SKU, 1, 300).await;
    let mut back = IdStream::open(&app, Some(&seen)).await;
    let (event, resumed, _) = back.next(5).await.unwrap();
    assert_eq!(event, "resumed", "{resumed}");
    assert_eq!(resumed["since"], seen.as_str());
    let (mut missed, mut alerts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (event, data, _) = back.next(5).await.unwrap();
        match event.as_str() {
            "stock" => missed.push((
                data["sku"].as_str().unwrap().to_owned(),
                data["reserved"].as_i64().unwrap(),
            )),
            "alert" => alerts.push((
                data["sku"].as_str().unwrap().to_owned(),
                data["kind"].as_str().unwrap().to_owned(),
                data["state"].as_str().unwrap().to_owned(),
            )),
            other => panic!("unexpected {other}: {data}"),
        }
    }
    missed.sort();
    let mut want = vec![(SKU.to_owned(), 2), (SKU2.to_owned(), 1)];
    want.sort();
    assert_eq!(missed, want, "the latest value of each SKU that changed");
    assert_eq!(
        alerts,
        [(SKU2.to_owned(), "low_stock".to_owned(), "raised".to_owned())]
    );
    // The next event is the next change: nothing else was queued before it.
    app.hold(OUTLET, SKU2, 1, 300).await;
    let (event, data, _) = back.next(5).await.unwrap();
    assert_eq!(
        (
            event.as_str(),
            data["sku"].as_str(),
            data["reserved"].clone()
        ),
        ("stock", Some(SKU2), json!(2))
    );
    drop(back);

    let mut stranger = IdStream::open(&app, Some("not-one-of-ours-7")).await;
    let (event, rows, _) = stranger.next(5).await.unwrap();
    assert_eq!(event, "snapshot");
    let row = (rows.as_array().unwrap().iter())
        .find(|r| r["sku"] == SKU)
        .unwrap();
    assert_eq!(row["reserved"], 2, "the snapshot is the whole state now");
    for (outcome, n) in [("fresh", 1.0), ("resumed", 1.0), ("snapshot", 1.0)] {
        let series = format!("shelfsync_stream_starts_total{{outcome=\"{outcome}\"}}");
        assert_eq!(metric(&app, &series).await, n, "{outcome}");
    }
    app.finish().await;
}
