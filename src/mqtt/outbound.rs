//! `Outbound`: everything shelfsync sends to the broker goes through here, so that a POS
//! acknowledgment always has room and always goes out on the connection its message came in
//! on.
//!
//! rumqttc has one bounded request channel for every request, and its event loop stops
//! reading that channel while the broker's Receive Maximum of our own QoS 1 publishes is in
//! flight (Mosquitto's is 20). A flood of stock values (a burst of changes, the reseed after
//! a reconnect) would then fill the channel, and an ack that does not fit would be lost: a
//! broker resends an unacknowledged PUBLISH only when the session resumes on a new
//! connection (MQTT 5, 4.4), never on the live one, so that message would hold one of the
//! broker's in-flight slots towards us until the next reconnect. So:
//!
//! - Publishes and subscribes (everything but acks) pass a window: at most `window` of them
//!   are sent and not yet acknowledged by the broker (PUBACK, SUBACK). The window is below
//!   the broker's Receive Maximum, so the event loop never stops reading the channel, and
//!   below the channel's capacity less the room kept for acks (one per POS message the
//!   broker may have in flight towards us), so an ack always fits.
//! - Acks carry the connection epoch of their message. One is sent only while that
//!   connection lives; it is retried on it until it fits (which the window makes immediate),
//!   and never carried over to a new connection, where its packet id may by then name
//!   another message. Epoch check and send happen under the gate's lock, and at a lost
//!   connection the driver takes the same lock, drains the channel into the event loop's
//!   pending list and drops every ack there: the broker redelivers those messages on the
//!   new connection and they are acknowledged then.
//! - At a lost connection the window is recounted from the event loop itself: what is left
//!   outstanding is exactly what it will resend or send first on the next connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, EventLoop, Request};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Room in the request channel kept for requests outside the window's count: the last will
/// is the broker's, but a graceful `offline` and the disconnect are sent past the window.
const CONTROL_RESERVE: usize = 4;
/// An ack that found the channel full (it should not: see the module comment) tries again
/// after this long, on the same connection.
const ACK_RETRY: Duration = Duration::from_millis(2);

/// Why nothing was sent.
#[derive(Debug, PartialEq, Eq)]
pub enum NotSent {
    /// The connection the message came in on is gone; the broker redelivers it.
    Stale,
    /// The client's event loop is gone (the session is being replaced).
    Closed,
}

struct Gate {
    /// One per ConnAck; 0 before the first.
    epoch: u64,
    connected: bool,
    /// Our publishes and subscribes the broker has not acknowledged yet, counting what the
    /// event loop holds to send.
    outstanding: usize,
    /// How many may be outstanding on this connection.
    window: usize,
}

pub struct Outbound {
    client: AsyncClient,
    gate: Mutex<Gate>,
    room: Notify,
    /// Most publishes and subscribes outstanding, whatever the broker allows.
    window_max: usize,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Outbound {
    /// `channel_capacity` is the client's request channel; `ack_reserve` the most acks that
    /// can be waiting at once (our Receive Maximum: the broker has no more messages in flight
    /// towards us).
    pub fn new(
        client: AsyncClient,
        channel_capacity: usize,
        ack_reserve: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        let window_max = channel_capacity
            .saturating_sub(ack_reserve + CONTROL_RESERVE)
            .max(1);
        Self {
            client,
            gate: Mutex::new(Gate {
                epoch: 0,
                connected: false,
                outstanding: 0,
                window: 1,
            }),
            room: Notify::new(),
            window_max,
            closed: AtomicBool::new(false),
            metrics,
        }
    }

    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().expect("outbound gate")
    }

    /// A new connection (ConnAck): its epoch, and a window below the broker's Receive
    /// Maximum (65,535 when it names none).
    pub fn connected(&self, broker_receive_max: Option<u16>) -> u64 {
        let mut g = self.gate();
        g.epoch += 1;
        g.connected = true;
        let broker = usize::from(broker_receive_max.unwrap_or(u16::MAX)).max(2);
        g.window = (broker - 1).min(self.window_max);
        self.metrics.mqtt_publish_window.set(g.window as i64);
        drop(g);
        self.room.notify_waiters();
        self.epoch()
    }

    pub fn epoch(&self) -> u64 {
        self.gate().epoch
    }

    /// The broker acknowledged one of our publishes or subscribes.
    pub fn broker_acked(&self) {
        let mut g = self.gate();
        g.outstanding = g.outstanding.saturating_sub(1);
        self.metrics
            .mqtt_publish_outstanding
            .set(g.outstanding as i64);
        drop(g);
        self.room.notify_one();
    }

