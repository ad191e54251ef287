//! The MQTT 5 link: a persistent session (clean start off, session expiry), QoS 1 both ways.
//!
//! - The driver polls rumqttc's event loop, reconnecting with capped backoff and jitter
//!   (rumqttc reconnects with none). On every ConnAck it subscribes to `acks/{outlet}` and
//!   `stock/{outlet}/+` (a session the broker lost has no subscriptions); the stock filter
//!   asks for retained values only for a new subscription (MQTT 5 retain handling 1), so a
//!   resumed session does not pull every SKU's value over a slow link again.
//! - The sender publishes pending events to `pos/{outlet}/movements` while the link is up,
//!   at most `forward.window` unanswered, and sends again what has had no answer for
//!   `forward.resend_secs`. On a connection whose session the broker did not keep, the acks
//!   queued for the old one are gone: every pending event is sent again.
//! - Acks and stock values go to the settler and the stock writer (`mod.rs`).
//!
//! Keep-alive and connect timeout are chosen for a shop's broadband with a 3G fallback (see
//! `agent.toml`): a link that dies silently is noticed within about twice the keep-alive.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectProperties, Filter, Packet, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use shelfsync::domain::{now_ms, Sku};
use shelfsync::mqtt::topics::Topics;
use shelfsync::wire::{PosAck, PosFate};

use super::{settle_from, write_stock, Backoff, LinkState, Outbox, StockInbox};
use crate::settings::Settings;
use crate::store::{Fate, StockValue};

/// We accept packets up to this size (a stock value or an ack is a few hundred bytes).
const PACKET_SIZE_MAX_BYTES: u32 = 64 * 1024;
/// How often the sender looks for overdue events when nothing wakes it.
const SENDER_TICK: Duration = Duration::from_secs(1);
/// Answers waiting for the settler, at most; one that finds it full is dropped (and counted):
/// its line stays pending and is sent, and answered, again.
const ANSWERS_MAX: usize = 10_000;

/// shelfsync's retained stock value (`stock/{outlet}/{sku}`).
#[derive(Deserialize)]
struct Stock {
    on_hand: i64,
    reserved: i64,
    available: i64,
    seq: i64,
    at: String,
}

fn options(settings: &Settings) -> MqttOptions {
    let m = &settings.mqtt;
    let mut options = MqttOptions::new(settings.client_id(), &m.host, m.port);
    options
        .set_keep_alive(Duration::from_secs(m.keep_alive_secs))
        .set_connection_timeout(m.connect_timeout_secs)
        .set_clean_start(false);
    let mut properties = ConnectProperties::new();
    properties.session_expiry_interval = Some(m.session_expiry_secs);
    properties.max_packet_size = Some(PACKET_SIZE_MAX_BYTES);
    options.set_connect_properties(properties);
    if let (Some(user), Some(password)) = (&m.username, &m.password) {
        options.set_credentials(user, password.expose());
    }
    options
}

