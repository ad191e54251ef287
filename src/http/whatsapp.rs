//! The WhatsApp Cloud API webhook (API.md, WhatsApp).
//!
//! `GET` answers Meta's verification challenge. `POST` accepts only a body whose
//! `X-Hub-Signature-256` is `sha256=` + the hex HMAC-SHA256 of the raw body under the app
//! secret (compared in constant time), answers 200 at once, and hands the messages to a
//! bounded queue; a worker turns each `order` message into a reservation, with the message
//! id as its idempotency key, so a redelivered webhook makes no second hold. Every message
//! (held, out of stock, unknown SKU, not an order) is recorded in `whatsapp_messages`,
//! once per message id.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use mongodb::bson::{doc, Document};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::error::ApiError;
use super::reservations::{place, Hold, Target};
use super::{read_body, AppState};
use crate::domain::{digest, now_ms, Channel, IdempotencyKey, Line, Qty, Sku};
use crate::services::Services;
use crate::zones::Pin;

const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
const MESSAGES: &str = "whatsapp_messages";

#[derive(Deserialize)]
pub struct Verify {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /v1/webhooks/whatsapp`: the challenge back when the token matches, else 403.
pub async fn verify(
    state: web::Data<AppState>,
    query: web::Query<Verify>,
) -> Result<HttpResponse, ApiError> {
    let expected = state.settings.whatsapp.verify_token.expose();
    let token_ok = query.verify_token.as_deref().is_some_and(|t| {
        // Constant time, like the signature.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"verify").expect("any key length");
        mac.update(t.as_bytes());
        let mut other = Hmac::<Sha256>::new_from_slice(b"verify").expect("any key length");
        other.update(expected.as_bytes());
        mac.verify_slice(&other.finalize().into_bytes()).is_ok()
    });
    match (query.mode.as_deref(), token_ok, &query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge.clone())),
        _ => Err(ApiError::Forbidden(
            "the verify token does not match".into(),
        )),
    }
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// One inbound message, as much of it as shelfsync reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub order: Option<Order>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Order {
    #[serde(default)]
    pub product_items: Vec<ProductItem>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProductItem {
    pub product_retailer_id: String,
    /// An integer; older payloads send it as a string.
    pub quantity: Value,
}

/// `entry[].changes[].value.messages[]` of a webhook body (statuses and the rest ignored).
fn messages(body: &Value) -> Vec<Message> {
    let mut out = Vec::new();
    let entries = body["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for entry in entries {
        let changes = entry["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for change in changes {
            let msgs = change["value"]["messages"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for m in msgs {
                match serde_json::from_value::<Message>(m.clone()) {
                    Ok(m) => out.push(m),
                    Err(e) => warn!(error = %e, "a WhatsApp message without an id; skipped"),
                }
            }
        }
    }
    out
}

/// `POST /v1/webhooks/whatsapp`.
pub async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, &state).await?;
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let secret = state.settings.whatsapp.app_secret.expose().as_bytes();
    if !signature_ok(secret, &body, header) {
        return Err(ApiError::Unauthorized);
    }
    // Signed but not JSON: nothing to do, and a retry would not help.
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        warn!("a signed WhatsApp webhook that is not JSON; ignored");
        return Ok(HttpResponse::Ok().finish());
    };
    let messages = messages(&json);
    if !messages.is_empty() {
        state.whatsapp.try_send(messages).map_err(|_| {
            ApiError::Unavailable("too many WhatsApp orders waiting; retry later".into())
        })?;
    }
    Ok(HttpResponse::Ok().finish())
}

/// The queue between the webhook and the worker.
pub type Queue = mpsc::Sender<Vec<Message>>;

/// Starts the worker that turns queued messages into reservations.
pub fn start(services: Arc<Services>) -> Queue {
    let (tx, mut rx) = mpsc::channel::<Vec<Message>>(services.settings.whatsapp.queue_max.max(1));
    actix_web::rt::spawn(async move {
        while let Some(batch) = rx.recv().await {
            for m in batch {
                handle(&services, &m).await;
            }
        }
    });
    tx
}

/// What became of a message, as recorded.
fn outcome(status: &str, detail: Option<Value>) -> Document {
    let mut d = doc! {"status": status};
    if let Some(Value::Object(map)) = detail {
        for (k, v) in map {
            if let Ok(b) = mongodb::bson::to_bson(&v) {
                d.insert(k, b);
            }
        }
    }
    d
}

async fn handle(services: &Services, m: &Message) {
    let result = match (&m.kind[..], &m.order) {
        ("order", Some(order)) => order_to_hold(services, m, order).await,
        _ => outcome(
            "ignored",
            Some(serde_json::json!({"reason": format!("a {} message, not an order", m.kind)})),
        ),
    };
    info!(message = %m.id, status = %result.get_str("status").unwrap_or("?"), "WhatsApp message");
    let mut record = doc! {"from": &m.from, "type": &m.kind, "at_ms": now_ms()};
    record.extend(result);
    // Once per message id: a redelivery keeps the first record.
    let write = services
        .ledger
        .database()
        .collection::<Document>(MESSAGES)
        .update_one(doc! {"_id": &m.id}, doc! {"$setOnInsert": record})
        .upsert(true)
        .await;
    if let Err(e) = write {
        warn!(message = %m.id, error = %e, "recording a WhatsApp message failed");
    }
}

async fn order_to_hold(services: &Services, m: &Message, order: &Order) -> Document {
    let limits = &services.settings.reservations;
    let mut lines = Vec::new();
    for (i, item) in order.product_items.iter().enumerate() {
        let Ok(sku) = services
            .catalogue
            .known_sku("sku", &item.product_retailer_id)
        else {
            return outcome(
                "unknown_sku",
                Some(serde_json::json!({"sku": item.product_retailer_id})),
            );
        };
        let qty = match &item.quantity {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        let Some(qty) = qty.and_then(|q| {
            Qty::parse(&format!("product_items[{i}].quantity"), q, limits.qty_max).ok()
        }) else {
            return outcome(
                "invalid",
                Some(
                    serde_json::json!({"reason": "a quantity is not a positive integer within bounds"}),
                ),
            );
        };
        merge(&mut lines, sku, qty);
    }
    if lines.is_empty() || lines.len() > limits.lines_max {
        return outcome(
            "invalid",
            Some(serde_json::json!({"reason": "an order needs 1 to lines_max products"})),
        );
    }
    let wa = &services.settings.whatsapp;
    let target = match wa.senders.get(&m.from).map(|p| Pin::parse("pin", p)) {
        Some(Ok(pin)) => {
            let serving = services.zones.serving(&pin);
            if serving.is_empty() {
                return outcome(
                    "invalid",
                    Some(serde_json::json!({"reason": "no outlet delivers to the sender's PIN"})),
                );
            }
            Target::Pin(pin, serving)
        }
        _ => match services
            .catalogue
            .known_outlet("default_outlet", &wa.default_outlet)
        {
            Ok(o) => Target::Outlet(o),
            Err(e) => {
                return outcome(
                    "invalid",
                    Some(serde_json::json!({"reason": e.to_string()})),
                )
            }
        },
    };
    // Message ids carry characters idempotency keys do not allow: the key is their digest.
    let idem = IdempotencyKey::parse("id", &format!("wa-{}", digest(m.id.as_bytes())))
        .expect("a hex digest is a valid key");
    let customer_ref = (!m.from.is_empty()).then(|| format!("whatsapp:{}", m.from));
    let hold = Hold::new(
        &target,
        idem,
        lines,
        Channel::Whatsapp,
        wa.ttl_secs as i64,
        customer_ref,
    );
    match place(services, target, &hold).await {
        Ok(held) => outcome(
            "held",
            Some(serde_json::json!({"reservation": held["id"], "outlet": held["outlet"]})),
        ),
        Err(ApiError::OutOfStock { lines, .. }) => {
            outcome("out_of_stock", Some(serde_json::json!({"lines": lines})))
        }
        Err(e) => outcome("failed", Some(serde_json::json!({"reason": e.to_string()}))),
    }
}

/// Adds `qty` of `sku` to the cart, merging a SKU listed twice.
fn merge(lines: &mut Vec<Line>, sku: Sku, qty: Qty) {
    match lines.iter_mut().find(|l| l.sku == sku) {
        Some(l) => {
            if let Ok(sum) = Qty::parse("qty", l.qty.get() + qty.get(), i64::MAX) {
                l.qty = sum;
            }
        }
        None => lines.push(Line { sku, qty }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_ok(b"s3cret", body, Some(&good)));
        assert!(!signature_ok(b"other", body, Some(&good)));
        assert!(!signature_ok(b"s3cret", b"{}", Some(&good)));
        assert!(!signature_ok(
            b"s3cret",
            body,
            Some(good.trim_start_matches("sha256="))
        ));
        assert!(!signature_ok(b"s3cret", body, None));
    }
}
