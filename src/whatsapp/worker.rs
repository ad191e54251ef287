//! The worker that turns kept WhatsApp messages into reservations: fed by a bounded queue
//! from the webhook and by a sweep of what is still `queued` (after a restart, a full queue,
//! or a store that was down). Each `order` message becomes a hold with a key derived from
//! the message id, so a message is held at most once, whichever of the two gets it, and
//! only within its sender's caps (`caps.rs`): past them it is `refused`, nothing held.

use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::caps::{self, Caps, Refusal};
use super::message::{messages, Message, Order};
use super::store::{Messages, Queued};
use crate::checkout::{place, Hold, Target, WHATSAPP_KEY_PREFIX};
use crate::domain::{digest, now_ms, Channel, IdempotencyKey, Line, OutletId, Qty, Sku};
use crate::error::Error;
use crate::keys::ClaimKind;
use crate::services::Services;
use crate::zones::Pin;

/// How often the worker looks for messages still `queued`.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Records the sweep reads at a time.
const SWEEP_BATCH_MAX: i64 = 100;

/// Where the webhook hands what it accepted: kept first, then queued (bounded) for the
/// worker.
pub struct Inbox {
    messages: Messages,
    queue: mpsc::Sender<Vec<Message>>,
}

impl Inbox {
    /// Keeps every message of a signed webhook body before the 200: from then on each is
    /// shelfsync's to finish, across restarts. A body that is not JSON is kept by its
    /// digest for a person to see (a retry would not help).
    pub async fn receive(&self, body: &[u8]) -> Result<(), Error> {
        let json = match serde_json::from_slice::<Value>(body) {
            Ok(json) => json,
            Err(e) => {
                warn!(error = %e, "a signed WhatsApp webhook that is not JSON");
                let kept = self.messages.keep_unparsed(body, format!("not JSON: {e}"));
                return kept.await.map_err(Error::store);
            }
        };
        let messages = messages(&json);
        for m in &messages {
            self.messages.keep(m).await.map_err(Error::store)?;
        }
        if !messages.is_empty() && self.queue.try_send(messages).is_err() {
            // A full queue is fine: the sweep gets to them.
            info!("the WhatsApp queue is full; the sweep takes these messages");
        }
        Ok(())
    }
}

/// Starts the worker; the webhook feeds it through the returned inbox.
pub fn start(services: Arc<Services>) -> Inbox {
    let messages = Messages::new(&services.shared.ledger);
    let (queue, mut rx) =
        mpsc::channel::<Vec<Message>>(services.settings.whatsapp.queue_max.max(1));
    let store = messages.clone();
    actix_web::rt::spawn(async move {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                // What the webhook queued goes first; the sweep runs when the queue is empty.
                biased;
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        for m in batch {
                            handle(&services, &store, &m).await;
                        }
                    }
                    None => break,
                },
                _ = sweep.tick() => resume(&services, &store).await,
            }
        }
    });
    Inbox { messages, queue }
}

