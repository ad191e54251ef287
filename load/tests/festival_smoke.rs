//! Smoke run of `shelfsync-festival` against an in-process shelfsync with its own Redis key
//! prefix, MongoDB database and MQTT topic prefix on the real servers: the run finishes, every
//! operation type ran, and the audit passes. It asserts behaviour, never timings.

mod common;

use common::*;

#[actix_web::test]
async fn a_short_festival_run_passes_its_audit() {
    shelfsync::init_tracing();
    let settings = test_settings();
    // The demo chain's opening stock.
    let served = Served::start(&settings).await;

    let run = festival(
        &served.url,
        &settings,
        &[
            "--secs",
            "5",
            "--rate",
            "50",
            "--spike",
            "1",
            "--pos-rate",
            "4",
            "--whatsapp-rate",
            "2",
            "--movement-rate",
            "4",
            "--lot-secs",
            "2",
            "--sse-clients",
            "20",
            "--skus",
            "12",
            "--think-ms",
            "200",
            "--abandon-ttl-secs",
            "2",
        ],
    )
    .await;
    let (output, report, plotted) = (run.output, run.report, run.png);
    served.finish(&settings).await;

    assert!(output.status.success(), "exit {:?}", output.status);
    let report = report.expect("the JSON report was written");
    let audit = &report["audit"];
    assert_eq!(audit["passed"], true, "{audit:#}");
    assert_eq!(audit["zero_oversells"], true);
    assert_eq!(audit["ledger_oversells"], 0);
    assert_eq!(
        audit["oversell_units_metric"]["before"],
        audit["oversell_units_metric"]["after"]
    );
    assert_eq!(audit["ledger_equals_redis"], true);
    assert_eq!(audit["mismatches"], 0);
    assert!(audit["skus_compared"].as_u64().unwrap() > 0);
    assert_eq!(audit["pos_exactly_once"], true);
    assert!(audit["pos_acked"].as_u64().unwrap() > 0);
    assert_eq!(audit["pos_missing"], 0);
    assert_eq!(audit["pos_duplicated"], 0);
    for op in [
        "hold", "confirm", "cancel", "movement", "pos_sale", "whatsapp",
    ] {
        let ok = report["operations"][op]["ok"].as_u64().unwrap_or(0);
        assert!(
            ok > 0,
            "{op} never succeeded: {:#}",
            report["operations"][op]
        );
    }
    // Every browser got its snapshot, and both push channels delivered values of the run's
    // own ledger documents (matched by outlet and seq).
    let push = &report["push"];
    assert_eq!(push["sse_connected"], 20, "{push:#}");
    for channel in ["push_sse", "push_mqtt"] {
        let matched = push["latency"][channel]["matched_receipts"].as_u64();
        assert!(matched.unwrap_or(0) > 0, "{channel}: {push:#}");
    }
    // The service's CPU and memory were sampled, and the plot was drawn.
    let service = &report["service"];
    assert!(
        service["rss_mb_max"].as_f64().unwrap_or(0.0) > 0.0,
        "{service:#}"
    );
    assert!(plotted.starts_with(b"\x89PNG"), "no plot was written");
    // Deliveries came in lots: some expired within the run, each written off once, and no
    // unit of an expired lot was held or sold.
    let lots = &audit["lots"];
    assert_eq!(lots["no_expired_unit_held_or_sold"], true, "{lots:#}");
    assert!(lots["lot_expiries"].as_u64().unwrap_or(0) > 0, "{lots:#}");
    // The long-lived ones came in as lots by the SKUs' shelf lives (set by the simulator).
    assert!(
        lots["shelf_life_lots"].as_u64().unwrap_or(0) > 0,
        "{lots:#}"
    );
    let taken =
        lots["lot_units_held"].as_i64().unwrap_or(0) + lots["lot_units_out"].as_i64().unwrap_or(0);
    assert!(taken > 0, "no hold or sale took a lot's units: {lots:#}");
    // Holds left to expire did expire within the run.
    let kinds = &audit["run_documents_by_kind"];
    for kind in [
        "reservation_held",
        "reservation_released",
        "sale_web",
        "sale_counter",
        "expiry",
    ] {
        assert!(kinds[kind].as_u64().unwrap_or(0) > 0, "no {kind}: {kinds}");
    }
}
