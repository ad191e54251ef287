//! Lots: units made together that expire together. Holds and sales take them earliest expiry
//! first inside the outlet's script, an expired lot is never held or sold, its expiry is one
//! ledger document, and a rebuild from the ledger gives Redis its lots back exactly.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shelfsync::domain::{LedgerKind, OutletId, Sku};
use shelfsync::ledger::LedgerEntry;

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

/// Receives `qty` of `sku` at `outlet` into lot `lot`, expiring at `expires_at`.
async fn receive(
    app: &TestApp,
    outlet: &str,
    sku: &str,
    lot: &str,
    qty: i64,
    expires_at: &str,
) -> Value {
    let body = json!({"event_id": format!("in-{}", uuid::Uuid::new_v4().simple()),
        "outlet": outlet, "sku": sku, "kind": "receipt", "qty": qty, "at": recent_at(),
        "lot": lot, "expires_at": expires_at});
    let res = app.movement(ADMIN, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

/// `(lot, qty, held)` of every lot of the SKU's stock answer, in the order given.
fn lots(stock: &Value) -> Vec<(String, i64, i64)> {
    (stock["lots"].as_array().cloned().unwrap_or_default().iter())
        .map(|l| {
            (
                l["lot"].as_str().unwrap().to_owned(),
                l["qty"].as_i64().unwrap(),
                l["held"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The outlet's ledger documents, in seq order.
async fn ledger_docs(app: &TestApp, outlet: &str) -> Vec<LedgerEntry> {
    let ledger = ledger(&app.settings).await;
    let outlet = OutletId::parse("outlet", outlet).unwrap();
    ledger.page(&outlet, None, 0, 10_000).await.unwrap()
}

#[actix_web::test]
async fn two_lots_a_sale_takes_the_earlier_expiring_and_a_transfer_carries_its_lots() {
    let app = spawn_app().await;
    let late = from_now(chrono::Duration::days(2));
    let early = from_now(chrono::Duration::hours(2));
    // The later lot arrives first: the order of expiry decides, not the order of arrival.
    receive(&app, OUTLET, SKU, "late", 5, &late).await;
    receive(&app, OUTLET, SKU, "early", 5, &early).await;
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(stock["on_hand"], 10);
    assert_eq!(
        lots(&stock),
        [("early".into(), 5, 0), ("late".into(), 5, 0)]
    );
    // Within the 4 h of `expiring_soon_mins`: the early lot only.
    assert_eq!(stock["expiring_soon"], 5);

    // A counter sale of 3 takes them from the earlier-expiring lot.
    let sale = app
        .moved(json!({"event_id": "sale-1", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 3, "at": recent_at()}))
        .await;
    assert_eq!(sale["on_hand"], 7);
    assert_eq!(sale["lots"][0]["lot"], "early");
    assert_eq!(sale["lots"][0]["d_qty"], -3);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        lots(&stock),
        [("early".into(), 2, 0), ("late".into(), 5, 0)]
    );

    // A hold of 4 holds the 2 left of the early lot, then 2 of the late one; its sale takes
    // exactly those.
    let hold = app.hold(OUTLET, SKU, 4, 60).await;
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        lots(&stock),
        [("early".into(), 2, 2), ("late".into(), 5, 2)]
    );
    // A counter sale meanwhile takes the unheld units of the late lot, not the held ones.
    app.moved(json!({"event_id": "sale-2", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 1, "at": recent_at()}))
        .await;
    let id = hold["id"].as_str().unwrap();
    let confirmed = app.confirm(id, "pay-lots").await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].clone(), stock["reserved"].clone()),
        (json!(2), json!(0))
    );
    assert_eq!(lots(&stock), [("late".into(), 2, 0)]);

    // The ledger says which lot each unit came from.
    let docs = ledger_docs(&app, OUTLET).await;
    let web = docs
        .iter()
        .find(|d| d.kind == LedgerKind::SaleWeb)
        .expect("the web sale");
    let taken: Vec<(String, i64, i64)> = (web.lines[0].lots.iter())
        .map(|d| (d.lot.clone(), d.d_qty, d.d_held))
        .collect();
    assert_eq!(taken, [("early".into(), -2, -2), ("late".into(), -2, -2)]);

    // A request (a negative adjustment) naming a lot that has fewer units is refused, nothing
    // changed; a fact naming it is recorded (below).
    let short = app
        .movement(
            ADMIN,
            json!({"event_id": "adjust-1", "outlet": OUTLET, "sku": SKU,
            "kind": "adjustment", "qty": -1, "at": recent_at(), "lot": "nope"}),
        )
        .await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = short.json().await.unwrap();
    assert_eq!(body["field"], "lot", "{body}");
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 2);

    // A transfer carries its lots, times and all, to the other outlet.
    app.moved(
        json!({"event_id": "move-1", "outlet": OUTLET, "sku": SKU, "kind": "transfer",
        "qty": 2, "at": recent_at(), "to_outlet": OTHER_OUTLET}),
    )
    .await;
    let there = app.stock(OTHER_OUTLET, SKU).await;
    assert_eq!(lots(&there), [("late".into(), 2, 0)]);
    assert_eq!(
        ms(there["lots"][0]["expires_at"].as_str().unwrap()),
        ms(&late)
    );
    assert!(app.stock(OUTLET, SKU).await["lots"].is_null());

    // Bad lots are refused with the field named and change nothing.
    for (body, field) in [
        (
            json!({"kind": "receipt", "lot": "a b", "expires_at": late}),
            "lot",
        ),
        (
            json!({"kind": "receipt", "lot": "past", "expires_at": from_now(chrono::Duration::minutes(-1))}),
            "expires_at",
        ),
        // The SKU has no shelf life to count an expiry from.
        (json!({"kind": "receipt", "lot": "no-expiry"}), "expires_at"),
        // Made past movements.at_ahead_max_secs (300 s) from now: a clock far ahead.
        (
            json!({"kind": "receipt", "lot": "ahead",
                "made_at": from_now(chrono::Duration::hours(1)), "expires_at": late}),
            "made_at",
        ),
        (json!({"kind": "count", "lot": "late"}), "lot"),
        (
            json!({"kind": "sale_counter", "expires_at": late}),
            "expires_at",
        ),
        // Same lot id, other times.
        (
            json!({"kind": "receipt", "lot": "late", "expires_at": early}),
            "lot",
        ),
    ] {
        let mut body = body;
        body["event_id"] = json!(format!("bad-{}", uuid::Uuid::new_v4().simple()));
        body["outlet"] = json!(OTHER_OUTLET);
        body["sku"] = json!(SKU);
        body["qty"] = json!(1);
        body["at"] = json!(recent_at());
        let res = app.movement(ADMIN, body.clone()).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(answer["field"], field, "{body} → {answer}");
    }
    let there = app.stock(OTHER_OUTLET, SKU).await;
    assert_eq!(
        (there["on_hand"].clone(), lots(&there)),
        (json!(2), vec![("late".into(), 2, 0)])
    );
    app.finish().await;
}

#[actix_web::test]
async fn an_expired_lot_is_never_held_or_sold_and_its_expiry_is_in_the_ledger_once() {
    let app = spawn_app().await;
    // Lot "soon" expires in 4 s; lot "later" in a day, after a 2 s hold.
    let soon = from_now(chrono::Duration::seconds(4));
    receive(&app, OUTLET, SKU, "soon", 3, &soon).await;
    // A hold of 60 s would outlive the lot: no unit of it can be held.
    let res = app
        .reserve(
            &uuid::Uuid::new_v4().to_string(),
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 60}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["lines"][0]["available"], 0, "{body}");
    // A hold of 2 s ends before the lot expires: it may take a unit, and lets it go at its end.
    let short_hold = app.hold(OUTLET, SKU, 1, 2).await;
    assert_eq!(lots(&app.stock(OUTLET, SKU).await), [("soon".into(), 3, 1)]);

    // At its time the lot is written off, once, after the hold let go of its unit.
    let written_off = eventually(15, || async {
        app.stock(OUTLET, SKU).await["on_hand"] == 0
    })
    .await;
    assert!(written_off, "{}", app.stock(OUTLET, SKU).await);
    let stock = app.stock(OUTLET, SKU).await;
    assert!(stock["lots"].is_null(), "{stock}");
    assert_eq!(
        app.reservation(short_hold["id"].as_str().unwrap()).await["status"],
        "expired"
    );
    let expired_units = format!("shelfsync_lot_expired_units_total{{outlet=\"{OUTLET}\"}}");
    assert_eq!(metric(&app, &expired_units).await, 3.0);

    // Nothing of it can be held or sold now: a hold is out of stock, and a counter sale (a
    // fact) is recorded short, taking no lot.
    let res = app
        .reserve(
            &uuid::Uuid::new_v4().to_string(),
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 1}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let sale = app
        .moved(
            json!({"event_id": "late-sale", "outlet": OUTLET, "sku": SKU,
        "kind": "sale_counter", "qty": 1, "at": recent_at()}),
        )
        .await;
    assert_eq!(
        (sale["on_hand"].clone(), sale["shortfall"].clone()),
        (json!(-1), json!(1))
    );
    assert!(sale["lots"].is_null(), "{sale}");

    // A restart loads the outlet again: the expiry is not written a second time.
    let settings = app.stop().await;
    let app = spawn_app_with(settings).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let docs = ledger_docs(&app, OUTLET).await;
    let expiries: Vec<&LedgerEntry> = docs
        .iter()
        .filter(|d| d.kind == LedgerKind::Expiry)
        .collect();
    assert_eq!(expiries.len(), 1, "{expiries:?}");
    let e = expiries[0];
    assert_eq!((e.lines[0].d_on_hand, e.qty), (-3, Some(3)));
    assert_eq!(e.lines[0].lots[0].lot, "soon");
    assert_eq!(e.by.as_deref(), Some("expiry"));
    assert_eq!(
        metric(&app, &expired_units).await,
        0.0,
        "a restart writes nothing off again"
    );
    assert_eq!(e.event_at_ms, Some(ms(&soon)));
    assert!(
        e.at_ms >= ms(&soon),
        "written off at {} before its time {}",
        e.at_ms,
        ms(&soon)
    );
    // The hold's release came first.
    let released = docs
        .iter()
        .position(|d| d.kind == LedgerKind::ReservationReleased)
        .unwrap();
    let expired = docs
        .iter()
        .position(|d| d.kind == LedgerKind::Expiry)
        .unwrap();
    assert!(released < expired);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], -1);
    app.finish().await;
}