async fn resume(services: &Services, store: &Messages) {
    let queued = match store.queued(SWEEP_BATCH_MAX).await {
        Ok(q) => q,
        Err(e) => {
            return warn!(error = %format!("{e:#}"), "reading queued WhatsApp messages failed")
        }
    };
    for record in queued {
        match record {
            Queued::Message(m) => handle(services, store, &m).await,
            // A record the worker cannot read would be swept forever: settle it.
            Queued::Unreadable(id, reason) => {
                let settled = doc! {"status": "invalid", "reason": reason};
                if let Err(e) = store.decide(&id, settled).await {
                    warn!(error = %format!("{e:#}"), "settling an unreadable WhatsApp record failed");
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

async fn handle(services: &Services, store: &Messages, m: &Message) {
    // Decided already (a redelivery, or the sweep and the queue both had it).
    match store.is_queued(&m.id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            return warn!(message = %m.id, error = %format!("{e:#}"), "reading a WhatsApp message failed; the sweep tries again")
        }
    }
    let result = match (&m.kind[..], &m.order) {
        ("order", Some(order)) => order_to_hold(services, m, order).await,
        ("order", None) => outcome(
            "invalid",
            Some(json!({"reason": "an order message without an order"})),
        ),
        _ => outcome(
            "ignored",
            Some(json!({"reason": format!("a {} message, not an order", m.kind)})),
        ),
    };
    let status = result.get_str("status").unwrap_or("?").to_owned();
    info!(message = %m.id, %status, "WhatsApp message");
    if status == "unavailable" {
        return; // stays queued; the sweep tries again
    }
    let reason = (status == "refused")
        .then(|| result.get_str("reason").ok().map(str::to_owned))
        .flatten();
    let mut decided = result;
    decided.insert("decided_at_ms", now_ms());
    match store.decide(&m.id.as_str().into(), decided).await {
        // Counted once recorded: a record that failed is decided again by the sweep.
        Ok(()) => {
            if let Some(reason) = reason {
                (services.shared.metrics.whatsapp_refused)
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
        }
        Err(e) => {
            warn!(message = %m.id, error = %format!("{e:#}"), "recording a WhatsApp message failed")
        }
    }
}

async fn order_to_hold(services: &Services, m: &Message, order: &Order) -> Document {
    let limits = &services.settings.reservations;
    let mut lines = Vec::new();
    for (i, item) in order.product_items.iter().enumerate() {
        let sku = match services
            .catalogue
            .now()
            .active_sku("sku", &item.product_retailer_id)
        {
            Ok(sku) => sku,
            Err(e) => {
                return outcome(
                    "unknown_sku",
                    Some(json!({"sku": item.product_retailer_id, "reason": e.message})),
                )
            }
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
                Some(json!({"reason": "a quantity is not a positive integer within bounds"})),
            );
        };
        if !merge(&mut lines, sku, qty, limits.qty_max) {
            return outcome(
                "invalid",
                Some(json!({"reason": "a product's total quantity is above qty_max"})),
            );
        }
    }
    if lines.is_empty() || lines.len() > limits.lines_max {
        return outcome(
            "invalid",
            Some(json!({"reason": "an order needs 1 to lines_max products"})),
        );
    }
    let wa = &services.settings.whatsapp;
    let target = match wa.senders.get(&m.from).map(|p| Pin::parse("pin", p)) {
        Some(Ok(pin)) => {
            let serving = services.zones.serving(&pin);
            if serving.is_empty() {
                return outcome(
                    "invalid",
                    Some(json!({"reason": "no outlet delivers to the sender's PIN"})),
                );
            }
            Target::Pin(pin, serving)
        }
        _ => match services
            .catalogue
            .now()
            .known_outlet("default_outlet", &wa.default_outlet)
        {
            Ok(o) => Target::Outlet(o),
            Err(e) => return outcome("invalid", Some(json!({"reason": e.to_string()}))),
        },
    };
    let Some(caps) = Caps::of(wa, &m.from) else {
        return refused(
            Refusal::UnknownSender,
            json!({"policy": "an unknown sender's orders are refused (whatsapp.unknown_sender)"}),
        );
    };
    // Message ids carry characters idempotency keys do not allow: the key is their digest.
    let idem = IdempotencyKey::parse(
        "id",
        &format!("{WHATSAPP_KEY_PREFIX}{}", digest(m.id.as_bytes())),
    )
    .expect("a hex digest is a valid key");
    let customer_ref = (!m.from.is_empty()).then(|| format!("whatsapp:{}", m.from));
    let units = caps::units(&lines);
    let hold = Hold::new(
        &target,
        idem.clone(),
        lines,
        Channel::Whatsapp,
        wa.ttl_secs as i64,
        customer_ref,
        "whatsapp".into(),
    );
    // One order of a sender at a time, chain-wide: two processes must not both see a free
    // slot and both take it. A sender leased elsewhere waits for the sweep.
    let store = &services.shared.store;
    let lease = match store.lease_sender(&m.from).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return outcome("unavailable", None),
        Err(e) => {
            warn!(message = %m.id, error = %format!("{e:#}"), "leasing a WhatsApp sender failed; the sweep tries again");
            return outcome("unavailable", None);
        }
    };
    let decided = hold_within_caps(services, m, caps, &idem, units, target, &hold).await;
    if let Err(e) = store.unlease_sender(&m.from, &lease).await {
        warn!(error = %format!("{e:#}"), "releasing a WhatsApp sender's lease failed; it expires by itself");
    }
    decided
}

/// Holds the order if it fits the sender's caps, and counts the hold among the sender's;
/// an order past them is refused with nothing held.
async fn hold_within_caps(
    services: &Services,
    m: &Message,
    caps: Caps,
    idem: &IdempotencyKey,
    units: i64,
    target: Target,
    hold: &Hold,
) -> Document {
    let store = &services.shared.store;
    // A key committed at an outlet already is a message held before whose record was not
    // written: `place` replays its first answer, and its hold is one of those the sender has
    // open. A key only claimed (the outlet failed, or the cart was short) held nothing.
    let replay = async {
        let Some(outlet) = (store
            .claim_owner(ClaimKind::Reservation, idem.as_str())
            .await)?
        else {
            return Ok(false);
        };
        let outlet = OutletId::parse("claim", &outlet)?;
        store
            .key_committed(&store.keys(&outlet), idem.as_str())
            .await
    };
    let checked = match replay.await {
        Ok(true) => Ok(None),
        Ok(false) => caps::open(store, &m.from).await.map(Some),
        Err(e) => Err(e),
    };
    let open = match checked {
        Ok(open) => open,
        Err(e) => {
            warn!(message = %m.id, error = %format!("{e:#}"), "reading a WhatsApp sender's holds failed; the sweep tries again");
            return outcome("unavailable", None);
        }
    };
    if let Some(open) = open.filter(|open| !caps.fits(*open, units)) {
        return refused(
            caps.refusal,
            json!({"units": units, "open_holds": open.holds, "open_units": open.units,
                "open_holds_max": caps.open_holds_max, "units_max": caps.units_max}),
        );
    }
    match place(services, target, hold).await {
        Ok(placed) => {
            let res = &placed.res;
            if let Err(e) = store
                .add_sender_hold(&m.from, &res.id, res.expires_at)
                .await
            {
                // Left queued: the sweep's replay of the same key counts it.
                warn!(message = %m.id, error = %format!("{e:#}"), "counting a WhatsApp sender's hold failed; the sweep tries again");
                return outcome("unavailable", None);
            }
            outcome(
                "held",
                Some(json!({"reservation": res.id, "outlet": res.id.outlet()})),
            )
        }
        Err(Error::OutOfStock { lines, .. }) => {
            outcome("out_of_stock", Some(json!({"lines": lines})))
        }
        Err(Error::Unavailable(_) | Error::Overloaded { .. }) => outcome("unavailable", None),
        Err(e) => outcome("failed", Some(json!({"reason": e.to_string()}))),
    }
}

/// An order refused by the sender's caps (or the unknown-sender policy), nothing held:
/// recorded `refused` with its `reason` (counted once recorded, see `handle`).
fn refused(refusal: Refusal, detail: Value) -> Document {
    let reason = refusal.as_str();
    let mut record = outcome("refused", Some(detail));
    record.insert("reason", reason);
    record
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
