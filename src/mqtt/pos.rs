//! POS intake: each message on `pos/{outlet}/movements` is parsed, validated and applied as a
//! movement, and acknowledged (PUBACK) only once its fate is durable: the movement in the
//! ledger, or the message in the `rejected` collection and echoed to `dlq/{outlet}`.
//!
//! Messages are handled concurrently within the broker's in-flight window and acknowledged
//! in the order they arrived (MQTT 5, 4.6). A PUBACK only tells the broker; the POS learns
//! its message's fate from `acks/{outlet}` (`{"event_id", "result": "applied", "seq"}` or
//! `"rejected"` with the code), published once that fate is durable. An outage of Redis or MongoDB is waited out
//! with backoff rather than acknowledged: a POS message is never lost and never dropped.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mongodb::bson::doc;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::outbound::{NotSent, Outbound};
use super::topics::Topics;
use crate::domain::{digest, now_ms, EventId, Movement, MovementKind, OutletId};
use crate::error::Error;
use crate::movements::{applied_durably, apply, MovementRequest};
use crate::services::Services;
use crate::wire::{PosAck, PosFate};

/// The most of a rejected payload kept in its record (payloads may be 256 KiB: a flood of
/// them must not fill the database); enough to see what a POS sent.
const REJECTED_PAYLOAD_KEPT_BYTES: usize = 4096;
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(5);

/// Why a message was not applied: an API.md error code and a sentence.
struct Rejection {
    code: &'static str,
    reason: String,
}

impl From<Error> for Rejection {
    fn from(e: Error) -> Self {
        Self {
            code: e.code(),
            reason: e.to_string(),
        }
    }
}

pub struct Intake {
    services: Arc<Services>,
    outbound: Arc<Outbound>,
    topics: Topics,
    /// `(topic, payload)` of the acks `publish_acks` sends.
    acks: mpsc::Sender<(String, String)>,
}

impl Intake {
    pub fn new(
        services: Arc<Services>,
        outbound: Arc<Outbound>,
        topics: Topics,
        acks: mpsc::Sender<(String, String)>,
    ) -> Self {
        Self {
            services,
            outbound,
            topics,
            acks,
        }
    }

    /// Queues the ack of a message whose fate is durable. Never waits: the queue holds as
    /// many as the broker has POS messages in flight to us; past it the ack is dropped and
    /// counted (`mqtt_messages_out_total{kind="ack_dropped"}`), and the POS, having no
    /// answer, sends the message again later and gets the ack of the duplicate.
    fn ack(&self, outlet: &str, ack: PosAck) {
        let body = serde_json::to_string(&ack).expect("an ack serializes");
        let queued = self.acks.try_send((self.topics.acks(outlet), body)).is_ok();
        if !queued {
            let metrics = &self.services.shared.metrics;
            (metrics.mqtt_messages_out)
                .with_label_values(&["ack_dropped"])
                .inc();
        }
    }

    fn decide(&self, topic: &str, payload: &[u8]) -> Result<Movement, Rejection> {
        let invalid = |reason: String| Rejection {
            code: "validation_failed",
            reason,
        };
        let outlet = self
            .topics
            .pos_outlet(topic)
            .ok_or_else(|| invalid(format!("{topic} is not a POS movements topic")))?;
        let limit = self.services.settings.mqtt.payload_max_bytes;
        if payload.len() > limit {
            return Err(Rejection {
                code: "payload_too_large",
                reason: format!("the payload is larger than {limit} bytes"),
            });
        }
        let mut request: MovementRequest = crate::wire::parse_json(payload).map_err(Error::from)?;
        match &request.outlet {
            Some(named) if named != outlet => {
                return Err(invalid(format!(
                    "outlet: the payload names {named} but the topic {outlet}"
                )))
            }
            _ => request.outlet = Some(outlet.to_owned()),
        }
        let movement = request
            .parse(
                &self.services.catalogue.now(),
                &self.services.settings.movements,
            )
            .map_err(Error::from)?;
        // The POS role's movements, as over HTTP: counts and adjustments are managers'.
        if matches!(
            movement.kind,
            MovementKind::Count | MovementKind::Adjustment
        ) {
            return Err(Rejection {
                code: "forbidden",
                reason: format!(
                    "a POS may not send {}; a manager records it over HTTP",
                    movement.kind.as_str()
                ),
            });
        }
        Ok(movement)
    }

