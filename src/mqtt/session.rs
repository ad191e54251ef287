//! `MqttSession`: owns the rumqttc (MQTT 5) client and its event loop, under an actix
//! supervisor.
//!
//! Three tasks share the client: the driver polls the event loop (reconnecting with capped
//! exponential backoff and jitter, since rumqttc reconnects with none, rumqtt #703), the
//! intake applies POS messages and acknowledges them in order once durable, and the
//! publisher sends the feed of committed changes. On every ConnAck the driver subscribes
//! again (a fresh session has none, rumqtt #250), publishes the retained `online`, and
//! reseeds every retained stock value, so a broker that restarted empty is whole again.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, LastWill, Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::pos::{self, Intake};
use super::topics::Topics;
use crate::domain::rfc3339_ms;
use crate::feed::Feed;
use crate::services::Services;

/// Whether the session is connected right now (for `/readyz`).
#[derive(Default)]
pub struct MqttStatus {
    connected: AtomicBool,
}

impl MqttStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }
}

/// Publishes `offline` and disconnects (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

pub struct MqttSession {
    services: Arc<Services>,
    feed: Arc<Feed>,
    status: Arc<MqttStatus>,
    client: Option<AsyncClient>,
    tasks: Vec<SpawnHandle>,
    /// Set by a graceful `Disconnect`: tasks that end then are not a failure.
    closing: Arc<AtomicBool>,
}

impl MqttSession {
    pub fn new(services: Arc<Services>, feed: Arc<Feed>, status: Arc<MqttStatus>) -> Self {
        Self {
            services,
            feed,
            status,
            client: None,
            tasks: Vec::new(),
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs one of the session's tasks. A task that panics or ends (other than at a graceful
    /// disconnect) stops the actor, and its supervisor opens a new session: a panic in a
    /// spawned future would otherwise take the whole arbiter down.
    fn supervise(
        &mut self,
        ctx: &mut Context<Self>,
        name: &'static str,
        task: impl Future<Output = ()> + 'static,
    ) {
        let closing = self.closing.clone();
        let handle = ctx.spawn(AssertUnwindSafe(task).catch_unwind().into_actor(self).map(
            move |result, _, ctx| {
                if closing.load(Ordering::Acquire) {
                    return;
                }
                match result {
                    Err(_) => error!(task = name, "an MQTT task panicked; restarting the session"),
                    Ok(()) => warn!(task = name, "an MQTT task ended; restarting the session"),
                }
                ctx.stop();
            },
        ));
        self.tasks.push(handle);
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        let m = &self.services.settings.mqtt;
        let topics = Topics::new(&m.topic_prefix);
        let mut options = MqttOptions::new(&m.client_id, &m.host, m.port);
        options
            .set_keep_alive(Duration::from_secs(m.keep_alive_secs))
            .set_clean_start(false)
            .set_manual_acks(true)
            .set_request_channel_capacity(m.request_channel_capacity)
            .set_last_will(LastWill::new(
                topics.status(),
                "offline",
                QoS::AtLeastOnce,
                true,
                None,
            ));
        let mut properties = ConnectProperties::new();
        properties.session_expiry_interval = Some(m.session_expiry_secs);
        // The broker sends at most this many unacknowledged POS messages: the intake window.
        properties.receive_maximum = Some(m.inflight_max);
        options.set_connect_properties(properties);
        if let (Some(user), Some(password)) = (&m.username, &m.password) {
            options.set_credentials(user, password.expose());
        }
        let (client, eventloop) = AsyncClient::new(options, m.request_channel_capacity);
        // As many slots as the broker may have in flight, so the driver never waits here.
        let (pos_tx, pos_rx) = mpsc::channel(usize::from(m.inflight_max));
        let intake = Intake::new(self.services.clone(), client.clone(), topics.clone());
        let window = usize::from(m.inflight_max);
        let driver = drive(Driver {
            eventloop,
            client: client.clone(),
            topics: topics.clone(),
            services: self.services.clone(),
            feed: self.feed.clone(),
            status: self.status.clone(),
            closing: self.closing.clone(),
            pos_tx,
        });
        let publisher = publish(
            client.clone(),
            topics,
            self.services.clone(),
            self.feed.clone(),
        );
        self.supervise(ctx, "driver", driver);
        self.supervise(ctx, "pos intake", pos::run(intake, pos_rx, window));
        self.supervise(ctx, "publisher", publisher);
        self.client = Some(client);
    }
}

impl Actor for MqttSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.open(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.status.set(false);
    }
}

impl Supervised for MqttSession {
    fn restarting(&mut self, _: &mut Self::Context) {
        // started() opens a new client; the broker's persistent session carries over, and
        // the POS messages that were in flight are redelivered.
        self.status.set(false);
        self.client = None;
        self.tasks.clear();
    }
}

impl Handler<Disconnect> for MqttSession {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Disconnect, _: &mut Self::Context) -> Self::Result {
        self.closing.store(true, Ordering::Release);
        let client = self.client.take();
        let status_topic = Topics::new(&self.services.settings.mqtt.topic_prefix).status();
        Box::pin(
            async move {
                if let Some(client) = client {
                    let _ = client
                        .publish(status_topic, QoS::AtLeastOnce, true, "offline")
                        .await;
                    let _ = client.disconnect().await;
                    // The driver is still polling: give it a moment to send both.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                for task in act.tasks.drain(..) {
                    ctx.cancel_future(task);
                }
                act.status.set(false);
            }),
        )
    }
}

