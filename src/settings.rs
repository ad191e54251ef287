//! Typed settings: `config.toml` first, then `SHELFSYNC__SECTION__KEY` environment overrides.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

/// A value that never prints (API keys, secrets in URIs).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub redis: RedisSettings,
    pub mongo: MongoSettings,
    pub mqtt: MqttSettings,
    pub reservations: ReservationSettings,
    pub movements: MovementSettings,
    pub outlet: OutletSettings,
    pub ledger: LedgerSettings,
    pub reconciler: ReconcilerSettings,
    pub catalogue: CatalogueSettings,
    pub streams: StreamSettings,
    pub rate_limits: RateLimitSettings,
    pub whatsapp: WhatsAppSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
    #[serde(default)]
    pub reports: ReportSettings,
    #[serde(default)]
    pub alerts: AlertSettings,
    #[serde(default)]
    pub kitchen: KitchenSettings,
    #[serde(default)]
    pub api_keys: Vec<ApiKeySettings>,
}

/// The end-of-day report (end_of_day.rs).
#[derive(Debug, Clone, Deserialize)]
pub struct ReportSettings {
    /// The chain's local time, minutes east of UTC (India: 330): a report's day is a local
    /// calendar day.
    #[serde(default = "default_utc_offset_minutes")]
    pub utc_offset_minutes: i32,
    /// `sku,price`: the price of one unit in rupees (up to 2 decimals), for the report's
    /// values; a SKU not in it has no value.
    #[serde(default = "default_prices_file")]
    pub prices_file: PathBuf,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            utc_offset_minutes: default_utc_offset_minutes(),
            prices_file: default_prices_file(),
        }
    }
}

/// Sell-out and low-stock alerts (alerts.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertSettings {
    /// A SKU whose forecast sell-out is this close (minutes) raises `sell_out`.
    pub horizon_mins: u32,
    /// A SKU with this many units available or fewer raises `low_stock`.
    pub low_stock: i64,
    /// Weeks of the ledger's sales each outlet's forecasts are fitted to.
    pub history_weeks: u32,
    /// How often every owned SKU with sales is looked at again (a forecast moves with the
    /// clock, not only with commits).
    pub sweep_secs: u64,
    /// How long an outlet is owned before its sales history is read from the ledger (a
    /// takeover's own ledger work goes first); until then it is judged for low stock only.
    pub read_after_secs: u64,
    /// Where alerts are POSTed (empty: none), signed with `webhook_secret`. Kept like a
    /// secret: a receiver's URL often carries its own token, and `settings` prints nothing
    /// of it.
    pub webhook_url: Secret,
    /// The HMAC-SHA256 key of `X-Shelfsync-Signature`.
    pub webhook_secret: Secret,
    /// Alerts waiting for the webhook (and for MQTT); past it the oldest is dropped and
    /// counted.
    pub queue_max: usize,
    /// Tries of one webhook delivery before it is given up and counted.
    pub webhook_attempts: u32,
    /// Per try.
    pub webhook_timeout_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            horizon_mins: 120,
            low_stock: 3,
            history_weeks: 4,
            sweep_secs: 60,
            read_after_secs: 30,
            webhook_url: Secret::new(""),
            webhook_secret: Secret::new(""),
            queue_max: 1000,
            webhook_attempts: 5,
            webhook_timeout_ms: 5000,
        }
    }
}

/// The kitchen plan (kitchen.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KitchenSettings {
    /// The window a plan covers, in hours from now.
    pub window_hours: u32,
    /// Safety stock, as a share of the window's expected sales.
    pub safety_share: f64,
    /// Safety stock at least, in units, for a SKU that sells at all.
    pub safety_min: i64,
}

impl Default for KitchenSettings {
    fn default() -> Self {
        Self {
            window_hours: 24,
            safety_share: 0.2,
            safety_min: 1,
        }
    }
}

fn default_utc_offset_minutes() -> i32 {
    330
}

fn default_prices_file() -> PathBuf {
    PathBuf::from("catalogue/prices.csv")
}

