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
    use futures_util::StreamExt;
    let app = spawn_app().await;
    let bhopal = "bhopal-arera-colony";
    app.set_stock(bhopal, SKU, 5).await;
    app.set_stock(OUTLET, SKU, 5).await;
    let (_, mut conn) = awc::Client::new()
        .ws(format!(
            "{}/v1/ws?key={MANAGER_INDORE}&outlets={OUTLET},{bhopal}",
            app.url.replace("http://", "ws://")
        ))
        .connect()
        .await
        .expect("websocket connects");
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
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !orders.contains(&ours) {
        let frame = tokio::time::timeout_at(deadline, conn.next())
            .await
            .expect("our order in time")
            .expect("open")
            .unwrap();
        if let awc::ws::Frame::Text(bytes) = frame {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if v["type"] == "order" {
                orders.push(v["reservation"]["id"].as_str().unwrap().to_owned());
            }
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
    let ledger = documents(&settings, "ledger").await;
    let applied = |id: &str| {
        ledger
            .iter()
            .filter(|d| d.get_str("event_id").ok() == Some(id))
            .count()
    };
    assert_eq!(
        applied("retained-sale-1"),
        0,
        "the retained sale was not applied"
    );
    assert_eq!(applied("live-sale-1"), 1);
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
