//! The agent's settings: one typed tree from defaults, then a TOML file (`agent.toml`, or
//! `--config`), then `SHELFSYNC_AGENT__SECTION__KEY` from the environment, checked once at
//! start so that a bad value stops the agent with its name rather than misbehaving later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use shelfsync::domain::OutletId;
pub use shelfsync::settings::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    /// The outlet this agent runs at (shelfsync's outlet id).
    pub outlet: String,
    /// Where the write-ahead store lives (`agent.db` and its WAL, and the lock).
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub forward: ForwardSettings,
    pub mqtt: MqttSettings,
    pub shelfsync: ShelfsyncSettings,
    pub store: StoreSettings,
}

/// The till's side: the sale webhook, the local stock read and the status page.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// When set, every request but `/healthz` must carry `Authorization: Bearer <token>`.
    /// Required when `host` is not a loopback address.
    #[serde(skip_serializing)]
    pub token: Option<Secret>,
    pub body_limit_bytes: usize,
    /// A body that has not fully arrived this long after its headers is refused (`408`).
    pub body_read_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// MQTT 5, QoS 1, persistent session; acks from `acks/{outlet}`.
    Mqtt,
    /// `POST /v1/movements` with a POS key; the answer is the ack.
    Http,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ForwardSettings {
    pub via: Via,
    /// Events sent and not yet acknowledged by shelfsync, at most.
    pub window: usize,
    /// An event unacknowledged this long is sent again (same event id: a no-op there if
    /// it had arrived).
    pub resend_secs: u64,
    pub retry_delay_min_ms: u64,
    /// Reconnects and retries back off from min to max (doubling, with jitter). The max is
    /// also about how long after a long outage ends the agent may take to notice.
    pub retry_delay_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// The broker session's name; `shelfsync-agent-{outlet}` when empty. With the shipped
    /// ACL (`use_username_as_clientid`), the broker uses the user name instead.
    pub client_id: String,
    pub username: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<Secret>,
    /// shelfsync's `mqtt.topic_prefix`.
    pub topic_prefix: String,
    /// Idle seconds before a PINGREQ: a link that died without a word is noticed within
    /// about twice this.
    pub keep_alive_secs: u64,
    /// TCP, then CONNECT to CONNACK, at most this long.
    pub connect_timeout_secs: u64,
    /// How long the broker keeps the session (acks and stock values queue there while the
    /// link is down).
    pub session_expiry_secs: u32,
}

/// shelfsync's HTTP API, for `forward.via = "http"` and the stock read then.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ShelfsyncSettings {
    pub url: String,
    /// A `pos` key of this outlet.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// One `POST /v1/movements` (answered once durable) at most this long.
    pub request_timeout_secs: u64,
    /// The outlet's stock stream (HTTP link) is taken for dead after this long without a
    /// byte; shelfsync sends a keep-alive every `streams.keepalive_secs` (15).
    pub stream_silence_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StoreSettings {
    /// Events not yet applied by shelfsync, at most; past it new sales are refused (`503
    /// store_full`) and the till keeps them.
    pub pending_max: u64,
    /// The store's pages in use, at most; past it new sales are refused too. The WAL beside
    /// it takes a few MiB more (at most 16 MiB once checkpointed).
    pub disk_max_bytes: u64,
    /// Applied events and their vouchers are deleted this long after they were applied.
    pub keep_applied_secs: u64,
    /// Rejected events (kept for the operator: the status page lists them) this long.
    pub keep_rejected_secs: u64,
    /// A voucher's number is remembered this long after it was recorded (a retry within it is
    /// a duplicate). At least `keep_applied_secs`, and past shelfsync's
    /// `movements.retain_secs` (7 days), after which shelfsync no longer knows its event ids.
    pub keep_vouchers_secs: u64,
    /// How often the clean-up runs.
    pub cleanup_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            outlet: String::new(),
            data_dir: PathBuf::from("var/agent"),
            http: HttpSettings {
                host: "127.0.0.1".into(),
                port: 8090,
                token: None,
                body_limit_bytes: 64 * 1024,
                body_read_secs: 5,
            },
            forward: ForwardSettings {
                via: Via::Mqtt,
                window: 100,
                resend_secs: 30,
                retry_delay_min_ms: 200,
                retry_delay_max_ms: 5_000,
            },
            mqtt: MqttSettings {
                host: "127.0.0.1".into(),
                port: 1884,
                client_id: String::new(),
                username: None,
                password: None,
                topic_prefix: String::new(),
                keep_alive_secs: 15,
                connect_timeout_secs: 10,
                session_expiry_secs: 7 * 86_400,
            },
            shelfsync: ShelfsyncSettings {
                url: "http://127.0.0.1:8080".into(),
                api_key: None,
                request_timeout_secs: 30,
                stream_silence_secs: 35,
            },
            store: StoreSettings {
                pending_max: 200_000,
                disk_max_bytes: 512 * 1024 * 1024,
                keep_applied_secs: 2 * 86_400,
                keep_rejected_secs: 30 * 86_400,
                keep_vouchers_secs: 30 * 86_400,
                cleanup_secs: 60,
            },
        }
    }
}

