//! Sell-out and low-stock alerts (README, Alerts): raised once per crossing and cleared on
//! recovery, on every channel (SSE, MQTT, the signed webhook, `GET /v1/alerts`), across a
//! restart that must read the forecast back from the ledger.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &str = "webhook-secret-of-the-test";

/// A webhook receiver: every request it got (delivery id, signature header, body); it
/// answers the first one 500, so that the service must try that delivery again.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, String, String)>>>,
    tries: Arc<AtomicUsize>,
}

async fn hook(req: HttpRequest, body: String, rx: web::Data<Receiver>) -> HttpResponse {
    let header = |name: &str| {
        (req.headers().get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let got = (
        header("x-shelfsync-delivery"),
        header("x-shelfsync-signature"),
        body,
    );
    rx.got.lock().unwrap().push(got);
    if rx.tries.fetch_add(1, Ordering::SeqCst) == 0 {
        HttpResponse::InternalServerError().finish()
    } else {
        HttpResponse::NoContent().finish()
    }
}

impl Receiver {
    fn start(&self) -> u16 {
        let rx = self.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(rx.clone()))
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        actix_web::rt::spawn(server.run());
        port
    }

    /// Each delivery (its first try's body) in the order they came, after checking every
    /// try's signature.
    fn deliveries(&self) -> Vec<(String, Value)> {
        let mut out: Vec<(String, Value)> = Vec::new();
        for (delivery, signature, body) in self.got.lock().unwrap().iter() {
            let t: i64 = (signature.strip_prefix("t="))
                .and_then(|s| s.split(',').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("a signature without its time: {signature}"));
            assert_eq!(
                *signature,
                shelfsync::webhook::signature(SECRET, t, body),
                "the signature does not match the body"
            );
            if !out.iter().any(|(d, _)| d == delivery) {
                out.push((delivery.clone(), serde_json::from_str(body).unwrap()));
            }
        }
        out
    }
}

/// `(kind, state)` of an alert body.
fn what(a: &Value) -> (String, String) {
    (
        a["kind"].as_str().unwrap().into(),
        a["state"].as_str().unwrap().into(),
    )
}

async fn raised(app: &TestApp) -> Vec<(String, String)> {
    let res = app
        .get(&format!("/v1/alerts?outlet={OUTLET}"), VIEWER)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (body["alerts"].as_array().unwrap().iter())
        .map(|a| {
            (
                a["kind"].as_str().unwrap().into(),
                a["sku"].as_str().unwrap().into(),
            )
        })
        .collect()
}

async fn sell(app: &TestApp, qty: i64, at_ms: i64) {
    app.moved(json!({"event_id": uuid::Uuid::new_v4().simple().to_string(), "outlet": OUTLET,
        "sku": SKU, "kind": "sale_counter", "qty": qty, "at": shelfsync::domain::rfc3339_ms(at_ms)}))
        .await;
}

async fn receive(app: &TestApp, qty: i64) {
    app.moved(
        json!({"event_id": uuid::Uuid::new_v4().simple().to_string(), "outlet": OUTLET,
        "sku": SKU, "kind": "receipt", "qty": qty, "at": recent_at()}),
    )
    .await;
}

/// The SSE `alert` events that come within `secs`, as `(kind, state)`.
async fn sse_alerts(sse: &mut SseClient, n: usize, secs: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n && tokio::time::Instant::now() < deadline {
        match sse.next(1).await {
            Some(e) if e.event == "alert" => out.push(what(&e.data)),
            _ => {}
        }
    }
    out
}

#[actix_web::test]
async fn an_alert_fires_once_per_crossing_and_clears_on_recovery() {
    tokio::time::timeout(Duration::from_secs(240), run())
        .await
        .expect("the test took over 240 s");
}

async fn run() {
    let receiver = Receiver::default();
    let port = receiver.start();
    let mut settings = test_settings();
    settings.alerts.horizon_mins = 120;
    settings.alerts.low_stock = 3;
    settings.alerts.history_weeks = 2;
    settings.alerts.sweep_secs = 1;
    settings.alerts.webhook_url =
        shelfsync::settings::Secret::new(format!("http://127.0.0.1:{port}/hook"));
    settings.alerts.webhook_secret = shelfsync::settings::Secret::new(SECRET);
    let app = spawn_app_with(settings).await;
    let mut mqtt = MqttClient::connect(app.settings.mqtt.port).await;
    let topic = format!("{}alerts/{OUTLET}", app.settings.mqtt.topic_prefix);
    mqtt.subscribe(&topic).await;

    // Two weeks of history: 6 units in every hour but this one, sold at the counter with
    // their own times, on top of 90 units left.
    app.six_an_hour(OUTLET, SKU, 90).await;
    assert_eq!(app.stock(OUTLET, SKU).await["available"], 90);
    let mut sse = SseClient::connect(&app, &format!("outlets={OUTLET}"), VIEWER)
        .await
        .unwrap();
    // At 6 an hour, 90 units last 15 hours: nothing to say, however often it looks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(raised(&app).await, vec![]);

    // 9 left: gone in 1.5 hours, inside the 2-hour horizon. Raised once (as soon as the
    // engine has read the outlet's history: a few seconds after it owns it, one a second).
    sell(&app, 81, shelfsync::domain::now_ms()).await;
    let first = sse_alerts(&mut sse, 1, 45).await;
    assert_eq!(first, vec![("sell_out".into(), "raised".into())]);
    assert_eq!(raised(&app).await, vec![("sell_out".into(), SKU.into())]);
    // One more sold (8 left) and three sweeps: still the same alert, nothing new.
    sell(&app, 1, shelfsync::domain::now_ms()).await;
    assert_eq!(sse_alerts(&mut sse, 1, 4).await, vec![]);

    // A delivery: 40 free units, 6.7 hours. Cleared.
    receive(&app, 32).await;
    assert_eq!(
        sse_alerts(&mut sse, 1, 15).await,
        vec![("sell_out".into(), "cleared".into())]
    );
    assert_eq!(raised(&app).await, vec![]);

    // 2 left: a new sell-out crossing and a low-stock one. A public browser's stream gets
    // neither (alerts are for keys that read the ledger: the chain's staff).
    let mut public = SseClient::connect(&app, &format!("outlets={OUTLET}"), PUBLIC)
        .await
        .unwrap();
    sell(&app, 38, shelfsync::domain::now_ms()).await;
    let both = sse_alerts(&mut sse, 2, 15).await;
    assert_eq!(
        both,
        vec![
            ("sell_out".into(), "raised".into()),
            ("low_stock".into(), "raised".into())
        ]
    );
    assert_eq!(sse_alerts(&mut public, 1, 2).await, vec![]);
    // Moves that cross nothing announce nothing.
    sell(&app, 1, shelfsync::domain::now_ms()).await;
    receive(&app, 1).await;
    assert_eq!(sse_alerts(&mut sse, 1, 3).await, vec![]);

    // A restart: the raised alerts are in Redis, so the new process announces nothing again;
    // its forecast is read back from the ledger.
    let settings = app.stop().await;
    let app = spawn_app_with(settings).await;
    assert!(
        eventually(45, || async {
            metric(&app, "shelfsync_alert_forecasts").await >= 1.0
        })
        .await,
        "the restarted process read no sales history"
    );
    let mut sse = SseClient::connect(&app, &format!("outlets={OUTLET}"), VIEWER)
        .await
        .unwrap();
    assert_eq!(sse_alerts(&mut sse, 1, 4).await, vec![]);
    assert_eq!(raised(&app).await.len(), 2);
    // Recovery clears both; a sell-out crossing after it needs the forecast from the ledger.
    receive(&app, 100).await;
    assert_eq!(
        sse_alerts(&mut sse, 2, 15).await,
        vec![
            ("sell_out".into(), "cleared".into()),
            ("low_stock".into(), "cleared".into())
        ]
    );
    sell(&app, 93, shelfsync::domain::now_ms()).await;
    assert_eq!(
        sse_alerts(&mut sse, 1, 15).await,
        vec![("sell_out".into(), "raised".into())]
    );
    assert_eq!(
        metric(
            &app,
            r#"shelfsync_alerts_raised{outlet="indore-vijay-nagar",kind="sell_out"}"#
        )
        .await,
        1.0
    );

    // The webhook got each change once, in order, signed; the first after a 500 and a retry.
    let expected: Vec<(String, String)> = [
        ("sell_out", "raised"),
        ("sell_out", "cleared"),
        ("sell_out", "raised"),
        ("low_stock", "raised"),
        ("sell_out", "cleared"),
        ("low_stock", "cleared"),
        ("sell_out", "raised"),
    ]
    .iter()
    .map(|(k, s)| (k.to_string(), s.to_string()))
    .collect();
    assert!(
        eventually(15, || async {
            receiver.deliveries().len() >= expected.len()
        })
        .await,
        "webhook deliveries: {:?}",
        receiver.deliveries()
    );
    let deliveries = receiver.deliveries();
    let got: Vec<(String, String)> = deliveries.iter().map(|(_, a)| what(a)).collect();
    assert_eq!(got, expected);
    assert_eq!(receiver.got.lock().unwrap().len(), expected.len() + 1);
    // A clearing names the raise it ends.
    assert_eq!(deliveries[0].1["id"], deliveries[1].1["id"]);
    assert_ne!(deliveries[0].1["id"], deliveries[2].1["id"]);
    assert!(deliveries
        .iter()
        .all(|(_, a)| a["outlet"] == OUTLET && a["sku"] == SKU));

    // MQTT alerts/{outlet} carried the same changes, each once.
    assert!(
        mqtt.wait_for_n(15, expected.len(), |r| r.topic == topic)
            .await,
        "mqtt: {:?}",
        mqtt.drain()
    );
    let on_mqtt: Vec<(String, String)> = (mqtt.drain().iter())
        .filter(|r| r.topic == topic)
        .map(|r| what(&r.payload))
        .collect();
    assert_eq!(on_mqtt, expected);
    app.finish().await;
}

#[actix_web::test]
async fn every_process_passes_an_alert_to_its_stream_clients_once() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (settings_a, settings_b) = two_nodes();
        let a = spawn_app_with(settings_a).await;
        let b = spawn_app_with(settings_b).await;
        let query = format!("outlets={OUTLET}&skus={SKU2}");
        let mut sse_a = SseClient::connect(&a, &query, VIEWER).await.unwrap();
        let mut sse_b = SseClient::connect(&b, &query, VIEWER).await.unwrap();
        // 2 units: low stock (no sales history, so no sell-out forecast). Whichever process
        // owns the outlet raises it; the other passes it on from the alerts channel.
        a.set_stock(OUTLET, SKU2, 2).await;
        let raised = vec![("low_stock".to_string(), "raised".to_string())];
        assert_eq!(sse_alerts(&mut sse_a, 1, 15).await, raised);
        assert_eq!(sse_alerts(&mut sse_b, 1, 15).await, raised);
        b.set_stock(OUTLET, SKU2, 50).await;
        let cleared = vec![("low_stock".to_string(), "cleared".to_string())];
        assert_eq!(sse_alerts(&mut sse_a, 2, 10).await, cleared);
        assert_eq!(sse_alerts(&mut sse_b, 2, 10).await, cleared);
        b.finish().await;
        a.finish().await;
    })
    .await
    .expect("the test took over 120 s");
}
