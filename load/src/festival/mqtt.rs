//! POS counter sales over MQTT 5, QoS 1, with each PUBACK matched to its event id.
//!
//! The client's event loop reports `Outgoing::Publish(pkid)` in the order the publishes were
//! queued, so a FIFO of event ids (filled under the same lock as the queueing) names each
//! packet id; the broker's PUBACK for that id then marks the event acknowledged. A PUBACK
//! is the broker's, not the service's: the audit then looks for each acknowledged sale in the
//! ledger.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::Event;
use rumqttc::Outgoing;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::args::Args;
use crate::stats::Stats;
use crate::world::{mix, World};

struct Sent {
    event_id: String,
    intended: Instant,
    permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State {
    /// Queued, not yet given a packet id.
    queued: VecDeque<Sent>,
    /// Sent, waiting for the PUBACK.
    inflight: HashMap<u16, Sent>,
    acked: BTreeSet<String>,
}

/// Options for an MQTT 5 client `id` of the broker the run uses (`--mqtt-host`,
/// `--mqtt-port`).
pub fn options(args: &Args, id: &str) -> rumqttc::v5::MqttOptions {
    shelfsync_load::mqtt::options(id, &args.mqtt_host, args.mqtt_port)
}

#[derive(Clone)]
pub struct Pos {
    client: Arc<shelfsync_load::mqtt::Client>,
    state: Arc<Mutex<State>>,
    /// Serializes queueing so the FIFO matches the order of the client's requests.
    order: Arc<tokio::sync::Mutex<()>>,
    prefix: String,
    run: String,
    /// Units sold so far per counter target (never past what it had at the start).
    sold: Arc<Vec<AtomicI64>>,
    stats: Stats,
}

impl Pos {
    pub async fn connect(
        args: &Args,
        run: &str,
        world: &World,
        stats: Stats,
    ) -> anyhow::Result<Self> {
        let state: Arc<Mutex<State>> = Arc::default();
        let st = state.clone();
        let acks = stats.clone();
        let options = options(args, &format!("shelfsync-festival-{run}"));
        let client = shelfsync_load::mqtt::connect(options, 100_000, move |event| match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let mut s = st.lock().expect("pos state");
                // A packet id still in flight is a resend after a reconnect, not the next
                // queued publish.
                if s.inflight.contains_key(&pkid) {
                    return;
                }
                if let Some(sent) = s.queued.pop_front() {
                    s.inflight.insert(pkid, sent);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                let mut s = st.lock().expect("pos state");
                if let Some(sent) = s.inflight.remove(&ack.pkid) {
                    let ok = matches!(
                        ack.reason,
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                    );
                    let status = if ok {
                        "puback".to_owned()
                    } else {
                        format!("puback {:?}", ack.reason)
                    };
                    acks.answer("pos_sale", sent.intended, status, ok);
                    if ok {
                        s.acked.insert(sent.event_id);
                    }
                    drop(sent.permit);
                }
            }
            _ => {}
        })
        .await?;
        Ok(Self {
            client: Arc::new(client),
            state,
            order: Arc::default(),
            prefix: args.topic_prefix.clone(),
            run: run.to_owned(),
            sold: Arc::new(world.counter.iter().map(|_| AtomicI64::new(0)).collect()),
            stats,
        })
    }

    /// One counter sale of one unit, at a counter target that still has a unit to sell.
    pub async fn sell(
        &self,
        world: &World,
        seed: u64,
        i: u64,
        intended: Instant,
        permit: OwnedSemaphorePermit,
    ) {
        let n = world.counter.len();
        let first = (mix(seed ^ 11 ^ mix(i)) % n as u64) as usize;
        let pick = (0..n).map(|k| (first + k) % n).find(|&t| {
            let budget = world.counter[t].2;
            if self.sold[t].fetch_add(1, Ordering::Relaxed) < budget {
                true
            } else {
                self.sold[t].fetch_sub(1, Ordering::Relaxed);
                false
            }
        });
        let Some(t) = pick else {
            // Every counter target sold out: nothing was sent (counted, not skipped silently).
            self.stats.note("pos_sale", "no_counter_stock");
            return;
        };
        let (outlet, sku, _) = &world.counter[t];
        let event_id = format!("fest-{}-pos-{i}", self.run);
        let body = json!({"event_id": event_id, "sku": sku, "kind": "sale_counter", "qty": 1,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
        let _order = self.order.lock().await;
        self.state
            .lock()
            .expect("pos state")
            .queued
            .push_back(Sent {
                event_id,
                intended,
                permit,
            });
        if self
            .client
            .publish(
                format!("{}pos/{outlet}/movements", self.prefix),
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await
            .is_err()
        {
            self.state.lock().expect("pos state").queued.pop_back();
            self.stats
                .answer("pos_sale", intended, "publish_error".into(), false);
        }
    }

    /// Waits until every publish is acknowledged or `limit` passes.
    pub async fn wait_acks(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            {
                let s = self.state.lock().expect("pos state");
                if s.queued.is_empty() && s.inflight.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Event ids the broker acknowledged.
    pub fn acked(&self) -> BTreeSet<String> {
        self.state.lock().expect("pos state").acked.clone()
    }
}