    /// Decides one message's fate; returns only once it is durable, whatever it is.
    async fn handle(&self, publish: &Publish) {
        let metrics = &self.services.shared.metrics;
        if publish.retain {
            // A retained copy (a broker that ignores retain handling, or a subscription made
            // before it): the sale was sent live once already, or never meant to be; applying
            // it at every reconnect would sell again once its event_id is forgotten.
            metrics
                .mqtt_messages_in
                .with_label_values(&["retained_ignored"])
                .inc();
            return;
        }
        let arrived = std::time::Instant::now();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        // An outlet added through another process may not be read here yet: read the edits
        // before judging it unknown (which would reject the sale, and make the process that
        // knows it drop its own copy as decided).
        let named = self
            .topics
            .pos_outlet(&topic)
            .map(|o| OutletId::parse("outlet", o));
        let mut known = None;
        if let Some(Ok(outlet)) = named {
            let catalogue = &self.services.catalogue;
            if catalogue.has_outlet_since(&outlet, arrived).await {
                known = Some(outlet);
            }
        }
        let movement = match self.decide(&topic, &publish.payload) {
            Ok(m) => m,
            Err(rejection) => {
                // The till is connected even if what it sent is refused: the outlet is not
                // silent (ShelfsyncPosRejected says the rest). Only the catalogue's outlets
                // are remembered, so a made-up topic grows nothing.
                if let Some(outlet) = &known {
                    (self.services.pos_links).heard(outlet, now_ms());
                }
                return self.reject(&topic, &publish.payload, rejection).await;
            }
        };
        (self.services.pos_links).seen(&movement.outlet, now_ms(), movement.at.timestamp_millis());
        let mut delay = RETRY_DELAY_MIN;
        loop {
            match apply(&self.services, &movement, "mqtt".into()).await {
                Ok(applied) => {
                    metrics
                        .mqtt_messages_in
                        .with_label_values(&["applied"])
                        .inc();
                    let ack = PosAck {
                        event_id: movement.event_id.to_string(),
                        fate: PosFate::Applied {
                            seq: applied.result.seq,
                        },
                    };
                    return self.ack(movement.outlet.as_str(), ack);
                }
                Err(Error::Overloaded { .. })
                    if !self.services.shared.owners.owns(&movement.outlet)
                        && self.owner_has(&topic, &publish.payload, &movement).await =>
                {
                    // Another process owns the outlet and applied its own copy durably: this
                    // copy may go (every process subscribes to every POS topic and keeps its
                    // copy until then, so one dying never loses a sale).
                    metrics
                        .mqtt_messages_in
                        .with_label_values(&["applied_by_owner"])
                        .inc();
                    return;
                }
                Err(
                    Error::Unavailable(reason)
                    | Error::Overloaded {
                        message: reason, ..
                    },
                ) => {
                    // Expected while the ledger is behind (thousands may wait at once): the
                    // ledger lag gauges say so; the count is here, the reason at debug.
                    // Overloaded: nothing was applied (the outlet is moving between
                    // processes); never a rejection.
                    debug!(event_id = %movement.event_id, %reason, "POS movement waits for the stores");
                    metrics.mqtt_pos_waits.inc();
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_DELAY_MAX);
                }
                Err(other) => return self.reject(&topic, &publish.payload, other.into()).await,
            }
        }
    }

    /// Whether the outlet's owner (another process) decided its copy of this message for
    /// good: applied it durably, or kept it as rejected.
    async fn owner_has(&self, topic: &str, payload: &[u8], movement: &Movement) -> bool {
        if applied_durably(&self.services, movement)
            .await
            .unwrap_or(false)
        {
            return true;
        }
        let ledger = &self.services.shared.ledger;
        (ledger.is_rejected(&rejection_id(topic, payload)).await).unwrap_or(false)
    }

    /// Keeps the message in `rejected` (idempotent by content) and echoes it to `dlq/…`.
    /// Both carry a prefix of the payload, its length and whether it was cut.
    async fn reject(&self, topic: &str, payload: &[u8], rejection: Rejection) {
        let outlet = self.topics.pos_outlet(topic).unwrap_or("_unknown");
        let text = String::from_utf8_lossy(payload);
        let id = rejection_id(topic, payload);
        let kept = prefix(&text, REJECTED_PAYLOAD_KEPT_BYTES);
        let keep = Duration::from_secs(self.services.settings.mqtt.rejected_keep_secs);
        let expire_at =
            mongodb::bson::DateTime::from_system_time(std::time::SystemTime::now() + keep);
        let record = doc! {
            "topic": topic, "outlet": outlet, "payload": kept,
            "payload_bytes": payload.len() as i64, "truncated": kept.len() < text.len(),
            "code": rejection.code, "reason": &rejection.reason, "at_ms": now_ms(),
            "expire_at": expire_at,
        };
        let mut delay = RETRY_DELAY_MIN;
        while let Err(e) = self
            .services
            .shared
            .ledger
            .record_rejected(&id, record.clone())
            .await
        {
            warn!(error = %format!("{e:#}"), "keeping a rejected POS message failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RETRY_DELAY_MAX);
        }
        // The echo carries at most `payload_max_bytes` of the payload, so that DLQ subscribers
        // with small packet limits still receive it.
        let echoed = prefix(&text, self.services.settings.mqtt.payload_max_bytes);
        let echo = json!({"topic": topic, "payload": echoed, "truncated": echoed.len() < text.len(),
            "code": rejection.code, "reason": &rejection.reason});
        // The echo is a notification (the record above is what keeps the message): it must not
        // hold the in-order acks behind a full window.
        let echoed = self
            .outbound
            .try_publish(self.topics.dlq(outlet), echo.to_string());
        if let Some(event_id) = event_id_of(payload) {
            let fate = PosFate::Rejected {
                code: rejection.code.to_owned(),
                reason: rejection.reason,
            };
            let ack = PosAck {
                event_id: event_id.to_string(),
                fate,
            };
            self.ack(outlet, ack);
        }
        let metrics = &self.services.shared.metrics;
        let kind = if echoed { "dlq" } else { "dlq_skipped" };
        metrics.mqtt_messages_out.with_label_values(&[kind]).inc();
        metrics
            .mqtt_messages_in
            .with_label_values(&["rejected"])
            .inc();
        metrics.mqtt_dlq.inc();
    }
}