impl Settings {
    /// Defaults, then `file` if it exists (it must when named with `--config`), then the
    /// environment.
    pub fn load(file: &Path, must_exist: bool) -> anyhow::Result<Self> {
        if must_exist && !file.exists() {
            bail!("{} does not exist", file.display());
        }
        let settings: Self = Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("SHELFSYNC_AGENT__").split("__"))
            .extract()
            .with_context(|| format!("reading {}", file.display()))?;
        settings.check()?;
        Ok(settings)
    }

    pub fn outlet(&self) -> OutletId {
        OutletId::parse("outlet", &self.outlet).expect("checked at load")
    }

    pub fn client_id(&self) -> String {
        if self.mqtt.client_id.is_empty() {
            format!("shelfsync-agent-{}", self.outlet)
        } else {
            self.mqtt.client_id.clone()
        }
    }

    /// Every rule a value must keep, each failure naming the key.
    pub fn check(&self) -> anyhow::Result<()> {
        OutletId::parse("outlet", &self.outlet).map_err(|e| anyhow::anyhow!("{e}"))?;
        let loopback = self
            .http
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || self.http.host == "localhost";
        if !loopback
            && self
                .http
                .token
                .as_ref()
                .is_none_or(|t| t.expose().is_empty())
        {
            bail!("http.token must be set when http.host ({}) is not a loopback address: the webhook records sales", self.http.host);
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            bail!("http.body_limit_bytes must be 1024 to 16777216");
        }
        if !(1..=300).contains(&self.http.body_read_secs) {
            bail!("http.body_read_secs must be 1 to 300");
        }
        let f = &self.forward;
        if !(1..=10_000).contains(&f.window) {
            bail!("forward.window must be 1 to 10000");
        }
        if !(1..=86_400).contains(&f.resend_secs) {
            bail!("forward.resend_secs must be 1 to 86400");
        }
        if f.retry_delay_min_ms == 0 || f.retry_delay_min_ms > f.retry_delay_max_ms {
            bail!("forward.retry_delay_min_ms must be above 0 and at most retry_delay_max_ms");
        }
        let m = &self.mqtt;
        // rumqttc refuses a keep-alive under 5 s.
        if !(5..=3600).contains(&m.keep_alive_secs) || !(1..=300).contains(&m.connect_timeout_secs)
        {
            bail!("mqtt.keep_alive_secs must be 5 to 3600 and mqtt.connect_timeout_secs 1 to 300");
        }
        if m.username.is_some() != m.password.is_some() {
            bail!("mqtt.username and mqtt.password go together");
        }
        if f.via == Via::Http {
            let s = &self.shelfsync;
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                bail!("shelfsync.url must be an http:// or https:// URL");
            }
            if s.api_key.as_ref().is_none_or(|k| k.expose().is_empty()) {
                bail!("shelfsync.api_key (a pos key of the outlet) is needed with forward.via = \"http\"");
            }
            if !(1..=600).contains(&s.request_timeout_secs)
                || !(2..=3600).contains(&s.stream_silence_secs)
            {
                bail!("shelfsync.request_timeout_secs must be 1 to 600 and shelfsync.stream_silence_secs 2 to 3600");
            }
        }
        let st = &self.store;
        if st.pending_max == 0 || st.disk_max_bytes < 1024 * 1024 {
            bail!("store.pending_max must be above 0 and store.disk_max_bytes at least 1 MiB");
        }
        if st.cleanup_secs == 0 || st.keep_applied_secs == 0 || st.keep_rejected_secs == 0 {
            bail!("store.cleanup_secs, keep_applied_secs and keep_rejected_secs must be above 0");
        }
        if st.keep_vouchers_secs < st.keep_applied_secs {
            bail!("store.keep_vouchers_secs must be at least store.keep_applied_secs");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Settings {
        Settings {
            outlet: "indore-vijay-nagar".into(),
            ..Settings::default()
        }
    }

    #[test]
    fn the_defaults_with_an_outlet_are_valid() {
        valid().check().unwrap();
    }

    #[test]
    fn the_shipped_agent_toml_is_valid() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.toml");
        let s = Settings::load(&file, true).unwrap();
        assert_eq!(s.outlet, "indore-vijay-nagar");
        assert_eq!(
            (s.mqtt.keep_alive_secs, s.mqtt.connect_timeout_secs),
            (15, 10)
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        let mut s = valid();
        s.outlet = "vijay nagar".into();
        assert!(s.check().unwrap_err().to_string().contains("outlet"));
        let mut s = valid();
        s.http.host = "0.0.0.0".into();
        assert!(s.check().unwrap_err().to_string().contains("http.token"));
        s.http.token = Some(Secret::new("t"));
        s.check().unwrap();
        let mut s = valid();
        s.forward.via = Via::Http;
        assert!(s.check().unwrap_err().to_string().contains("api_key"));
        let mut s = valid();
        s.mqtt.keep_alive_secs = 1;
        assert!(s.check().unwrap_err().to_string().contains("keep_alive"));
        let mut s = valid();
        s.store.disk_max_bytes = 10;
        assert!(s
            .check()
            .unwrap_err()
            .to_string()
            .contains("disk_max_bytes"));
    }
}
