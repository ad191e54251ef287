//! The WhatsApp Cloud API webhook, with payloads of the shape Meta sends
//! (entry[].changes[].value.messages[], order.product_items[]).

mod common;

use common::*;
use hmac::{Hmac, Mac};
use mongodb::bson::Document;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "demo-app-secret-change-me";
/// Mapped to PIN 452010 in config.toml (Vijay Nagar is the cheapest outlet serving it).
const SENDER: &str = "919800000001";

fn webhook(message: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": SENDER}],
            "messages": [message]},
        "field": "messages"}]}]})
}

fn order(id: &str, items: Value) -> Value {
    json!({"from": SENDER, "id": id, "timestamp": "1739321024", "type": "order",
        "order": {"catalog_id": "194836987003835", "text": "for Diwali", "product_items": items}})
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(app: &TestApp, body: &Value, signature: Option<String>) -> reqwest::Response {
    let raw = serde_json::to_vec(body).unwrap();
    let mut req = app
        .http
        .post(format!("{}/v1/webhooks/whatsapp", app.url))
        .header("Content-Type", "application/json");
    if let Some(sig) = signature {
        req = req.header("X-Hub-Signature-256", sig);
    }
    req.body(raw).send().await.unwrap()
}

async fn signed(app: &TestApp, body: &Value) -> reqwest::Response {
    post(app, body, Some(sign(&serde_json::to_vec(body).unwrap()))).await
}

async fn records(app: &TestApp) -> Vec<Document> {
    documents(&app.settings, "whatsapp_messages").await
}

#[actix_web::test]
async fn verification_answers_the_challenge_only_for_the_right_token() {
    let app = spawn_app().await;
    let url = |token: &str| {
        format!(
            "{}/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            app.url
        )
    };
    let ok = app
        .http
        .get(url("demo-verify-token-change-me"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = app.http.get(url("guess")).send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    app.finish().await;
}

#[actix_web::test]
async fn an_order_becomes_one_reservation_however_often_it_is_delivered() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OUTLET, SKU2, 10).await;
    let body = webhook(order(
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
        json!([{"product_retailer_id": SKU, "quantity": 2, "item_price": 950, "currency": "INR"},
               {"product_retailer_id": SKU2, "quantity": "1", "item_price": 120, "currency": "INR"}]),
    ));

    for _ in 0..3 {
        assert_eq!(signed(&app, &body).await.status(), StatusCode::OK);
    }

    assert!(
        eventually(10, || async {
            app.stock(OUTLET, SKU).await["reserved"] == 2 && records(&app).await.len() == 1
        })
        .await
    );
    // The worker takes messages in order: once a later one is decided, every delivery
    // before it has been handled.
    let marker = webhook(
        json!({"from": SENDER, "id": "wamid.marker", "timestamp": "1739321025",
        "type": "text", "text": {"body": "thanks"}}),
    );
    assert_eq!(signed(&app, &marker).await.status(), StatusCode::OK);
    assert!(
        eventually(10, || async {
            records(&app).await.iter().any(|d| {
                d.get_str("_id") == Ok("wamid.marker") && d.get_str("status") == Ok("ignored")
            })
        })
        .await
    );
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 2, "one hold only");
    assert_eq!(app.stock(OUTLET, SKU2).await["reserved"], 1);
    let all = records(&app).await;
    let record = all
        .iter()
        .find(|d| d.get_str("_id") != Ok("wamid.marker"))
        .unwrap();
    assert_eq!(record.get_str("status").unwrap(), "held");
    let id = record.get_str("reservation").unwrap();
    let res = app.reservation(id).await;
    assert_eq!(res["channel"], "whatsapp");
    assert_eq!(res["customer_ref"], format!("whatsapp:{SENDER}"));
    app.finish().await;
}

#[actix_web::test]
async fn a_bad_signature_is_401_and_changes_nothing() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let body = webhook(order(
        "wamid.bad",
        json!([{"product_retailer_id": SKU, "quantity": 1}]),
    ));

    let forged = post(&app, &body, Some(format!("sha256={}", "ab".repeat(32)))).await;
    let missing = post(&app, &body, None).await;
    let other_body = sign(b"{}");
    let replayed_sig = post(&app, &body, Some(other_body)).await;

    for res in [forged, missing, replayed_sig] {
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // Accepted messages are recorded before the answer: none was.
    assert!(records(&app).await.is_empty());
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 0);
    app.finish().await;
}

