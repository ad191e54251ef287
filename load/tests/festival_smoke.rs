//! Smoke run of `shelfsync-festival` against an in-process shelfsync with its own Redis key
//! prefix, MongoDB database and MQTT topic prefix on the real servers: the run finishes, every
//! operation type ran, and the audit passes. It asserts behaviour, never timings.

use std::time::Duration;

use serde_json::Value;
use shelfsync::settings::BucketSettings;
use shelfsync::{Application, Settings};

/// Settings of the repository's `config.toml` with a fresh prefix, database and port 0.
fn test_settings() -> Settings {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut s = Settings::load(format!("{root}/config.toml").as_ref()).expect("config.toml");
    let id = uuid::Uuid::new_v4().simple().to_string();
    s.http.port = 0;
    s.http.workers = 2;
    s.redis.key_prefix = format!("test-{}", &id[..12]);
    s.mongo.database = format!("shelfsync_test_{}", &id[..12]);
    s.mqtt.topic_prefix = format!("test-{}/", &id[..12]);
    s.mqtt.client_id = format!("shelfsync-test-{}", &id[..12]);
    s.mqtt.reconnect_delay_max_ms = 1000;
    s.ledger.poll_interval_ms = 200;
    // The simulator reads with the admin key and holds with the storefront key.
    let roomy = BucketSettings {
        per_sec: 100_000.0,
        burst: 100_000,
    };
    s.rate_limits.admin = roomy;
    s.rate_limits.storefront = roomy;
    for f in [
        &mut s.catalogue.outlets_file,
        &mut s.catalogue.skus_file,
        &mut s.catalogue.stock_file,
        &mut s.catalogue.zones_file,
    ] {
        *f = std::path::Path::new(root).join(&*f);
    }
    s
}

/// Removes what the test left on the shared servers.
async fn cleanup(settings: &Settings) {
    let client = redis::Client::open(settings.redis.url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", settings.redis.key_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let client = mongodb::Client::with_uri_str(settings.mongo.uri.expose())
        .await
        .unwrap();
    let _ = client.database(&settings.mongo.database).drop().await;
}

#[actix_web::test]
async fn a_short_festival_run_passes_its_audit() {
    shelfsync::init_tracing();
    let settings = test_settings();
    // The demo chain's opening stock, through the normal import path.
    shelfsync::import::run(settings.clone(), false)
        .await
        .expect("import");
    let app = Application::build(settings.clone())
        .await
        .expect("app builds");
    let url = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let done = actix_web::rt::spawn(app.run_until_stopped());

    let out = std::env::temp_dir().join(format!(
        "festival-smoke-{}.json",
        uuid::Uuid::new_v4().simple()
    ));
    let bin = env!("CARGO_BIN_EXE_shelfsync-festival");
    let (url2, prefix, out2) = (url.clone(), settings.mqtt.topic_prefix.clone(), out.clone());
    // The binary runs while this runtime keeps serving.
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["--url", &url2, "--topic-prefix", &prefix])
            .args(["--secs", "5", "--rate", "50", "--spike", "1"])
            .args([
                "--pos-rate",
                "4",
                "--whatsapp-rate",
                "2",
                "--movement-rate",
                "2",
            ])
            .args(["--sse-clients", "20"])
            .args([
                "--skus",
                "12",
                "--think-ms",
                "200",
                "--abandon-ttl-secs",
                "2",
            ])
            .arg("--out")
            .arg(&out2)
            .output()
            .expect("running shelfsync-festival")
    });
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the run stops by itself")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");

    let report: Option<Value> = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(&out);
    let png = out.with_extension("png");
    let plotted = std::fs::read(&png).unwrap_or_default();
    let _ = std::fs::remove_file(&png);
    handle.stop().await;
    done.await.expect("app task").expect("clean shutdown");
    cleanup(&settings).await;

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
    // Holds left to expire did expire within the run.
    let kinds = &audit["run_documents_by_kind"];
    for kind in [
        "reservation_held",
        "reservation_released",
        "sale_web",
        "sale_counter",
    ] {
        assert!(kinds[kind].as_u64().unwrap_or(0) > 0, "no {kind}: {kinds}");
    }
}
