//! What re-routing keeps between its passes (the passes are `checkout/reroute.rs`): per
//! outlet, the holds at risk with their uncovered units, the movements in flight, and one
//! pass at a time; per hold, the re-route attempts whose new hold was given back.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::domain::{OutletId, ReservationId};

pub struct RerouteState {
    /// One pass per outlet at a time.
    passes: DashMap<OutletId, Arc<tokio::sync::Mutex<()>>>,
    /// Movements in flight per outlet: the sweep leaves such an outlet to the movement's own
    /// pass, so that the movement's answer lists what was re-routed.
    in_flight: DashMap<OutletId, Arc<AtomicUsize>>,
    /// Per outlet, the holds it cannot cover that nobody could take, with their uncovered
    /// units.
    at_risk: DashMap<OutletId, HashMap<ReservationId, i64>>,
    /// Re-route attempts of a hold whose earlier new hold was given back; each attempt uses
    /// a key of its own. Entries go when the hold moves or ends.
    attempts: DashMap<ReservationId, u32>,
}

/// Marks a movement in flight at an outlet while it lives.
pub struct InFlight(Option<Arc<AtomicUsize>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            let before = n.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a movement left that was never in flight");
        }
    }
}

impl RerouteState {
    pub fn new(outlets: impl IntoIterator<Item = OutletId>) -> Self {
        let state = Self {
            passes: DashMap::new(),
            in_flight: DashMap::new(),
            at_risk: DashMap::new(),
            attempts: DashMap::new(),
        };
        for o in outlets {
            state.add(&o);
        }
        state
    }

    /// Makes room for an outlet added while running (one already here stays as it is).
    pub fn add(&self, outlet: &OutletId) {
        self.passes.entry(outlet.clone()).or_default();
        self.in_flight.entry(outlet.clone()).or_default();
    }

    /// Call before applying a movement at `outlet`; keep until its pass is done.
    pub fn movement_in_flight(&self, outlet: &OutletId) -> InFlight {
        let n = self.in_flight.get(outlet).map(|n| n.clone());
        if let Some(n) = &n {
            n.fetch_add(1, Ordering::AcqRel);
        }
        InFlight(n)
    }

    pub fn movements_in_flight(&self, outlet: &OutletId) -> bool {
        (self.in_flight.get(outlet)).is_some_and(|n| n.load(Ordering::Acquire) > 0)
    }

    pub fn is_at_risk(&self, id: &ReservationId) -> bool {
        self.at_risk
            .get(&id.outlet())
            .is_some_and(|m| m.contains_key(id))
    }

    pub fn has_at_risk(&self, outlet: &OutletId) -> bool {
        self.at_risk.get(outlet).is_some_and(|m| !m.is_empty())
    }

    /// The outlet's pass lock (None for an unknown outlet).
    pub fn pass(&self, outlet: &OutletId) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.passes.get(outlet).map(|p| p.clone())
    }

    /// The attempt a re-route of `id` is at (0 until a new hold was given back).
    pub fn attempt(&self, id: &ReservationId) -> u32 {
        self.attempts.get(id).map_or(0, |a| *a)
    }

    /// The next re-route of `id` uses a key of its own.
    pub fn next_attempt(&self, id: &ReservationId) {
        *self.attempts.entry(id.clone()).or_default() += 1;
    }

    pub fn forget_attempts(&self, id: &ReservationId) {
        self.attempts.remove(id);
    }

    /// Keeps the attempts of `outlet`'s holds only for those still `live`.
    pub fn keep_attempts(&self, outlet: &OutletId, live: &HashSet<&ReservationId>) {
        self.attempts
            .retain(|id, _| &id.outlet() != outlet || live.contains(id));
    }

    /// Replaces the outlet's at-risk holds; returns those newly at risk, with their units.
    pub fn replace_at_risk(
        &self,
        outlet: &OutletId,
        now: HashMap<ReservationId, i64>,
    ) -> Vec<(ReservationId, i64)> {
        let before: HashSet<ReservationId> = self
            .at_risk
            .get(outlet)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let newly = (now.iter())
            .filter(|(id, _)| !before.contains(*id))
            .map(|(id, units)| (id.clone(), *units))
            .collect();
        self.at_risk.insert(outlet.clone(), now);
        newly
    }
}
