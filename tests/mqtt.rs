//! MQTT: POS movements in, retained stock and orders out, and broker outages, against real
//! Mosquitto brokers (the machine's on 1883; a test's own for outages).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shelfsync::domain::{LedgerKind, OutletId};
use shelfsync::mqtt::topics::Topics;

fn sale(event_id: &str, qty: i64) -> String {
    json!({"event_id": event_id, "sku": SKU, "kind": "sale_counter", "qty": qty, "at": "2026-11-21T09:42:00Z"}).to_string()
}

fn pos_topic(app: &TestApp, outlet: &str) -> String {
    Topics::new(&app.settings.mqtt.topic_prefix).pos(outlet)
}

/// Ledger documents of `kind` for the outlet, counted from the projection's source.
async fn ledger_kinds(settings: &shelfsync::Settings, outlet: &str, kind: LedgerKind) -> usize {
    let ledger = ledger(settings).await;
    let entries = ledger
        .page(&OutletId::parse("o", outlet).unwrap(), None, 0, 1000)
        .await
        .unwrap();
    entries.iter().filter(|e| e.kind == kind).count()
}

#[actix_web::test]
async fn a_pos_movement_lands_once_in_the_ledger_and_moves_the_counter() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let pos = MqttClient::connect(app.settings.mqtt.port).await;

    pos.publish(&pos_topic(&app, OUTLET), sale("pos-1", 3))
        .await;

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 7
        })
        .await
    );
    let settings = app.stop().await;
    assert_eq!(
        ledger_kinds(&settings, OUTLET, LedgerKind::SaleCounter).await,
        1
    );
    cleanup(&settings).await;
}

#[actix_web::test]
async fn the_same_pos_message_published_three_times_lands_once() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let pos = MqttClient::connect(app.settings.mqtt.port).await;

    for _ in 0..3 {
        pos.publish(&pos_topic(&app, OUTLET), sale("pos-dup", 2))
            .await;
    }
    pos.publish(&pos_topic(&app, OUTLET), sale("pos-after", 1))
        .await;

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 7
        })
        .await,
        "2 once, then 1"
    );
    let settings = app.stop().await;
    assert_eq!(
        ledger_kinds(&settings, OUTLET, LedgerKind::SaleCounter).await,
        2
    );
    cleanup(&settings).await;
}

