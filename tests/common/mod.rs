//! Test harness: each test gets its own Redis key prefix, MongoDB database and MQTT topic
//! prefix on the real servers, and a real shelfsync on a free port. By concern: `app.rs`
//! the service and its HTTP client, `agent.rs` the outlet agent and a till, `stores.rs` peeks into Redis and MongoDB and the
//! clean-up, `mqtt.rs` brokers and clients, `sse.rs` the stream client, `procs.rs` servers
//! of a test's own.
#![allow(dead_code)]

mod agent;
mod app;
mod mqtt;
pub mod netns;
pub mod procs;
mod sse;
mod stores;
mod ws;

use std::time::Duration;

use shelfsync::Settings;

#[allow(unused_imports)]
pub use agent::*;
pub use app::*;
#[allow(unused_imports)]
pub use mqtt::*;
#[allow(unused_imports)]
pub use sse::*;
pub use stores::*;
#[allow(unused_imports)]
pub use ws::*;

pub const ADMIN: &str = "demo-admin-key-change-me";
pub const PUBLIC: &str = "demo-public-key-change-me";
pub const STOREFRONT: &str = "demo-storefront-key-change-me";
pub const VIEWER: &str = "demo-viewer-key-change-me";
pub const POS_VIJAY_NAGAR: &str = "demo-pos-indore-vijay-nagar";
pub const MANAGER_INDORE: &str = "demo-manager-indore-key-change-me";

pub const OUTLET: &str = "indore-vijay-nagar";
pub const OTHER_OUTLET: &str = "indore-palasia";
pub const SKU: &str = "kaju-katli-1kg";
pub const SKU2: &str = "soan-papdi-500g";
pub const SKU3: &str = "ratlami-sev-400g";

/// Settings of `config.toml` with a fresh prefix, database and port 0.
pub fn test_settings() -> Settings {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut s = Settings::load(format!("{root}/config.toml").as_ref()).expect("config.toml");
    let id = uuid::Uuid::new_v4().simple().to_string();
    s.http.port = 0;
    s.http.workers = 2;
    s.redis.key_prefix = format!("test-{}", &id[..12]);
    s.mongo.database = format!("shelfsync_test_{}", &id[..12]);
    s.mqtt.topic_prefix = format!("test-{}/", &id[..12]);
    s.mqtt.client_id = format!("shelfsync-test-{}", &id[..12]);
    s.mqtt.reconnect_delay_max_ms = 1000;
    s.ledger.poll_interval_ms = 200;
    // Fixtures across the suite carry fixed times (2025-08-09 to 2026-12-02): a wide age
    // bound keeps taking them as the calendar moves on. It is past `retain_secs`, which a
    // deployment may not be (settings check), and harmless here: no test replays an event
    // after it is forgotten. The tests of the bound set config.toml's value back.
    s.movements.at_age_max_secs = 10 * 365 * 86_400;
    // The alert engine reads a sales history 1 s after it owns the outlet, not 30.
    s.alerts.read_after_secs = 1;
    // A checkpoint on every pass that finds new documents, so tests see them.
    s.reconciler.checkpoint_every_docs = 1;
    for f in [
        &mut s.catalogue.outlets_file,
        &mut s.catalogue.skus_file,
        &mut s.catalogue.stock_file,
        &mut s.catalogue.zones_file,
        &mut s.reports.prices_file,
    ] {
        *f = std::path::Path::new(root).join(&*f);
    }
    s
}

/// Settings of two processes of one service, `node-a` and `node-b`: the same stores, each its
/// own node id and MQTT client id (one client id would make them take each other's session).
pub fn two_nodes() -> (Settings, Settings) {
    let settings = test_settings();
    let (mut a, mut b) = (settings.clone(), settings.clone());
    for (node, s) in [("node-a", &mut a), ("node-b", &mut b)] {
        s.cluster.node_id = node.into();
        s.mqtt.client_id = format!("{}-{node}", settings.mqtt.client_id);
    }
    (a, b)
}

/// Polls `check` every 50 ms until it holds or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The first `n` SKUs of the demo catalogue.
pub fn catalogue_skus(n: usize) -> Vec<String> {
    let path = format!("{}/catalogue/skus.csv", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect()
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the `shelfsync` command reads beside config.toml to reach the settings' Redis
/// prefix, MongoDB database and catalogue (catalogue files by absolute path, so that it may
/// run in any directory).
pub fn cli_env(settings: &Settings) -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = |p: &std::path::Path| root.join(p).display().to_string();
    let c = &settings.catalogue;
    [
        (
            "SHELFSYNC_CONFIG",
            root.join("config.toml").display().to_string(),
        ),
        (
            "SHELFSYNC__REDIS__URL",
            settings.redis.url.expose().to_owned(),
        ),
        (
            "SHELFSYNC__REDIS__KEY_PREFIX",
            settings.redis.key_prefix.clone(),
        ),
        (
            "SHELFSYNC__REDIS__CLUSTER",
            settings.redis.cluster.to_string(),
        ),
        (
            "SHELFSYNC__MONGO__URI",
            settings.mongo.uri.expose().to_owned(),
        ),
        (
            "SHELFSYNC__MONGO__DATABASE",
            settings.mongo.database.clone(),
        ),
        // The settings' catalogue (a test may give one of its own).
        ("SHELFSYNC__CATALOGUE__OUTLETS_FILE", file(&c.outlets_file)),
        ("SHELFSYNC__CATALOGUE__SKUS_FILE", file(&c.skus_file)),
        ("SHELFSYNC__CATALOGUE__STOCK_FILE", file(&c.stock_file)),
        ("SHELFSYNC__CATALOGUE__ZONES_FILE", file(&c.zones_file)),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs the `shelfsync` binary against the settings' Redis prefix and MongoDB database.
pub fn cli(settings: &Settings, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shelfsync"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(cli_env(settings))
        .output()
        .expect("running shelfsync")
}

/// RFC 3339 (ms) of now plus `offset`.
pub fn from_now(offset: chrono::Duration) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A movement's `at` within the shipped `movements.at_age_max_secs`, the same for the whole
/// test binary (a retry of an `event_id` must send the same body): when the binary started.
pub fn recent_at() -> String {
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT.get_or_init(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .clone()
}
