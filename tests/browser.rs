//! A real browser on the dashboard: headless Chromium driven by Playwright (tests/browser/).

mod common;

use common::*;

#[actix_web::test]
async fn the_dashboard_shows_holds_and_records_wastage_in_a_real_browser() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 20).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::path::Path::new(root).join("target/test-output");
    std::fs::create_dir_all(&out).unwrap();
    let shot = out.join("dashboard.png");

    let run = tokio::process::Command::new("node")
        .current_dir(format!("{root}/tests/browser"))
        .arg("dashboard.mjs")
        .args([&app.url, VIEWER, MANAGER_INDORE, STOREFRONT, OUTLET, SKU])
        .arg(&shot)
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
    let stock = app.stock(OUTLET, SKU).await;
    assert_eq!(
        (stock["on_hand"].as_i64(), stock["available"].as_i64()),
        (Some(19), Some(17)),
        "the form's wastage is real"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was saved"
    );
    app.finish().await;
}
