//! The actors: one `OutletActor` per outlet, the `LedgerWriter`, the `Reconciler`, and the
//! tasks that follow other processes' commits and judge alerts.

pub mod alerts;
pub mod follower;
pub mod ledger_writer;
pub mod outlet;
pub mod ownership;
pub mod reconciler;

use std::sync::Arc;

use crate::durable::Durability;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::stock_view::StockView;
use crate::store::RedisStore;

pub use alerts::{AlertEngine, AlertInbox};
pub use follower::Follower;
pub use ledger_writer::{LedgerWriter, OutboxSignal};
pub use outlet::OutletActor;
pub use ownership::{Owners, Ownership};
pub use reconciler::Reconciler;

/// What the actors share. Cloning is cheap: every field is a handle.
#[derive(Clone)]
pub struct Shared {
    pub store: RedisStore,
    pub ledger: Ledger,
    pub stock: Arc<StockView>,
    pub durable: Arc<Durability>,
    pub signal: Arc<OutboxSignal>,
    /// Held by the ledger writer while it drains and by an outlet while it rebuilds from the
    /// ledger, so that a rebuild never reads a ledger that a drain in flight is about to extend.
    pub ledger_gate: Arc<tokio::sync::Mutex<()>>,
    pub metrics: Arc<Metrics>,
    /// Committed changes for the MQTT publisher.
    pub feed: Arc<crate::feed::Feed>,
    /// Committed changes for live stream clients (SSE, WebSocket).
    pub hub: Arc<crate::hub::Hub>,
    /// The outlets this process owns (their leases and actors).
    pub owners: Arc<Owners>,
    /// What outlet actors commit and sell, for the alert engine.
    pub alerts: Arc<AlertInbox>,
}
