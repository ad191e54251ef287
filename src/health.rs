//! Readiness of the dependencies: Redis, MongoDB and the MQTT session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ledger::Ledger;
use crate::store::RedisStore;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Health {
    pub store: RedisStore,
    pub ledger: Ledger,
    pub mqtt: Arc<MqttStatus>,
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
    pub fn down(&self) -> Vec<&'static str> {
        [
            ("redis", &self.redis),
            ("mongo", &self.mongo),
            ("mqtt", &self.mqtt),
        ]
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
    pub async fn check(&self) -> Report {
        let (redis, mongo) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.store.ping()),
            tokio::time::timeout(CHECK_TIMEOUT, self.ledger.ping()),
        );
        let mqtt = if self.mqtt.connected() {
            "ok".to_owned()
        } else {
            "down: the session is not connected".to_owned()
        };
        Report {
            redis: status(redis),
            mongo: status(mongo),
            mqtt,
        }
    }
}