#[actix_web::test]
async fn a_rebuild_of_a_ledger_with_lots_equals_redis() {
    let app = spawn_app().await;
    // A ledger from before lots (loose units) with lots on top: holds live and ended, sales,
    // wastage and a transfer; the SKU with a shelf life makes a lot of each receipt.
    app.set_stock(OUTLET, SKU, 4).await;
    receive(
        &app,
        OUTLET,
        SKU,
        "a",
        6,
        &from_now(chrono::Duration::hours(30)),
    )
    .await;
    receive(
        &app,
        OUTLET,
        SKU,
        "b",
        6,
        &from_now(chrono::Duration::hours(10)),
    )
    .await;
    let edit = app
        .put(
            &format!("/v1/skus/{SKU2}"),
            ADMIN,
            json!({"name": "Soan Papdi 500 g",
            "category": "sweets", "shelf_life_days": 2}),
        )
        .await;
    assert_eq!(
        edit.status(),
        StatusCode::OK,
        "{}",
        edit.text().await.unwrap()
    );
    let by_shelf_life = app
        .moved(json!({"event_id": "shelf-1", "outlet": OUTLET, "sku": SKU2,
        "kind": "receipt", "qty": 8, "at": recent_at()}))
        .await;
    assert_eq!(by_shelf_life["lots"][0]["lot"], "shelf-1");
    app.moved(
        json!({"event_id": "r-1", "outlet": OUTLET, "sku": SKU, "kind": "sale_counter",
        "qty": 7, "at": recent_at()}),
    )
    .await;
    app.moved(
        json!({"event_id": "w-1", "outlet": OUTLET, "sku": SKU, "kind": "wastage",
        "qty": 1, "at": recent_at(), "lot": "a"}),
    )
    .await;
    app.moved(
        json!({"event_id": "t-1", "outlet": OUTLET, "sku": SKU2, "kind": "transfer",
        "qty": 3, "at": recent_at(), "to_outlet": OTHER_OUTLET}),
    )
    .await;
    let live = app.hold(OUTLET, SKU, 3, 600).await;
    let cancelled = app.hold(OUTLET, SKU2, 2, 600).await;
    let id = cancelled["id"].as_str().unwrap();
    let res = app.cancel(id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let settings = app.stop().await;

    let (sku, sku2) = (
        Sku::parse("s", SKU).unwrap(),
        Sku::parse("s", SKU2).unwrap(),
    );
    let mut before = Vec::new();
    for outlet in [OUTLET, OTHER_OUTLET] {
        let redis = redis_snapshot(&settings, outlet).await;
        let ledger = ledger_projection(&settings, outlet).await;
        // The ledger explains Redis's lots before any rebuild.
        for s in [&sku, &sku2] {
            assert_eq!(
                redis.lots.get(s).cloned().unwrap_or_default(),
                ledger.lots_of(s),
                "{outlet} {s}"
            );
        }
        before.push(redis);
    }
    let held = &before[0].held;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id.as_str(), live["id"].as_str().unwrap());
    assert!(!held[0].lots.is_empty(), "{held:?}");
    let events_before = redis_hash(&settings, OUTLET, |k| &k.events).await;

    wipe_redis(&settings).await;
    let out = cli(&settings, &["rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, outlet) in [OUTLET, OTHER_OUTLET].into_iter().enumerate() {
        let after = redis_snapshot(&settings, outlet).await;
        assert_eq!(after.seq, before[i].seq);
        assert_eq!(after.counters, before[i].counters, "{outlet}");
        assert_eq!(after.lots, before[i].lots, "{outlet}");
        assert_eq!(after.held, before[i].held, "{outlet}");
    }
    // The movements' remembered answers (a replay's, a transfer's receiving half's lots) too.
    assert_eq!(
        redis_hash(&settings, OUTLET, |k| &k.events).await,
        events_before
    );
    assert!(!before[0].lots[&sku].is_empty() && !before[1].lots[&sku2].is_empty());

    // The rebuilt outlet goes on: the live hold sells the lot units it held.
    let app = spawn_app_with(settings).await;
    let id = live["id"].as_str().unwrap();
    let res = app.confirm(id, "p-1").await;
    assert_eq!(res.status(), StatusCode::OK);
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].clone(), stock["reserved"].clone()),
        (json!(5), json!(0))
    );
    app.finish().await;
}

