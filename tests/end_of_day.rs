//! The end-of-day report: an outlet's day summed from the ledger by kind and by lot, valued
//! at the configured prices, as JSON and CSV; a past day's `left` is what was left at its end.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const DAY_MS: i64 = 86_400_000;

async fn report(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/v1/reports/end-of-day?{query}"), VIEWER)
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn row<'a>(report: &'a Value, sku: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sku"] == sku)
        .unwrap_or_else(|| panic!("no row of {sku}: {report}"))
}

/// Every row balances: opening + in - out = left.
fn balanced(report: &Value) {
    for r in report["rows"].as_array().unwrap() {
        let n = |k: &str| r[k].as_i64().unwrap();
        let moved = n("received") + n("returned")
            - n("transferred_out")
            - n("sold")
            - n("wasted")
            - n("expired")
            + n("adjusted");
        assert_eq!(n("opening") + moved, n("left"), "{r}");
    }
}

#[actix_web::test]
async fn the_day_is_summed_by_kind_and_lot_and_valued_at_the_prices() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let receipt = |lot: &str, qty: i64, expires_at: String| {
        json!({"event_id": format!("in-{lot}"), "outlet": OUTLET, "sku": SKU, "kind": "receipt",
            "qty": qty, "at": recent_at(), "lot": lot, "expires_at": expires_at})
    };
    app.moved(receipt("tray-1", 6, from_now(chrono::Duration::seconds(4))))
        .await;
    app.moved(receipt("tray-2", 5, from_now(chrono::Duration::days(2))))
        .await;
    // The counter sells the tray that expires first; the web hold outlives tray-1, so it
    // takes tray-2.
    app.moved(json!({"event_id": "sale-1", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 4, "at": recent_at()}))
        .await;
    let hold = app.hold(OUTLET, SKU, 2, 60).await;
    let id = hold["id"].as_str().unwrap();
    let paid = app.confirm(id, "p-eod").await;
    assert_eq!(paid.status(), StatusCode::OK);
    app.moved(
        json!({"event_id": "waste-1", "outlet": OUTLET, "sku": SKU, "kind": "wastage",
        "qty": 1, "at": recent_at(), "lot": "tray-2"}),
    )
    .await;
    app.moved(
        json!({"event_id": "move-1", "outlet": OUTLET, "sku": SKU, "kind": "transfer",
        "qty": 1, "at": recent_at(), "to_outlet": OTHER_OUTLET, "lot": "tray-2"}),
    )
    .await;
    // tray-1's last 2 units expire.
    let expired = eventually(15, || async {
        app.stock(OUTLET, SKU).await["lots"]
            .as_array()
            .is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(expired, "{}", app.stock(OUTLET, SKU).await);

    let today = report(&app, &format!("outlet={OUTLET}")).await;
    assert_eq!(today["complete"], false);
    balanced(&today);
    let r = row(&today, SKU);
    let figures: Vec<i64> = [
        "opening",
        "adjusted",
        "received",
        "sold",
        "wasted",
        "expired",
        "transferred_out",
        "left",
    ]
    .iter()
    .map(|k| r[*k].as_i64().unwrap())
    .collect();
    assert_eq!(figures, [0, 10, 11, 6, 1, 2, 1, 11], "{r}");
    assert_eq!(r["left"], app.stock(OUTLET, SKU).await["on_hand"]);
    assert_eq!(r["name"], "Kaju Katli 1 kg");
    // catalogue/prices.csv: 600.00 a box.
    assert_eq!(r["price_paise"], 60_000);
    assert_eq!(r["sold_value_paise"], 6 * 60_000);
    assert_eq!(r["waste_value_paise"], 3 * 60_000);
    assert_eq!(r["left_value_paise"], 11 * 60_000);
    assert_eq!(
        r["lots"],
        json!([
            {"lot": "tray-1", "expires_at": r["lots"][0]["expires_at"], "wasted": 0, "expired": 2},
            {"lot": "tray-2", "expires_at": r["lots"][1]["expires_at"], "wasted": 1, "expired": 0},
        ])
    );
    assert_eq!(today["totals"]["sold_value_paise"], 6 * 60_000);
    // The receiving outlet's day shows the transfer in.
    let there = report(&app, &format!("outlet={OTHER_OUTLET}")).await;
    assert_eq!(row(&there, SKU)["received"], 1);

    // As CSV, in rupees.
    let res = app
        .get(
            &format!("/v1/reports/end-of-day?outlet={OUTLET}&format=csv"),
            VIEWER,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = res.text().await.unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("outlet,date,sku,name,opening,received"));
    let line = lines.find(|l| l.contains(SKU)).unwrap();
    assert!(line.ends_with(",600.00,3600.00,1800.00,6600.00"), "{line}");

    // Yesterday had nothing: no rows, and it is over.
    let yesterday = chrono::Utc::now() + chrono::Duration::minutes(330) - chrono::Duration::days(1);
    let past = report(
        &app,
        &format!("outlet={OUTLET}&date={}", yesterday.format("%Y-%m-%d")),
    )
    .await;
    assert_eq!(
        (past["complete"].clone(), past["rows"].clone()),
        (json!(true), json!([]))
    );

    // Bad queries name their field; another outlet's manager may not read it.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(2)).format("%Y-%m-%d");
    for (query, field) in [
        (String::new(), "outlet"),
        (format!("outlet={OUTLET}&date=6-12-2026"), "date"),
        (format!("outlet={OUTLET}&date={tomorrow}"), "date"),
        (format!("outlet={OUTLET}&format=xml"), "format"),
        ("outlet=nowhere".into(), "outlet"),
    ] {
        let res = app
            .get(&format!("/v1/reports/end-of-day?{query}"), VIEWER)
            .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["field"],
            field,
            "{query}"
        );
    }
    let res = app
        .get(
            "/v1/reports/end-of-day?outlet=bhopal-mp-nagar",
            MANAGER_INDORE,
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    app.finish().await;
}

#[actix_web::test]
async fn a_past_days_left_is_what_was_left_at_its_end() {
    // The chain's local midnight is set to fall during the test: the next whole minute at
    // least 20 s away.
    let now = chrono::Utc::now().timestamp_millis();
    let mut midnight = (now / 60_000 + 1) * 60_000;
    if midnight - now < 20_000 {
        midnight += 60_000;
    }
    let mut settings = test_settings();
    settings.reports.utc_offset_minutes = ((-midnight).rem_euclid(DAY_MS) / 60_000) as i32;
    let day_one = shelfsync::end_of_day::today(settings.reports.utc_offset_minutes, midnight - 1);
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.moved(
        json!({"event_id": "d1-in", "outlet": OUTLET, "sku": SKU, "kind": "receipt",
        "qty": 6, "at": recent_at()}),
    )
    .await;
    app.moved(json!({"event_id": "d1-sale", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 3, "at": recent_at()}))
        .await;
    let wait = midnight + 300 - chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    app.moved(json!({"event_id": "d2-sale", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 2, "at": recent_at()}))
        .await;
    app.moved(
        json!({"event_id": "d2-waste", "outlet": OUTLET, "sku": SKU, "kind": "wastage",
        "qty": 1, "at": recent_at()}),
    )
    .await;

    let first = report(&app, &format!("outlet={OUTLET}&date={day_one}")).await;
    assert_eq!(first["complete"], true);
    balanced(&first);
    let r = row(&first, SKU);
    assert_eq!(
        (
            r["opening"].clone(),
            r["adjusted"].clone(),
            r["received"].clone(),
            r["sold"].clone(),
            r["wasted"].clone(),
            r["left"].clone()
        ),
        (json!(0), json!(10), json!(6), json!(3), json!(0), json!(13)),
        "{r}"
    );
    let second = report(&app, &format!("outlet={OUTLET}")).await;
    assert_eq!(second["complete"], false);
    assert_ne!(second["date"], json!(day_one));
    balanced(&second);
    let r = row(&second, SKU);
    assert_eq!(
        (
            r["opening"].clone(),
            r["sold"].clone(),
            r["wasted"].clone(),
            r["left"].clone()
        ),
        (json!(13), json!(2), json!(1), json!(10)),
        "{r}"
    );
    app.finish().await;
}
