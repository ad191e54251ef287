//! What the war-room screen shows (`GET /v1/war-room`, the page at `/war-room`): per outlet,
//! its POS link (the last POS message this process received and how late it came), its
//! sales per minute over the last half hour, its ledger lag, drift and holds at risk; and the
//! chain's sell-out list.
//!
//! Where each comes from, and so how far it reaches in a fleet of processes:
//!
//! - POS links: every process subscribes to every outlet's POS topic (mqtt/pos.rs), so any
//!   process's `PosLinks` sees every till.
//! - Sales per minute: each outlet's owner counts its sales by minute in Redis (the alert
//!   engine, `RedisStore::count_sales`), read back by any process.
//! - The sell-out list: the raised alerts, in Redis.
//! - Ledger lag, drift, holds at risk: this process's gauges, which are those of the outlets
//!   it owns (a single process owns them all).

use std::collections::HashMap;

use dashmap::DashMap;
use serde::Serialize;

use crate::alerts::{Alert, AlertKind};
use crate::domain::{rfc3339_ms, OutletId};

/// Minutes of sales the screen charts.
pub const SALES_MINUTES: i64 = 30;

/// The last POS message received per outlet: when, and how long after its own `at`.
#[derive(Default)]
pub struct PosLinks {
    seen: DashMap<OutletId, (i64, i64)>,
}

impl PosLinks {
    pub fn seen(&self, outlet: &OutletId, now_ms: i64, at_ms: i64) {
        self.seen
            .insert(outlet.clone(), (now_ms, (now_ms - at_ms).max(0)));
    }

    /// A message came that was rejected (it has no `at` to trust): the link is alive, its lag
    /// stays what the last good message said.
    pub fn heard(&self, outlet: &OutletId, now_ms: i64) {
        (self.seen.entry(outlet.clone()))
            .and_modify(|e| e.0 = now_ms)
            .or_insert((now_ms, 0));
    }

    pub fn get(&self, outlet: &OutletId) -> Option<(i64, i64)> {
        self.seen.get(outlet).map(|e| *e)
    }
}

#[derive(Debug, Serialize)]
pub struct PosLink {
    pub last_seen: String,
    pub silent_secs: f64,
    /// How long after the sale's own time (the till's clock) it arrived.
    pub lag_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct OutletRoom {
    pub outlet: OutletId,
    pub name: String,
    pub pos: Option<PosLink>,
    /// Units sold per minute, oldest first, the last the minute now running.
    pub sales_per_min: Vec<i64>,
    pub ledger_entries: u64,
    pub ledger_age_secs: f64,
    pub drift_skus: i64,
    pub at_risk_holds: i64,
    pub alerts: usize,
}

#[derive(Debug, Serialize)]
pub struct WarRoom {
    pub at: String,
    pub ledger_budget_secs: u64,
    pub outlets: Vec<OutletRoom>,
    /// Raised `sell_out` alerts, the soonest first.
    pub sell_out: Vec<Alert>,
    pub low_stock: Vec<Alert>,
}

/// The minute (since the epoch) of `at_ms`.
pub fn minute(at_ms: i64) -> i64 {
    at_ms.div_euclid(60_000)
}

/// An outlet's figures this process knows; the screen puts them together.
pub struct Figures {
    pub name: String,
    pub ledger_entries: u64,
    pub ledger_age_ms: i64,
    pub drift_skus: i64,
    pub at_risk_holds: i64,
}

/// Reads what the screen shows of `outlets` (with the figures this process knows of each)
/// and puts it together.
pub async fn gather(
    store: &crate::store::RedisStore,
    pos: &PosLinks,
    figures: Vec<(OutletId, Figures)>,
    now_ms: i64,
    ledger_budget_secs: u64,
) -> anyhow::Result<WarRoom> {
    let to = minute(now_ms);
    let sales = store.sales_by_minute(to - SALES_MINUTES + 1, to).await?;
    let ids: Vec<OutletId> = figures.iter().map(|(o, _)| o.clone()).collect();
    let alerts = crate::alerts::raised(store, &ids).await?;
    Ok(build(
        now_ms,
        ledger_budget_secs,
        figures,
        pos,
        &sales,
        alerts,
    ))
}

/// Puts the screen together from what was read.
pub fn build(
    now_ms: i64,
    ledger_budget_secs: u64,
    figures: Vec<(OutletId, Figures)>,
    pos: &PosLinks,
    sales: &HashMap<(OutletId, i64), i64>,
    alerts: Vec<Alert>,
) -> WarRoom {
    let now_min = minute(now_ms);
    let outlets = (figures.into_iter())
        .map(|(outlet, f)| OutletRoom {
            pos: pos.get(&outlet).map(|(seen, lag)| PosLink {
                last_seen: rfc3339_ms(seen),
                silent_secs: (now_ms - seen).max(0) as f64 / 1000.0,
                lag_ms: lag,
            }),
            sales_per_min: (now_min - SALES_MINUTES + 1..=now_min)
                .map(|m| sales.get(&(outlet.clone(), m)).copied().unwrap_or(0))
                .collect(),
            alerts: alerts.iter().filter(|a| a.outlet == outlet).count(),
            name: f.name,
            ledger_entries: f.ledger_entries,
            ledger_age_secs: f.ledger_age_ms as f64 / 1000.0,
            drift_skus: f.drift_skus,
            at_risk_holds: f.at_risk_holds,
            outlet,
        })
        .collect();
    let (mut sell_out, low_stock): (Vec<Alert>, Vec<Alert>) = alerts
        .into_iter()
        .partition(|a| a.kind == AlertKind::SellOut);
    sell_out.sort_by(|a, b| (&a.sell_out_at, &a.id).cmp(&(&b.sell_out_at, &b.id)));
    WarRoom {
        at: rfc3339_ms(now_ms),
        ledger_budget_secs,
        outlets,
        sell_out,
        low_stock,
    }
}
