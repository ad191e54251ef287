//! The reconciler, checkpoints, `shelfsync rebuild` and `shelfsync check`.

mod common;

use common::*;
use mongodb::bson::{doc, Document};
use reqwest::StatusCode;
use serde_json::json;
use shelfsync::domain::OutletId;
use shelfsync::ledger::{Ledger, Pace};

#[actix_web::test]
async fn a_clean_outlet_shows_no_drift_and_gets_a_checkpoint() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 40).await;
    let hold = app.hold(OUTLET, SKU, 3, 300).await;

    let report = app.reconcile().await;

    assert_eq!(report.drifted_skus(), 0, "{report:?}");
    let outlet = report
        .outlets
        .iter()
        .find(|o| o.outlet.as_str() == OUTLET)
        .unwrap();
    assert!(outlet.skipped.is_none(), "{outlet:?}");
    assert_eq!(outlet.seq, 2);
    let ledger = Ledger::connect(&app.settings.mongo).await.unwrap();
    let checkpoints = shelfsync::checkpoint::Checkpoints::new(&ledger);
    let (head, cp) = checkpoints
        .latest(&OutletId::parse("o", OUTLET).unwrap())
        .await
        .unwrap()
        .expect("a checkpoint after the pass");
    assert_eq!(head.seq, 2);
    assert_eq!(cp.counters[&sku(SKU)].on_hand, 40);
    assert_eq!(cp.counters[&sku(SKU)].reserved, 3);
    let held: Vec<_> = cp.live_holds().map(|r| r.id.to_string()).collect();
    assert_eq!(held, [hold["id"].as_str().unwrap()]);
    assert!(documents(&app.settings, "drift").await.is_empty());
    app.finish().await;
}

fn sku(s: &str) -> shelfsync::domain::Sku {
    shelfsync::domain::Sku::parse("sku", s).unwrap()
}

#[actix_web::test]
async fn drift_is_reported_recorded_and_healed_through_the_outlet() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 40).await;
    app.set_stock(OUTLET, SKU2, 10).await;
    tamper(&app.settings, OUTLET, SKU, 7).await;

    let report = app.reconcile().await;

    let outlet = report
        .outlets
        .iter()
        .find(|o| o.outlet.as_str() == OUTLET)
        .unwrap();
    assert_eq!(outlet.drift.len(), 1, "{outlet:?}");
    let d = &outlet.drift[0];
    assert_eq!(d.sku.as_str(), SKU);
    assert_eq!((d.redis_on_hand, d.ledger_on_hand), (47, 40));
    assert!(outlet.healed);
    assert_eq!(
        redis_snapshot(&app.settings, OUTLET).await.counters[&sku(SKU)].on_hand,
        40
    );
    let docs = documents(&app.settings, "drift").await;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].get_str("outlet").unwrap(), OUTLET);
    assert!(docs[0].get_bool("healed").unwrap());
    let metrics = app.get("/metrics", ADMIN).await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "shelfsync_reconciler_healed_skus_total{{outlet=\"{OUTLET}\"}} 1"
        )),
        "{metrics}"
    );

    // Healed means the next pass finds nothing, and the outlet still sells correctly.
    assert_eq!(app.reconcile().await.drifted_skus(), 0);
    app.hold(OUTLET, SKU, 40, 300).await;
    let res = app
        .reserve(
            "one-too-many",
            json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    app.finish().await;
}

#[actix_web::test]
async fn with_heal_off_drift_is_only_reported() {
    let mut settings = test_settings();
    settings.reconciler.heal = false;
    let app = spawn_app_with(settings).await;
    app.set_stock(OUTLET, SKU, 5).await;
    tamper(&app.settings, OUTLET, SKU, -2).await;

    let first = app.reconcile().await;
    let second = app.reconcile().await;

    for report in [first, second] {
        let outlet = report
            .outlets
            .iter()
            .find(|o| o.outlet.as_str() == OUTLET)
            .unwrap();
        assert_eq!(outlet.drift.len(), 1);
        assert!(!outlet.healed);
    }
    assert_eq!(
        redis_snapshot(&app.settings, OUTLET).await.counters[&sku(SKU)].on_hand,
        3
    );
    app.finish().await;
}

