//! Overload against a broker with Mosquitto's default limits (20 messages in flight from each
//! client, 1000 queued per client): web holds at 3,000 a second for 20 s, well past what the
//! ledger can take, plus 250 POS counter sales a second over MQTT 5 QoS 1, through the
//! festival simulator. Every sale the broker acknowledged to the publishing till must be in
//! the ledger exactly once, with no oversell and the ledger equal to Redis. The POS apply
//! latency and what was shed are printed, never asserted.

mod common;

use common::*;

#[actix_web::test]
async fn under_thousands_of_holds_a_second_every_acknowledged_pos_sale_lands_exactly_once() {
    shelfsync::init_tracing();
    let broker = Broker::start_with_defaults().await;
    let mut settings = test_settings();
    settings.mqtt.port = broker.port;
    // Stock enough that holds are decided by the ledger's budget, not by running out.
    let stock = roomy_stock(&mut settings, 40, 1_000_000);
    let served = Served::start(&settings).await;

    let run = festival(
        &served.url,
        &settings,
        &[
            "--secs",
            "20",
            "--rate",
            "3000",
            "--spike",
            "1",
            "--pos-rate",
            "250",
            "--whatsapp-rate",
            "0",
            "--movement-rate",
            "0",
            "--sse-clients",
            "0",
            "--skus",
            "40",
            "--confirm-share",
            "0",
            "--cancel-share",
            "0.5",
            "--think-ms",
            "200",
            "--abandon-ttl-secs",
            "5",
            "--inflight-max",
            "6000",
            "--drain-secs",
            "120",
        ],
    )
    .await;
    served.finish(&settings).await;
    let _ = std::fs::remove_dir_all(&stock);

    let report = run.report.expect("the JSON report was written");
    let audit = &report["audit"];
    let service = &report["service"];
    let hold = &report["operations"]["hold"];
    println!(
        "POS apply (send to commit) p50 {} ms, p99 {} ms over {} acknowledged sales; holds offered {}, \
         taken {}, answers {}; the service shed {} holds; ledger lag {} s at most",
        report["pos_apply_ms"]["p50"],
        report["pos_apply_ms"]["p99"],
        audit["pos_acked"],
        hold["offered"],
        hold["ok"],
        hold["statuses"],
        service["holds_shed"],
        service["ledger_lag_max_secs"]
    );
    assert!(run.output.status.success(), "exit {:?}", run.output.status);
    assert_eq!(audit["passed"], true, "{audit:#}");
    assert!(
        audit["pos_acked"].as_u64().unwrap() > 0,
        "the broker acknowledged sales"
    );
    assert_eq!(audit["pos_missing"], 0, "{audit:#}");
    assert_eq!(audit["pos_duplicated"], 0, "{audit:#}");
    assert_eq!(audit["zero_oversells"], true);
    assert_eq!(audit["ledger_equals_redis"], true);
}
