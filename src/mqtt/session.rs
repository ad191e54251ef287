//! `MqttSession`: owns the rumqttc (MQTT 5) client and its event loop, under an actix
//! supervisor.
//!
//! Four tasks share the client: the driver polls the event loop (reconnecting with capped
//! exponential backoff and jitter, since rumqttc reconnects with none, rumqtt #703), the
//! intake applies POS messages and acknowledges them in order once durable, the publisher
//! sends the feed of committed changes, and the refresher keeps retained values alive. On
//! every ConnAck the driver subscribes again (a fresh session has none, rumqtt #250),
//! publishes the retained `online`, and reseeds every retained stock value, so a broker that
//! restarted empty is whole again.
//!
//! Everything but acks passes `Outbound`'s window, so acks always have room (see
//! `outbound.rs`). Nothing in the driver waits on the client's request channel (the driver
//! is what drains it): subscribing and `online` go out from a task of their own. POS
//! messages carry the connection epoch they arrived on; a copy from an older connection is
//! processed (a no-op by `event_id`) but never acknowledged, because the broker redelivers
//! it on the new connection, possibly under a packet id that now names another message.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, DisconnectReasonCode, LastWill, Packet, Publish, PublishProperties,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use rumqttc::{TlsConfiguration, Transport};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::outbound::{NotSent, Outbound};
use super::pos::{self, Intake};
use super::topics::Topics;
use crate::domain::{rfc3339_ms, OutletId};
use crate::feed::Feed;
use crate::health::MqttStatus;
use crate::services::Services;

/// The largest packet we accept. The broker must not send us a larger one (MQTT 5 Maximum
/// Packet Size); between `mqtt.payload_max_bytes` and this, a POS message is rejected to the
/// DLQ. Without it rumqttc's default (10 KiB) would drop the connection on every redelivery.
const PACKET_SIZE_MAX_BYTES: u32 = 256 * 1024;
/// A connection that lasted this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// The refresher republishes a share of the retained values this often, so that every value
/// is republished once per half its message expiry, evenly rather than all at once.
const REFRESH_TICK: Duration = Duration::from_secs(1);

/// Publishes `offline` and disconnects (graceful shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

pub struct MqttSession {
    services: Arc<Services>,
    feed: Arc<Feed>,
    status: Arc<MqttStatus>,
    outbound: Option<Arc<Outbound>>,
    tasks: Vec<SpawnHandle>,
    /// Set by a graceful `Disconnect`: tasks that end then are not a failure.
    closing: Arc<AtomicBool>,
}

impl MqttSession {
    pub fn new(services: Arc<Services>, status: Arc<MqttStatus>) -> Self {
        let feed = services.shared.feed.clone();
        Self {
            services,
            feed,
            status,
            outbound: None,
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
            .set_connection_timeout(m.connect_timeout_secs)
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
        if m.tls {
            // rustls, trusting only the configured CA (checked at start). Files that became
            // unreadable since then leave an empty CA: every connection then fails, logged as
            // lost below, and this error names the file.
            let files = m.tls_files().unwrap_or_else(|e| {
                error!(error = %format!("{e:#}"), "reading the MQTT TLS files failed");
                crate::settings::TlsFiles {
                    ca: Vec::new(),
                    client: None,
                }
            });
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: files.ca,
                alpn: None,
                client_auth: files.client,
            }));
        }
        let (client, eventloop) = AsyncClient::new(options, m.request_channel_capacity);
        let window = usize::from(m.inflight_max);
        // The broker has at most `inflight_max` unacknowledged POS messages out to us, so at
        // most that many acks can wait: the room `Outbound` keeps for them.
        let outbound = Arc::new(Outbound::new(
            client,
            m.request_channel_capacity,
            window,
            self.services.shared.metrics.clone(),
        ));
        // Room for two connections' worth of POS messages keeps the driver from waiting here
        // in practice, and when it does wait, the intake frees a slot without its help.
        let (pos_tx, pos_rx) = mpsc::channel(2 * window);
        // Acks wait here for the window (as many as POS messages may be in flight to us).
        let (acks_tx, acks_rx) = mpsc::channel(window);
        let intake = Intake::new(
            self.services.clone(),
            outbound.clone(),
            topics.clone(),
            acks_tx,
        );
        let driver = drive(Driver {
            eventloop,
            outbound: outbound.clone(),
            topics: topics.clone(),
            services: self.services.clone(),
            feed: self.feed.clone(),
            status: self.status.clone(),
            closing: self.closing.clone(),
            pos_tx,
        });
        let publisher = publish(
            outbound.clone(),
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
        let acks = pos::publish_acks(outbound.clone(), acks_rx, self.services.clone());
        self.supervise(ctx, "acks", acks);
        self.supervise(ctx, "refresher", refresher);
        self.outbound = Some(outbound);
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
        if let Some(outbound) = self.outbound.take() {
            outbound.close();
        }
        self.tasks.clear();
    }
}