#[actix_web::test]
async fn unknown_skus_and_other_messages_are_recorded_and_make_no_reservation() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let unknown = webhook(order(
        "wamid.unknown",
        json!([{"product_retailer_id": SKU, "quantity": 1},
               {"product_retailer_id": "di9ozbzfi4", "quantity": 1}]),
    ));
    let text = webhook(
        json!({"from": SENDER, "id": "wamid.text", "timestamp": "1739321024",
        "type": "text", "text": {"body": "is the kaju katli fresh?"}}),
    );

    assert_eq!(signed(&app, &unknown).await.status(), StatusCode::OK);
    assert_eq!(signed(&app, &text).await.status(), StatusCode::OK);

    // Recorded `queued` before the 200; decided by the worker after.
    let decided = || async {
        let all = records(&app).await;
        all.len() == 2 && all.iter().all(|d| d.get_str("status") != Ok("queued"))
    };
    assert!(eventually(10, decided).await);
    let mut statuses: Vec<(String, String)> = records(&app)
        .await
        .iter()
        .map(|d| {
            (
                d.get_str("_id").unwrap().to_owned(),
                d.get_str("status").unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("wamid.text".to_owned(), "ignored".to_owned()),
            ("wamid.unknown".to_owned(), "unknown_sku".to_owned())
        ]
    );
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 0);
    app.finish().await;
}

/// Not in `[whatsapp.senders]`: its orders go to `whatsapp.default_outlet` (OUTLET).
const UNKNOWN_SENDER: &str = "919800000099";

fn order_from(sender: &str, id: &str, items: Value) -> Value {
    let mut body = webhook(order(id, items));
    body["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = json!(sender);
    body
}

/// The record of message `id` once the worker has decided it.
async fn decided(app: &TestApp, id: &str) -> Document {
    let find = || async {
        records(app).await.into_iter().find(|d| {
            d.get_str("_id") == Ok(id) && d.get_str("status").is_ok_and(|s| s != "queued")
        })
    };
    assert!(
        eventually(10, || async { find().await.is_some() }).await,
        "message {id} was not decided"
    );
    find().await.expect("decided")
}

/// `shelfsync_whatsapp_refused_total{reason}`.
async fn refused_total(app: &TestApp, reason: &str) -> f64 {
    metric(
        app,
        &format!(r#"shelfsync_whatsapp_refused_total{{reason="{reason}"}}"#),
    )
    .await
}

#[actix_web::test]
async fn an_unknown_senders_order_of_10000_units_holds_nothing() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10_000).await;
    let before = redis_snapshot(&app.settings, OUTLET).await;
    let body = order_from(
        UNKNOWN_SENDER,
        "wamid.lock-it-all",
        json!([{"product_retailer_id": SKU, "quantity": 10_000}]),
    );

    assert_eq!(signed(&app, &body).await.status(), StatusCode::OK);

    let record = decided(&app, "wamid.lock-it-all").await;
    assert_eq!(record.get_str("status").unwrap(), "refused", "{record}");
    assert_eq!(record.get_str("reason").unwrap(), "unknown_sender");
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["reserved"].as_i64(), stock["available"].as_i64()),
        (Some(0), Some(10_000))
    );
    let after = redis_snapshot(&app.settings, OUTLET).await;
    assert_eq!(after.seq, before.seq, "nothing was committed at the outlet");
    assert_eq!(after.counters, before.counters);
    assert!(after.held.is_empty());
    // Counted once its record is written, just after the record shows.
    assert!(
        eventually(5, || async {
            refused_total(&app, "unknown_sender").await == 1.0
        })
        .await
    );
    app.finish().await;
}

/// Sends one order of `qty` of SKU from `sender` and waits for its record.
async fn order_and_wait(app: &TestApp, sender: &str, id: &str, qty: i64) -> Document {
    let body = order_from(
        sender,
        id,
        json!([{"product_retailer_id": SKU, "quantity": qty}]),
    );
    assert_eq!(signed(app, &body).await.status(), StatusCode::OK);
    decided(app, id).await
}

fn status(record: &Document) -> &str {
    record.get_str("status").unwrap()
}