/// `acks/{outlet}` tells a POS (the outlet agent) what became of each message once that is
/// durable; a duplicate is acked again, so a POS that resends learns the fate too.
#[actix_web::test]
async fn a_pos_message_is_acked_applied_or_rejected_once_its_fate_is_durable() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let mut agent = MqttClient::connect(app.settings.mqtt.port).await;
    let topics = Topics::new(&app.settings.mqtt.topic_prefix);
    agent.subscribe(&topics.acks(OUTLET)).await;
    let topic = pos_topic(&app, OUTLET);

    agent.publish(&topic, sale("ack-1", 2)).await;
    let unknown = json!({"event_id": "ack-2", "sku": "no-such-sku", "kind": "sale_counter",
        "qty": 1, "at": recent_at()});
    agent.publish(&topic, unknown.to_string()).await;
    agent.publish(&topic, sale("ack-1", 2)).await;

    let acks_of = |id: &'static str| move |r: &Received| r.payload["event_id"] == id;
    let applied = agent
        .wait_for(10, acks_of("ack-1"))
        .await
        .expect("ack-1 acked");
    assert_eq!(applied.payload["result"], "applied");
    assert!(applied.payload["seq"].as_u64().is_some(), "{applied:?}");
    assert_eq!(
        app.stock(OUTLET, SKU).await["on_hand"],
        8,
        "acked once durable"
    );
    let rejected = agent
        .wait_for(10, acks_of("ack-2"))
        .await
        .expect("ack-2 acked");
    assert_eq!(rejected.payload["result"], "rejected");
    assert_eq!(
        rejected.payload["code"], "validation_failed",
        "{rejected:?}"
    );
    assert!(
        agent.wait_for_n(10, 2, acks_of("ack-1")).await,
        "the duplicate is acked again"
    );
    let seqs: Vec<_> = (agent.drain().iter())
        .filter(|r| r.payload["event_id"] == "ack-1")
        .map(|r| r.payload["seq"].clone())
        .collect();
    assert_eq!(seqs[0], seqs[1], "with the first answer's seq");
    assert_eq!(
        app.stock(OUTLET, SKU).await["on_hand"],
        8,
        "and applied once"
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_malformed_message_goes_to_rejected_and_dlq_and_the_next_good_one_applies() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);
    let prefix = app.settings.mqtt.topic_prefix.clone();
    let mut watcher = MqttClient::connect(app.settings.mqtt.port).await;
    watcher.subscribe(&format!("{prefix}dlq/#")).await;
    let pos = MqttClient::connect(app.settings.mqtt.port).await;

    pos.publish(&pos_topic(&app, OUTLET), "{not json").await;
    pos.publish(&pos_topic(&app, OUTLET), sale("pos-neg", -4))
        .await;
    pos.publish(&pos_topic(&app, "atlantis"), sale("pos-x", 1))
        .await;
    let oversized = json!({"event_id": "pos-big", "sku": SKU, "kind": "receipt", "qty": 1,
        "at": "2026-11-21T09:42:00Z", "note": "x".repeat(20_000)});
    pos.publish(&pos_topic(&app, OUTLET), oversized.to_string())
        .await;
    let count = json!({"event_id": "pos-count", "sku": SKU, "kind": "count", "qty": 50, "at": "2026-11-21T09:42:00Z"});
    pos.publish(&pos_topic(&app, OUTLET), count.to_string())
        .await;
    pos.publish(&pos_topic(&app, OUTLET), sale("pos-good", 1))
        .await;

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 9
        })
        .await,
        "the good one applied"
    );
    let bad_json = watcher
        .wait_for(10, |r| {
            r.topic == format!("{prefix}dlq/{OUTLET}") && r.payload["payload"] == "{not json"
        })
        .await;
    assert_eq!(
        bad_json.expect("echoed to dlq").payload["code"],
        "validation_failed"
    );
    let neg = watcher
        .wait_for(10, |r| {
            r.payload["reason"]
                .as_str()
                .is_some_and(|s| s.starts_with("qty"))
        })
        .await;
    assert!(
        neg.is_some(),
        "a quantity out of range is rejected naming the field"
    );
    assert!(
        watcher
            .wait_for(10, |r| r.topic == format!("{prefix}dlq/atlantis"))
            .await
            .is_some(),
        "unknown outlet"
    );
    let big = watcher
        .wait_for(10, |r| r.payload["code"] == "payload_too_large")
        .await;
    assert!(
        big.is_some(),
        "an oversized payload (20 KB) is rejected, the session stays up"
    );
    let forbidden = watcher
        .wait_for(10, |r| r.payload["code"] == "forbidden")
        .await;
    assert!(forbidden.is_some(), "a POS may not send a count");
    let client = mongodb::Client::with_uri_str(app.settings.mongo.uri.expose())
        .await
        .unwrap();
    let rejected = client
        .database(&app.settings.mongo.database)
        .collection::<mongodb::bson::Document>("rejected");
    assert_eq!(
        rejected
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap(),
        5,
        "every bad message is kept"
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_late_subscriber_sees_the_retained_value_with_the_right_seq() {
    let app = spawn_app().await;
    assert!(mqtt_ready(&app).await);
    app.set_stock(OUTLET, SKU, 10).await;
    let hold = app.hold(OUTLET, SKU, 4, 300).await;

    let topic = format!("{}stock/{OUTLET}/{SKU}", app.settings.mqtt.topic_prefix);
    let seq = hold["seq"].as_u64().unwrap();
    let mut late = MqttClient::connect(app.settings.mqtt.port).await;
    late.subscribe(&topic).await;
    let value = late
        .wait_for(10, |r| r.payload["seq"].as_u64() == Some(seq))
        .await
        .expect("the retained value");

    assert!(value.retain);
    assert_eq!(value.payload["on_hand"], 10);
    assert_eq!(value.payload["reserved"], 4);
    assert_eq!(value.payload["available"], 6);
    app.finish().await;
}

#[actix_web::test]
async fn a_confirmed_order_is_published_for_pickers() {
    let app = spawn_app().await;
    assert!(mqtt_ready(&app).await);
    app.set_stock(OUTLET, SKU, 10).await;
    let mut picker = MqttClient::connect(app.settings.mqtt.port).await;
    picker
        .subscribe(&format!(
            "{}orders/{OUTLET}",
            app.settings.mqtt.topic_prefix
        ))
        .await;
    let hold = app.hold(OUTLET, SKU, 2, 300).await;
    let id = hold["id"].as_str().unwrap();

    let res = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay_9"}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let order = picker
        .wait_for(10, |r| r.payload["id"] == id)
        .await
        .expect("the order reaches the picker");
    assert_eq!(order.payload["status"], "confirmed");
    assert_eq!(order.payload["lines"], json!([{"sku": SKU, "qty": 2}]));
    app.finish().await;
}

/// Settings of a fresh test pointed at the test's own broker.
fn on_broker(broker: &TestBroker) -> shelfsync::Settings {
    let mut settings = test_settings();
    settings.mqtt.port = broker.port;
    settings
}

#[actix_web::test]
async fn pos_movements_published_while_the_service_is_stopped_all_land_exactly_once() {
    let broker = TestBroker::start().await;
    let app = spawn_app_with(on_broker(&broker)).await;
    app.set_stock(OUTLET, SKU, 5000).await;
    assert!(
        mqtt_ready(&app).await,
        "subscribed: the broker now keeps a session for us"
    );
    let topic = pos_topic(&app, OUTLET);
    let settings = app.stop().await;

    let pos = MqttClient::connect(broker.port).await;
    for i in 0..1000 {
        pos.publish(&topic, sale(&format!("offline-{i}"), 1)).await;
    }
    // The redelivery of the first 10 again (a POS that retries) must change nothing.
    for i in 0..10 {
        pos.publish(&topic, sale(&format!("offline-{i}"), 1)).await;
    }
    let app = spawn_app_with(settings).await;

    let all_in = eventually(60, || async {
        app.stock(OUTLET, SKU).await["on_hand"] == 4000
    })
    .await;
    assert!(
        all_in,
        "on_hand is {}",
        app.stock(OUTLET, SKU).await["on_hand"]
    );
    let settings = app.stop().await;
    let projection = ledger_projection(&settings, OUTLET).await;
    assert_eq!(projection.seq, 1 + 1000, "one count and exactly 1000 sales");
    cleanup(&settings).await;
}

#[actix_web::test]
async fn a_broker_restarted_empty_is_reseeded_and_no_later_pos_message_is_lost() {
    let mut broker = TestBroker::start().await;
    let app = spawn_app_with(on_broker(&broker)).await;
    app.set_stock(OUTLET, SKU, 500).await;
    assert!(mqtt_ready(&app).await);
    let topic = pos_topic(&app, OUTLET);
    {
        let pos = MqttClient::connect(broker.port).await;
        for i in 0..50 {
            pos.publish(&topic, sale(&format!("before-{i}"), 1)).await;
        }
        assert!(
            eventually(20, || async {
                app.stock(OUTLET, SKU).await["on_hand"] == 450
            })
            .await
        );
    }

    broker.kill();
    assert!(
        eventually(10, || async { !mqtt_ready_now(&app).await }).await,
        "readyz sees the broker gone"
    );
    broker.restart().await;
    assert!(mqtt_ready(&app).await, "reconnected and subscribed again");

    let mut watcher = MqttClient::connect(broker.port).await;
    watcher
        .subscribe(&format!(
            "{}stock/{OUTLET}/{SKU}",
            app.settings.mqtt.topic_prefix
        ))
        .await;
    let reseeded = watcher
        .wait_for(10, |r| r.retain && r.payload["on_hand"] == 450)
        .await;
    assert!(
        reseeded.is_some(),
        "the empty broker was reseeded with the current value"
    );
    let pos = MqttClient::connect(broker.port).await;
    for i in 0..200 {
        pos.publish(&topic, sale(&format!("after-{i}"), 1)).await;
    }
    assert!(
        eventually(30, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 250
        })
        .await,
        "all 200 applied"
    );
    let settings = app.stop().await;
    assert_eq!(ledger_projection(&settings, OUTLET).await.seq, 1 + 50 + 200);
    cleanup(&settings).await;
}

