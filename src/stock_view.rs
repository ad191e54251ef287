//! The committed counters of every outlet, readable without a message to an actor.
//!
//! An outlet's `OutletActor` writes here (after Redis has the change) in the process that owns
//! it, the follower (actors/follower.rs) in every other process; HTTP and the streams read.
//! A value never goes back to an older seq (but for a state rebuilt from the ledger, read
//! whole), so a reader sees each SKU's numbers move forward only.

use dashmap::DashMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::{Counters, Line, OutletId, Sku};

/// What an outlet has of one cart line now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineStock {
    pub sku: Sku,
    pub available: i64,
}

pub struct StockView {
    outlets: DashMap<OutletId, DashMap<Sku, Counters>>,
}

impl StockView {
    pub fn new(outlets: impl IntoIterator<Item = OutletId>) -> Self {
        Self {
            outlets: outlets.into_iter().map(|o| (o, DashMap::new())).collect(),
        }
    }

    /// Makes room for an outlet added while running (one already here stays as it is).
    pub fn add(&self, outlet: &OutletId) {
        self.outlets.entry(outlet.clone()).or_default();
    }

    pub fn get(&self, outlet: &OutletId, sku: &Sku) -> Option<Counters> {
        self.outlets.get(outlet)?.get(sku).map(|c| *c)
    }

    /// Units of `sku` a new hold could take at `outlet` now (never below 0).
    pub fn available(&self, outlet: &OutletId, sku: &Sku) -> i64 {
        self.get(outlet, sku).unwrap_or_default().available().max(0)
    }

    /// Whether `outlet` can fill every line right now.
    pub fn can_fill(&self, outlet: &OutletId, lines: &[Line]) -> bool {
        lines
            .iter()
            .all(|l| self.available(outlet, &l.sku) >= l.qty.get())
    }

    /// Whether `outlet` can fill every line right now, and what it has of each (one read of
    /// each line, so the two agree).
    pub fn cover(&self, outlet: &OutletId, lines: &[Line]) -> (bool, Vec<LineStock>) {
        let per_line: Vec<LineStock> = lines
            .iter()
            .map(|l| LineStock {
                sku: l.sku.clone(),
                available: self.available(outlet, &l.sku),
            })
            .collect();
        let all = lines
            .iter()
            .zip(&per_line)
            .all(|(l, s)| s.available >= l.qty.get());
        (all, per_line)
    }

    /// Whether some SKU of `outlet` has fewer units than its holds (a counter sale took
    /// held units).
    pub fn short_of_holds(&self, outlet: &OutletId) -> bool {
        self.outlets
            .get(outlet)
            .is_some_and(|m| m.iter().any(|c| c.available() < 0 && c.reserved > 0))
    }

    /// Every SKU the outlet has a record of, sorted by SKU.
    pub fn outlet(&self, outlet: &OutletId) -> Vec<(Sku, Counters)> {
        let mut rows: Vec<_> = self
            .outlets
            .get(outlet)
            .map(|m| m.iter().map(|e| (e.key().clone(), *e.value())).collect())
            .unwrap_or_default();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Records committed numbers unless the view already has a newer seq for the SKU.
    pub(crate) fn record(&self, outlet: &OutletId, sku: &Sku, counters: Counters) {
        let Some(m) = self.outlets.get(outlet) else {
            return;
        };
        m.entry(sku.clone())
            .and_modify(|c| {
                if counters.seq >= c.seq {
                    *c = counters;
                }
            })
            .or_insert(counters);
    }

    /// Replaces an outlet's numbers wholesale (after a load or rebuild from Redis), in
    /// place: a reader meanwhile sees each SKU's old or new numbers, never a SKU missing
    /// that is in both.
    pub(crate) fn replace(
        &self,
        outlet: &OutletId,
        counters: impl IntoIterator<Item = (Sku, Counters)>,
    ) {
        let Some(m) = self.outlets.get(outlet) else {
            return;
        };
        let mut kept = std::collections::HashSet::new();
        for (sku, c) in counters {
            m.insert(sku.clone(), c);
            kept.insert(sku);
        }
        m.retain(|sku, _| kept.contains(sku));
    }
}

/// A SKU's numbers as the API and the streams show them; `outlet` is left out where the
/// outlet is implied (`GET /v1/outlets/{outlet}/stock`).
pub fn counters_json(outlet: Option<&OutletId>, sku: &Sku, c: &Counters) -> Value {
    let mut v = json!({"sku": sku, "on_hand": c.on_hand, "reserved": c.reserved,
        "available": c.available(), "seq": c.seq});
    if let Some(outlet) = outlet {
        v["outlet"] = json!(outlet);
    }
    v
}