#[actix_web::test]
async fn check_is_clean_then_names_drift_then_a_gap_and_rebuild_repairs_redis() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 30).await;
    for _ in 0..3 {
        app.hold(OUTLET, SKU, 2, 300).await;
    }
    app.set_stock(OTHER_OUTLET, SKU2, 9).await;
    let settings = app.stop().await;

    let clean = cli(&settings, &["check"]);
    let out = String::from_utf8_lossy(&clean.stdout);
    assert!(clean.status.success(), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");

    tamper(&settings, OUTLET, SKU, 5).await;
    let drifted = cli(&settings, &["check"]);
    let out = String::from_utf8_lossy(&drifted.stdout);
    assert_eq!(drifted.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "{OUTLET}: {SKU} Redis on_hand 35 reserved 6, ledger on_hand 30 reserved 6"
        )),
        "{out}"
    );

    let rebuilt = cli(&settings, &["rebuild", "--outlet", OUTLET]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let after = cli(&settings, &["check"]);
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    assert_eq!(
        redis_snapshot(&settings, OUTLET).await.counters[&sku(SKU)].on_hand,
        30
    );
    assert_eq!(redis_snapshot(&settings, OUTLET).await.held.len(), 3);

    database(&settings)
        .await
        .collection::<Document>("ledger")
        .delete_one(doc! {"_id": format!("{OUTLET}:2")})
        .await
        .unwrap();
    let gap = cli(&settings, &["check"]);
    let out = String::from_utf8_lossy(&gap.stdout);
    assert_eq!(gap.status.code(), Some(1), "{out}");
    assert!(out.contains("seq 2 is missing"), "{out}");
    cleanup(&settings).await;
}

#[actix_web::test]
async fn rebuild_from_a_checkpoint_equals_folding_the_whole_ledger() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 50).await;
    app.set_stock(OUTLET, SKU2, 50).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            app.hold(OUTLET, if i % 2 == 0 { SKU } else { SKU2 }, 1, 300)
                .await,
        );
    }
    app.reconcile().await; // checkpoint at seq 8
    let id = ids[0]["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/reservations/{id}/confirm"),
            STOREFRONT,
            json!({"payment_ref": "pay-1"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    app.set_stock(OUTLET, SKU2, 12).await;
    let settings = app.stop().await;

    let ledger = ledger(&settings).await;
    let outlet = OutletId::parse("o", OUTLET).unwrap();
    let from_cp =
        shelfsync::rebuild::load_projection(&ledger, &outlet, true, None, Pace::FULL, |_| {})
            .await
            .unwrap();
    let full =
        shelfsync::rebuild::load_projection(&ledger, &outlet, false, None, Pace::FULL, |_| {})
            .await
            .unwrap();

    assert_eq!(from_cp.checkpoint_seq, Some(8));
    assert_eq!(from_cp.folded, 2);
    assert_eq!(full.checkpoint_seq, None);
    assert_eq!(full.folded, 10);
    assert_eq!(from_cp.projection, full.projection);

    wipe_redis(&settings).await;
    let out = cli(&settings, &["rebuild"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(OUTLET), "{text}");
    let check = cli(&settings, &["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    cleanup(&settings).await;
}

#[actix_web::test]
async fn a_reservation_read_while_redis_lost_the_outlet_is_never_not_found() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    let body = json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 4}], "ttl_secs": 300});
    let res = app.reserve("idem-lost-1", body.clone()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let hold: serde_json::Value = res.json().await.unwrap();
    let id = hold["id"].as_str().unwrap().to_owned();
    // The hold reaches the ledger, then Redis loses everything.
    assert!(
        eventually(10, || async {
            ledger_projection(&app.settings, OUTLET).await.seq == 2
        })
        .await
    );
    wipe_redis(&app.settings).await;

    let first = app.get(&format!("/v1/reservations/{id}"), STOREFRONT).await;
    assert!(
        matches!(
            first.status(),
            StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
        ),
        "{}",
        first.status()
    );
    assert!(
        eventually(10, || async {
            app.get(&format!("/v1/reservations/{id}"), STOREFRONT)
                .await
                .status()
                == StatusCode::OK
        })
        .await
    );
    assert_eq!(app.reservation(&id).await["status"], "held");
    assert_eq!(app.reconcile().await.drifted_skus(), 0);
    // The rebuild restored the Idempotency-Key and its chain-wide claim.
    let replay = app.reserve("idem-lost-1", body).await;
    assert!(replay.status().is_success(), "{}", replay.status());
    let replay: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], hold["id"]);
    let elsewhere =
        json!({"outlet": OTHER_OUTLET, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 300});
    assert_eq!(
        app.reserve("idem-lost-1", elsewhere).await.status(),
        StatusCode::CONFLICT
    );
    app.finish().await;
}

#[actix_web::test]
async fn requests_racing_a_rebuild_get_a_right_answer_or_503() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 10).await;
    app.hold(OUTLET, SKU, 4, 300).await;
    assert!(
        eventually(10, || async {
            ledger_projection(&app.settings, OUTLET).await.seq == 2
        })
        .await
    );
    wipe_redis(&app.settings).await;

    let body = json!({"outlet": OUTLET, "lines": [{"sku": SKU, "qty": 1}], "ttl_secs": 300});
    let keys: Vec<String> = (0..20).map(|i| format!("race-{i}")).collect();
    let answers =
        futures_util::future::join_all(keys.iter().map(|k| app.reserve(k, body.clone()))).await;

    let mut held = 0;
    for res in answers {
        match res.status() {
            StatusCode::CREATED => held += 1,
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(held <= 6, "{held} holds of 1 with 6 available");
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(stock["reserved"], 4 + held);
    assert_eq!(app.reconcile().await.drifted_skus(), 0);
    app.finish().await;
}