#[actix_web::test]
async fn the_reconciler_finds_drifted_lots_and_sets_them_to_the_ledgers() {
    let app = spawn_app().await;
    let later = from_now(chrono::Duration::hours(20));
    receive(&app, OUTLET, SKU, "k1", 5, &later).await;
    receive(
        &app,
        OUTLET,
        SKU,
        "k2",
        4,
        &from_now(chrono::Duration::hours(30)),
    )
    .await;
    app.hold(OUTLET, SKU, 2, 600).await;
    let clean = app.reconcile().await;
    let clean = clean
        .outlets
        .iter()
        .find(|o| o.outlet.as_str() == OUTLET)
        .unwrap();
    assert!(clean.drift.is_empty(), "{clean:?}");

    // Behind shelfsync's back: lot k1 loses a unit and a lot that no receipt made appears;
    // the counters stay as they were.
    let tampered = json!([
        {"lot": "k1", "made_at": ms(&recent_at()), "expires_at": ms(&later), "qty": 4, "held": 2},
        {"lot": "ghost", "made_at": 0, "expires_at": ms(&later) + 1, "qty": 1, "held": 0},
        {"lot": "k2", "made_at": 0, "expires_at": ms(&later) + 2, "qty": 4, "held": 0},
    ]);
    tamper_field(
        &app.settings,
        OUTLET,
        |k| &k.lots,
        SKU,
        &tampered.to_string(),
    )
    .await;
    let report = app.reconcile().await;
    let found = report
        .outlets
        .iter()
        .find(|o| o.outlet.as_str() == OUTLET)
        .unwrap();
    assert_eq!(found.drift.len(), 1, "{found:?}");
    let drifted = found.drift[0]
        .lots
        .as_ref()
        .expect("the drift names the lots");
    assert_eq!(drifted.redis.len(), 3);
    assert_eq!(drifted.ledger.len(), 2);
    assert_eq!(found.drift[0].redis_on_hand, found.drift[0].ledger_on_hand);
    assert!(found.healed);

    // Healed: Redis has the ledger's lots again, times and all, and the next pass is clean.
    let redis = redis_snapshot(&app.settings, OUTLET).await;
    let ledger = ledger_projection(&app.settings, OUTLET).await;
    let sku = Sku::parse("s", SKU).unwrap();
    assert_eq!(redis.lots[&sku], ledger.lots_of(&sku));
    assert_eq!(
        lots(&app.stock(OUTLET, SKU).await),
        [("k1".into(), 5, 2), ("k2".into(), 4, 0)]
    );
    let again = app.reconcile().await;
    let again = again
        .outlets
        .iter()
        .find(|o| o.outlet.as_str() == OUTLET)
        .unwrap();
    assert!(again.drift.is_empty(), "{again:?}");
    let docs = documents(&app.settings, "drift").await;
    assert_eq!(docs.len(), 1);
    let skus = docs[0].get_array("skus").unwrap();
    assert!(format!("{skus:?}").contains("ghost"), "{skus:?}");
    app.finish().await;
}