/// The WhatsApp Cloud API webhook.
#[derive(Debug, Clone, Deserialize)]
pub struct WhatsAppSettings {
    /// What Meta sends as `hub.verify_token` when the webhook is registered.
    pub verify_token: Secret,
    /// The app secret: `X-Hub-Signature-256` is the HMAC-SHA256 of the body under it.
    pub app_secret: Secret,
    /// Where an order goes when its sender has no PIN mapped.
    pub default_outlet: String,
    /// Hold time of a WhatsApp order (the customer pays later in the chat).
    pub ttl_secs: u64,
    /// Orders waiting to be turned into reservations; past it the webhook answers 503 and
    /// Meta retries.
    pub queue_max: usize,
    /// Sender phone number (as WhatsApp gives it, digits) → delivery PIN.
    #[serde(default)]
    pub senders: std::collections::HashMap<String, String>,
    /// Holds a sender of `senders` may have open at once (held: not yet confirmed,
    /// cancelled or expired); an order past it is refused, nothing held.
    #[serde(default = "default_sender_open_holds_max")]
    pub sender_open_holds_max: usize,
    /// Units a sender of `senders` may have held at once, summed over its open holds and
    /// the new order.
    #[serde(default = "default_sender_units_max")]
    pub sender_units_max: i64,
    /// What becomes of an order from a sender not in `senders` (held at `default_outlet`).
    #[serde(default)]
    pub unknown_sender: UnknownSenderPolicy,
    /// Under `unknown_sender = "cap"`: holds one unknown sender may have open at once.
    #[serde(default = "default_unknown_sender_open_holds_max")]
    pub unknown_sender_open_holds_max: usize,
    /// Under `unknown_sender = "cap"`: units one unknown sender may have held at once.
    #[serde(default = "default_unknown_sender_units_max")]
    pub unknown_sender_units_max: i64,
}

/// What becomes of a WhatsApp order from a sender not in `whatsapp.senders`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSenderPolicy {
    /// Held at `default_outlet` within the small `unknown_sender_*_max` caps.
    #[default]
    Cap,
    /// Never held: refused, with nothing held.
    Refuse,
}

/// A family's festival order: a few boxes, a few open orders at once.
fn default_sender_open_holds_max() -> usize {
    3
}

fn default_sender_units_max() -> i64 {
    50
}

/// Enough for a stranger to try the shop, not to lock its shelf.
fn default_unknown_sender_open_holds_max() -> usize {
    1
}

fn default_unknown_sender_units_max() -> i64 {
    5
}

/// Most open holds a sender may be allowed: each order reads every open hold of its sender.
const SENDER_OPEN_HOLDS_MAX: usize = 100;

/// A token bucket: `per_sec` requests per second on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct BucketSettings {
    pub per_sec: f64,
    pub burst: u32,
}

/// One bucket per API key, sized by the key's role; and one per client address for requests
/// without a valid key.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub public: BucketSettings,
    pub storefront: BucketSettings,
    pub pos: BucketSettings,
    pub manager: BucketSettings,
    pub viewer: BucketSettings,
    pub admin: BucketSettings,
    /// Per client address (IPv6 by its /64): requests with no key or an unknown one, which
    /// include the dashboard page, health, readiness, the OpenAPI document and the webhook.
    pub unauthenticated: BucketSettings,
}

