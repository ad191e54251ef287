//! The committed counters of every outlet, readable without a message to an actor.
//!
//! An outlet's `OutletActor` writes here (after Redis has the change) in the process that owns
//! it, the follower (actors/follower.rs) in every other process; HTTP and the streams read.
//! A value never goes back to an older seq (but for a state rebuilt from the ledger, read
//! whole), so a reader sees each SKU's numbers move forward only.

use std::sync::Arc;

use dashmap::DashMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::{now_ms, rfc3339_ms, Counters, Line, Lot, OutletId, Sku};

/// A SKU's lots, earliest expiry first (shared: every reader of a SKU gets the same list).
pub type Lots = Arc<[Lot]>;

/// What the view keeps of one SKU.
#[derive(Debug, Clone)]
struct Kept {
    counters: Counters,
    lots: Lots,
}

/// What an outlet has of one cart line now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineStock {
    pub sku: Sku,
    pub available: i64,
}

pub struct StockView {
    outlets: DashMap<OutletId, DashMap<Sku, Kept>>,
    /// Lots expiring within this many ms are `expiring_soon`.
    expiring_soon_ms: i64,
}

impl StockView {
    pub fn new(outlets: impl IntoIterator<Item = OutletId>, expiring_soon_mins: u64) -> Self {
        Self {
            outlets: outlets.into_iter().map(|o| (o, DashMap::new())).collect(),
            expiring_soon_ms: i64::try_from(expiring_soon_mins.saturating_mul(60_000))
                .unwrap_or(i64::MAX),
        }
    }

    /// Makes room for an outlet added while running (one already here stays as it is).
    pub fn add(&self, outlet: &OutletId) {
        self.outlets.entry(outlet.clone()).or_default();
    }

    pub fn get(&self, outlet: &OutletId, sku: &Sku) -> Option<Counters> {
        self.outlets.get(outlet)?.get(sku).map(|k| k.counters)
    }

    /// The SKU's lots at the outlet (empty: none, or loose units only).
    pub fn lots(&self, outlet: &OutletId, sku: &Sku) -> Lots {
        (self.outlets.get(outlet))
            .and_then(|m| m.get(sku).map(|k| k.lots.clone()))
            .unwrap_or_else(|| Arc::new([]))
    }

    /// Units of the SKU's lots at the outlet that expire within the configured horizon.
    pub fn expiring_soon(&self, outlet: &OutletId, sku: &Sku) -> i64 {
        self.expiring_soon_of(&self.lots(outlet, sku))
    }

    fn expiring_soon_of(&self, lots: &[Lot]) -> i64 {
        let soon = now_ms().saturating_add(self.expiring_soon_ms);
        (lots.iter())
            .filter(|l| l.expires_at <= soon)
            .map(|l| l.qty)
            .sum()
    }

    /// A SKU's numbers as the API and the streams show them, with its lots (when it has any)
    /// and `expiring_soon`: its units in lots that expire within the configured horizon
    /// (`catalogue.expiring_soon_mins`) from now. `outlet` is left out of the object where
    /// the outlet is implied (`GET /v1/outlets/{outlet}/stock`).
    pub fn json(&self, outlet: &OutletId, show_outlet: bool, sku: &Sku, c: &Counters) -> Value {
        let lots = self.lots(outlet, sku);
        let mut v = counters_json(show_outlet.then_some(outlet), sku, c);
        v["expiring_soon"] = json!(self.expiring_soon_of(&lots));
        if !lots.is_empty() {
            v["lots"] = lots
                .iter()
                .map(|l| {
                    json!({"lot": l.lot, "made_at": rfc3339_ms(l.made_at),
                        "expires_at": rfc3339_ms(l.expires_at), "qty": l.qty, "held": l.held})
                })
                .collect();
        }
        v
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
        self.outlets.get(outlet).is_some_and(|m| {
            m.iter()
                .any(|k| k.counters.available() < 0 && k.counters.reserved > 0)
        })
    }

    /// Every SKU the outlet has a record of, sorted by SKU.
    pub fn outlet(&self, outlet: &OutletId) -> Vec<(Sku, Counters)> {
        let mut rows: Vec<_> = self
            .outlets
            .get(outlet)
            .map(|m| {
                m.iter()
                    .map(|e| (e.key().clone(), e.value().counters))
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows
    }

    /// Records committed numbers and lots unless the view already has a newer seq for the SKU.
    pub(crate) fn record(&self, outlet: &OutletId, sku: &Sku, counters: Counters, lots: Lots) {
        let Some(m) = self.outlets.get(outlet) else {
            return;
        };
        m.entry(sku.clone())
            .and_modify(|k| {
                if counters.seq >= k.counters.seq {
                    *k = Kept {
                        counters,
                        lots: lots.clone(),
                    };
                }
            })
            .or_insert_with(|| Kept { counters, lots });
    }

    /// Replaces an outlet's numbers wholesale (after a load or rebuild from Redis), in
    /// place: a reader meanwhile sees each SKU's old or new numbers, never a SKU missing
    /// that is in both.
    pub(crate) fn replace(
        &self,
        outlet: &OutletId,
        counters: impl IntoIterator<Item = (Sku, Counters, Lots)>,
    ) {
        let Some(m) = self.outlets.get(outlet) else {
            return;
        };
        let mut kept = std::collections::HashSet::new();
        for (sku, counters, lots) in counters {
            m.insert(sku.clone(), Kept { counters, lots });
            kept.insert(sku);
        }
        m.retain(|sku, _| kept.contains(sku));
    }
}

/// A SKU's numbers alone (`StockView::json` adds its lots).
fn counters_json(outlet: Option<&OutletId>, sku: &Sku, c: &Counters) -> Value {
    let mut v = json!({"sku": sku, "on_hand": c.on_hand, "reserved": c.reserved,
        "available": c.available(), "seq": c.seq});
    if let Some(outlet) = outlet {
        v["outlet"] = json!(outlet);
    }
    v
}
