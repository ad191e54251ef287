//! The WhatsApp Cloud API webhook (API.md, WhatsApp).
//!
//! `GET` answers Meta's verification challenge. `POST` accepts only a body whose
//! `X-Hub-Signature-256` is `sha256=` + the hex HMAC-SHA256 of the raw body under the app
//! secret (compared in constant time), records every message as `queued` in
//! `whatsapp_messages` (once per message id) and answers 200; a worker, fed by a bounded
//! queue and by a sweep of what is still `queued` (after a restart, a full queue, or a store
//! that was down), turns each `order` message into a reservation with the message id as its
//! idempotency key, and records its fate (held, out of stock, unknown SKU, not an order).

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
use super::reservations::{place, Hold, Target, WHATSAPP_KEY_PREFIX};
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
#[utoipa::path(get, path = "/v1/webhooks/whatsapp", tag = "whatsapp", operation_id = "whatsapp_verify",
    params(
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "The configured `whatsapp.verify_token`"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back when the token matches"),
    ),
    responses(
        (status = 200, description = "The challenge", content_type = "text/plain", body = String),
        (status = 403, description = "The verify token does not match", body = super::openapi::Error),
        (status = 422, description = "Invalid query", body = super::openapi::Error),
    ))]
pub async fn verify(
    state: web::Data<AppState>,
    query: web::Query<Verify>,
) -> Result<HttpResponse, ApiError> {
    let expected = state.settings.whatsapp.verify_token.expose();
    let token_ok = query
        .verify_token
        .as_deref()
        .is_some_and(|t| same_secret(t, expected));
    match (query.mode.as_deref(), token_ok, &query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge.clone())),
        _ => Err(ApiError::Forbidden(
            "the verify token does not match".into(),
        )),
    }
}

/// `a == b` in time that does not depend on where they differ: both are hashed to equal
/// lengths and compared by `verify_slice`, which is constant-time.
fn same_secret(a: &str, b: &str) -> bool {
    let digest_of = |s: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"compare").expect("any key length");
        mac.update(s.as_bytes());
        mac
    };
    digest_of(a)
        .verify_slice(&digest_of(b).finalize().into_bytes())
        .is_ok()
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
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Message {
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub order: Option<Order>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Order {
    #[serde(default)]
    pub product_items: Vec<ProductItem>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
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
///
/// A WhatsApp Cloud API webhook, signed with `X-Hub-Signature-256`: `sha256=` and the hex
/// HMAC-SHA256 of the raw body under the app secret. Each message is kept before the 200, and
/// `order` messages become reservations right after.
#[utoipa::path(post, path = "/v1/webhooks/whatsapp", tag = "whatsapp", operation_id = "whatsapp_receive",
    params(("X-Hub-Signature-256" = Option<String>, Header,
        description = "`sha256=` + hex HMAC-SHA256 of the raw body under the app secret")),
    request_body(content = Object, content_type = "application/json",
        description = "A webhook body: `entry[].changes[].value.messages[]`"),
    responses(
        (status = 200, description = "Accepted (messages kept; orders are made right after)"),
        (status = 401, description = "Missing or wrong signature", body = super::openapi::Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = super::openapi::Error),
        (status = 503, description = "MongoDB could not keep the messages; the sender retries", body = super::openapi::Error),
    ))]
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
    // Signed but not JSON: a retry would not help. Kept, by its digest, for a person to see.
    let json = match serde_json::from_slice::<Value>(&body) {
        Ok(json) => json,
        Err(e) => {
            warn!(error = %e, "a signed WhatsApp webhook that is not JSON");
            let record = doc! {"status": "invalid", "reason": format!("not JSON: {e}"),
            "body": String::from_utf8_lossy(&body).as_ref(), "at_ms": now_ms()};
            collection(&state)
                .update_one(
                    doc! {"_id": format!("body:{}", digest(&body))},
                    doc! {"$setOnInsert": record},
                )
                .upsert(true)
                .await
                .map_err(|e| ApiError::Unavailable(format!("keeping a WhatsApp webhook: {e}")))?;
            return Ok(HttpResponse::Ok().finish());
        }
    };
    let messages = messages(&json);
    // Kept before the 200: from here on the message is shelfsync's to finish, across
    // restarts (the worker's sweep picks up whatever is still `queued`).
    for m in &messages {
        enqueue(&state, m).await?;
    }
    if !messages.is_empty() {
        // A full queue is fine: the sweep gets to them.
        let _ = state.whatsapp.try_send(messages);
    }
    Ok(HttpResponse::Ok().finish())
}

fn collection(services: &Services) -> mongodb::Collection<Document> {
    services.ledger.database().collection::<Document>(MESSAGES)
}

