//! The inbound messages of a WhatsApp Cloud API webhook body, as much of them as shelfsync
//! reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

/// One inbound message.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub order: Option<Order>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Order {
    #[serde(default)]
    pub product_items: Vec<ProductItem>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProductItem {
    pub product_retailer_id: String,
    /// An integer; older payloads send it as a string.
    pub quantity: Value,
}

/// `entry[].changes[].value.messages[]` of a webhook body (statuses and the rest ignored).
pub fn messages(body: &Value) -> Vec<Message> {
    fn list(v: &Value) -> &[Value] {
        v.as_array().map(Vec::as_slice).unwrap_or(&[])
    }
    let mut out = Vec::new();
    for entry in list(&body["entry"]) {
        for change in list(&entry["changes"]) {
            for m in list(&change["value"]["messages"]) {
                match Message::deserialize(m) {
                    Ok(m) => out.push(m),
                    Err(e) => warn!(error = %e, "a WhatsApp message without an id; skipped"),
                }
            }
        }
    }
    out
}