#[actix_web::test]
async fn a_hold_made_while_the_broker_is_down_reaches_subscribers_when_it_returns() {
    let mut broker = TestBroker::start().await;
    let app = spawn_app_with(on_broker(&broker)).await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await);

    broker.kill();
    let hold = app.hold(OUTLET, SKU, 3, 300).await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    broker.restart().await;

    let mut watcher = MqttClient::connect(broker.port).await;
    watcher
        .subscribe(&format!(
            "{}stock/{OUTLET}/{SKU}",
            app.settings.mqtt.topic_prefix
        ))
        .await;
    let seq = hold["seq"].as_u64().unwrap();
    let value = watcher
        .wait_for(15, |r| r.payload["seq"].as_u64() == Some(seq))
        .await;
    assert_eq!(
        value.expect("the hold's value arrives").payload["available"],
        7
    );
    app.finish().await;
}

async fn mqtt_ready_now(app: &TestApp) -> bool {
    let body: Value = app
        .http
        .get(format!("{}/readyz", app.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["mqtt"] == "ok"
}

/// The retained refresh every second (message expiry 2 s) offers every (outlet, SKU) of the
/// demo chain (imported: 3,510 values) each second: far past the request channel's 48 slots,
/// with the broker taking 20 of our publishes in flight at a time (Mosquitto's default). An
/// ack that did not fit used to be dropped: the broker then kept that message in flight
/// towards us until the next connection (a broker resends only when a session resumes), and
/// `inflight_max` such messages stop POS intake altogether. Here every ack must go out on the
/// connection its message came in on: a restart of the service (same persistent session)
/// then gets nothing redelivered.
#[actix_web::test]
async fn every_pos_ack_goes_out_on_the_same_connection_while_stock_values_flood_the_channel() {
    let broker = TestBroker::start_with_defaults().await;
    let mut settings = on_broker(&broker);
    settings.mqtt.inflight_max = 16;
    settings.mqtt.request_channel_capacity = 48;
    settings.mqtt.stock_expiry_secs = 2;
    shelfsync::import::run(settings.clone(), false)
        .await
        .expect("import");
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 100_000).await;
    assert!(mqtt_ready(&app).await);
    let stock = r#"shelfsync_mqtt_messages_out_total{kind="stock"}"#;
    let stock_before = metric(&app, stock).await;
    let pos = MqttClient::connect(broker.port).await;
    let topic = pos_topic(&app, OUTLET);

    const SALES: i64 = 400;
    for i in 0..SALES {
        pos.publish(&topic, sale(&format!("flood-{i}"), 1)).await;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let all_in = eventually(60, || async {
        app.stock(OUTLET, SKU).await["on_hand"] == 100_000 - SALES
    })
    .await;
    let on_hand = app.stock(OUTLET, SKU).await["on_hand"].clone();
    let acked = || async {
        metric(&app, r#"shelfsync_mqtt_acks_total{outcome="sent"}"#).await
            + metric(
                &app,
                r#"shelfsync_mqtt_acks_total{outcome="sent_after_retry"}"#,
            )
            .await
    };
    eventually(10, || async { acked().await >= SALES as f64 }).await;
    let acks = acked().await;
    let stock_published = metric(&app, stock).await - stock_before;
    let left = metric(
        &app,
        r#"shelfsync_mqtt_acks_total{outcome="left_to_redelivery"}"#,
    )
    .await;
    let reconnects = metric(&app, "shelfsync_mqtt_reconnects_total").await;
    let settings = app.stop().await;
    // The same session again: whatever the broker still holds unacknowledged comes now.
    let app = spawn_app_with(settings).await;
    assert!(mqtt_ready(&app).await);
    let redelivered = eventually(3, || async {
        metric(
            &app,
            r#"shelfsync_mqtt_messages_in_total{outcome="applied"}"#,
        )
        .await
            > 0.0
    })
    .await;
    let settings = app.stop().await;
    let sales = ledger_kinds(&settings, OUTLET, LedgerKind::SaleCounter).await;
    cleanup(&settings).await;

    assert!(all_in, "POS messages stopped flowing: on_hand {on_hand}");
    assert!(
        !redelivered,
        "the broker still held POS messages we never acknowledged"
    );
    assert!(
        stock_published > 20.0 * 48.0,
        "the flood really was far past the channel: {stock_published} stock values"
    );
    assert_eq!(sales, SALES as usize, "each sale exactly once");
    assert_eq!(reconnects, 0.0, "the same connection throughout");
    assert_eq!(left, 0.0, "no ack was left for a redelivery");
    assert!(acks >= SALES as f64, "{acks} acks for {SALES} sales");
}

/// A rejected POS message is kept as the first 4 KiB of its payload, with its length and a
/// `truncated` flag (a payload may be 256 KiB: a flood of them used to be stored whole), and
/// only for `mqtt.rejected_keep_secs` (a TTL index on `expire_at`; the server's sweep is run
/// here at once, as SecantusDB's `secantusAdmin.pruneTtl` allows, instead of in 60 s).
#[actix_web::test]
async fn a_rejected_payload_is_kept_truncated_and_expires() {
    let mut settings = test_settings();
    settings.mqtt.rejected_keep_secs = 1;
    let app = spawn_app_with(settings).await;
    assert!(mqtt_ready(&app).await);
    let pos = MqttClient::connect(app.settings.mqtt.port).await;
    let oversized = json!({"event_id": "pos-big", "sku": SKU, "kind": "receipt", "qty": 1,
        "at": "2026-11-21T09:42:00Z", "note": "é".repeat(10_000)})
    .to_string();

    pos.publish(&pos_topic(&app, OUTLET), oversized.clone())
        .await;

    assert!(
        eventually(10, || async {
            documents(&app.settings, "rejected").await.len() == 1
        })
        .await,
        "the rejection is kept"
    );
    let record = documents(&app.settings, "rejected").await.remove(0);
    let kept = record.get_str("payload").unwrap();
    // Cut at a character boundary (é is 2 bytes): 4,095 or 4,096 bytes, never fewer.
    assert!(
        (4095..=4096).contains(&kept.len()),
        "{} bytes kept",
        kept.len()
    );
    assert!(oversized.starts_with(kept));
    assert_eq!(
        record.get_i64("payload_bytes").unwrap(),
        oversized.len() as i64
    );
    assert!(record.get_bool("truncated").unwrap());
    let expire_at = record.get_datetime("expire_at").unwrap().timestamp_millis();
    assert!(expire_at <= shelfsync::domain::now_ms() + 1000);
    let db = database(&app.settings).await;
    let indexes: Vec<mongodb::IndexModel> = {
        use futures_util::TryStreamExt;
        let cursor = db
            .collection::<mongodb::bson::Document>("rejected")
            .list_indexes()
            .await
            .unwrap();
        cursor.try_collect().await.unwrap()
    };
    assert!(
        indexes
            .iter()
            .any(|i| i.keys == mongodb::bson::doc! {"expire_at": 1}
                && i.options.as_ref().and_then(|o| o.expire_after)
                    == Some(std::time::Duration::ZERO)),
        "a TTL index on expire_at: {indexes:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let admin = mongodb::Client::with_uri_str(app.settings.mongo.uri.expose())
        .await
        .unwrap()
        .database("admin");
    admin
        .run_command(mongodb::bson::doc! {"secantusAdmin.pruneTtl": 1})
        .await
        .unwrap();
    assert!(
        documents(&app.settings, "rejected").await.is_empty(),
        "expired and swept"
    );
    app.finish().await;
}

/// A broker that does what MQTT 5 says when another client connects with a connected
/// client's id (3.1.4: DISCONNECT with reason 0x8E, Session taken over, then the close), which
/// Mosquitto 2.0 does not (it only closes the socket; see ARCHITECTURE.md, MQTT): it answers
/// CONNECT, SUBSCRIBE, QoS 1 PUBLISH and PINGREQ, and once, right after the first SUBSCRIBE,
/// says the session was taken over. Returns its port.
async fn broker_that_hands_our_session_over() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let taken_over = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let taken_over = taken_over.clone();
            tokio::spawn(async move {
                loop {
                    let mut head = [0u8; 1];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let (mut len, mut shift) = (0usize, 0);
                    loop {
                        let mut b = [0u8; 1];
                        if socket.read_exact(&mut b).await.is_err() {
                            return;
                        }
                        len |= usize::from(b[0] & 0x7f) << shift;
                        shift += 7;
                        if b[0] & 0x80 == 0 {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if socket.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let answer: Vec<u8> = match head[0] >> 4 {
                        1 => vec![0x20, 3, 0, 0, 0],
                        8 if !taken_over.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                            vec![0xE0, 2, 0x8E, 0]
                        }
                        8 => vec![0x90, 4, body[0], body[1], 0, 1],
                        3 if (head[0] >> 1) & 3 == 1 => {
                            let topic = usize::from(u16::from_be_bytes([body[0], body[1]]));
                            vec![0x40, 2, body[2 + topic], body[3 + topic]]
                        }
                        12 => vec![0xD0, 0],
                        _ => Vec::new(),
                    };
                    if socket.write_all(&answer).await.is_err() || answer.first() == Some(&0xE0) {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// When the broker says another client took our session over (0x8E), shelfsync counts and
/// logs it apart from other losses, and reconnects to take the session back.
#[actix_web::test]
async fn a_session_takeover_is_counted_and_the_session_comes_back() {
    let mut settings = test_settings();
    settings.mqtt.port = broker_that_hands_our_session_over().await;
    let app = spawn_app_with(settings).await;
    let taken = "shelfsync_mqtt_session_taken_over_total";

    assert!(
        eventually(10, || async { metric(&app, taken).await == 1.0 }).await,
        "the takeover is counted"
    );
    assert!(mqtt_ready(&app).await, "the session is taken back");
    assert_eq!(metric(&app, taken).await, 1.0);
    app.finish().await;
}

/// The shipped ACL (`deploy/mosquitto-acl.example`) on a Mosquitto of the test's own with
/// passwords and no anonymous clients: shelfsync with its user subscribes and publishes, an
/// outlet's POS user lands its own sales, and its sale published to another outlet's topic is
/// refused by the broker and never applied.
#[actix_web::test]
async fn with_the_shipped_acl_a_pos_user_moves_only_its_own_outlet() {
    let (broker, dir, settings) = acl_broker(&[(OUTLET, "pos-pw")], "").await;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OTHER_OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await, "shelfsync's user subscribes");

    let intruder = MqttClient::connect_as(broker.port, OUTLET, "pos-pw").await;
    intruder
        .publish(&Topics::new("").pos(OTHER_OUTLET), sale("acl-theirs", 1))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // One client id per user (use_username_as_clientid): the next one would take this one's
    // session over.
    drop(intruder);
    let mut pos = MqttClient::connect_as(broker.port, OUTLET, "pos-pw").await;
    // The outlet agent's subscription: what became of its sales; and the outlet's alerts.
    pos.subscribe(&Topics::new("").acks(OUTLET)).await;
    let outlet_id = shelfsync::domain::OutletId::parse("outlet", OUTLET).unwrap();
    pos.subscribe(&Topics::new("").alerts(&outlet_id)).await;
    pos.publish(&Topics::new("").pos(OUTLET), sale("acl-own", 1))
        .await;

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 9
        })
        .await,
        "the POS's own sale applied"
    );
    let ack = pos
        .wait_for(10, |r| r.payload["event_id"] == "acl-own")
        .await;
    assert_eq!(
        ack.expect("the POS user reads its outlet's acks").payload["result"],
        "applied"
    );
    // 9 on hand, 6 held: 3 free, the low-stock mark. shelfsync's user may publish the alert
    // and the outlet's user may read it.
    app.hold(OUTLET, SKU, 6, 300).await;
    let alert = pos.wait_for(10, |r| r.payload["kind"] == "low_stock").await;
    assert_eq!(
        alert.expect("the outlet's user reads its alerts").payload["state"],
        "raised"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.stock(OTHER_OUTLET, SKU).await["on_hand"], 10);
    assert_eq!(metric(&app, "shelfsync_mqtt_reconnects_total").await, 0.0);
    let settings = app.stop().await;
    let ledger = documents(&settings, "ledger").await;
    assert!(!ledger
        .iter()
        .any(|d| d.get_str("event_id").ok() == Some("acl-theirs")));
    cleanup(&settings).await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `openssl` with `args` in `dir`; panics unless it succeeds.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A throwaway CA (`{name}.pem`, `{name}.key`) in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    let (pem, key, subject) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("/CN={name}"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &pem,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// shelfsync reaches the broker over TLS (rustls) with `mqtt.tls` and `mqtt.ca_file`: a
/// Mosquitto of the test's own with a TLS listener (and a plain one for the POS), its
/// certificate from a throwaway CA. A POS sale flows through; with another CA as `ca_file`
/// the broker's certificate is refused and the session never comes up (`/readyz`).
#[actix_web::test]
async fn over_tls_pos_movements_flow_and_a_wrong_ca_is_refused() {
    let dir = std::env::temp_dir().join(format!("shelfsync-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    // Mosquitto started as root reads its files as its own user.
    use std::os::unix::fs::PermissionsExt;
    let readable = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(dir.join("server.key"), readable).unwrap();
    let (plain, tls) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "allow_anonymous true\nlistener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
        ),
    )
    .unwrap();
    let broker = procs::Proc::start("mosquitto", plain, move || {
        let mut c = std::process::Command::new("mosquitto");
        c.arg("-c").arg(&conf);
        c
    })
    .await;
    procs::wait_port(tls, 10).await;
    let mut settings = test_settings();
    settings.mqtt.port = tls;
    settings.mqtt.tls = true;
    settings.mqtt.ca_file = Some(dir.join("ca.pem"));
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 10).await;
    assert!(mqtt_ready(&app).await, "connected and subscribed over TLS");

    let pos = MqttClient::connect(broker.port).await;
    pos.publish(&pos_topic(&app, OUTLET), sale("tls-1", 1))
        .await;
    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["on_hand"] == 9
        })
        .await,
        "the sale came in over TLS"
    );
    app.finish().await;

    let mut settings = test_settings();
    settings.mqtt.port = tls;
    settings.mqtt.tls = true;
    settings.mqtt.ca_file = Some(dir.join("other-ca.pem"));
    let app = spawn_app_with(settings).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        !mqtt_ready_now(&app).await,
        "a broker certificate from another CA is refused"
    );
    assert_eq!(metric(&app, "shelfsync_mqtt_connected").await, 0.0);
    app.finish().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
