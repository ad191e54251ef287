//! Readiness of the dependencies: Redis, MongoDB and the MQTT session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ledger::Ledger;
use crate::store::RedisStore;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one check answers every `/readyz`: however often it is asked, Redis and MongoDB
/// are pinged at most once a second.
const CHECK_REUSE: Duration = Duration::from_secs(1);

/// Redis's and MongoDB's state by one ping each: `ok` or `down: <why>`.
type Pinged = (String, String);

pub struct Health {
    pub store: RedisStore,
    pub ledger: Ledger,
    pub mqtt: Arc<MqttStatus>,
    /// The last pings of Redis and MongoDB and when they were made; its lock also makes
    /// callers that come while a check runs wait for that one instead of starting their own.
    last: tokio::sync::Mutex<Option<(Instant, Arc<Pinged>)>>,
}

/// Whether the session is connected and subscribed right now (for `/readyz`).
#[derive(Default)]
pub struct MqttStatus {
    connected: AtomicBool,
}

impl MqttStatus {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Set by the MQTT session as it connects and loses its connection.
    pub fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
    }
}

pub struct Report {
    pub redis: String,
    pub mongo: String,
    pub mqtt: String,
}

impl Report {
    /// Each dependency and its status (`ok`, or `down: …`).
    pub fn each(&self) -> [(&'static str, &str); 3] {
        [
            ("redis", self.redis.as_str()),
            ("mongo", self.mongo.as_str()),
            ("mqtt", self.mqtt.as_str()),
        ]
    }

    pub fn down(&self) -> Vec<&'static str> {
        self.each()
            .into_iter()
            .filter(|(_, s)| *s != "ok")
            .map(|(name, _)| name)
            .collect()
    }

    pub fn ready(&self) -> bool {
        self.down().is_empty()
    }
}

fn status(r: Result<anyhow::Result<()>, tokio::time::error::Elapsed>) -> String {
    match r {
        Ok(Ok(())) => "ok".into(),
        Ok(Err(e)) => format!("down: {e:#}"),
        Err(_) => "down: timed out".into(),
    }
}

impl Health {
    pub fn new(store: RedisStore, ledger: Ledger, mqtt: Arc<MqttStatus>) -> Self {
        Self {
            store,
            ledger,
            mqtt,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Redis and MongoDB by the last check if it is under a second old, else by a new one;
    /// the MQTT session as it is now (a flag, nothing to ask).
    pub async fn report(&self) -> Report {
        let pinged = {
            let mut last = self.last.lock().await;
            match &*last {
                Some((at, pinged)) if at.elapsed() < CHECK_REUSE => pinged.clone(),
                _ => {
                    let pinged = Arc::new(self.ping().await);
                    *last = Some((Instant::now(), pinged.clone()));
                    pinged
                }
            }
        };
        let mqtt = if self.mqtt.connected() {
            "ok".to_owned()
        } else {
            "down: the session is not connected".to_owned()
        };
        Report {
            redis: pinged.0.clone(),
            mongo: pinged.1.clone(),
            mqtt,
        }
    }

    async fn ping(&self) -> (String, String) {
        let (redis, mongo) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()),
            tokio::time::timeout(CHECK_TIMEOUT, self.ledger.ping()),
        );
        (status(redis), status(mongo))
    }
}
