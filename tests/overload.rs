//! Overload: the ledger's lag has a budget. Past it an outlet sheds new holds (503 with
//! `Retry-After`, nothing changed) and still takes facts, cancels and confirms; other outlets
//! are not affected; once the ledger catches up, holds are taken again. The stall is a real
//! one: the test's own SecantusDB, paused with SIGSTOP.

mod common;

use common::procs::*;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn cart(outlet: &str, qty: i64) -> Value {
    json!({"outlet": outlet, "lines": [{"sku": SKU, "qty": qty}], "ttl_secs": 300})
}

fn sale(event_id: &str, qty: i64) -> Value {
    json!({"event_id": event_id, "outlet": OUTLET, "sku": SKU, "kind": "sale_counter",
        "qty": qty, "at": "2026-11-21T09:42:00Z"})
}

/// The outlet's row of `GET /v1/ledger/lag`.
async fn lag_of(app: &TestApp, outlet: &str) -> Value {
    let res = app.get("/v1/ledger/lag", VIEWER).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["outlets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outlet"] == outlet)
        .cloned()
        .unwrap()
}

#[actix_web::test]
async fn past_the_lag_budget_new_holds_are_shed_while_facts_cancels_and_confirms_are_taken() {
    let dir = std::env::temp_dir().join(format!(
        "shelfsync-overload-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let mongo = start_mongo(&dir).await;
    let mut settings = test_settings();
    settings.mongo.uri = mongo_uri(&mongo);
    settings.ledger.lag_max_secs = 1;
    settings.ledger.durable_wait_secs = 3;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 100).await;
    app.set_stock(OTHER_OUTLET, SKU, 100).await;
    let to_cancel = app.hold(OUTLET, SKU, 2, 300).await;
    let to_confirm = app.hold(OUTLET, SKU, 3, 300).await;

    // The ledger stalls; the first change after it starts the outlet's lag.
    mongo.pause();
    let first = app.reserve("while-stalled-1", cart(OUTLET, 1)).await;
    assert_eq!(first.status(), StatusCode::CREATED, "within the budget");
    let over = eventually(10, || async {
        lag_of(&app, OUTLET).await["shedding_holds"] == true
    })
    .await;
    assert!(over, "{}", lag_of(&app, OUTLET).await);
    let lag = lag_of(&app, OUTLET).await;
    let before = app.stock(OUTLET, SKU).await;

    let shed = app.reserve("while-stalled-2", cart(OUTLET, 1)).await;
    let retry_after = shed.headers().get("retry-after").cloned();
    let shed_status = shed.status();
    let shed_body: Value = shed.json().await.unwrap();
    let after_shed = app.stock(OUTLET, SKU).await;
    let elsewhere = app.reserve("while-stalled-3", cart(OTHER_OUTLET, 1)).await;
    let cancelled = app
        .post(
            &format!(
                "/v1/reservations/{}/cancel",
                to_cancel["id"].as_str().unwrap()
            ),
            STOREFRONT,
            json!({}),
        )
        .await;
    let cancelled_status = cancelled.status();
    let cancelled_body: Value = cancelled.json().await.unwrap();
    // A fact and a confirm are applied now and answered once durable: not within 3 s here.
    let sold = app.movement(POS_VIJAY_NAGAR, sale("stalled-sale", 4)).await;
    let confirm_path = format!(
        "/v1/reservations/{}/confirm",
        to_confirm["id"].as_str().unwrap()
    );
    let confirmed = app
        .post(
            &confirm_path,
            STOREFRONT,
            json!({"payment_ref": "pay-stalled"}),
        )
        .await;
    let during = app.stock(OUTLET, SKU).await;
    let lag_metric = metric(
        &app,
        &format!(r#"shelfsync_ledger_lag_seconds{{outlet="{OUTLET}"}}"#),
    )
    .await;

    mongo.resume();
    let taken_again = eventually(20, || async {
        app.reserve("while-stalled-2", cart(OUTLET, 1))
            .await
            .status()
            == StatusCode::CREATED
    })
    .await;
    let sold_again = app.movement(POS_VIJAY_NAGAR, sale("stalled-sale", 4)).await;
    let confirmed_again = app
        .post(
            &confirm_path,
            STOREFRONT,
            json!({"payment_ref": "pay-stalled"}),
        )
        .await;
    let shed_count = metric(
        &app,
        &format!(
            r#"shelfsync_shed_total{{outlet="{OUTLET}",operation="hold",reason="ledger_lag"}}"#
        ),
    )
    .await;
    let caught_up = lag_of(&app, OUTLET).await;
    let end = app.stock(OUTLET, SKU).await;
    app.finish().await;
    drop(mongo);
    let _ = std::fs::remove_dir_all(&dir);

    assert!(lag["entries"].as_u64().unwrap() >= 1, "{lag}");
    assert!(lag["age_secs"].as_f64().unwrap() > 1.0, "{lag}");
    assert_eq!(shed_status, StatusCode::SERVICE_UNAVAILABLE, "{shed_body}");
    assert_eq!(shed_body["error"], "unavailable");
    let retry_after: u64 = retry_after
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(after_shed, before, "a shed hold changes nothing");
    assert_eq!(
        elsewhere.status(),
        StatusCode::CREATED,
        "another outlet's ledger is not behind"
    );
    assert_eq!(cancelled_status, StatusCode::OK, "a cancel is still taken");
    assert_eq!(cancelled_body["status"], "cancelled");
    assert_eq!(
        sold.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "recorded, not yet durable"
    );
    assert_eq!(confirmed.status(), StatusCode::SERVICE_UNAVAILABLE);
    // 100 - 4 sold; held: 1 (first) + 3 (now sold on the web) - the cancelled 2 are back.
    assert_eq!(
        during["on_hand"],
        96 - 3,
        "the sale and the confirm were applied"
    );
    assert_eq!(during["reserved"], 1);
    assert!(lag_metric > 1.0, "the lag is exported: {lag_metric}");
    assert!(
        taken_again,
        "holds are taken again once the ledger caught up"
    );
    assert_eq!(sold_again.status(), StatusCode::CREATED);
    assert_eq!(confirmed_again.status(), StatusCode::OK);
    assert!(shed_count >= 1.0);
    assert_eq!(caught_up["shedding_holds"], false, "{caught_up}");
    assert_eq!(end["reserved"], 2, "the first hold and the retried one");
}

/// Sent straight to the outlet's actor, in one go: 40 customer holds and then a counter sale,
/// with one operation per Redis round trip so that they queue. Holds may take only half of the
/// queue (2 of 4 here): the rest are refused as overload, never as a full queue, and the sale
/// finds room whatever the interleaving.
#[actix_web::test]
async fn new_holds_fill_at_most_half_of_an_outlets_queue_and_a_fact_finds_the_rest() {
    use shelfsync::actors::outlet::{ApplyMovement, OutletError, Reserve};
    use shelfsync::domain::{Channel, IdempotencyKey, LedgerKind, Line, OutletId, Qty, Sku};

    let mut settings = test_settings();
    settings.outlet.pending_max = 4;
    settings.outlet.batch_size_max = 1;
    let core = shelfsync::app::Core::start(settings.clone())
        .await
        .expect("core starts");
    let outlet = OutletId::parse("o", OUTLET).unwrap();
    let addr = core.services.outlet(&outlet).unwrap();
    let sku = Sku::parse("sku", SKU).unwrap();
    let movement = |kind, qty, id: &str| ApplyMovement {
        key: id.to_owned(),
        hash: id.to_owned(),
        kind,
        sku: sku.clone(),
        qty,
        event_id: id.to_owned(),
        event_at_ms: 1_795_000_000_000,
        note: None,
        counterpart: None,
        lot: None,
        lots: Vec::new(),
        by: "test".into(),
    };
    addr.send(movement(LedgerKind::Count, 1000, "count-1"))
        .await
        .unwrap()
        .expect("stock counted");

    let holds: Vec<_> = (0..40)
        .map(|i| {
            addr.send(Reserve {
                sheddable: true,
                idem: IdempotencyKey::parse("k", &format!("flood-{i}")).unwrap(),
                hash: format!("hash-{i}"),
                lines: vec![Line {
                    sku: sku.clone(),
                    qty: Qty::parse("qty", 1, 10).unwrap(),
                }],
                ttl_ms: 300_000,
                channel: Channel::Web,
                customer_ref: None,
                pin: None,
                by: "test".into(),
            })
        })
        .collect();
    let sale = addr.send(movement(LedgerKind::SaleCounter, 1, "sale-1"));
    let holds = futures_util::future::join_all(holds).await;
    let sale = sale.await.unwrap();
    core.shutdown().await.expect("clean shutdown");
    cleanup(&settings).await;

    let overloaded = holds
        .iter()
        .filter(|r| matches!(r, Ok(Err(OutletError::Overloaded(_)))))
        .count();
    let unavailable = holds
        .iter()
        .filter(|r| matches!(r, Ok(Err(OutletError::Unavailable(_)))))
        .count();
    let held = holds.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert!(overloaded > 0, "holds past half the queue are refused");
    assert!(held > 0, "holds within half the queue are taken");
    assert_eq!(unavailable, 0, "no hold met a full queue");
    assert!(sale.is_ok(), "the counter sale found room: {sale:?}");
}