/// Handles POS messages within a window of `window`, acknowledging them in arrival order,
/// each on the connection it came in on (`Outbound::ack`). A message from an older
/// connection is handled (a no-op by `event_id` on redelivery) but not acknowledged: the
/// broker redelivers it on the current connection. Once handled, only the packet id is kept
/// until its turn to be acknowledged comes.
pub async fn run(intake: Intake, rx: mpsc::Receiver<(u64, Publish)>, window: usize) {
    let intake = Arc::new(intake);
    let messages =
        futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
    messages
        .map(|(epoch, mut publish)| {
            let intake = intake.clone();
            async move {
                intake.handle(&publish).await;
                drop(std::mem::take(&mut publish.payload));
                (epoch, publish)
            }
        })
        .buffered(window.max(1))
        .for_each(|(epoch, publish)| {
            let intake = intake.clone();
            async move {
                // Err: that connection is gone (the broker redelivers the message on the next)
                // or the session is closing; either way there is nothing to acknowledge on.
                let _ = intake.outbound.ack(epoch, &publish).await;
            }
        })
        .await;
}

/// Publishes the queued acks as the window allows (they follow the PUBACKs, never hold
/// them up).
pub async fn publish_acks(
    outbound: Arc<Outbound>,
    mut acks: mpsc::Receiver<(String, String)>,
    services: Arc<Services>,
) {
    while let Some((topic, payload)) = acks.recv().await {
        if outbound.publish(topic, false, payload, None).await == Err(NotSent::Closed) {
            return;
        }
        (services.shared.metrics.mqtt_messages_out)
            .with_label_values(&["ack"])
            .inc();
    }
}

/// The `event_id` a rejected payload names, if it is one a movement could carry.
fn event_id_of(payload: &[u8]) -> Option<EventId> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    EventId::parse("event_id", value.get("event_id")?.as_str()?).ok()
}

/// The longest start of `text` of at most `limit` bytes that ends on a character boundary.
fn prefix(text: &str, limit: usize) -> &str {
    let cut = (0..=limit.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    &text[..cut]
}

/// The id a rejected message is kept under: by content, so a redelivery is kept once.
fn rejection_id(topic: &str, payload: &[u8]) -> String {
    digest(format!("{topic}\n{}", String::from_utf8_lossy(payload)).as_bytes())
}
