//! shelfsync: real-time stock for a retail chain, with zero oversells.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod actors;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod bulk;
pub mod catalogue;
pub mod checkout;
pub mod checkpoint;
pub mod client;
pub mod domain;
pub mod durable;
pub mod end_of_day;
pub mod env_file;
pub mod error;
pub mod export;
pub mod feed;
pub mod forecast;
pub mod health;
pub mod http;
pub mod hub;
pub mod import;
pub mod keys;
pub mod kitchen;
pub mod ledger;
pub mod live_catalogue;
pub mod metrics;
pub mod movements;
pub mod mqtt;
pub mod rebuild;
pub mod reroute_state;
pub mod services;
pub mod settings;
pub mod stock_view;
pub mod store;
pub mod war_room;
pub mod webhook;
pub mod whatsapp;
pub mod wire;
pub mod zones;

pub use app::{Application, Core};
pub use settings::Settings;

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
