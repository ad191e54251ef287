//! The ledger explains Redis, and Redis can be rebuilt from it.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shelfsync::domain::{ReservationStatus, Sku};

/// Holds, confirms, cancels, counter sales, receipts and a transfer across two outlets.
async fn mixed_run(app: &TestApp) -> Vec<String> {
    for (outlet, sku, qty) in [
        (OUTLET, SKU, 30),
        (OUTLET, SKU2, 20),
        (OTHER_OUTLET, SKU, 10),
    ] {
        app.set_stock(outlet, sku, qty).await;
    }
    let mut live = Vec::new();
    for i in 0..12 {
        let hold = app
            .hold(OUTLET, if i % 2 == 0 { SKU } else { SKU2 }, 1 + i % 3, 300)
            .await;
        let id = hold["id"].as_str().unwrap().to_owned();
        match i % 4 {
            0 => {
                let res = app
                    .post(
                        &format!("/v1/reservations/{id}/confirm"),
                        STOREFRONT,
                        json!({"payment_ref": format!("pay_{i}")}),
                    )
                    .await;
                assert_eq!(res.status(), StatusCode::OK);
            }
            1 => {
                let res = app
                    .post(
                        &format!("/v1/reservations/{id}/cancel"),
                        STOREFRONT,
                        json!({}),
                    )
                    .await;
                assert_eq!(res.status(), StatusCode::OK);
            }
            _ => live.push(id),
        }
    }
    for (i, kind) in [
        "sale_counter",
        "receipt",
        "wastage",
        "return",
        "sale_counter",
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"event_id": format!("pos-{i}"), "outlet": OUTLET, "sku": SKU, "kind": kind, "qty": 2, "at": "2026-11-21T10:00:00Z"});
        assert_eq!(
            app.movement(POS_VIJAY_NAGAR, body).await.status(),
            StatusCode::CREATED,
            "{kind}"
        );
    }
    let transfer = json!({"event_id": "xfer-1", "outlet": OUTLET, "sku": SKU2, "kind": "transfer", "qty": 3,
        "to_outlet": OTHER_OUTLET, "at": "2026-11-21T10:05:00Z"});
    assert_eq!(
        app.movement(MANAGER_INDORE, transfer).await.status(),
        StatusCode::CREATED
    );
    live
}

async fn assert_ledger_explains_redis(settings: &shelfsync::Settings, outlet: &str) {
    let projection = ledger_projection(settings, outlet).await;
    let redis = redis_snapshot(settings, outlet).await;
    assert_eq!(
        projection.seq, redis.seq,
        "{outlet}: ledger and Redis at the same seq"
    );
    assert_eq!(
        projection.counters, redis.counters,
        "{outlet}: ledger projection == Redis counters"
    );
    let mut live: Vec<_> = projection
        .reservations
        .values()
        .filter(|r| r.status == ReservationStatus::Held)
        .cloned()
        .collect();
    let mut held = redis.held.clone();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    held.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(live, held, "{outlet}: the ledger knows every live hold");
}

#[actix_web::test]
async fn the_ledger_projection_equals_redis_after_a_mixed_run() {
    let app = spawn_app().await;
    mixed_run(&app).await;

    // A graceful stop writes every outbox to the ledger.
    let settings = app.stop().await;

    for outlet in [OUTLET, OTHER_OUTLET] {
        // Projection::apply refuses a gap or a repeat in the seq order, so folding the whole
        // ledger proves every (outlet, seq) is there exactly once.
        assert_ledger_explains_redis(&settings, outlet).await;
    }
    let projection = ledger_projection(&settings, OTHER_OUTLET).await;
    assert_eq!(
        projection.counters[&Sku::parse("s", SKU2).unwrap()].on_hand,
        3,
        "transfer_in arrived"
    );
    cleanup(&settings).await;
}

#[actix_web::test]
async fn a_restart_keeps_every_hold_and_its_expiry() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let long = app.hold(OUTLET, SKU, 3, 300).await;
    let short = app.hold(OUTLET, SKU, 2, 2).await;
    let settings = app.stop().await;

    let app = spawn_app_with(settings).await;

    let long_now = app.reservation(long["id"].as_str().unwrap()).await;
    assert_eq!(long_now["status"], "held");
    assert_eq!(
        long_now["expires_at"], long["expires_at"],
        "same deadline after the restart"
    );
    let short_id = short["id"].as_str().unwrap().to_owned();
    let expired = eventually(6, || async {
        app.reservation(&short_id).await["status"] == "expired"
    })
    .await;
    assert!(
        expired,
        "the restarted service still expires the short hold"
    );
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(10), Some(3))
    );
    app.finish().await;
}