#[actix_web::test]
async fn a_lot_past_its_expiry_not_yet_written_off_is_never_held_or_moved_but_a_fact_takes_it() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 2).await;
    // Behind the actor's back (so no write-off is scheduled): 3 units of a lot that expired a
    // second ago, as if its write-off had not run yet.
    tamper(&app.settings, OUTLET, SKU, 3).await;
    let stale = json!([{"lot": "stale", "made_at": 0, "expires_at": chrono::Utc::now().timestamp_millis() - 1000,
        "qty": 3, "held": 0}]);
    tamper_field(&app.settings, OUTLET, |k| &k.lots, SKU, &stale.to_string()).await;

    // Requests see only the 2 good (loose) units.
    let transfer = |qty: i64, lot: Option<&str>| {
        let mut body = json!({"event_id": format!("t-{}", uuid::Uuid::new_v4().simple()),
            "outlet": OUTLET, "sku": SKU, "kind": "transfer", "qty": qty, "at": recent_at(),
            "to_outlet": OTHER_OUTLET});
        if let Some(lot) = lot {
            body["lot"] = json!(lot);
        }
        body
    };
    let res = app.movement(ADMIN, transfer(3, None)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["lines"][0]["available"], 2, "{body}");
    let res = app.movement(ADMIN, transfer(1, Some("stale"))).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let res = app
        .movement(
            ADMIN,
            json!({"event_id": "adj-stale", "outlet": OUTLET, "sku": SKU,
            "kind": "adjustment", "qty": -3, "at": recent_at()}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .reserve(
            &uuid::Uuid::new_v4().to_string(),
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 3}], "ttl_secs": 60}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    // A counter sale of 4 happened: the 2 loose units, then 2 of the stale lot, so that its
    // write-off does not count them again; nothing is short.
    let sale = app
        .moved(
            json!({"event_id": "sale-stale", "outlet": OUTLET, "sku": SKU,
            "kind": "sale_counter", "qty": 4, "at": recent_at()}),
        )
        .await;
    assert_eq!(
        (sale["on_hand"].clone(), sale["shortfall"].clone()),
        (json!(1), Value::Null)
    );
    assert_eq!(
        (
            sale["lots"][0]["lot"].clone(),
            sale["lots"][0]["d_qty"].clone()
        ),
        (json!("stale"), json!(-2))
    );
    // The sale's row told the actor of the lot: it writes off the unit left, once.
    let written_off = eventually(10, || async {
        app.stock(OUTLET, SKU).await["lots"].is_null()
    })
    .await;
    assert!(written_off, "{}", app.stock(OUTLET, SKU).await);
    assert_eq!(app.stock(OUTLET, SKU).await["on_hand"], 0);
    // Wastage naming a lot that is gone is a fact all the same: recorded, and short.
    let waste = app
        .moved(
            json!({"event_id": "waste-stale", "outlet": OUTLET, "sku": SKU,
            "kind": "wastage", "qty": 2, "at": recent_at(), "lot": "stale"}),
        )
        .await;
    assert_eq!(
        (waste["on_hand"].clone(), waste["shortfall"].clone()),
        (json!(-2), json!(2))
    );
    app.finish().await;
}

