//! The generators: web holds (then a confirm, a cancel or an expiry), manager movements, and
//! WhatsApp orders through the signed webhook (POS sales are `mqtt.rs`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::args::Args;
use crate::stats::Stats;
use crate::world::{draw, mix, World};

/// `201` or `409 out_of_stock`: the status and, for errors, the API's code.
pub(crate) async fn status_of(res: reqwest::Result<reqwest::Response>) -> (String, Option<Value>) {
    match res {
        Err(e) if e.is_timeout() => ("timeout".into(), None),
        Err(_) => ("connection_error".into(), None),
        Ok(r) => {
            let code = r.status().as_u16();
            let body: Option<Value> = r.json().await.ok();
            if code < 300 {
                (code.to_string(), body)
            } else {
                let err = body
                    .as_ref()
                    .and_then(|b| b["error"].as_str())
                    .unwrap_or("?")
                    .to_owned();
                (format!("{code} {err}"), body)
            }
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) args: Args,
    pub(crate) http: reqwest::Client,
    pub(crate) world: World,
    pub(crate) stats: Stats,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) run: String,
    /// Latest `expires_at` (ms) of the holds left to expire.
    pub(crate) last_expiry_ms: AtomicI64,
}

pub(crate) async fn hold_op(
    ctx: Arc<Ctx>,
    i: u64,
    intended: Instant,
    permit: OwnedSemaphorePermit,
) {
    let a = &ctx.args;
    let w = &ctx.world;
    let by_pin = !w.pins.is_empty() && draw(a.seed, 1, i) < a.pin_share;
    let fate = draw(a.seed, 2, i);
    let abandon = fate >= a.confirm_share + a.cancel_share;
    let ttl = if abandon {
        a.abandon_ttl_secs
    } else {
        a.ttl_secs
    };
    let mut body = if by_pin {
        let (pin, skus) = &w.pins[(mix(a.seed ^ 3 ^ mix(i)) % w.pins.len() as u64) as usize];
        let sku = &skus[(mix(a.seed ^ 4 ^ mix(i)) % skus.len() as u64) as usize];
        json!({"pin": pin, "lines": [{"sku": sku, "qty": 1}]})
    } else {
        let (outlet, sku) = &w.web[(mix(a.seed ^ 5 ^ mix(i)) % w.web.len() as u64) as usize];
        json!({"outlet": outlet, "lines": [{"sku": sku, "qty": 1}]})
    };
    body["ttl_secs"] = json!(ttl);
    body["channel"] = json!("web");
    let res = ctx
        .http
        .post(format!("{}/v1/reservations", a.url))
        .bearer_auth(&a.key)
        .header("Idempotency-Key", format!("fest-{}-{i}", ctx.run))
        .json(&body)
        .send()
        .await;
    let (status, answer) = status_of(res).await;
    let held = status == "201";
    ctx.stats.answer("hold", intended, status, held);
    drop(permit);
    let Some(id) = answer.filter(|_| held).and_then(|b| {
        if abandon {
            if let Some(ms) = b["expires_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            {
                ctx.last_expiry_ms
                    .fetch_max(ms.timestamp_millis(), Ordering::Relaxed);
            }
        }
        b["id"].as_str().map(str::to_owned)
    }) else {
        return;
    };
    if abandon {
        return;
    }
    let think = (draw(a.seed, 6, i) * 2.0 * a.think_ms as f64) as u64;
    tokio::time::sleep(Duration::from_millis(think)).await;
    let op = if fate < a.confirm_share {
        "confirm"
    } else {
        "cancel"
    };
    let intended = Instant::now();
    ctx.stats.offered(op);
    let Ok(_permit) = ctx.slots.clone().try_acquire_owned() else {
        ctx.stats.overload(op);
        return;
    };
    let req = ctx
        .http
        .post(format!("{}/v1/reservations/{id}/{op}", a.url))
        .bearer_auth(&a.key);
    let req = if op == "confirm" {
        req.json(&json!({"payment_ref": format!("pay-{}-{i}", ctx.run)}))
    } else {
        req
    };
    let (status, _) = status_of(req.send().await).await;
    let ok = status == "200";
    ctx.stats.answer(op, intended, status, ok);
}