/// Runs the link until the process ends.
pub async fn run(settings: Settings, outbox: Arc<Outbox>, link: Arc<LinkState>) {
    let topics = Topics::new(&settings.mqtt.topic_prefix);
    let outlet = settings.outlet.as_str();
    let acks_topic = topics.acks(outlet);
    let window = settings.forward.window;
    // Room for a window of publishes, the subscription and a resend round.
    let (client, mut eventloop) = AsyncClient::new(options(&settings), 2 * window + 16);
    let (answers_tx, answers_rx) = mpsc::channel(ANSWERS_MAX);
    let stock = Arc::new(StockInbox::new(outbox.metrics.clone()));
    // Which connection is ready (subscribed) to send on: 0 while none is.
    let (ready_tx, ready_rx) = watch::channel(0u64);
    tokio::spawn(settle_from(outbox.clone(), answers_rx));
    tokio::spawn(write_stock(stock.clone(), outbox.store.clone()));
    tokio::spawn(send(
        client.clone(),
        topics.pos(outlet),
        outbox.clone(),
        ready_rx,
        Duration::from_secs(settings.forward.resend_secs),
        window,
    ));
    let f = &settings.forward;
    let mut backoff = Backoff::new(f.retry_delay_min_ms, f.retry_delay_max_ms);
    let mut epoch = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                epoch += 1;
                link.set(true);
                backoff.reset();
                if !ack.session_present {
                    // Acks queued for an earlier session are gone with it: every pending line
                    // goes again once subscribed. What rumqttc kept to replay (publishes the
                    // old session had not acked, requests drained at the loss) would go first,
                    // ahead of the subscription, and their acks would reach nobody.
                    eventloop.pending.clear();
                    outbox.restart();
                }
                let mut stock_filter =
                    Filter::new(topics.stock_of_outlet(outlet), QoS::AtLeastOnce);
                stock_filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                let filters = vec![
                    Filter::new(acks_topic.clone(), QoS::AtLeastOnce),
                    stock_filter,
                ];
                // try_: the driver must never wait on the channel it drains; the sender holds
                // room for it below the capacity.
                if let Err(e) = client.try_subscribe_many(filters) {
                    // No room (a full channel): drop this connection (a DISCONNECT would need
                    // room too) and connect again.
                    warn!(error = %e, "subscribing failed; reconnecting");
                    eventloop.clean();
                    link.set(false);
                    backoff.wait().await;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                link.heard();
                let _ = ready_tx.send(epoch);
                outbox.wake.notify_one();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                link.heard();
                let topic = String::from_utf8_lossy(&p.topic);
                if topic == acks_topic {
                    // Another word than shelfsync's (or one this agent does not know) leaves
                    // the line pending.
                    let Ok(ack) = serde_json::from_slice::<PosAck>(&p.payload) else {
                        debug!("an ack that is not shelfsync's; ignored");
                        continue;
                    };
                    let fate = match ack.fate {
                        PosFate::Applied { seq } => Fate::Applied {
                            seq: i64::try_from(seq).ok(),
                        },
                        PosFate::Rejected { code, reason } => Fate::Rejected { code, reason },
                    };
                    // Never wait here (the driver is what keeps the connection): an answer
                    // that finds the settler behind is dropped and counted, and the line,
                    // still pending, is sent again and answered again.
                    if answers_tx.try_send((ack.event_id, fate)).is_err() {
                        outbox.metrics.answers_dropped.inc();
                    }
                } else if let Some(sku) = topics.stock_sku(outlet, &topic) {
                    // An empty payload clears a retained value; an expired one is not sent.
                    let value = serde_json::from_slice::<Stock>(&p.payload);
                    if let (Ok(sku), Ok(s)) = (Sku::parse("sku", sku), value) {
                        stock.put(StockValue {
                            sku: sku.as_str().to_owned(),
                            on_hand: s.on_hand,
                            reserved: s.reserved,
                            available: s.available,
                            seq: s.seq,
                            at: s.at,
                        });
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                link.heard();
                outbox.metrics.broker_acks.inc();
            }
            Ok(Event::Incoming(_)) => link.heard(),
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                let _ = ready_tx.send(0);
                link.set(false);
                warn!(error = %e, at_ms = now_ms(), "the MQTT link is down; retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Publishes pending events while a connection is ready; resends overdue ones.
async fn send(
    client: AsyncClient,
    pos_topic: String,
    outbox: Arc<Outbox>,
    mut ready: watch::Receiver<u64>,
    resend_after: Duration,
    window: usize,
) {
    loop {
        if *ready.borrow_and_update() == 0 {
            if ready.changed().await.is_err() {
                return;
            }
            continue;
        }
        let room = window.saturating_sub(outbox.in_flight());
        let fresh = match outbox.next(room).await {
            Ok(fresh) => fresh,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading pending events failed; retrying");
                Vec::new()
            }
        };
        let overdue = outbox.overdue(resend_after);
        let mut events = fresh.into_iter().chain(overdue);
        let mut unsent = Vec::new();
        for (event_id, payload) in events.by_ref() {
            if *ready.borrow() == 0 {
                unsent.push(event_id);
                break;
            }
            // Waits while rumqttc's channel is full; the driver keeps draining it.
            if client
                .publish(pos_topic.clone(), QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                // The event loop is gone: the process is ending.
                return;
            }
        }
        if !unsent.is_empty() {
            // The link went down mid-round: what was not handed to rumqttc goes first on the
            // next connection rather than after `resend_secs`.
            unsent.extend(events.map(|(id, _)| id));
            outbox.unsend(&unsent);
            continue;
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(SENDER_TICK) => {}
            _ = ready.changed() => {}
        }
    }
}
