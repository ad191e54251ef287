//! Outlet operations: movements, their idempotency, facts past zero, and the ledger API.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn sale(event_id: &str, qty: i64) -> Value {
    json!({"event_id": event_id, "outlet": OUTLET, "sku": SKU, "kind": "sale_counter", "qty": qty, "at": "2026-11-21T09:42:00Z"})
}

#[actix_web::test]
async fn a_replayed_event_id_applies_once_and_another_body_is_409() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;

    let first = app
        .movement(POS_VIJAY_NAGAR, sale("pos-17-000123", 1))
        .await;
    let again = app
        .movement(POS_VIJAY_NAGAR, sale("pos-17-000123", 1))
        .await;
    let changed = app
        .movement(POS_VIJAY_NAGAR, sale("pos-17-000123", 2))
        .await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(again.status(), StatusCode::CREATED);
    let (a, b): (Value, Value) = (first.json().await.unwrap(), again.json().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(a["on_hand"], 9);
    assert_eq!(changed.status(), StatusCode::CONFLICT);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 9);
    app.finish().await;
}

#[actix_web::test]
async fn a_counter_sale_past_zero_is_recorded_with_its_shortfall() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 3).await;
    app.hold(OUTLET, SKU, 2, 300).await;

    let res = app.movement(POS_VIJAY_NAGAR, sale("pos-1", 3)).await;

    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "a sale that happened is a fact"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (
            body["on_hand"].as_i64(),
            body["reserved"].as_i64(),
            body["available"].as_i64()
        ),
        (Some(0), Some(2), Some(-2))
    );
    assert_eq!(body["shortfall"], 2);
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
    assert!(
        metrics.contains("shelfsync_oversell_units_total 2"),
        "{metrics}"
    );
    app.finish().await;
}

#[actix_web::test]
async fn kinds_move_on_hand_as_documented() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let mv = |kind: &str, qty: i64, id: &str| json!({"event_id": id, "outlet": OUTLET, "sku": SKU, "kind": kind, "qty": qty, "at": "2026-11-21T09:42:00Z"});

    let steps = [
        ("receipt", 5, 15),
        ("wastage", 2, 13),
        ("return", 1, 14),
        ("adjustment", -4, 10),
        ("count", 7, 7),
    ];
    for (i, (kind, qty, expect)) in steps.into_iter().enumerate() {
        let res = app
            .movement(MANAGER_INDORE, mv(kind, qty, &format!("m-{i}")))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "{kind}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["on_hand"],
            expect,
            "{kind}"
        );
    }
    let below = app
        .movement(MANAGER_INDORE, mv("adjustment", -8, "m-9"))
        .await;
    assert_eq!(below.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(below.json::<Value>().await.unwrap()["field"], "qty");
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 7);
    app.finish().await;
}

#[actix_web::test]
async fn a_transfer_moves_units_between_outlets_and_refuses_held_units() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    app.hold(OUTLET, SKU, 3, 300).await;
    let transfer = |id: &str, qty: i64| {
        json!({"event_id": id, "outlet": OUTLET, "sku": SKU, "kind": "transfer",
        "qty": qty, "to_outlet": OTHER_OUTLET, "at": "2026-11-21T09:42:00Z"})
    };

    let too_many = app.movement(MANAGER_INDORE, transfer("t-1", 3)).await;
    let ok = app.movement(MANAGER_INDORE, transfer("t-2", 2)).await;
    let replay = app.movement(MANAGER_INDORE, transfer("t-2", 2)).await;

    assert_eq!(too_many.status(), StatusCode::CONFLICT, "held units stay");
    assert_eq!(ok.status(), StatusCode::CREATED);
    let body: Value = ok.json().await.unwrap();
    assert_eq!(body["on_hand"], 3);
    assert_eq!(body["to"]["outlet"], OTHER_OUTLET);
    assert_eq!(body["to"]["on_hand"], 2);
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        app.stock(OTHER_OUTLET, SKU).await["on_hand"],
        2,
        "the replay moved nothing more"
    );
    app.finish().await;
}

#[actix_web::test]
async fn the_ledger_pages_in_seq_order() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 50).await;
    for i in 0..5 {
        app.movement(POS_VIJAY_NAGAR, sale(&format!("p-{i}"), 1))
            .await;
    }
    app.set_stock(OUTLET, SKU2, 4).await;

    let first = app
        .get(
            &format!("/v1/ledger?outlet={OUTLET}&sku={SKU}&limit=4"),
            VIEWER,
        )
        .await;
    let first: Value = first.json().await.unwrap();
    let next = first["next_after_seq"].as_i64().unwrap();
    let rest: Value = app
        .get(
            &format!("/v1/ledger?outlet={OUTLET}&sku={SKU}&after_seq={next}"),
            VIEWER,
        )
        .await
        .json()
        .await
        .unwrap();

    let seqs: Vec<i64> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["entries"].as_array().unwrap())
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4, 5, 6],
        "only the SKU's six movements, in order"
    );
    assert_eq!(first["entries"][1]["kind"], "sale_counter");
    assert_eq!(first["entries"][1]["event_id"], "p-0");
    assert!(rest["next_after_seq"].is_null());
    app.finish().await;
}

#[actix_web::test]
async fn the_same_event_id_at_another_outlet_is_409() {
    let app = spawn_app().await;
    let receipt = |outlet: &str| json!({"event_id": "grn-42", "outlet": outlet, "sku": SKU, "kind": "receipt", "qty": 5, "at": "2026-11-21T09:42:00Z"});

    let first = app.movement(MANAGER_INDORE, receipt(OUTLET)).await;
    let elsewhere = app.movement(MANAGER_INDORE, receipt(OTHER_OUTLET)).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(elsewhere.status(), StatusCode::CONFLICT);
    assert_eq!(app.stock(OTHER_OUTLET, SKU).await["on_hand"], 0);
    app.finish().await;
}

#[actix_web::test]
async fn an_adjustment_may_not_take_held_units() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    app.hold(OUTLET, SKU, 3, 300).await;
    let adjust = |id: &str, qty: i64| json!({"event_id": id, "outlet": OUTLET, "sku": SKU, "kind": "adjustment", "qty": qty, "at": "2026-11-21T09:42:00Z"});

    let too_far = app.movement(MANAGER_INDORE, adjust("a-1", -3)).await;
    let fine = app.movement(MANAGER_INDORE, adjust("a-2", -2)).await;

    assert_eq!(too_far.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_far.json::<Value>().await.unwrap()["field"], "qty");
    assert_eq!(fine.status(), StatusCode::CREATED);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["available"].as_i64()),
        (Some(3), Some(0))
    );
    app.finish().await;
}
