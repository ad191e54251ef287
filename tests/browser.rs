//! A real browser on the dashboard: headless Chromium driven by Playwright (tests/browser/).

mod common;

use common::*;

/// Where the screenshots `names` go (target/test-output).
fn screenshots<const N: usize>(names: [&str; N]) -> [std::path::PathBuf; N] {
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-output");
    std::fs::create_dir_all(&out).unwrap();
    names.map(|n| out.join(n))
}

/// Runs the Playwright script `script` of tests/browser/ with `args` and then the screenshot
/// paths `shots`; asserts it succeeded and saved each screenshot.
async fn drive(script: &str, args: &[&str], shots: &[&std::path::PathBuf]) {
    let run = tokio::process::Command::new("node")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
        .arg(script)
        .args(args)
        .args(shots)
        .output()
        .await
        .expect("node runs (make test installs node_modules and chromium)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{stdout}");
    for shot in shots {
        assert!(
            std::fs::metadata(shot).unwrap().len() > 10_000,
            "{shot:?} was saved"
        );
    }
}

#[actix_web::test]
async fn the_dashboard_shows_holds_and_records_wastage_in_a_real_browser() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 20).await;
    let [shot] = screenshots(["dashboard.png"]);
    let url = app.url.as_str();
    let args = [url, VIEWER, MANAGER_INDORE, STOREFRONT, OUTLET, SKU];
    drive("dashboard.mjs", &args, &[&shot]).await;
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["available"].as_i64()),
        (Some(19), Some(17)),
        "the form's wastage is real"
    );
    app.finish().await;
}

#[actix_web::test]
async fn the_war_room_and_the_kitchen_view_show_the_chain_in_a_real_browser() {
    tokio::time::timeout(std::time::Duration::from_secs(180), async {
        let app = spawn_app().await;
        // A SKU that sells 6 an hour with 90 left, then 81 sold now: 9 last 1.5 hours, inside
        // the 2-hour horizon, so it is on the sell-out list; another down to 2, low stock.
        app.six_an_hour(OUTLET, SKU, 90).await;
        let sold = 81;
        app.moved(
            serde_json::json!({"event_id": "rush", "outlet": OUTLET, "sku": SKU,
            "kind": "sale_counter", "qty": sold, "at": recent_at()}),
        )
        .await;
        app.set_stock(OUTLET, SKU2, 2).await;
        // A till's message over MQTT: the outlet's POS link is seen.
        assert!(mqtt_ready(&app).await);
        let pos = MqttClient::connect(app.settings.mqtt.port).await;
        let topic =
            shelfsync::mqtt::topics::Topics::new(&app.settings.mqtt.topic_prefix).pos(OUTLET);
        app.set_stock(OUTLET, SKU3, 10).await;
        pos.publish(
            &topic,
            serde_json::json!({"event_id": "till-1", "sku": SKU3,
            "kind": "sale_counter", "qty": 1, "at": recent_at()})
            .to_string(),
        )
        .await;
        assert!(
            eventually(10, || async {
                app.stock(OUTLET, SKU3).await["on_hand"] == 9
            })
            .await
        );
        // The engine reads each outlet's history a few seconds after it owns it, one a second.
        let alerts = eventually(45, || async {
            let body: serde_json::Value = app.get("/v1/alerts", VIEWER).await.json().await.unwrap();
            let kinds: Vec<(String, String)> = (body["alerts"].as_array().unwrap().iter())
                .map(|a| {
                    (
                        a["kind"].as_str().unwrap().into(),
                        a["sku"].as_str().unwrap().into(),
                    )
                })
                .collect();
            kinds.contains(&("sell_out".into(), SKU.into()))
                && kinds.contains(&("low_stock".into(), SKU2.into()))
        })
        .await;
        assert!(alerts, "the alerts were not raised");

        let [war, kitchen] = screenshots(["war-room.png", "kitchen.png"]);
        let sold = sold.to_string();
        let args = [
            app.url.as_str(),
            VIEWER,
            MANAGER_INDORE,
            OUTLET,
            SKU,
            SKU2,
            &sold,
        ];
        drive("war_room.mjs", &args, &[&war, &kitchen]).await;
        // The number typed into the kitchen view is the plan's.
        let plan: serde_json::Value = (app
            .get(&format!("/v1/kitchen/plan?outlet={OUTLET}"), VIEWER)
            .await)
            .json()
            .await
            .unwrap();
        let row = (plan["rows"].as_array().unwrap().iter())
            .find(|r| r["sku"] == SKU)
            .unwrap();
        assert_eq!(
            row["cook"]["qty"].as_i64(),
            row["suggested"].as_i64().map(|s| s + 3),
            "{row}"
        );
        assert_eq!(row["cook"]["by"], "demo Indore manager");
        app.finish().await;
    })
    .await
    .expect("the test took over 180 s");
}
