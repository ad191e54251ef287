//! The checkout path against real Redis and MongoDB.

mod common;

use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[actix_web::test]
async fn last_5_units_go_to_exactly_5_of_200_concurrent_buyers() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;

    let buyers = (0..200).map(|i| {
        let app = &app;
        async move {
            let body = json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]});
            let res = app.reserve(&format!("buyer-{i}"), body).await;
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }
    });
    let answers = join_all(buyers).await;

    let held: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .collect();
    assert_eq!(held.len(), 5, "exactly five holds");
    assert_eq!(refused.len(), 195, "every other buyer is refused");
    for (_, body) in &refused {
        assert_eq!(body["error"], "out_of_stock");
        assert_eq!(body["lines"][0]["sku"], SKU);
        assert_eq!(body["lines"][0]["available"], 0);
    }
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(5), Some(5), Some(0))
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_cart_with_one_short_line_holds_nothing() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.set_stock(OUTLET, SKU2, 10).await;
    app.set_stock(OUTLET, SKU3, 1).await;

    let body = json!({"outlet": OUTLET, "lines": [
        {"sku": SKU, "qty": 2}, {"sku": SKU2, "qty": 3}, {"sku": SKU3, "qty": 2}]});
    let res = app.reserve("cart-1", body).await;

    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "out_of_stock");
    assert_eq!(
        body["lines"],
        json!([{"sku": SKU3, "requested": 2, "available": 1}])
    );
    for (sku, on_hand) in [(SKU, 10), (SKU2, 10), (SKU3, 1)] {
        let s = app.stock(OUTLET, sku).await;
        assert_eq!(s["reserved"], 0, "{sku} holds nothing");
        assert_eq!(s["available"], on_hand);
    }
    app.finish().await;
}

#[actix_web::test]
async fn out_of_stock_names_other_shops_in_the_city_that_have_it() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 0).await;
    app.set_stock(OTHER_OUTLET, SKU, 4).await;

    let res = app
        .reserve(
            "alt-1",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 2}]}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["alternatives"],
        json!([{"outlet": OTHER_OUTLET, "can_serve": true}])
    );
    app.finish().await;
}

#[actix_web::test]
async fn an_expired_hold_returns_its_stock() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 3).await;
    let hold = app.hold(OUTLET, SKU, 2, 1).await;
    assert_eq!(app.stock(OUTLET, SKU).await["available"], 1);

    let id = hold["id"].as_str().unwrap().to_owned();
    let released = eventually(5, || async {
        app.stock(OUTLET, SKU).await["available"] == 3
    })
    .await;

    assert!(released, "the expiry timer released the hold");
    let r = app.reservation(&id).await;
    assert_eq!(r["status"], "expired");
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 0);
    app.finish().await;
}

#[actix_web::test]
async fn confirming_twice_with_the_same_payment_ref_sells_once() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let hold = app.hold(OUTLET, SKU, 2, 60).await;
    let id = hold["id"].as_str().unwrap();
    let path = format!("/v1/reservations/{id}/confirm");

    let first = app
        .post(&path, STOREFRONT, json!({"payment_ref": "pay_123"}))
        .await;
    let second = app
        .post(&path, STOREFRONT, json!({"payment_ref": "pay_123"}))
        .await;
    let other = app
        .post(&path, STOREFRONT, json!({"payment_ref": "pay_999"}))
        .await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK);
    let (a, b): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(a, b);
    assert_eq!(a["status"], "confirmed");
    assert_eq!(a["payment_ref"], "pay_123");
    assert_eq!(other.status(), StatusCode::CONFLICT);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0))
    );
    // The confirm answered only once durable: the sale is already in the ledger.
    let sales = ledger_projection(&app.settings, OUTLET).await;
    assert_eq!(
        sales.counters[&shelfsync::domain::Sku::parse("s", SKU).unwrap()].on_hand,
        3
    );
    app.finish().await;
}