/// Polls the event loop forever: connection state, POS messages in, reconnects with backoff.
struct Driver {
    eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    services: Arc<Services>,
    feed: Arc<Feed>,
    status: Arc<MqttStatus>,
    closing: Arc<AtomicBool>,
    pos_tx: mpsc::Sender<Publish>,
}

async fn drive(driver: Driver) {
    let Driver {
        mut eventloop,
        client,
        topics,
        services,
        feed,
        status,
        closing,
        pos_tx,
    } = driver;
    let m = &services.settings.mqtt;
    let metrics = &services.metrics;
    let delay_min = Duration::from_millis(m.reconnect_delay_min_ms);
    let delay_max = Duration::from_millis(m.reconnect_delay_max_ms);
    let mut delay = delay_min;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                delay = delay_min;
                info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                // try_*: the event loop is not polled while this task waits, so never wait on
                // its own request channel here.
                if let Err(e) = client.try_subscribe(topics.pos_subscription(), QoS::AtLeastOnce) {
                    warn!(error = %e, "subscribing to POS movements failed");
                }
                let _ = client.try_publish(topics.status(), QoS::AtLeastOnce, true, "online");
                let mut seeded = 0;
                for outlet in services.catalogue.outlets.iter().map(|o| &o.id) {
                    for (sku, counters) in services.stock.outlet(outlet) {
                        feed.stock_changed(outlet, &sku, counters);
                        seeded += 1;
                    }
                }
                info!(values = seeded, "reseeding retained stock");
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                // Ready only once subscribed: until then a POS message would find no subscriber.
                status.set(true);
                metrics.mqtt_connected.set(1);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if pos_tx.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) if closing.load(Ordering::Acquire) => return,
            Err(e) => {
                if status.connected() {
                    metrics.mqtt_reconnects.inc();
                }
                status.set(false);
                metrics.mqtt_connected.set(0);
                let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                warn!(error = %e, retry_in_ms = jittered.as_millis() as u64, "MQTT connection lost");
                tokio::time::sleep(jittered).await;
                delay = (delay * 2).min(delay_max);
            }
        }
    }
}

/// Publishes committed changes: absolute retained stock values (with seq, so a stale value
/// that went out after a reconnect is told apart) and confirmed orders.
async fn publish(client: AsyncClient, topics: Topics, services: Arc<Services>, feed: Arc<Feed>) {
    let m = &services.settings.mqtt;
    let metrics = &services.metrics;
    let expiry = PublishProperties {
        message_expiry_interval: Some(m.stock_expiry_secs),
        ..Default::default()
    };
    loop {
        let batch = feed.take().await;
        for (outlet, sku, c) in batch.stock {
            let payload = json!({"on_hand": c.on_hand, "reserved": c.reserved, "available": c.available(),
                "seq": c.seq, "at": rfc3339_ms(crate::domain::now_ms())});
            let sent = client
                .publish_with_properties(
                    topics.stock(&outlet, &sku),
                    QoS::AtLeastOnce,
                    true,
                    payload.to_string(),
                    expiry.clone(),
                )
                .await;
            if sent.is_err() {
                return;
            }
            metrics
                .mqtt_messages_out
                .with_label_values(&["stock"])
                .inc();
        }
        for order in batch.orders {
            let outlet = order.id.outlet();
            let payload = crate::http::reservations::reservation_json(&order).to_string();
            if client
                .publish(topics.orders(&outlet), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
            metrics
                .mqtt_messages_out
                .with_label_values(&["order"])
                .inc();
        }
        metrics.mqtt_publish_queue.set(feed.depth() as i64);
        metrics
            .mqtt_orders_dropped
            .set(feed.dropped_orders() as i64);
    }
}
