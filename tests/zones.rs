//! Delivery zones: routing a cart by PIN, availability by PIN, and editing zones.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// catalogue/zones.csv: 452010 is served by Vijay Nagar (30), Sapna Sangeeta (50) and
/// Palasia (60).
const PIN: &str = "452010";
const SAPNA: &str = "indore-sapna-sangeeta";

fn routed(sku: &str, qty: i64) -> Value {
    json!({"pin": PIN, "lines": [{"sku": sku, "qty": qty}], "ttl_secs": 300})
}

#[actix_web::test]
async fn a_routed_cart_goes_to_the_cheapest_outlet_that_can_fill_all_of_it() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 1).await; // cheapest, but short of 2
    app.set_stock(SAPNA, SKU, 5).await;
    app.set_stock(OTHER_OUTLET, SKU, 9).await;

    let res = app.reserve("routed-1", routed(SKU, 2)).await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["outlet"], SAPNA);
    assert_eq!(body["delivery_cost"], 50);
    assert_eq!(body["pin"], PIN);
    assert_eq!(app.stock(SAPNA, SKU).await["reserved"], 2);
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 0);

    // A replay gets the first answer, wherever stock stands now.
    app.set_stock(OUTLET, SKU, 50).await;
    let replay = app.reserve("routed-1", routed(SKU, 2)).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], body["id"]);
    assert_eq!(app.stock(SAPNA, SKU).await["reserved"], 2);
    // The same key with another cart is a conflict.
    let other = app.reserve("routed-1", routed(SKU, 3)).await;
    assert_eq!(other.status(), StatusCode::CONFLICT);
    app.finish().await;
}

#[actix_web::test]
async fn two_routed_carts_racing_for_the_last_units_both_get_served() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 2).await;
    app.set_stock(SAPNA, SKU, 2).await;

    let (a, b) = tokio::join!(
        app.reserve("race-a", routed(SKU, 2)),
        app.reserve("race-b", routed(SKU, 2))
    );

    assert_eq!(a.status(), StatusCode::CREATED);
    assert_eq!(b.status(), StatusCode::CREATED);
    let a: Value = a.json().await.unwrap();
    let b: Value = b.json().await.unwrap();
    let mut outlets = [
        a["outlet"].as_str().unwrap().to_owned(),
        b["outlet"].as_str().unwrap().to_owned(),
    ];
    outlets.sort();
    assert_eq!(outlets, [SAPNA.to_owned(), OUTLET.to_owned()]);
    // A third finds nothing, and hears who could serve part of it.
    app.set_stock(OTHER_OUTLET, SKU, 1).await;
    let c = app.reserve("race-c", routed(SKU, 2)).await;
    assert_eq!(c.status(), StatusCode::CONFLICT);
    let c: Value = c.json().await.unwrap();
    assert_eq!(c["error"], "out_of_stock");
    assert_eq!(c["lines"][0]["requested"], 2);
    let alternatives = c["alternatives"].as_array().unwrap();
    assert_eq!(alternatives.len(), 1, "{c}");
    assert_eq!(alternatives[0]["outlet"], OTHER_OUTLET);
    assert_eq!(alternatives[0]["can_serve"], false);
    app.finish().await;
}