impl RateLimitSettings {
    pub fn for_role(&self, role: Role) -> BucketSettings {
        match role {
            Role::Public => self.public,
            Role::Storefront => self.storefront,
            Role::Pos => self.pos,
            Role::Manager => self.manager,
            Role::Viewer => self.viewer,
            Role::Admin => self.admin,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Largest request body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    pub workers: usize,
    /// How long a graceful stop waits for requests in flight.
    pub shutdown_timeout_secs: u64,
    /// Bind `port` with SO_REUSEPORT, so that several processes on one machine share it and
    /// the kernel spreads connections over them (`make cluster`). Each process then also
    /// listens on a free port of its own, which it advertises for forwarded requests.
    #[serde(default)]
    pub reuse_port: bool,
    /// Start off loopback (`host` not 127.x, ::1 or localhost) even with a demo or empty key
    /// or secret: for a demo host only. Without it such a start is refused, saying which.
    #[serde(default)]
    pub allow_demo_secrets: bool,
    /// A request body must arrive within this long of its head; a slower one gets `408`.
    pub body_read_secs: u64,
    /// Data written to a connection must be taken by the client within this long (the
    /// kernel's TCP_USER_TIMEOUT on every accepted socket, which also counts a closed
    /// receive window): a stream whose client stopped reading is cut, and what it held freed.
    pub write_deadline_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// One URL; on a Redis Cluster (`cluster = true`) the seed nodes, separated by commas.
    pub url: Secret,
    /// Talk to a Redis Cluster through the cluster client (every outlet's keys share one
    /// hash tag, so each script runs on one node).
    #[serde(default)]
    pub cluster: bool,
    /// Prefix of every key; lets several instances or tests share one Redis.
    pub key_prefix: String,
    /// A command that takes longer fails the batch with `unavailable`.
    pub response_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MongoSettings {
    pub uri: Secret,
    pub database: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// Prefix of every topic (may be empty); lets several instances or tests share a broker.
    pub topic_prefix: String,
    /// Also the name of the persistent session on the broker: one per instance.
    pub client_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Connect over TLS (rustls), verifying the broker's certificate against `ca_file`.
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA (or CAs) the broker's certificate must chain to; required with
    /// `tls`. Only these are trusted, not the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate and key for a broker that asks for client certificates (both or
    /// neither).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// How long the broker keeps the session (and queues POS messages) while we are away.
    pub session_expiry_secs: u32,
    /// Idle seconds before a PINGREQ; a link that died silently is noticed within about
    /// twice this (no PINGRESP by the next one), the broker's side within 1.5 times.
    pub keep_alive_secs: u64,
    /// The most a connection attempt (TCP, TLS, CONNECT to CONNACK) may take.
    pub connect_timeout_secs: u64,
    /// Message expiry of the retained `stock/…` values.
    pub stock_expiry_secs: u32,
    /// Larger POS messages are rejected to `dlq/…`.
    pub payload_max_bytes: usize,
    /// How long a rejected POS message is kept in the `rejected` collection (a TTL index);
    /// the record holds at most the first 4 KiB of its payload.
    pub rejected_keep_secs: u64,
    /// POS messages in flight at once (our Receive Maximum: the broker sends no more
    /// unacknowledged); acknowledged in order. A message is acknowledged once durable, so POS
    /// throughput is about this divided by the ledger's lag (`ledger.lag_max_secs` at most
    /// under load).
    pub inflight_max: u16,
    pub reconnect_delay_min_ms: u64,
    pub reconnect_delay_max_ms: u64,
    /// Requests (publishes, acks) the client may queue towards the broker; `inflight_max` of
    /// it is kept for acknowledgments (see `mqtt/outbound.rs`).
    pub request_channel_capacity: usize,
    /// Confirmed orders waiting for the broker; past it the oldest is dropped and counted.
    pub orders_queue_max: usize,
}

/// The PEM contents `mqtt.tls` needs: the CA, and the client's certificate and key.
pub struct TlsFiles {
    pub ca: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl MqttSettings {
    /// Reads `ca_file` and the client certificate and key (checked at start; read again when
    /// the MQTT session actor starts anew, not at each reconnect: a renewed certificate is
    /// taken at the next restart of the process).
    pub fn tls_files(&self) -> anyhow::Result<TlsFiles> {
        let read = |name: &str, path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).with_context(|| format!("reading mqtt.{name} {}", p.display()))
                })
                .transpose()
        };
        let ca =
            read("ca_file", &self.ca_file)?.context("mqtt.ca_file is required with mqtt.tls")?;
        let client = match (
            read("client_cert_file", &self.client_cert_file)?,
            read("client_key_file", &self.client_key_file)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("mqtt.client_cert_file and mqtt.client_key_file go together"),
        };
        Ok(TlsFiles { ca, client })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReservationSettings {
    /// Hold time when a request gives none.
    pub ttl_secs: u64,
    /// Longest hold a request may ask for.
    pub ttl_secs_max: u64,
    pub lines_max: usize,
    pub qty_max: i64,
    /// How long a finished reservation and an `Idempotency-Key` are remembered.
    pub retain_secs: u64,
}

impl ReservationSettings {
    pub fn retain_ms(&self) -> i64 {
        (self.retain_secs * 1000) as i64
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MovementSettings {
    pub qty_max: i64,
    /// How long an `event_id` is remembered for replays.
    pub retain_secs: u64,
    pub note_len_max: usize,
    /// The oldest `at` a movement may carry, before the service's clock: an older one is
    /// refused (`too_old`). At most `retain_secs`, so that a movement still taken has its
    /// `event_id` remembered if it was ever applied (a replay is never applied twice).
    pub at_age_max_secs: u64,
    /// How far ahead of the service's clock a movement's `at` may be (`in_future`).
    pub at_ahead_max_secs: u64,
    /// The most lines one `POST /v1/movements/bulk` may carry.
    #[serde(default = "default_bulk_lines_max")]
    pub bulk_lines_max: usize,
    /// The largest body of a bulk request, JSON or CSV.
    #[serde(default = "default_bulk_bytes_max")]
    pub bulk_bytes_max: usize,
}

fn default_bulk_lines_max() -> usize {
    20_000
}

fn default_bulk_bytes_max() -> usize {
    4 << 20
}

impl MovementSettings {
    pub fn retain_ms(&self) -> i64 {
        (self.retain_secs * 1000) as i64
    }
}

/// Several processes over one Redis: which one owns which outlet (ARCHITECTURE.md, Several
/// processes).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClusterSettings {
    /// This process's name among the processes sharing the Redis prefix. Each process must
    /// have its own: a process that starts under the name of one that died takes its outlets
    /// over at once, without waiting for the leases to expire.
    pub node_id: String,
    /// How long an outlet's lease lasts without renewal: the longest an outlet of a process
    /// that died stays without an owner. Renewed every third of it.
    pub lease_ms: u64,
    /// Where the other processes reach this one's HTTP API, for the requests they forward
    /// to an outlet's owner; empty: `http://{http.host}:{port}` (`127.0.0.1` for a host of
    /// `0.0.0.0`, right only when every process runs on one machine).
    pub advertise_url: String,
    /// Signs every request one process forwards to another (HMAC-SHA256); the same on
    /// every process of the chain.
    pub secret: Secret,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: "shelfsync".into(),
            lease_ms: 6000,
            advertise_url: String::new(),
            secret: Secret::new(""),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutletSettings {
    /// Most operations one Redis round trip of an outlet carries (group commit).
    pub batch_size_max: usize,
    /// Operations waiting for the next round trip; past it requests get 503.
    pub pending_max: usize,
    /// Actor mailbox capacity (actix's default is 16).
    pub mailbox_capacity: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LedgerSettings {
    /// Most documents in one `insert_many`.
    pub batch_size_max: usize,
    /// Entries an outlet's outbox may hold before writes to it get 503.
    pub outbox_max: u64,
    /// How long a confirm or movement waits for its ledger document before 503.
    pub durable_wait_secs: u64,
    /// The ledger lag budget: while an outlet's oldest change not yet durable is older than
    /// this, its new holds are refused (503, `Retry-After`); facts, confirms, cancels and
    /// expiries are still taken.
    pub lag_max_secs: u64,
    /// How often the writer looks at every outbox even without a nudge.
    pub poll_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReconcilerSettings {
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Set drifted Redis counters to the ledger's numbers (else only report them).
    pub heal: bool,
    /// Write a projection checkpoint of an outlet on a pass once the ledger has grown by at
    /// least this many documents since its last checkpoint.
    pub checkpoint_every_docs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    /// Concurrent SSE and WebSocket clients; past it, 503.
    pub clients_max: usize,
    /// Of those, the most one API key may hold (the public key of every browser included),
    /// so that staff screens find room while the storefront's browsers are many.
    pub clients_per_key_max: usize,
    /// WebSocket `subscribe` messages per connection (each sends a full snapshot): past the
    /// bucket the client gets an `error` frame `rate_limited` and keeps its filter.
    pub subscribe: BucketSettings,
    /// Events the hub keeps for its slowest reader; a client further behind is dropped.
    pub ring_events: usize,
    /// Events the hub keeps for clients that reconnect: one that names (SSE `Last-Event-ID`)
    /// an event at most this many back gets only what came after, instead of a snapshot.
    pub resume_events: usize,
    /// The reconnect delay SSE clients are told (`retry:`), in milliseconds.
    pub retry_ms: u64,
    /// Events buffered for one client.
    pub client_buffer_events: usize,
    /// A client whose buffer stays full this long is dropped.
    pub stall_secs: u64,
    pub keepalive_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogueSettings {
    pub outlets_file: PathBuf,
    pub skus_file: PathBuf,
    pub stock_file: PathBuf,
    /// Delivery zones: `pin,outlet,cost` (edits through the API are kept in MongoDB).
    pub zones_file: PathBuf,
    /// How often each process reads the SKU and outlet edits made through the others
    /// (live_catalogue.rs).
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// The most outlets and kitchens `PUT /v1/outlets/{outlet}` lets the catalogue grow to:
    /// each one is an actor, a lease and a share of every per-outlet structure in every
    /// process.
    #[serde(default = "default_outlets_max")]
    pub outlets_max: usize,
    /// Stock answers count a SKU's units of lots expiring within this many minutes as
    /// `expiring_soon`.
    #[serde(default = "default_expiring_soon_mins")]
    pub expiring_soon_mins: u64,
}

fn default_expiring_soon_mins() -> u64 {
    240
}

fn default_refresh_ms() -> u64 {
    1000
}

fn default_outlets_max() -> usize {
    200
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Browsers: stock, availability, outlets and zones; nothing about reservations.
    Public,
    Storefront,
    Pos,
    Manager,
    Viewer,
    Admin,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiKeySettings {
    pub key: Secret,
    pub role: Role,
    /// Outlets a `pos` or `manager` key may touch.
    #[serde(default)]
    pub outlets: Vec<String>,
    /// Free text for operators ("demo only", "bhopal counter 2").
    #[serde(default)]
    pub label: String,
}

impl Settings {
    /// Loads `path`, then applies `SHELFSYNC__…` environment overrides.
    /// Refuses a bind off loopback while a key or secret is empty or the shipped demo value
    /// (they are printed in the README and config.toml), unless `http.allow_demo_secrets`.
    fn check_secrets(&self) -> anyhow::Result<()> {
        let host = self.http.host.trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback || self.http.allow_demo_secrets {
            return Ok(());
        }
        let demo = |s: &Secret| {
            let v = s.expose();
            v.trim().is_empty() || v.starts_with("demo-") || v.contains("change-me")
        };
        let mut found: Vec<String> = (self.api_keys.iter())
            .filter(|k| demo(&k.key))
            .map(|k| format!("api key '{}'", k.label))
            .collect();
        for (name, secret) in [
            ("whatsapp.verify_token", &self.whatsapp.verify_token),
            ("whatsapp.app_secret", &self.whatsapp.app_secret),
            ("cluster.secret", &self.cluster.secret),
        ] {
            if demo(secret) {
                found.push(name.to_owned());
            }
        }
        if !found.is_empty() {
            bail!(
                "refusing to listen on {} with demo or empty secrets ({}): anyone on the network \
                 could use them (they are printed in the README). Set your own, or \
                 http.allow_demo_secrets = true for a demo host",
                self.http.host,
                found.join(", ")
            );
        }
        Ok(())
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let settings: Settings = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("SHELFSYNC__").split("__"))
            .extract()
            .with_context(|| format!("reading settings from {}", path.display()))?;
        settings.check()?;
        Ok(settings)
    }

    /// The alerts' and the kitchen plan's bounds, and a webhook's URL and secret.
    fn check_alerts(&self) -> anyhow::Result<()> {
        let a = &self.alerts;
        if a.horizon_mins == 0 || a.horizon_mins > 7 * 24 * 60 {
            bail!("alerts.horizon_mins must be 1 to 10080 (a week)");
        }
        if !(1..=52).contains(&a.history_weeks) {
            bail!("alerts.history_weeks must be 1 to 52");
        }
        if a.sweep_secs == 0 || a.queue_max == 0 || a.webhook_attempts == 0 {
            bail!("alerts.sweep_secs, alerts.queue_max and alerts.webhook_attempts must be at least 1");
        }
        let url = a.webhook_url.expose();
        if !url.is_empty() {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("alerts.webhook_url must be an http:// or https:// URL (or empty: none)");
            }
            if a.webhook_secret.expose().len() < 16 {
                bail!("alerts.webhook_secret must be at least 16 characters: it signs every alert");
            }
        }
        let k = &self.kitchen;
        if !(1..=168).contains(&k.window_hours) {
            bail!("kitchen.window_hours must be 1 to 168");
        }
        if !(0.0..=5.0).contains(&k.safety_share) || k.safety_min < 0 {
            bail!("kitchen.safety_share must be 0 to 5 and kitchen.safety_min at least 0");
        }
        Ok(())
    }

    /// The per-sender caps of WhatsApp holds: each at least 1, an unknown sender's no
    /// larger than a mapped one's.
    fn check_whatsapp(&self) -> anyhow::Result<()> {
        let w = &self.whatsapp;
        if !(1..=SENDER_OPEN_HOLDS_MAX).contains(&w.sender_open_holds_max) || w.sender_units_max < 1
        {
            bail!(
                "whatsapp.sender_open_holds_max must be 1 to {SENDER_OPEN_HOLDS_MAX} and \
                 whatsapp.sender_units_max at least 1"
            );
        }
        if w.unknown_sender == UnknownSenderPolicy::Cap
            && !((1..=w.sender_open_holds_max).contains(&w.unknown_sender_open_holds_max)
                && (1..=w.sender_units_max).contains(&w.unknown_sender_units_max))
        {
            bail!(
                "whatsapp.unknown_sender_open_holds_max and whatsapp.unknown_sender_units_max \
                 must be at least 1 and at most whatsapp.sender_open_holds_max and \
                 whatsapp.sender_units_max: an unknown sender may not hold more than a known one"
            );
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        self.check_secrets()?;
        self.check_alerts()?;
        if self.redis.key_prefix.contains(['{', '}']) {
            bail!("redis.key_prefix must not contain braces: they would move the hash tag");
        }
        if self.reservations.ttl_secs == 0
            || self.reservations.ttl_secs > self.reservations.ttl_secs_max
        {
            bail!("reservations.ttl_secs must be between 1 and reservations.ttl_secs_max");
        }
        if self.outlet.batch_size_max == 0 || self.ledger.batch_size_max == 0 {
            bail!("batch sizes must be at least 1");
        }
        if self.outlet.pending_max < 2 {
            bail!("outlet.pending_max must be at least 2: new holds may fill half of it");
        }
        let c = &self.cluster;
        if c.node_id.is_empty() || c.node_id.len() > 64 || c.node_id.contains(char::is_whitespace) {
            bail!("cluster.node_id must be 1 to 64 characters without spaces");
        }
        if c.lease_ms < 1000 {
            bail!("cluster.lease_ms must be at least 1000");
        }
        if c.secret.expose().len() < 16 {
            bail!("cluster.secret must be at least 16 characters: it signs requests between processes");
        }
        if !(c.advertise_url.is_empty() || c.advertise_url.starts_with("http://")) {
            bail!(
                "cluster.advertise_url must be empty or an http:// URL (processes talk plain \
                 HTTP, signed; keep their ports on a private network)"
            );
        }
        let l = &self.ledger;
        if l.lag_max_secs == 0 || l.lag_max_secs >= l.durable_wait_secs {
            bail!(
                "ledger.lag_max_secs must be at least 1 and below ledger.durable_wait_secs, so \
                 that a fact waits for the ledger less than its answer may"
            );
        }
        let mv = &self.movements;
        if mv.at_age_max_secs == 0 || mv.at_age_max_secs > mv.retain_secs {
            bail!(
                "movements.at_age_max_secs must be at least 1 and at most movements.retain_secs: \
                 an older movement could be a replay of one whose event_id is forgotten"
            );
        }
        const TEN_YEARS_SECS: u64 = 10 * 365 * 86_400;
        if mv.at_ahead_max_secs > 86_400 {
            bail!("movements.at_ahead_max_secs must be at most 86400 (a day)");
        }
        let m = &self.mqtt;
        if m.rejected_keep_secs > TEN_YEARS_SECS {
            bail!("mqtt.rejected_keep_secs must be at most ten years ({TEN_YEARS_SECS})");
        }
        if !(1..=300).contains(&m.connect_timeout_secs) || !(5..=3600).contains(&m.keep_alive_secs)
        {
            bail!("mqtt.connect_timeout_secs must be 1 to 300 and mqtt.keep_alive_secs 5 to 3600 (the MQTT client refuses less)");
        }
        if m.tls {
            let files = m.tls_files().context("mqtt.tls")?;
            let pem = |what: &str, bytes: &[u8], block: &str| {
                if !String::from_utf8_lossy(bytes).contains(block) {
                    bail!("mqtt.{what} holds no PEM {block} block");
                }
                Ok(())
            };
            pem("ca_file", &files.ca, "-----BEGIN CERTIFICATE-----")?;
            if let Some((cert, key)) = &files.client {
                pem("client_cert_file", cert, "-----BEGIN CERTIFICATE-----")?;
                pem("client_key_file", key, "PRIVATE KEY-----")?;
            }
        } else if m.ca_file.is_some() || m.client_cert_file.is_some() || m.client_key_file.is_some()
        {
            bail!("mqtt.ca_file and the client certificate are set but mqtt.tls is not: the broker would be spoken to in plain text");
        }
        if m.inflight_max == 0 || m.request_channel_capacity < usize::from(m.inflight_max) + 32 {
            bail!(
                "mqtt.request_channel_capacity must exceed mqtt.inflight_max by at least 32: \
                 room for every acknowledgment the broker's window allows, and for publishing"
            );
        }
        let r = &self.rate_limits;
        for (role, b) in [
            ("public", r.public),
            ("unauthenticated", r.unauthenticated),
            ("storefront", r.storefront),
            ("pos", r.pos),
            ("manager", r.manager),
            ("viewer", r.viewer),
            ("admin", r.admin),
        ] {
            if !(b.per_sec > 0.0 && b.per_sec.is_finite()) || b.burst == 0 {
                bail!("rate_limits.{role}: per_sec must be above 0 and burst at least 1");
            }
        }
        let st = &self.streams;
        if st.clients_per_key_max == 0 || st.clients_per_key_max > st.clients_max {
            bail!("streams.clients_per_key_max must be between 1 and streams.clients_max");
        }
        if !(st.subscribe.per_sec > 0.0 && st.subscribe.per_sec.is_finite())
            || st.subscribe.burst == 0
        {
            bail!("streams.subscribe: per_sec must be above 0 and burst at least 1");
        }
        // A million kept events is about 100 MB; past it is a typo, not a plan.
        if st.resume_events > 1_000_000 || !(100..=600_000).contains(&st.retry_ms) {
            bail!(
                "streams.resume_events must be at most 1000000 and streams.retry_ms 100 to 600000"
            );
        }
        if self.http.body_read_secs == 0 || self.http.write_deadline_secs == 0 {
            bail!("http.body_read_secs and http.write_deadline_secs must be at least 1");
        }
        self.check_whatsapp()?;
        let mut seen = HashSet::new();
        let mut labels = HashSet::new();
        for key in &self.api_keys {
            // The label is who made a change in the ledger (`by`): it must name one key.
            if key.label.trim().is_empty() {
                bail!("every api key needs a label: the ledger records it as who made a change");
            }
            if !labels.insert(key.label.as_str()) {
                bail!(
                    "api key label '{}' is used twice: the ledger could not tell the keys apart",
                    key.label
                );
            }
            if key.key.expose().len() < 16 {
                bail!("api key '{}' is shorter than 16 characters", key.label);
            }
            if !seen.insert(key.key.expose()) {
                bail!("api key '{}' is configured twice", key.label);
            }
            if matches!(key.role, Role::Pos | Role::Manager) && key.outlets.is_empty() {
                bail!("api key '{}' ({:?}) names no outlets", key.label, key.role);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Settings {
        Settings::load(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml").as_ref())
            .expect("config.toml loads")
    }

    #[test]
    fn whatsapp_sender_caps_are_checked_at_load() {
        let ok = shipped();
        assert_eq!(ok.whatsapp.unknown_sender, UnknownSenderPolicy::Cap);
        assert!(ok.check().is_ok());
        let cases: [fn(&mut WhatsAppSettings); 5] = [
            |w| w.sender_open_holds_max = 0,
            |w| w.sender_open_holds_max = SENDER_OPEN_HOLDS_MAX + 1,
            |w| w.sender_units_max = 0,
            |w| w.unknown_sender_units_max = w.sender_units_max + 1,
            |w| w.unknown_sender_open_holds_max = 0,
        ];
        for (i, break_it) in cases.into_iter().enumerate() {
            let mut s = shipped();
            break_it(&mut s.whatsapp);
            assert!(s.check().is_err(), "case {i} passed the check");
        }
        // Under "refuse" the unknown sender's caps are not used, so not checked.
        let mut refuse = shipped();
        refuse.whatsapp.unknown_sender = UnknownSenderPolicy::Refuse;
        refuse.whatsapp.unknown_sender_units_max = 0;
        assert!(refuse.check().is_ok());
    }
}
