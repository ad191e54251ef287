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

impl Shared {
    /// The outlet's ledger lag as this process reports it: none for an outlet owned
    /// elsewhere. What it committed before it handed the outlet over is the new owner's to
    /// write, and would otherwise seem to wait here for ever.
    pub fn ledger_lag(&self, outlet: &crate::domain::OutletId, now_ms: i64) -> crate::durable::Lag {
        match self.owners.owns(outlet) {
            true => self.durable.lag(outlet, now_ms),
            false => crate::durable::Lag::default(),
        }
    }

    /// `ledger_lag` of every outlet this process has committed to.
    pub fn ledger_lags(&self, now_ms: i64) -> Vec<(crate::domain::OutletId, crate::durable::Lag)> {
        let mut lags = self.durable.lags(now_ms);
        for (outlet, lag) in &mut lags {
            if !self.owners.owns(outlet) {
                *lag = crate::durable::Lag::default();
            }
        }
        lags
    }
}