#[actix_web::test]
async fn an_unknown_sender_holds_within_its_small_cap_until_its_hold_is_cancelled() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 100).await;

    // The shipped caps for a sender not in [whatsapp.senders]: 1 open hold, 5 units.
    let first = order_and_wait(&app, UNKNOWN_SENDER, "wamid.u1", 5).await;
    let second = order_and_wait(&app, UNKNOWN_SENDER, "wamid.u2", 1).await;

    assert_eq!(status(&first), "held", "{first}");
    assert_eq!(status(&second), "refused", "{second}");
    assert_eq!(second.get_str("reason").unwrap(), "unknown_sender");
    assert_eq!(second.get_i64("open_holds").unwrap(), 1);
    assert_eq!(second.get_i64("open_units").unwrap(), 5);
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 5);

    let id = first.get_str("reservation").unwrap();
    let cancel = app
        .post(
            &format!("/v1/reservations/{id}/cancel"),
            STOREFRONT,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let third = order_and_wait(&app, UNKNOWN_SENDER, "wamid.u3", 5).await;

    assert_eq!(
        status(&third),
        "held",
        "a cancelled hold is no longer open: {third}"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 5);
    // Counted once its record is written, just after the record shows.
    assert!(
        eventually(5, || async {
            refused_total(&app, "unknown_sender").await == 1.0
        })
        .await
    );
    app.finish().await;
}

#[actix_web::test]
async fn unknown_senders_are_refused_outright_under_the_refuse_policy() {
    let mut settings = test_settings();
    settings.whatsapp.unknown_sender = shelfsync::settings::UnknownSenderPolicy::Refuse;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 100).await;

    let stranger = order_and_wait(&app, UNKNOWN_SENDER, "wamid.stranger", 1).await;
    let known = order_and_wait(&app, SENDER, "wamid.known", 1).await;

    assert_eq!(status(&stranger), "refused", "{stranger}");
    assert_eq!(stranger.get_str("reason").unwrap(), "unknown_sender");
    assert_eq!(
        status(&known),
        "held",
        "a mapped sender is not refused: {known}"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 1);
    // Counted once its record is written, just after the record shows.
    assert!(
        eventually(5, || async {
            refused_total(&app, "unknown_sender").await == 1.0
        })
        .await
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_known_senders_fourth_open_hold_is_refused_until_its_holds_expire() {
    let mut settings = test_settings();
    // Long enough that the three holds and the fourth order are decided well within it.
    settings.whatsapp.ttl_secs = 10;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 100).await;
    for i in 1..=3 {
        let record = order_and_wait(&app, SENDER, &format!("wamid.k{i}"), 1).await;
        assert_eq!(status(&record), "held", "{record}");
    }
    let before = redis_snapshot(&app.settings, OUTLET).await;

    let fourth = order_and_wait(&app, SENDER, "wamid.k4", 1).await;

    assert_eq!(status(&fourth), "refused", "{fourth}");
    assert_eq!(fourth.get_str("reason").unwrap(), "sender_cap");
    assert_eq!(fourth.get_i64("open_holds").unwrap(), 3);
    let after = redis_snapshot(&app.settings, OUTLET).await;
    assert_eq!(after.seq, before.seq, "a refused order commits nothing");
    assert_eq!(after.counters, before.counters);
    // Counted once its record is written, just after the record shows.
    assert!(
        eventually(5, || async {
            refused_total(&app, "sender_cap").await == 1.0
        })
        .await
    );

    // Once the expiry timer has released the three, the sender may order again.
    assert!(
        eventually(25, || async {
            app.stock(OUTLET, SKU).await["reserved"] == 0
        })
        .await
    );
    let fifth = order_and_wait(&app, SENDER, "wamid.k5", 1).await;
    assert_eq!(status(&fifth), "held", "{fifth}");
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 1);
    app.finish().await;
}

#[actix_web::test]
async fn a_known_senders_units_are_capped_across_its_open_holds_until_one_is_confirmed() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 200).await;

    // The shipped caps for a mapped sender: 50 units across its open holds.
    let big = order_and_wait(&app, SENDER, "wamid.big", 40).await;
    let over = order_and_wait(&app, SENDER, "wamid.over", 11).await;
    let fits = order_and_wait(&app, SENDER, "wamid.fits", 10).await;

    assert_eq!(status(&big), "held", "{big}");
    assert_eq!(status(&over), "refused", "{over}");
    assert_eq!(over.get_str("reason").unwrap(), "sender_cap");
    assert_eq!(over.get_i64("open_units").unwrap(), 40);
    assert_eq!(status(&fits), "held", "{fits}");
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 50);

    let id = big.get_str("reservation").unwrap();
    let paid = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "upi-wa-big"}),
        )
        .await;
    assert_eq!(paid.status(), StatusCode::OK);
    let again = order_and_wait(&app, SENDER, "wamid.again", 40).await;

    assert_eq!(
        status(&again),
        "held",
        "a confirmed hold is no longer open: {again}"
    );
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 50);
    app.finish().await;
}