#[actix_web::test]
async fn a_retried_receipt_answers_as_the_first_time_after_a_shelf_life_edit_or_its_lots_expiry() {
    let app = spawn_app().await;
    let shelf_life = |days: u32| json!({"name": "Soan Papdi 500 g", "category": "sweets", "shelf_life_days": days});
    let edit = app
        .put(&format!("/v1/skus/{SKU2}"), ADMIN, shelf_life(2))
        .await;
    assert_eq!(edit.status(), StatusCode::OK);
    // A lot of its own, from the shelf life; then the shelf life changes and the POS retries.
    let receipt = json!({"event_id": "shelf-retry", "outlet": OUTLET, "sku": SKU2,
        "kind": "receipt", "qty": 4, "at": recent_at()});
    let first = app.moved(receipt.clone()).await;
    let edit = app
        .put(&format!("/v1/skus/{SKU2}"), ADMIN, shelf_life(3))
        .await;
    assert_eq!(edit.status(), StatusCode::OK);
    assert_eq!(app.moved(receipt).await, first);

    // A lot that expires 2 s after it came in; retried after it expired, the same answer.
    let short = json!({"event_id": "short-retry", "outlet": OUTLET, "sku": SKU,
        "kind": "receipt", "qty": 2, "at": recent_at(), "lot": "brief",
        "expires_at": from_now(chrono::Duration::seconds(2))});
    let first = app.moved(short.clone()).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.moved(short).await, first);
    // A new receipt of a lot already past is refused, nothing taken in.
    let late = app
        .movement(
            ADMIN,
            json!({"event_id": "too-late", "outlet": OUTLET, "sku": SKU,
            "kind": "receipt", "qty": 2, "at": recent_at(), "lot": "gone",
            "expires_at": from_now(chrono::Duration::seconds(-1))}),
        )
        .await;
    assert_eq!(late.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(late.json::<Value>().await.unwrap()["field"], "expires_at");
    app.finish().await;
}