#[actix_web::test]
async fn availability_by_pin_lists_the_serving_outlets_cheapest_first() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 1).await;
    app.set_stock(SAPNA, SKU, 4).await;

    let res = app
        .post(
            "/v1/availability",
            STOREFRONT,
            json!({"pin": PIN, "lines": [{"sku": SKU, "qty": 2}]}),
        )
        .await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Vec<Value> = res.json().await.unwrap();
    let rows: Vec<(&str, bool, i64)> = body
        .iter()
        .map(|r| {
            (
                r["outlet"].as_str().unwrap(),
                r["can_serve"].as_bool().unwrap(),
                r["cost"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (OUTLET, false, 30),
            (SAPNA, true, 50),
            (OTHER_OUTLET, false, 60)
        ]
    );
    app.finish().await;
}

#[actix_web::test]
async fn bad_pins_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    for (pin, field) in [("45201", "pin"), ("052010", "pin"), ("110001", "pin")] {
        let res = app
            .reserve(
                &format!("bad-{pin}"),
                json!({"pin": pin, "lines": [{"sku": SKU, "qty": 1}]}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{pin}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["field"], field, "{pin}");
    }
    let both = app
        .reserve(
            "bad-both",
            json!({"pin": PIN, "outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(both.status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.finish().await;
}

#[actix_web::test]
async fn an_admin_edits_a_zone_and_routing_follows_it_after_a_restart() {
    let app = spawn_app().await;
    let new_pin = "452016";
    let zone =
        json!({"outlets": [{"outlet": OTHER_OUTLET, "cost": 25}, {"outlet": OUTLET, "cost": 20}]});

    let forbidden = app
        .put(&format!("/v1/zones/{new_pin}"), STOREFRONT, zone.clone())
        .await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let res = app
        .put(&format!("/v1/zones/{new_pin}"), ADMIN, zone.clone())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["outlets"][0]["outlet"], OUTLET, "cheapest first");
    let again = app.put(&format!("/v1/zones/{new_pin}"), ADMIN, zone).await;
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["version"], 1, "the same list again is no new version");
    let unknown = app
        .put(
            &format!("/v1/zones/{new_pin}"),
            ADMIN,
            json!({"outlets": [{"outlet": "nowhere", "cost": 1}]}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let settings = app.stop().await;
    let app = spawn_app_with(settings).await;
    app.set_stock(OTHER_OUTLET, SKU, 3).await;
    let res = app
        .reserve(
            "edited-zone",
            json!({"pin": new_pin, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["outlet"], OTHER_OUTLET, "Vijay Nagar has none");
    let read = app.get(&format!("/v1/zones/{new_pin}"), VIEWER).await;
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["version"], 1);
    app.finish().await;
}

#[actix_web::test]
async fn one_key_sent_twice_at_once_holds_once() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 1).await; // cheapest, short: routing moves the key's claim
    app.set_stock(SAPNA, SKU, 5).await;
    app.set_stock(OTHER_OUTLET, SKU, 5).await;

    let (a, b) = tokio::join!(
        app.reserve("same-key", routed(SKU, 2)),
        app.reserve("same-key", routed(SKU, 2))
    );

    let mut ids = Vec::new();
    for res in [a, b] {
        match res.status() {
            StatusCode::CREATED => ids.push(res.json::<Value>().await.unwrap()["id"].clone()),
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(!ids.is_empty());
    ids.dedup();
    assert_eq!(ids.len(), 1, "both answers name the same hold");
    let mut reserved = 0;
    for o in [OUTLET, SAPNA, OTHER_OUTLET] {
        reserved += app.stock(o, SKU).await["reserved"].as_i64().unwrap();
    }
    assert_eq!(reserved, 2, "one hold of 2 in the whole chain");
    app.finish().await;
}

#[actix_web::test]
async fn a_replay_after_the_zone_changed_gets_its_first_answer() {
    let app = spawn_app().await;
    let pin = "452009"; // Bhawarkuan (30), Sapna Sangeeta (40)
    app.set_stock("indore-bhawarkuan", SKU, 5).await;
    let body = json!({"pin": pin, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 300});
    let first: Value = app
        .reserve("before-edit", body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["outlet"], "indore-bhawarkuan");
    let edit = json!({"outlets": [{"outlet": SAPNA, "cost": 40}]});
    assert_eq!(
        app.put(&format!("/v1/zones/{pin}"), ADMIN, edit)
            .await
            .status(),
        StatusCode::OK
    );

    let replay = app.reserve("before-edit", body).await;

    assert_eq!(replay.status(), StatusCode::CREATED);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(app.stock("indore-bhawarkuan", SKU).await["reserved"], 1);
    app.finish().await;
}

fn counter_sale(event_id: &str, outlet: &str, qty: i64) -> Value {
    json!({"event_id": event_id, "outlet": outlet, "sku": SKU, "kind": "sale_counter",
        "qty": qty, "at": "2026-11-21T09:42:00Z"})
}

#[actix_web::test]
async fn a_counter_sale_that_leaves_holds_short_reroutes_the_newest_and_the_stream_sees_it() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 3).await;
    app.set_stock(SAPNA, SKU, 5).await;
    app.set_stock(OTHER_OUTLET, SKU, 9).await;
    let older = app.reserve("move-older", routed(SKU, 2)).await;
    let newer = app.reserve("move-newer", routed(SKU, 1)).await;
    let (older, newer): (Value, Value) = (older.json().await.unwrap(), newer.json().await.unwrap());
    assert_eq!(
        (&older["outlet"], &newer["outlet"]),
        (&json!(OUTLET), &json!(OUTLET))
    );
    let mut sse = SseClient::connect(&app, &format!("outlets={OUTLET}"), STOREFRONT)
        .await
        .expect("stream");
    assert_eq!(sse.next(5).await.expect("snapshot").event, "snapshot");

    // The counter sells one of the three held units: one unit short.
    let sold = app
        .movement(POS_VIJAY_NAGAR, counter_sale("rr-pos-1", OUTLET, 1))
        .await;

    assert_eq!(sold.status(), StatusCode::CREATED);
    let sold: Value = sold.json().await.unwrap();
    assert_eq!(sold["shortfall"], 1);
    let moved = sold["rerouted"].as_array().expect("rerouted list");
    assert_eq!(moved.len(), 1, "{sold}");
    assert_eq!(moved[0]["id"], newer["id"], "the newest hold moves");
    assert_eq!(
        moved[0]["to_outlet"], SAPNA,
        "the cheapest other outlet with stock"
    );
    assert_eq!(sold["at_risk"], json!([]));
    let new_id = moved[0]["rerouted_to"].as_str().unwrap().to_owned();

    let old = app.reservation(newer["id"].as_str().unwrap()).await;
    assert_eq!(old["status"], "rerouted");
    assert_eq!(old["rerouted_to"], new_id);
    let new = app.reservation(&new_id).await;
    assert_eq!(
        (&new["status"], &new["outlet"]),
        (&json!("held"), &json!(SAPNA))
    );
    assert_eq!(new["lines"], newer["lines"]);
    assert_eq!(
        app.reservation(older["id"].as_str().unwrap()).await["status"],
        "held"
    );
    let here = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (&here["on_hand"], &here["reserved"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(app.stock(SAPNA, SKU).await["reserved"], 1);

    // The storefront's stream says where the hold went.
    let mut event = None;
    while let Some(e) = sse.next(5).await {
        if e.event == "rerouted" {
            event = Some(e.data);
            break;
        }
    }
    let event = event.expect("a rerouted event on the stream");
    assert_eq!(event["id"], newer["id"]);
    assert_eq!(
        (&event["rerouted_to"], &event["to_outlet"]),
        (&json!(new_id), &json!(SAPNA))
    );

    // The old hold cannot be paid for any more; the new one can.
    let pay = json!({"payment_ref": "pay-rr-1"});
    let stale = app
        .post(
            &format!("/v1/reservations/{}/confirm", newer["id"].as_str().unwrap()),
            STOREFRONT,
            pay.clone(),
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    let stale: Value = stale.json().await.unwrap();
    assert_eq!(stale["reservation"]["rerouted_to"], new_id, "{stale}");
    let paid = app
        .post(
            &format!("/v1/reservations/{new_id}/confirm"),
            STOREFRONT,
            pay,
        )
        .await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(
        app.reconcile().await.drifted_skus(),
        0,
        "the ledger explains every number"
    );
    let settings = app.stop().await;
    let check = cli(&settings, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Rebuilt from the ledger alone, both holds say the same.
    wipe_redis(&settings).await;
    let app = spawn_app_with(settings).await;
    let old = app.reservation(newer["id"].as_str().unwrap()).await;
    assert_eq!(
        (&old["status"], &old["rerouted_to"]),
        (&json!("rerouted"), &json!(new_id))
    );
    assert_eq!(app.reservation(&new_id).await["status"], "confirmed");
    app.finish().await;
}

#[actix_web::test]
async fn a_hold_nobody_can_take_is_at_risk_until_stock_appears_elsewhere() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 2).await;
    app.set_stock(SAPNA, SKU, 0).await;
    app.set_stock(OTHER_OUTLET, SKU, 0).await;
    app.set_stock(OUTLET, SKU2, 1).await;
    let hold = app.reserve("risk-1", routed(SKU, 2)).await;
    let hold: Value = hold.json().await.unwrap();
    let id = hold["id"].as_str().unwrap().to_owned();
    let direct = app.hold(OUTLET, SKU2, 1, 300).await; // no PIN: never re-routed

    let sold = app
        .movement(POS_VIJAY_NAGAR, counter_sale("risk-pos-1", OUTLET, 1))
        .await;

    assert_eq!(sold.status(), StatusCode::CREATED);
    let sold: Value = sold.json().await.unwrap();
    assert_eq!(sold["rerouted"], json!([]));
    assert_eq!(
        sold["at_risk"],
        json!([id]),
        "no other outlet has the stock"
    );
    let read = app.reservation(&id).await;
    assert_eq!(
        (&read["status"], &read["at_risk"]),
        (&json!("held"), &json!(true))
    );
    let gauge = format!("shelfsync_oversell_risk_holds{{outlet=\"{OUTLET}\"}} 1");
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
    assert!(metrics.contains(&gauge), "{metrics}");
    assert!(
        metrics.contains("shelfsync_oversell_units_total 1"),
        "one unit is missing: {metrics}"
    );

    // A count that loses the un-routable hold's unit leaves it at risk too.
    let counted = app
        .movement(
            ADMIN,
            json!({"event_id": "risk-count-1", "outlet": OUTLET, "sku": SKU2,
        "kind": "count", "qty": 0, "at": "2026-11-21T09:50:00Z"}),
        )
        .await;
    let counted: Value = counted.json().await.unwrap();
    assert_eq!(
        counted["at_risk"],
        json!([direct["id"], id]),
        "newest first: {counted}"
    );

    // Stock arrives at another outlet serving the PIN: the sweep moves the hold there.
    app.set_stock(SAPNA, SKU, 4).await;
    let moved = eventually(15, || async {
        app.reservation(&id).await["status"] == "rerouted"
    })
    .await;
    assert!(
        moved,
        "the sweep re-routes an at-risk hold once stock appears"
    );
    let new_id = app.reservation(&id).await["rerouted_to"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.reservation(&new_id).await["outlet"], SAPNA);
    assert_eq!(app.stock(SAPNA, SKU).await["reserved"], 2);
    let metrics = app.get("/metrics", VIEWER).await.text().await.unwrap();
    let still = format!("shelfsync_oversell_risk_holds{{outlet=\"{OUTLET}\"}} 1");
    assert!(
        metrics.contains(&still),
        "only the hold without a PIN stays at risk: {metrics}"
    );

    // The customer walks away using the id they had: the hold that carries the cart goes.
    let cancel = app
        .post(
            &format!("/v1/reservations/{id}/cancel"),
            STOREFRONT,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status(), StatusCode::OK);
    let cancel: Value = cancel.json().await.unwrap();
    assert_eq!(
        (&cancel["id"], &cancel["status"]),
        (&json!(new_id), &json!("cancelled"))
    );
    assert_eq!(app.stock(SAPNA, SKU).await["reserved"], 0);
    assert_eq!(app.reconcile().await.drifted_skus(), 0);
    app.finish().await;
}

#[actix_web::test]
async fn the_service_s_own_key_prefixes_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    for key in ["rr-0123456789abcdef", "wa-0123456789abcdef"] {
        let res = app.reserve(key, routed(SKU, 1)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{key}");
    }
    assert_eq!(app.stock(OUTLET, SKU).await["reserved"], 0);
    app.finish().await;
}

#[actix_web::test]
async fn a_zone_edit_through_one_process_routes_through_the_others_within_their_refresh() {
    let (settings_a, settings_b) = two_nodes();
    let a = spawn_app_with(settings_a).await;
    let b = spawn_app_with(settings_b).await;
    a.set_stock(OTHER_OUTLET, SKU, 5).await;
    let new_pin = "452099";
    let cart = json!({"pin": new_pin, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 300});
    // No zone serves the PIN yet: the other process has nowhere to route it.
    let before = b.reserve("zone-before", cart.clone()).await;
    assert_ne!(before.status(), StatusCode::CREATED);

    let zone = json!({"outlets": [{"outlet": OTHER_OUTLET, "cost": 15}]});
    let res = a.put(&format!("/v1/zones/{new_pin}"), ADMIN, zone).await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = eventually(5, || async {
        let zone: Value = b
            .get(&format!("/v1/zones/{new_pin}"), VIEWER)
            .await
            .json()
            .await
            .unwrap_or_default();
        zone["version"] == 1
    })
    .await;
    assert!(seen, "the other process did not read the zone edit");
    let res = b.reserve("zone-after", cart).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["outlet"].clone(), body["delivery_cost"].clone()),
        (json!(OTHER_OUTLET), json!(15))
    );
    b.stop().await;
    a.finish().await;
}
