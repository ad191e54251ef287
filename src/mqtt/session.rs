//! `MqttSession`: owns the rumqttc (MQTT 5) client and its event loop, under an actix
//! supervisor.
//!
//! Three tasks share the client: the driver polls the event loop (reconnecting with capped
//! exponential backoff and jitter, since rumqttc reconnects with none, rumqtt #703), the
//! intake applies POS messages and acknowledges them in order once durable, and the
//! publisher sends the feed of committed changes. On every ConnAck the driver subscribes
//! again (a fresh session has none, rumqtt #250), publishes the retained `online`, and
//! reseeds every retained stock value, so a broker that restarted empty is whole again.
//!
//! Nothing in the driver waits on the client's own request channel (the driver is what
//! drains it): subscribing and `online` go out from a task of their own. POS messages carry
//! the connection epoch they arrived on; a copy from an older connection is processed (a
//! no-op by `event_id`) but never acknowledged, because the broker redelivers it on the new
//! connection, possibly under a packet id that now names another message.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, LastWill, Packet, Publish, PublishProperties, SubscribeReasonCode,
};
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

/// The largest packet we accept. The broker must not send us a larger one (MQTT 5 Maximum
/// Packet Size); between `mqtt.payload_max_bytes` and this, a POS message is rejected to the
/// DLQ. Without it rumqttc's default (10 KiB) would drop the connection on every redelivery.
const PACKET_SIZE_MAX_BYTES: u32 = 256 * 1024;
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// After a refused subscription, try again after this long.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// Whether the session is connected and subscribed right now (for `/readyz`), and the
/// connection epoch (one per ConnAck).
#[derive(Default)]
pub struct MqttStatus {
    connected: AtomicBool,
    epoch: AtomicU64,
}

impl MqttStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
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
        properties.max_packet_size = Some(PACKET_SIZE_MAX_BYTES);
        options.set_connect_properties(properties);
        if let (Some(user), Some(password)) = (&m.username, &m.password) {
            options.set_credentials(user, password.expose());
        }
        let (client, eventloop) = AsyncClient::new(options, m.request_channel_capacity);
        // As many slots as the broker may have in flight, so the driver never waits here.
        // The broker has at most `inflight_max` unacknowledged messages out per connection;
        // room for two connections' worth keeps the driver from waiting here in practice, and
        // when it does wait, the intake frees a slot without any help from the driver.
        let (pos_tx, pos_rx) = mpsc::channel(2 * usize::from(m.inflight_max));
        let intake = Intake::new(
            self.services.clone(),
            client.clone(),
            topics.clone(),
            self.status.clone(),
        );
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
        let refresher = refresh(
            self.services.clone(),
            self.feed.clone(),
            self.status.clone(),
        );
        self.supervise(ctx, "driver", driver);
        self.supervise(ctx, "pos intake", pos::run(intake, pos_rx, window));
        self.supervise(ctx, "publisher", publisher);
        self.supervise(ctx, "refresher", refresher);
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
                    // try_*: with the broker down and the channel full, a stop must not hang.
                    let _ = client.try_publish(status_topic, QoS::AtLeastOnce, true, "offline");
                    let _ = client.try_disconnect();
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
    pos_tx: mpsc::Sender<(u64, Publish)>,
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
    let mut connected_at: Option<Instant> = None;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let epoch = status.next_epoch();
                info!(
                    session_present = ack.session_present,
                    epoch, "connected to the MQTT broker"
                );
                subscribe(client.clone(), topics.clone(), Duration::ZERO);
                reseed(&services, &feed);
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                let refused: Vec<_> = suback
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .collect();
                if refused.is_empty() {
                    // Ready only once subscribed: until then a POS message finds no subscriber.
                    status.set(true);
                    metrics.mqtt_connected.set(1);
                    connected_at = Some(Instant::now());
                } else {
                    error!(codes = ?refused, "the broker refused the POS subscription; trying again");
                    subscribe(client.clone(), topics.clone(), RESUBSCRIBE_DELAY);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if pos_tx.send((status.epoch(), publish)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) if closing.load(Ordering::Acquire) => return,
            Err(e) => {
                // Only a connection that lasted resets the backoff: one that is dropped right
                // after ConnAck (an oversized packet, a duplicate client id) must not spin.
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
                {
                    delay = delay_min;
                }
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

/// Subscribes to POS movements and publishes `online`, from a task of its own: these wait on
/// the client's request channel, which only the driver drains.
fn subscribe(client: AsyncClient, topics: Topics, after: Duration) {
    actix_web::rt::spawn(async move {
        tokio::time::sleep(after).await;
        if let Err(e) = client
            .subscribe(topics.pos_subscription(), QoS::AtLeastOnce)
            .await
        {
            warn!(error = %e, "subscribing to POS movements failed");
        }
        let _ = client
            .publish(topics.status(), QoS::AtLeastOnce, true, "online")
            .await;
    });
}

/// Queues every current stock value for publishing (retained values are absolute).
fn reseed(services: &Services, feed: &Feed) {
    let mut seeded = 0;
    for outlet in services.catalogue.outlets.iter().map(|o| &o.id) {
        for (sku, counters) in services.stock.outlet(outlet) {
            feed.stock_changed(outlet, &sku, counters);
            seeded += 1;
        }
    }
    info!(values = seeded, "reseeding retained stock");
}

/// Republishes every value at half the retained message expiry, so that a SKU that does not
/// change keeps a retained value on the broker.
async fn refresh(services: Arc<Services>, feed: Arc<Feed>, status: Arc<MqttStatus>) {
    let every = Duration::from_secs(u64::from(services.settings.mqtt.stock_expiry_secs / 2).max(1));
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        if status.connected() {
            reseed(&services, &feed);
        }
    }
}