#[actix_web::test]
async fn confirm_after_expiry_is_410_and_cancel_after_confirm_is_409() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let short = app.hold(OUTLET, SKU, 1, 1).await;
    let long = app.hold(OUTLET, SKU, 1, 60).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let late = app
        .post(
            &format!("/v1/reservations/{}/confirm", short["id"].as_str().unwrap()),
            STOREFRONT,
            json!({"payment_ref": "pay_1"}),
        )
        .await;
    let long_id = long["id"].as_str().unwrap();
    let ok = app
        .post(
            &format!("/v1/reservations/{long_id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay_2"}),
        )
        .await;
    let cancel = app
        .post(
            &format!("/v1/reservations/{long_id}/cancel"),
            STOREFRONT,
            json!({}),
        )
        .await;

    assert_eq!(late.status(), StatusCode::GONE);
    assert_eq!(
        late.json::<Value>().await.unwrap()["error"],
        "reservation_expired"
    );
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(cancel.status(), StatusCode::CONFLICT);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["reserved"].as_i64()),
        (Some(4), Some(0))
    );
    app.finish().await;
}

#[actix_web::test]
async fn cancel_racing_expiry_releases_each_hold_once() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 40).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            app.hold(OUTLET, SKU, 2, 1).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(app.stock(OUTLET, SKU).await["available"], 0);

    // Fire cancels, several per hold, spread across the moment the holds expire.
    let mut cancels = Vec::new();
    for delay_ms in [850u64, 950, 1000, 1050, 1150] {
        for id in &ids {
            let (app, id) = (&app, id.clone());
            cancels.push(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                app.post(
                    &format!("/v1/reservations/{id}/cancel"),
                    STOREFRONT,
                    json!({}),
                )
                .await
                .status()
            });
        }
    }
    let statuses = join_all(cancels).await;

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (
            stock["on_hand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(40), Some(0), Some(40))
    );
    let settings = app.stop().await;
    // The ledger has exactly one release per hold.
    let projection = ledger_projection(&settings, OUTLET).await;
    let sku = shelfsync::domain::Sku::parse("s", SKU).unwrap();
    assert_eq!(projection.counters[&sku].reserved, 0);
    assert_eq!(
        projection.seq,
        1 + 20 + 20,
        "one count, 20 holds, 20 releases"
    );
    cleanup(&settings).await;
}

#[actix_web::test]
async fn an_idempotent_replay_returns_the_same_hold_and_holds_nothing_more() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let body = json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 5}]});

    let first = app.reserve("same-key", body.clone()).await;
    let replay = app.reserve("same-key", body.clone()).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(replay.status(), StatusCode::CREATED);
    let (a, b): (Value, Value) = (first.json().await.unwrap(), replay.json().await.unwrap());
    assert_eq!(a, b, "the replay is the first answer");
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 5);
    app.finish().await;
}

#[actix_web::test]
async fn the_same_idempotency_key_with_another_body_is_409() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let first = app
        .reserve(
            "key-1",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    let other = app
        .reserve(
            "key-1",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 2}]}),
        )
        .await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(other.status(), StatusCode::CONFLICT);
    assert_eq!(other.json::<Value>().await.unwrap()["error"], "conflict");
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 1);
    app.finish().await;
}

#[actix_web::test]
async fn availability_answers_per_outlet() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 3).await;
    app.set_stock(OTHER_OUTLET, SKU, 1).await;

    let res = app
        .post(
            "/v1/availability",
            STOREFRONT,
            json!({"outlets": [OUTLET, OTHER_OUTLET], "lines": [{"sku": SKU, "qty": 2}]}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body[0],
        json!({"outlet": OUTLET, "can_serve": true, "lines": [{"sku": SKU, "available": 3}]})
    );
    assert_eq!(
        body[1],
        json!({"outlet": OTHER_OUTLET, "can_serve": false, "lines": [{"sku": SKU, "available": 1}]})
    );
    app.finish().await;
}

#[actix_web::test]
async fn the_same_idempotency_key_at_another_outlet_is_409() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    app.set_stock(OTHER_OUTLET, SKU, 5).await;
    let first = app
        .reserve(
            "shared-key",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    let elsewhere = app
        .reserve(
            "shared-key",
            json!({"outlet": OTHER_OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(elsewhere.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.stock(OTHER_OUTLET, SKU).await["reserved"],
        0,
        "nothing held at the other outlet"
    );
    app.finish().await;
}