/// Records a message as `queued`, once per message id (a redelivery changes nothing). A
/// message BSON cannot hold (a quantity past i64) is recorded `invalid`, as JSON text: a
/// redelivery would not help.
async fn enqueue(services: &Services, m: &Message) -> Result<(), ApiError> {
    let record = match mongodb::bson::to_bson(m) {
        Ok(message) => {
            doc! {"from": &m.from, "type": &m.kind, "status": "queued", "message": message, "at_ms": now_ms()}
        }
        Err(e) => {
            warn!(message = %m.id, error = %e, "a WhatsApp message that BSON cannot hold");
            let json = serde_json::to_string(m).map_err(anyhow::Error::new)?;
            doc! {"from": &m.from, "type": &m.kind, "status": "invalid",
            "reason": format!("not storable: {e}"), "body": json, "at_ms": now_ms()}
        }
    };
    collection(services)
        .update_one(doc! {"_id": &m.id}, doc! {"$setOnInsert": record})
        .upsert(true)
        .await
        .map_err(|e| ApiError::Unavailable(format!("keeping a WhatsApp message: {e}")))?;
    Ok(())
}

/// The queue between the webhook and the worker.
pub type Queue = mpsc::Sender<Vec<Message>>;

/// Starts the worker that turns queued messages into reservations.
pub fn start(services: Arc<Services>) -> Queue {
    let (tx, mut rx) = mpsc::channel::<Vec<Message>>(services.settings.whatsapp.queue_max.max(1));
    actix_web::rt::spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                // What the webhook queued goes first; the sweep runs when the queue is empty.
                biased;
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        for m in batch {
                            handle(&services, &m).await;
                        }
                    }
                    None => break,
                },
                _ = sweep.tick() => resume(&services).await,
            }
        }
    });
    tx
}

/// How often the worker looks for messages still `queued` (after a restart, a full queue,
/// or a store that was down).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

async fn resume(services: &Services) {
    let found = collection(services)
        .find(doc! {"status": "queued"})
        .limit(100)
        .await;
    let mut cursor = match found {
        Ok(c) => c,
        Err(e) => return warn!(error = %e, "looking for queued WhatsApp messages failed"),
    };
    use futures_util::TryStreamExt;
    loop {
        let d = match cursor.try_next().await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return warn!(error = %e, "reading queued WhatsApp messages failed"),
        };
        let message = d
            .get_document("message")
            .map_err(anyhow::Error::new)
            .and_then(|m| Ok(mongodb::bson::from_document::<Message>(m.clone())?));
        match message {
            Ok(m) => handle(services, &m).await,
            // A record the worker cannot read would be swept forever: settle it.
            Err(e) => {
                let settle = collection(services)
                    .update_one(
                        doc! {"_id": d.get("_id"), "status": "queued"},
                        doc! {"$set": {"status": "invalid", "reason": format!("unreadable record: {e:#}")}},
                    )
                    .await;
                if let Err(e) = settle {
                    warn!(error = %e, "settling an unreadable WhatsApp record failed");
                }
            }
        }
    }
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
    // Decided already (a redelivery, or the sweep and the queue both had it).
    let current = collection(services).find_one(doc! {"_id": &m.id}).await;
    if !matches!(&current, Ok(Some(d)) if d.get_str("status") == Ok("queued")) {
        return;
    }
    let result = match (&m.kind[..], &m.order) {
        ("order", Some(order)) => order_to_hold(services, m, order).await,
        ("order", None) => outcome(
            "invalid",
            Some(serde_json::json!({"reason": "an order message without an order"})),
        ),
        _ => outcome(
            "ignored",
            Some(serde_json::json!({"reason": format!("a {} message, not an order", m.kind)})),
        ),
    };
    let status = result.get_str("status").unwrap_or("?").to_owned();
    info!(message = %m.id, %status, "WhatsApp message");
    if status == "unavailable" {
        return; // stays queued; the sweep tries again
    }
    let mut decided = result;
    decided.insert("decided_at_ms", now_ms());
    let write = collection(services)
        .update_one(
            doc! {"_id": &m.id, "status": "queued"},
            doc! {"$set": decided},
        )
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
        if !merge(&mut lines, sku, qty, limits.qty_max) {
            return outcome(
                "invalid",
                Some(serde_json::json!({"reason": "a product's total quantity is above qty_max"})),
            );
        }
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
    let idem = IdempotencyKey::parse(
        "id",
        &format!("{WHATSAPP_KEY_PREFIX}{}", digest(m.id.as_bytes())),
    )
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
        Err(ApiError::Unavailable(_) | ApiError::Overloaded { .. }) => outcome("unavailable", None),
        Err(e) => outcome("failed", Some(serde_json::json!({"reason": e.to_string()}))),
    }
}

/// Adds `qty` of `sku` to the cart, summing a SKU listed twice; false when a sum passes
/// `qty_max`.
fn merge(lines: &mut Vec<Line>, sku: Sku, qty: Qty, qty_max: i64) -> bool {
    match lines.iter_mut().find(|l| l.sku == sku) {
        Some(l) => match Qty::parse("qty", l.qty.get() + qty.get(), qty_max) {
            Ok(sum) => {
                l.qty = sum;
                true
            }
            Err(_) => false,
        },
        None => {
            lines.push(Line { sku, qty });
            true
        }
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