#[actix_web::test]
async fn redis_wiped_while_stopped_is_rebuilt_from_the_ledger() {
    let app = spawn_app().await;
    let live = mixed_run(&app).await;
    let mut before = Vec::new();
    for (outlet, sku) in [
        (OUTLET, SKU),
        (OUTLET, SKU2),
        (OTHER_OUTLET, SKU),
        (OTHER_OUTLET, SKU2),
    ] {
        before.push(app.stock(outlet, sku).await);
    }
    let settings = app.stop().await;

    wipe_redis(&settings).await;
    assert_eq!(
        redis_snapshot(&settings, OUTLET).await.seq,
        0,
        "Redis is empty"
    );
    let app = spawn_app_with(settings).await;

    let mut after = Vec::new();
    for (outlet, sku) in [
        (OUTLET, SKU),
        (OUTLET, SKU2),
        (OTHER_OUTLET, SKU),
        (OTHER_OUTLET, SKU2),
    ] {
        after.push(app.stock(outlet, sku).await);
    }
    assert_eq!(
        before, after,
        "the same numbers and seqs, rebuilt from the ledger"
    );
    for id in &live {
        assert_eq!(
            app.reservation(id).await["status"],
            "held",
            "live hold {id} survived"
        );
    }
    // Replays still answer from the rebuilt idempotency records.
    let replay = app
        .movement(POS_VIJAY_NAGAR, json!({"event_id": "pos-0", "outlet": OUTLET, "sku": SKU, "kind": "sale_counter", "qty": 2, "at": "2026-11-21T10:00:00Z"}))
        .await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        app.stock(OUTLET, SKU).await,
        before[0],
        "the replay changed nothing"
    );
    // And the rebuilt outlet keeps working.
    let res = app
        .post(
            &format!("/v1/reservations/{}/confirm", live[0]),
            STOREFRONT,
            json!({"payment_ref": "pay_after"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let settings = app.stop().await;
    assert_ledger_explains_redis(&settings, OUTLET).await;
    cleanup(&settings).await;
}

#[actix_web::test]
async fn redis_wiped_while_running_is_rebuilt_before_the_next_write() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 8).await;
    app.hold(OUTLET, SKU, 3, 300).await;
    // Let the writer make the hold durable, then lose Redis under the running service.
    tokio::time::sleep(Duration::from_millis(600)).await;
    wipe_redis(&app.settings).await;

    let hold = app
        .reserve(
            "after-wipe",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 5}]}),
        )
        .await;
    let too_many = app
        .reserve(
            "after-wipe-2",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    assert_eq!(hold.status(), StatusCode::CREATED);
    let body: Value = too_many.json().await.unwrap();
    assert_eq!(
        body["error"], "out_of_stock",
        "the rebuilt outlet still counts the first hold"
    );
    let settings = app.stop().await;
    assert_ledger_explains_redis(&settings, OUTLET).await;
    cleanup(&settings).await;
}

#[actix_web::test]
async fn a_duplicate_ledger_insert_is_accepted_only_when_it_is_the_same_document() {
    let settings = test_settings();
    let ledger = ledger(&settings).await;
    ledger.ensure_indexes().await.unwrap();
    let doc = |seq: i64, qty: i64| {
        let json = format!(
            r#"{{"outlet":"{OUTLET}","seq":{seq},"kind":"receipt","at_ms":1795262698186,"lines":[{{"sku":"{SKU}","d_on_hand":{qty},"d_reserved":0}}],"event_id":"e{seq}","event_key":"e{seq}","body_hash":"h","qty":{qty}}}"#
        );
        shelfsync::ledger::LedgerEntry::from_outbox(&json).unwrap()
    };
    ledger.insert_batch(&[doc(1, 5), doc(2, 3)]).await.unwrap();

    let replay = ledger
        .insert_batch(&[doc(1, 5), doc(2, 3), doc(3, 1)])
        .await;
    let diverged = ledger
        .insert_batch(&[doc(3, 1), doc(4, 2), doc(2, 9)])
        .await;

    assert!(
        replay.is_ok(),
        "re-inserting the same documents is a no-op: {replay:?}"
    );
    let err = format!("{:#}", diverged.unwrap_err());
    assert!(err.contains("diverged"), "{err}");
    let projection = ledger_projection(&settings, OUTLET).await;
    assert_eq!(projection.seq, 4);
    assert_eq!(
        projection.counters[&Sku::parse("s", SKU).unwrap()].on_hand,
        5 + 3 + 1 + 2,
        "the stored seq 2 is untouched"
    );
    cleanup(&settings).await;
}

/// The `(outlet, reservation)` index of earlier versions is read by nothing and costs the
/// server a write per document: starting drops it and keeps the two the ledger reads by.
#[actix_web::test]
async fn starting_drops_the_unused_ledger_index_and_keeps_the_others() {
    let settings = test_settings();
    let ledger = ledger(&settings).await;
    let entries = database(&settings)
        .await
        .collection::<mongodb::bson::Document>("ledger");
    entries
        .create_index(
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! {"outlet": 1, "reservation": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .name("outlet_reservation".to_string())
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    let before = entries.list_index_names().await.unwrap();

    ledger.ensure_indexes().await.unwrap();
    ledger.ensure_indexes().await.unwrap();
    let mut after = entries.list_index_names().await.unwrap();
    after.sort();
    cleanup(&settings).await;

    assert!(
        before.contains(&"outlet_reservation".to_string()),
        "{before:?}"
    );
    assert_eq!(after, ["_id_", "outlet_seq", "outlet_sku_seq"]);
}
