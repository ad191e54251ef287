//! Issue 16's findings, each tried as an attacker would: a test that fails before its fix.

mod common;

use common::*;
use reqwest::{Method, StatusCode};

/// Made-up HTTP methods, without a key, do not grow the metrics: every method outside the
/// standard ones is one `other` series, every unmatched path one `unmatched`.
#[actix_web::test]
async fn made_up_methods_do_not_add_metric_series() {
    let app = spawn_app().await;
    for i in 0..30 {
        let method = Method::from_bytes(format!("ZZMETHOD{i:03}").as_bytes()).unwrap();
        let r = app
            .http
            .request(method, format!("{}/v1/outlets", app.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let metrics = app.get("/metrics", ADMIN).await.text().await.unwrap();
    assert!(
        !metrics.contains("ZZMETHOD"),
        "no series per made-up method"
    );
    let others = metrics
        .lines()
        .filter(|l| {
            l.starts_with("shelfsync_http_request_duration_seconds_count")
                && l.contains("method=\"other\"")
        })
        .count();
    assert_eq!(others, 1, "one series for every made-up method:\n{metrics}");
    app.finish().await;
}

/// A key scoped to some outlets reads only their reservations (they carry customer and
/// payment references).
#[actix_web::test]
async fn a_scoped_key_reads_only_its_outlets_reservations() {
    let app = spawn_app().await;
    app.set_stock("bhopal-arera-colony", SKU, 5).await;
    app.set_stock(OUTLET, SKU, 5).await;
    let theirs = app.hold("bhopal-arera-colony", SKU, 1, 60).await;
    let ours = app.hold(OUTLET, SKU, 1, 60).await;
    let path = |r: &serde_json::Value| format!("/v1/reservations/{}", r["id"].as_str().unwrap());
    let other = app.get(&path(&theirs), MANAGER_INDORE).await;
    assert_eq!(
        other.status(),
        StatusCode::FORBIDDEN,
        "another outlet's reservation"
    );
    let body: serde_json::Value = other.json().await.unwrap();
    assert!(body.get("reservation").is_none() && body.get("customer_ref").is_none());
    let own = app.get(&path(&ours), MANAGER_INDORE).await;
    assert_eq!(own.status(), StatusCode::OK);
    app.finish().await;
}

/// The dashboard page carries a Content-Security-Policy that names its own inline script
/// and style by hash (the browser test loads the page under it), and the other headers.
#[actix_web::test]
async fn the_page_has_security_headers() {
    let app = spawn_app().await;
    let r = app.http.get(format!("{}/", app.url)).send().await.unwrap();
    let h = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let csp = h("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("referrer-policy"), "no-referrer");
    app.finish().await;
}

/// Off loopback, a start with the shipped demo keys and secrets is refused, naming them;
/// `http.allow_demo_secrets` lets a demo host start anyway.
#[test]
fn demo_secrets_off_loopback_refuse_to_start() {
    let root = env!("CARGO_MANIFEST_DIR");
    let serve = |host: &str, allow: bool| {
        std::process::Command::new(env!("CARGO_BIN_EXE_shelfsync"))
            .arg("check")
            .current_dir(root)
            .env("SHELFSYNC_CONFIG", format!("{root}/config.toml"))
            .env("SHELFSYNC__HTTP__HOST", host)
            .env("SHELFSYNC__HTTP__ALLOW_DEMO_SECRETS", allow.to_string())
            .env("SHELFSYNC__REDIS__KEY_PREFIX", "hardening-no-such-prefix")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let refused = serve("0.0.0.0", false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0 with demo or empty secrets"),
        "{stderr}"
    );
    assert!(
        stderr.contains("demo admin") && stderr.contains("cluster.secret"),
        "{stderr}"
    );
    let allowed = serve("0.0.0.0", true);
    assert!(
        !String::from_utf8_lossy(&allowed.stderr).contains("refusing to listen"),
        "allowed for a demo host"
    );
    let loopback = serve("127.0.0.1", false);
    assert!(!String::from_utf8_lossy(&loopback.stderr).contains("refusing to listen"));
}

/// A key scoped to outlets gets, on a WebSocket, the confirmed orders of its outlets only,
/// even when it asks for every outlet's stock.
#[actix_web::test]
async fn a_scoped_key_gets_only_its_outlets_orders_on_a_websocket() {
    let app = spawn_app().await;
    let bhopal = "bhopal-arera-colony";
    app.set_stock(bhopal, SKU, 5).await;
    app.set_stock(OUTLET, SKU, 5).await;
    let mut conn = ws_connect(
        &app,
        &format!("key={MANAGER_INDORE}&outlets={OUTLET},{bhopal}"),
    )
    .await;
    let confirm = |outlet: &'static str, pay: &'static str| {
        let app = &app;
        async move {
            let hold = app.hold(outlet, SKU, 1, 300).await;
            let id = hold["id"].as_str().unwrap().to_owned();
            let path = format!("/v1/reservations/{id}/confirm");
            let r = app
                .post(&path, STOREFRONT, serde_json::json!({"payment_ref": pay}))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            id
        }
    };
    let theirs = confirm(bhopal, "pay_bhopal").await;
    let ours = confirm(OUTLET, "pay_indore").await;
    // Frames until our order arrives (it was confirmed last): theirs must not be among them.
    let mut orders = Vec::new();
    while !orders.contains(&ours) {
        let v = ws_next(&mut conn).await;
        if v["type"] == "order" {
            orders.push(v["reservation"]["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        !orders.contains(&theirs),
        "another outlet's order: {orders:?}"
    );
    app.finish().await;
}

/// A retained POS sale on the broker (a POS that set the retain flag) is never applied: the
/// subscription asks for no retained messages, and one that comes retained anyway is
/// counted and let go.
#[actix_web::test]
async fn a_retained_pos_sale_is_not_applied() {
    let settings = test_settings();
    let topic = format!("{}pos/{OUTLET}/movements", settings.mqtt.topic_prefix);
    let pos = MqttClient::connect(settings.mqtt.port).await;
    let sale = serde_json::json!({"event_id": "retained-sale-1", "sku": SKU,
        "kind": "sale_counter", "qty": 1, "at": "2026-12-02T09:00:00Z"});
    pos.client
        .publish(
            &topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            sale.to_string().into_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let app = spawn_app_with(settings.clone()).await;
    let before = app.stock(OUTLET, SKU).await["on_hand"].as_i64().unwrap();
    // A live sale after it, so that we know the subscription is up and taking messages.
    let live = serde_json::json!({"event_id": "live-sale-1", "sku": SKU,
        "kind": "sale_counter", "qty": 1, "at": "2026-12-02T09:00:00Z"});
    assert!(
        eventually(20, || async {
            pos.publish(&topic, live.to_string()).await;
            app.stock(OUTLET, SKU).await["on_hand"].as_i64().unwrap() == before - 1
        })
        .await,
        "the live sale was applied"
    );
    // The stock moves once Redis has the sale; its ledger document follows.
    let applied = |id: &'static str| {
        let settings = settings.clone();
        async move {
            (documents(&settings, "ledger").await.iter())
                .filter(|d| d.get_str("event_id").ok() == Some(id))
                .count()
        }
    };
    assert!(
        eventually(10, || async { applied("live-sale-1").await == 1 }).await,
        "the live sale is in the ledger once"
    );
    assert_eq!(
        applied("retained-sale-1").await,
        0,
        "the retained sale was not applied"
    );
    // Clear the retained message off the shared broker.
    pos.client
        .publish(
            &topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            Vec::new(),
        )
        .await
        .unwrap();
    app.finish().await;
}

/// `POST /v1/availability` takes at most 64 outlets, each once (its schema says so; the
/// code did not check: a body could name one outlet thousands of times).
#[actix_web::test]
async fn availability_bounds_and_dedupes_its_outlets() {
    let app = spawn_app().await;
    let lines = serde_json::json!([{"sku": SKU, "qty": 1}]);
    let twice = app
        .post(
            "/v1/availability",
            VIEWER,
            serde_json::json!({"outlets": [OUTLET, OUTLET], "lines": lines}),
        )
        .await;
    assert_eq!(twice.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = twice.json().await.unwrap();
    assert_eq!(body["field"], "outlets[1]");
    let many: Vec<&str> = std::iter::repeat_n(OUTLET, 65).collect();
    let r = app
        .post(
            "/v1/availability",
            VIEWER,
            serde_json::json!({"outlets": many, "lines": lines}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["field"], "outlets");
    app.finish().await;
}

/// A public key (the browsers') reads stock and availability and nothing that names a
/// customer: no reservation, no ledger, no metrics, no reservation events on a stream.
#[actix_web::test]
async fn a_public_key_reads_stock_only() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let hold = app.hold(OUTLET, SKU, 1, 300).await;
    let id = hold["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/outlets/{OUTLET}/stock/{SKU}"), PUBLIC)
            .await
            .status(),
        StatusCode::OK
    );
    let cart = serde_json::json!({"lines": [{"sku": SKU, "qty": 1}]});
    assert_eq!(
        app.post("/v1/availability", PUBLIC, cart).await.status(),
        StatusCode::OK
    );
    for path in [
        format!("/v1/reservations/{id}"),
        format!("/v1/ledger?outlet={OUTLET}"),
        "/metrics".to_owned(),
    ] {
        assert_eq!(
            app.get(&path, PUBLIC).await.status(),
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let hold = serde_json::json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]});
    let r = app
        .http
        .post(format!("{}/v1/reservations", app.url))
        .bearer_auth(PUBLIC)
        .header("Idempotency-Key", "public-1")
        .json(&hold)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // On a WebSocket: stock frames, never an order. The count after the confirm is the
    // last change: every frame the confirm made comes before it.
    let mut conn = ws_connect(&app, &format!("key={PUBLIC}&outlets={OUTLET}")).await;
    let r = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            serde_json::json!({"payment_ref": "pay_public"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    app.set_stock(OUTLET, SKU, 42).await;
    let mut types = Vec::new();
    loop {
        let v = ws_next(&mut conn).await;
        types.push(v["type"].as_str().unwrap().to_owned());
        if v["type"] == "stock" && v["on_hand"] == 42 {
            break;
        }
    }
    assert!(!types.contains(&"order".to_owned()), "{types:?}");
    app.finish().await;
}

/// Requests without a key, and with an unknown one, share a budget per client address:
/// past it `429` with Retry-After, counted; a valid key is not charged to it.
#[actix_web::test]
async fn requests_without_a_valid_key_are_limited_per_address() {
    let mut settings = test_settings();
    settings.rate_limits.unauthenticated = shelfsync::settings::BucketSettings {
        per_sec: 0.01,
        burst: 3,
    };
    let app = spawn_app_with(settings).await;
    // Each request is charged once: a keyless one to a route that needs a key too.
    let r = (app.http.get(format!("{}/v1/outlets", app.url)).send())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = (app.http.get(format!("{}/healthz", app.url)).send())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let guess = app.get("/v1/outlets", "not-a-key-of-this-chain").await;
    assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    let past = (app.http.get(format!("{}/healthz", app.url)).send())
        .await
        .unwrap();
    assert_eq!(past.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(past.headers().contains_key("retry-after"));
    let guess = app.get("/v1/outlets", "another-guess-at-a-key").await;
    assert_eq!(
        guess.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "guessing keys is limited too"
    );
    assert_eq!(
        app.get("/v1/outlets", VIEWER).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        metric(&app, r#"shelfsync_rate_limited_total{by="address"}"#).await,
        2.0
    );
    app.finish().await;
}

/// `/readyz` without a key says only ready or not (no node, outlets or error chains), and
/// however often it is asked, Redis is pinged at most about once a second.
#[actix_web::test]
async fn readyz_without_a_key_is_minimal_and_pings_once_a_second() {
    let mut redis = common::procs::start_redis().await;
    let mut settings = test_settings();
    settings.redis.url = common::procs::redis_url(&redis);
    let app = spawn_app_with(settings).await;
    let pings = || async {
        let client = redis::Client::open(common::procs::redis_url(&redis).expose()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        (info.lines())
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap().parse::<u64>().unwrap()
            })
    };
    let before = pings().await;
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let r = (app.http.get(format!("{}/readyz", app.url)).send())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"status": "ready"}));
    }
    let secs = started.elapsed().as_secs();
    let pinged = pings().await - before;
    assert!(
        pinged <= secs + 2,
        "40 readiness checks in {secs} s pinged Redis {pinged} times"
    );
    // A dependency down: still nothing but the verdict without a key.
    redis.kill();
    let down = eventually(10, || async {
        let r = (app.http.get(format!("{}/readyz", app.url)).send())
            .await
            .unwrap();
        r.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(down);
    let r = (app.http.get(format!("{}/readyz", app.url)).send())
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "unavailable", "error": "unavailable"})
    );
    redis.restart("TERM").await;
    app.finish().await;
}

/// A `503` says what to do, never the internal error chain (addresses, server messages).
#[actix_web::test]
async fn a_503_carries_no_internal_error_text() {
    let mut redis = common::procs::start_redis().await;
    let mut settings = test_settings();
    settings.redis.url = common::procs::redis_url(&redis);
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 5).await;
    let hold = app.hold(OUTLET, SKU, 1, 300).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    redis.kill();
    let r = app.get(&format!("/v1/reservations/{id}"), ADMIN).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    for internal in [
        "refused",
        "os error",
        "127.0.0.1",
        "redis",
        "PING",
        "broken pipe",
    ] {
        assert!(
            !message.to_lowercase().contains(&internal.to_lowercase()),
            "{message}"
        );
    }
    redis.restart("TERM").await;
    app.finish().await;
}

/// A request body that does not arrive within `http.body_read_secs` gets `408`, and its
/// connection is let go (before, it held the connection for as long as the client liked).
#[actix_web::test]
async fn a_slow_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut settings = test_settings();
    settings.http.body_read_secs = 1;
    let app = spawn_app_with(settings).await;
    let addr = app.url.trim_start_matches("http://");
    for path in ["/v1/movements", "/v1/webhooks/whatsapp"] {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(8), socket.read(&mut answer))
            .await
            .expect("an answer before the client sent its body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }
    app.finish().await;
}

/// A stream client that stops reading is cut once what was written to it has waited
/// `http.write_deadline_secs` (a closed receive window counts), and its place and memory
/// are freed; before, it held them until it went away.
#[actix_web::test]
async fn a_stream_client_that_stops_reading_is_cut_at_the_write_deadline() {
    let mut settings = test_settings();
    settings.http.write_deadline_secs = 2;
    // The hub's own stall rule (a full buffer for this long) must not be what acts here.
    settings.streams.stall_secs = 600;
    let app = spawn_app_with(settings).await;
    for sku in catalogue_skus(100) {
        app.set_stock(OUTLET, &sku, 7).await;
    }
    let stalled = stalled_sse(&app, &format!("outlets={OUTLET}"), VIEWER).await;
    let joined = eventually(5, || async {
        metric(&app, r#"shelfsync_stream_clients{kind="sse"}"#).await == 1.0
    })
    .await;
    assert!(joined, "the stalled client was connected");
    let cut = eventually(20, || async {
        metric(&app, r#"shelfsync_stream_clients{kind="sse"}"#).await == 0.0
    })
    .await;
    assert!(
        cut,
        "the client that never reads is cut and its place freed"
    );
    drop(stalled);
    app.finish().await;
}

/// One key holds at most `streams.clients_per_key_max` stream places; other keys still get
/// theirs, and the refusal is counted.
#[actix_web::test]
async fn one_key_cannot_take_every_stream_place() {
    let mut settings = test_settings();
    settings.streams.clients_per_key_max = 2;
    let app = spawn_app_with(settings).await;
    let _a = SseClient::connect(&app, "", PUBLIC).await.unwrap();
    let _b = SseClient::connect(&app, "", PUBLIC).await.unwrap();
    let third = SseClient::connect(&app, "", PUBLIC).await;
    assert_eq!(third.err(), Some(StatusCode::SERVICE_UNAVAILABLE));
    let staff = SseClient::connect(&app, "", VIEWER).await;
    assert!(staff.is_ok(), "another key still gets a place");
    assert_eq!(
        metric(
            &app,
            r#"shelfsync_stream_refused_total{kind="sse",reason="key_slots"}"#
        )
        .await,
        1.0
    );
    drop((_a, _b));
    app.finish().await;
}

/// WebSocket `subscribe` messages past the per-connection budget are refused with an
/// `error` frame `rate_limited` (each would send a whole snapshot), and counted.
#[actix_web::test]
async fn websocket_subscribes_are_throttled() {
    use futures_util::SinkExt;
    let mut settings = test_settings();
    settings.streams.subscribe = shelfsync::settings::BucketSettings {
        per_sec: 0.01,
        burst: 2,
    };
    let app = spawn_app_with(settings).await;
    let mut conn = ws_connect(&app, &format!("key={VIEWER}&outlets={OUTLET}")).await;
    let subscribe = serde_json::json!({"subscribe": {"outlets": [OTHER_OUTLET]}}).to_string();
    for _ in 0..4 {
        conn.send(awc::ws::Message::Text(subscribe.clone().into()))
            .await
            .unwrap();
    }
    let mut types = Vec::new();
    while types.len() < 5 {
        let v = ws_next(&mut conn).await;
        if v["type"] == "error" {
            assert_eq!(v["error"], "rate_limited");
        }
        types.push(v["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        types,
        ["snapshot", "snapshot", "snapshot", "error", "error"],
        "the first snapshot, two subscribes, two refused"
    );
    assert_eq!(
        metric(
            &app,
            r#"shelfsync_stream_refused_total{kind="ws",reason="subscribe_rate"}"#
        )
        .await,
        2.0
    );
    app.finish().await;
}

/// Every ledger document names who made it: the label of the request's key, or the part of
/// shelfsync that acted (here the expiry timer).
#[actix_web::test]
async fn every_ledger_document_names_who_made_it() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await; // as admin
    let sold = app.hold(OUTLET, SKU, 1, 300).await; // as storefront
    let id = sold["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            serde_json::json!({"payment_ref": "pay_by"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .movement(
            POS_VIJAY_NAGAR,
            serde_json::json!({"event_id": "by-sale-1", "outlet": OUTLET, "sku": SKU,
                "kind": "sale_counter", "qty": 1, "at": recent_at()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    app.hold(OUTLET, SKU, 1, 1).await; // expires by itself
    let expired = eventually(15, || async {
        let page: serde_json::Value = app
            .get(&format!("/v1/ledger?outlet={OUTLET}"), ADMIN)
            .await
            .json()
            .await
            .unwrap();
        page["entries"].as_array().unwrap().len() == 6
    })
    .await;
    assert!(expired, "the short hold expired into the ledger");
    let page: serde_json::Value = app
        .get(&format!("/v1/ledger?outlet={OUTLET}"), ADMIN)
        .await
        .json()
        .await
        .unwrap();
    let by: Vec<(String, String)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["by"].as_str().unwrap_or("<none>").to_owned(),
            )
        })
        .collect();
    let want = [
        ("count", "demo admin"),
        ("reservation_held", "demo storefront"),
        ("sale_web", "demo storefront"),
        ("sale_counter", "demo POS, Vijay Nagar"),
        ("reservation_held", "demo storefront"),
        ("reservation_released", "expiry"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, b)| (k.to_string(), b.to_string()))
        .collect();
    assert_eq!(by, want);
    app.finish().await;
}

/// A movement's `at` is bounded, over HTTP and MQTT alike (one check in `movements.rs`): one
/// older than `movements.at_age_max_secs` (it could be a replay of a sale whose `event_id`
/// is forgotten) or further ahead than `movements.at_ahead_max_secs` is refused and changes
/// nothing; one from a POS that was offline for most of the bound still lands.
#[actix_web::test]
async fn a_movement_too_old_or_from_the_future_is_refused_over_http_and_mqtt() {
    use serde_json::json;
    let shipped =
        shelfsync::Settings::load(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml").as_ref())
            .unwrap()
            .movements;
    let mut settings = test_settings();
    settings.movements.at_age_max_secs = shipped.at_age_max_secs;
    settings.movements.at_ahead_max_secs = shipped.at_ahead_max_secs;
    let app = spawn_app_with(settings).await;
    let now = chrono::Utc::now();
    let at = |secs_ago: i64| (now - chrono::Duration::seconds(secs_ago)).to_rfc3339();
    // Not `set_stock`: its fixed time is past the shipped bound.
    let count = json!({"event_id": "count-now", "outlet": OUTLET, "sku": SKU, "kind": "count",
        "qty": 10, "at": at(0)});
    assert_eq!(
        app.movement(ADMIN, count).await.status(),
        StatusCode::CREATED
    );
    let (age_max, ahead_max) = (
        shipped.at_age_max_secs as i64,
        shipped.at_ahead_max_secs as i64,
    );
    let too_old = at(age_max + 3600);
    let in_future = at(-(ahead_max + 3600));
    let late = at(age_max - 3600);
    let sale = |id: &str, at: &str| json!({"event_id": id, "sku": SKU, "kind": "sale_counter", "qty": 1, "at": at});
    let over_http = |id: &str, at: &str| {
        let mut body = sale(id, at);
        body["outlet"] = OUTLET.into();
        body
    };

    for (id, at, reason) in [
        ("http-old", &too_old, "too_old"),
        ("http-ahead", &in_future, "in_future"),
    ] {
        let r = app.movement(POS_VIJAY_NAGAR, over_http(id, at)).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{id}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["field"], "at", "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(reason),
            "{body}"
        );
    }
    let r = app
        .movement(POS_VIJAY_NAGAR, over_http("http-late", &late))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "a POS back after days lands"
    );

    assert!(mqtt_ready(&app).await);
    let prefix = app.settings.mqtt.topic_prefix.clone();
    let mut watcher = MqttClient::connect(app.settings.mqtt.port).await;
    watcher.subscribe(&format!("{prefix}dlq/#")).await;
    let pos = MqttClient::connect(app.settings.mqtt.port).await;
    let topic = format!("{prefix}pos/{OUTLET}/movements");
    pos.publish(&topic, sale("mqtt-old", &too_old).to_string())
        .await;
    pos.publish(&topic, sale("mqtt-ahead", &in_future).to_string())
        .await;
    pos.publish(&topic, sale("mqtt-late", &late).to_string())
        .await;

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 8
        })
        .await,
        "the two late sales applied"
    );
    for reason in ["at: too_old", "at: in_future"] {
        let refused = watcher
            .wait_for(10, |r| {
                r.payload["reason"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(reason))
            })
            .await;
        assert!(refused.is_some(), "{reason} on dlq/");
    }
    let settings = app.stop().await;
    let ledger = documents(&settings, "ledger").await;
    let refused = ["http-old", "http-ahead", "mqtt-old", "mqtt-ahead"];
    assert!(
        !ledger
            .iter()
            .any(|d| refused.contains(&d.get_str("event_id").unwrap_or(""))),
        "a refused movement changed nothing"
    );
    cleanup(&settings).await;
}
