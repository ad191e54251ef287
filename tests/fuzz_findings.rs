//! Regressions for what the API fuzz run (tests/openapi.rs) and the probes that followed it
//! found: answers that were 5xx or wrong for inputs the contract allows.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

/// A signed WhatsApp order whose quantity does not fit an i64 (BSON has no u64) was a 500,
/// which Meta retries; it is now recorded `invalid` and answered 200.
#[actix_web::test]
async fn a_whatsapp_quantity_past_i64_is_recorded_invalid_not_a_500() {
    let app = spawn_app().await;
    let message = json!({"id": "wamid.past-i64", "from": "919800000001", "type": "order",
        "order": {"product_items": [{"product_retailer_id": SKU, "quantity": u64::MAX}]}});
    let body = json!({"entry": [{"changes": [{"value": {"messages": [message]}}]}]});
    let raw = serde_json::to_vec(&body).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(b"demo-app-secret-change-me").unwrap();
    mac.update(&raw);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let res = app
        .http
        .post(format!("{}/v1/webhooks/whatsapp", app.url))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", signature)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let records = documents(&app.settings, "whatsapp_messages").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].get_str("_id").unwrap(), "wamid.past-i64");
    assert_eq!(records[0].get_str("status").unwrap(), "invalid");
    assert!(records[0]
        .get_str("body")
        .unwrap()
        .contains("18446744073709551615"));
    app.finish().await;
}

/// `after_seq` past i64::MAX wrapped to a negative seq and answered the first page.
#[actix_web::test]
async fn a_ledger_page_after_a_seq_past_i64_is_empty() {
    let app = spawn_app().await;
    app.set_stock(OUTLET, SKU, 5).await;
    let page = |after: u64| {
        let app = &app;
        async move {
            let res = app
                .get(
                    &format!("/v1/ledger?outlet={OUTLET}&after_seq={after}"),
                    VIEWER,
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(page(0).await["entries"].as_array().unwrap().len(), 1);
    for after in [u64::MAX, i64::MAX as u64 + 1, i64::MAX as u64] {
        let p = page(after).await;
        assert_eq!(p["entries"], json!([]), "after_seq={after}: {p}");
        assert_eq!(p["next_after_seq"], Value::Null);
    }
    app.finish().await;
}