/// A Meta-shaped webhook body with one order message.
pub(crate) fn whatsapp_body(id: &str, sender: &str, items: Value) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Festival shopper"}, "wa_id": sender}],
            "messages": [{"from": sender, "id": id, "timestamp": chrono::Utc::now().timestamp().to_string(),
                "type": "order", "order": {"catalog_id": "194836987003835", "text": "festival order",
                "product_items": items}}]},
        "field": "messages"}]}]})
}

/// `sha256=` + hex HMAC-SHA256 of the raw body under the app secret.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) async fn whatsapp_op(
    ctx: Arc<Ctx>,
    i: u64,
    intended: Instant,
    permit: OwnedSemaphorePermit,
) {
    let a = &ctx.args;
    // Two senders mapped to PINs in the demo config, and one that is not (default outlet).
    let senders = ["919800000001", "919800000002", "919800000099"];
    let sender = senders[(mix(a.seed ^ 7 ^ mix(i)) % 3) as usize];
    let skus = &ctx.world.web_skus;
    let lines = 1 + (mix(a.seed ^ 8 ^ mix(i)) % 2) as usize;
    let mut chosen = BTreeSet::new();
    for l in 0..lines {
        chosen
            .insert(&skus[(mix(a.seed ^ 9 ^ mix(i * 4 + l as u64)) % skus.len() as u64) as usize]);
    }
    let items: Vec<Value> = chosen
        .iter()
        .map(|s| json!({"product_retailer_id": s, "quantity": 1, "item_price": 450, "currency": "INR"}))
        .collect();
    let body = whatsapp_body(&format!("wamid.fest-{}-{i}", ctx.run), sender, json!(items));
    let raw = serde_json::to_vec(&body).expect("json");
    let res = ctx
        .http
        .post(format!("{}/v1/webhooks/whatsapp", a.url))
        .header("Content-Type", "application/json")
        .header("X-Hub-Signature-256", sign(&a.app_secret, &raw))
        .body(raw)
        .send()
        .await;
    let (status, _) = status_of(res).await;
    let ok = status == "200";
    ctx.stats.answer("whatsapp", intended, status, ok);
    drop(permit);
}

/// A kitchen delivery: a `receipt` of 1 to 3 units of a web SKU at its outlet, as a lot
/// (`--lot-secs`).
pub(crate) async fn movement_op(
    ctx: Arc<Ctx>,
    i: u64,
    intended: Instant,
    permit: OwnedSemaphorePermit,
) {
    let a = &ctx.args;
    let w = &ctx.world;
    let (outlet, sku) = &w.web[(mix(a.seed ^ 12 ^ mix(i)) % w.web.len() as u64) as usize];
    let now = chrono::Utc::now();
    let mut body = json!({"event_id": format!("fest-{}-mv-{i}", ctx.run), "outlet": outlet,
        "sku": sku, "kind": "receipt", "qty": 1 + mix(a.seed ^ 13 ^ mix(i)) % 3,
        "at": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "note": "festival kitchen delivery"});
    if a.lot_secs > 0 {
        // A tray made now: a short-lived one expires within the run, so the run sees lots
        // written off and holds that may not take them.
        // A long-lived one: by the SKU's shelf life, the service names and dates the lot.
        let short = (mix(a.seed ^ 14 ^ mix(i)) % 1000) as f64 / 1000.0 < a.short_lot_share;
        if short || a.shelf_life_days == 0 {
            let life = if short {
                chrono::Duration::seconds(a.lot_secs as i64)
            } else {
                chrono::Duration::days(2)
            };
            body["lot"] = json!(format!("fest-{}-lot-{i}", ctx.run));
            body["expires_at"] =
                json!((now + life).to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
    }
    let res = ctx
        .http
        .post(format!("{}/v1/movements", a.url))
        .bearer_auth(&a.admin_key)
        .json(&body)
        .send()
        .await;
    let (status, _) = status_of(res).await;
    let ok = status == "201";
    ctx.stats.answer("movement", intended, status, ok);
    drop(permit);
}