impl Handler<Disconnect> for MqttSession {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Disconnect, _: &mut Self::Context) -> Self::Result {
        self.closing.store(true, Ordering::Release);
        let outbound = self.outbound.take();
        let status_topic = Topics::new(&self.services.settings.mqtt.topic_prefix).status();
        Box::pin(
            async move {
                if let Some(outbound) = outbound {
                    // Past the window, without waiting: with the broker down, a stop must not
                    // hang.
                    outbound.goodbye(status_topic);
                    // The driver is still polling: give it a moment to send both.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    outbound.close();
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
    outbound: Arc<Outbound>,
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
        outbound,
        topics,
        services,
        feed,
        status,
        closing,
        pos_tx,
    } = driver;
    let m = &services.settings.mqtt;
    let metrics = &services.shared.metrics;
    let delay_min = Duration::from_millis(m.reconnect_delay_min_ms);
    let delay_max = Duration::from_millis(m.reconnect_delay_max_ms);
    let mut delay = delay_min;
    let mut connected_at: Option<Instant> = None;
    let mut epoch = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let receive_max = ack.properties.as_ref().and_then(|p| p.receive_max);
                epoch = outbound.connected(receive_max);
                info!(
                    session_present = ack.session_present,
                    epoch,
                    broker_receive_max = receive_max,
                    "connected to the MQTT broker"
                );
                subscribe(outbound.clone(), topics.clone());
                reseed(&services, &feed);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => outbound.broker_acked(),
            // rumqttc hands over only a SUBACK that granted everything: a refusal is an error
            // of the connection (below), and the next connection subscribes again.
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                outbound.broker_acked();
                // Ready only once subscribed: until then a POS message finds no subscriber.
                status.set(true);
                metrics.mqtt_connected.set(1);
                connected_at = Some(Instant::now());
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if pos_tx.send((epoch, publish)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) if closing.load(Ordering::Acquire) => return,
            Err(e) => {
                outbound.disconnected(&mut eventloop);
                // rumqttc drops the connection when the broker refuses a subscription or one
                // of our publishes (an ACL, a quota): loud, since reconnecting will not help.
                if let ConnectionError::MqttState(
                    refusal @ (StateError::SubFail { .. } | StateError::PubAckFail { .. }),
                ) = &e
                {
                    error!(error = %refusal, "the broker refused a request of ours; check its ACLs for shelfsync's topics");
                }
                // Another client connected with our client id and the broker gave it our session
                // (MQTT 5, 3.1.4): it now receives the POS messages queued for us and may
                // acknowledge them. We reconnect as after any loss and take the session back;
                // the defence is the broker's ACLs (only shelfsync's user may use its client id).
                if let ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code: DisconnectReasonCode::SessionTakenOver,
                    ..
                }) = &e
                {
                    metrics.mqtt_session_taken_over.inc();
                    error!(client_id = %m.client_id, "another client connected with our client id and took our MQTT session over; \
                        two instances share mqtt.client_id, or the broker lets other users take it (see its ACLs)");
                }
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
async fn publish(
    outbound: Arc<Outbound>,
    topics: Topics,
    services: Arc<Services>,
    feed: Arc<Feed>,
) {
    let m = &services.settings.mqtt;
    let metrics = &services.shared.metrics;
    let expiry = PublishProperties {
        message_expiry_interval: Some(m.stock_expiry_secs),
        ..Default::default()
    };
    loop {
        let batch = feed.take().await;
        for (outlet, sku, c) in batch.stock {
            let expiring_soon = services.shared.stock.expiring_soon(&outlet, &sku);
            let payload = json!({"on_hand": c.on_hand, "reserved": c.reserved, "available": c.available(),
                "expiring_soon": expiring_soon, "seq": c.seq, "at": rfc3339_ms(crate::domain::now_ms())});
            let topic = topics.stock(&outlet, &sku);
            let expiry = Some(expiry.clone());
            if !send(
                &outbound,
                metrics,
                "stock",
                topic,
                true,
                payload.to_string(),
                expiry,
            )
            .await
            {
                return;
            }
        }
        for order in batch.orders {
            let topic = topics.orders(&order.id.outlet());
            let payload = crate::wire::reservation_json(&order).to_string();
            if !send(&outbound, metrics, "order", topic, false, payload, None).await {
                return;
            }
        }
        for alert in batch.alerts {
            let topic = topics.alerts(&alert.outlet);
            let payload = serde_json::json!(*alert).to_string();
            if !send(&outbound, metrics, "alert", topic, false, payload, None).await {
                return;
            }
            (metrics.alert_deliveries)
                .with_label_values(&["mqtt", "delivered"])
                .inc();
        }
        metrics.mqtt_publish_queue.set(feed.depth() as i64);
        metrics
            .mqtt_orders_dropped
            .set(feed.dropped_orders() as i64);
        let dropped = feed.dropped_alerts();
        let mqtt_dropped = metrics
            .alert_deliveries
            .with_label_values(&["mqtt", "dropped"]);
        mqtt_dropped.inc_by(dropped.saturating_sub(mqtt_dropped.get()));
    }
}

/// Publishes one committed change and counts it by `kind`; false when the session is gone.
async fn send(
    outbound: &Outbound,
    metrics: &crate::metrics::Metrics,
    kind: &str,
    topic: String,
    retain: bool,
    payload: String,
    properties: Option<PublishProperties>,
) -> bool {
    let sent = outbound.publish(topic, retain, payload, properties).await;
    if sent == Err(NotSent::Closed) {
        return false;
    }
    metrics.mqtt_messages_out.with_label_values(&[kind]).inc();
    true
}

/// Subscribes to POS movements and publishes `online`, from a task of its own: these wait for
/// room in the window, which only the driver's progress makes.
fn subscribe(outbound: Arc<Outbound>, topics: Topics) {
    actix_web::rt::spawn(async move {
        if let Err(e) = outbound.subscribe(topics.pos_subscription()).await {
            warn!(error = ?e, "subscribing to POS movements failed");
        }
        let _ = outbound
            .publish(topics.status(), true, "online".to_owned(), None)
            .await;
    });
}

/// Queues every current stock value of the outlets this process owns for publishing
/// (retained values are absolute). Only an outlet's owner publishes its stock: one publisher
/// per outlet keeps its retained values in seq order.
fn reseed(services: &Services, feed: &Feed) {
    let mut seeded = 0;
    for outlet in services.shared.owners.ids() {
        let outlet = &outlet;
        for (sku, counters) in services.shared.stock.outlet(outlet) {
            feed.stock_changed(outlet, &sku, counters);
            seeded += 1;
        }
    }
    info!(values = seeded, "reseeding retained stock");
}

/// Republishes every retained value once per half its message expiry, so that a SKU that does
/// not change keeps a retained value on the broker. Paced: each second a share of the values,
/// in a fixed order, rather than every (outlet, SKU) at once, which would put a burst of
/// thousands of messages in front of every `stock/#` subscriber.
async fn refresh(services: Arc<Services>, feed: Arc<Feed>, status: Arc<MqttStatus>) {
    let period_secs = u64::from(services.settings.mqtt.stock_expiry_secs / 2).max(1);
    let mut outlets: Vec<OutletId> = Vec::new();
    let mut tick = tokio::time::interval(REFRESH_TICK);
    tick.tick().await;
    // Where the cycle is: an outlet and an offset into its SKUs (sorted).
    let (mut outlet, mut offset, mut per_tick) = (0usize, 0usize, 0usize);
    loop {
        tick.tick().await;
        if outlet == 0 && offset == 0 {
            // Each cycle goes by the chain's outlets as they are now (one may have been
            // added), whoever owns them: one this process takes over during the cycle is
            // refreshed when the cycle reaches it, not a whole cycle later.
            outlets = (services.catalogue.now().outlets.iter())
                .map(|o| o.id.clone())
                .collect();
        }
        if !status.connected() || outlets.is_empty() {
            continue;
        }
        if outlet == 0 && offset == 0 {
            // Only the outlets this process owns are refreshed from here.
            let total: usize = (outlets.iter())
                .filter(|o| services.shared.owners.owns(o))
                .map(|o| services.shared.stock.outlet(o).len())
                .sum();
            per_tick = total.div_ceil(period_secs as usize).max(1);
        }
        let mut budget = per_tick;
        while budget > 0 && outlet < outlets.len() {
            // An outlet owned elsewhere is its owner's to refresh.
            let rows = if services.shared.owners.owns(&outlets[outlet]) {
                services.shared.stock.outlet(&outlets[outlet])
            } else {
                Vec::new()
            };
            for (sku, counters) in rows.iter().skip(offset).take(budget) {
                feed.stock_changed(&outlets[outlet], sku, *counters);
                budget -= 1;
                offset += 1;
            }
            if offset >= rows.len() {
                outlet += 1;
                offset = 0;
            }
        }
        if outlet >= outlets.len() {
            outlet = 0;
        }
    }
}