    /// The connection is lost (the driver calls this right after the event loop's error).
    /// Acks of the lost connection never reach the next one: they are dropped from what the
    /// event loop will send first, and the broker redelivers their messages. What remains
    /// there is exactly what is outstanding now.
    pub fn disconnected(&self, eventloop: &mut EventLoop) {
        let mut g = self.gate();
        g.connected = false;
        // The event loop already drained its channel when it failed; an ack may have slipped
        // in before this lock was taken.
        eventloop.clean();
        // What `clean` leaves of the lost connection (rumqttc 0.24): bytes written but not
        // flushed (it clears its write buffer only after a successful flush, so they would go
        // out first on the next connection: an ack among them with a stale packet id), events
        // read before the error (a PUBACK among them would be counted again after the
        // recount; a POS message among them is redelivered), and a publish parked on a packet
        // id collision (sent again with a new id).
        eventloop.state.write.clear();
        eventloop.state.events.clear();
        if let Some(mut parked) = eventloop.state.collision.take() {
            parked.pkid = 0;
            eventloop.pending.push_back(Request::Publish(parked));
        }
        let before = eventloop.pending.len();
        eventloop
            .pending
            .retain(|r| !matches!(r, Request::PubAck(_) | Request::PubRec(_)));
        let dropped = before - eventloop.pending.len();
        if dropped > 0 {
            self.metrics
                .mqtt_acks
                .with_label_values(&["left_to_redelivery"])
                .inc_by(dropped as u64);
        }
        g.outstanding = eventloop.pending.len();
        self.metrics
            .mqtt_publish_outstanding
            .set(g.outstanding as i64);
    }

    /// The session is going away: wake every waiter so it can give up.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }

    /// Waits for room in the window on a live connection, then sends `request` (which must
    /// be one request the broker acknowledges: a QoS 1 publish or a subscribe).
    async fn send(&self, request: impl Fn(&AsyncClient) -> bool) -> Result<(), NotSent> {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return Err(NotSent::Closed);
            }
            {
                let mut g = self.gate();
                if g.connected && g.outstanding < g.window && request(&self.client) {
                    g.outstanding += 1;
                    self.metrics
                        .mqtt_publish_outstanding
                        .set(g.outstanding as i64);
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// A QoS 1 publish, once the window has room on a live connection.
    pub async fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: String,
        properties: Option<PublishProperties>,
    ) -> Result<(), NotSent> {
        self.send(|c| {
            let sent = match &properties {
                Some(p) => c.try_publish_with_properties(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    retain,
                    payload.clone(),
                    p.clone(),
                ),
                None => c.try_publish(topic.clone(), QoS::AtLeastOnce, retain, payload.clone()),
            };
            sent.is_ok()
        })
        .await
    }

    /// A QoS 1 publish only if the window has room now (notifications that must never hold
    /// anything up); false when it was not sent.
    pub fn try_publish(&self, topic: String, payload: String) -> bool {
        let mut g = self.gate();
        if !(g.connected && g.outstanding < g.window) {
            return false;
        }
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            return false;
        }
        g.outstanding += 1;
        self.metrics
            .mqtt_publish_outstanding
            .set(g.outstanding as i64);
        true
    }

    /// Subscribes at QoS 1 with retain handling 2 (MQTT 5, 3.8.3.1): the broker sends no
    /// retained message for the filter, at subscribe or ever. A POS movement is an event: a
    /// retained one would come back on every reconnect.
    pub async fn subscribe(&self, filter: String) -> Result<(), NotSent> {
        use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
        let mut f = Filter::new(filter, QoS::AtLeastOnce);
        f.retain_forward_rule = RetainForwardRule::Never;
        self.send(|c| c.try_subscribe_many([f.clone()]).is_ok())
            .await
    }

    /// Acknowledges `publish`, which arrived on connection `epoch`, on that same connection:
    /// retried until it fits, given up only when that connection is gone.
    pub async fn ack(&self, epoch: u64, publish: &Publish) -> Result<(), NotSent> {
        let mut tries = 0u32;
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(NotSent::Closed);
            }
            {
                let g = self.gate();
                if !g.connected || g.epoch != epoch {
                    self.metrics
                        .mqtt_acks
                        .with_label_values(&["left_to_redelivery"])
                        .inc();
                    return Err(NotSent::Stale);
                }
                if self.client.try_ack(publish).is_ok() {
                    let outcome = if tries == 0 {
                        "sent"
                    } else {
                        "sent_after_retry"
                    };
                    self.metrics.mqtt_acks.with_label_values(&[outcome]).inc();
                    return Ok(());
                }
            }
            tries += 1;
            self.metrics.mqtt_acks.with_label_values(&["retried"]).inc();
            tokio::time::sleep(ACK_RETRY).await;
        }
    }

    /// Past the window: the graceful `offline` and the disconnect (the session is closing;
    /// `CONTROL_RESERVE` keeps room for them).
    pub fn goodbye(&self, status_topic: String) {
        let _ = self
            .client
            .try_publish(status_topic, QoS::AtLeastOnce, true, "offline");
        let _ = self.client.try_disconnect();
    }
}
