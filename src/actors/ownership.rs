//! Which process owns which outlet: leases in Redis with fencing tokens.
//!
//! Every process beats in `{prefix}:members`. Each outlet's owner is chosen among the live
//! members by rendezvous hashing (highest `hash(node, outlet)` wins), so every process
//! computes the same answer from the same member list, and a member joining or leaving
//! moves only its share of the outlets. The chosen process takes the outlet's lease
//! (`lease.lua`: `"{node} {epoch}"` with an expiry), which raises the outlet's epoch, the
//! fencing token; it then starts the outlet's actor with that token. Every script that
//! writes the outlet checks the token and the lease, so a process that lost the lease
//! (paused, cut off, slow) cannot change the outlet even if it tries: its actor is refused,
//! and steps down. Only the owner's actor runs the outlet's expiry timers; only the owner's
//! ledger writer drains the outlet's outbox and only its reconciler audits it.
//!
//! A round (`Ownership::round`, every third of the lease) renews what the process owns,
//! steps down from a lease it could not renew, hands over one outlet that rendezvous now
//! gives to another live member, and takes the free leases rendezvous gives to it.
//! ARCHITECTURE.md (Several processes) says why this is safe.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use super::ledger_writer::provably_durable;
use super::outlet::{Drain, OutletActor, OutletLimits, StepDown};
use super::Shared;
use crate::domain::OutletId;

/// An outlet this process owns: its actor and the token its lease carries.
#[derive(Clone)]
pub struct Owned {
    pub addr: Addr<OutletActor>,
    pub token: u64,
    renewed: Instant,
}

/// The outlets this process owns now; read by the core on every request.
pub struct Owners {
    pub node: String,
    pub lease: Duration,
    owned: RwLock<HashMap<OutletId, Owned>>,
    /// Where the other processes reach this one's HTTP API (set once it listens): written
    /// with every heartbeat, read by a process that forwards a request here.
    advertised: RwLock<Option<String>>,
}

impl Owners {
    pub fn new(node: &str, lease: Duration) -> Self {
        Self {
            node: node.to_owned(),
            lease,
            owned: RwLock::new(HashMap::new()),
            advertised: RwLock::new(None),
        }
    }

    /// Tells the other processes, from the next heartbeat on, where this one listens.
    pub fn advertise(&self, url: String) {
        *self.advertised.write().expect("owners lock") = Some(url);
    }

    pub fn advertised(&self) -> Option<String> {
        self.advertised.read().expect("owners lock").clone()
    }

    /// The actor of an outlet this process owns.
    pub fn get(&self, outlet: &OutletId) -> Option<Addr<OutletActor>> {
        self.read().get(outlet).map(|o| o.addr.clone())
    }

    /// The fencing token of an outlet this process owns.
    pub fn token(&self, outlet: &OutletId) -> Option<u64> {
        self.read().get(outlet).map(|o| o.token)
    }

    pub fn owns(&self, outlet: &OutletId) -> bool {
        self.read().contains_key(outlet)
    }

    /// The owned outlets, sorted.
    pub fn ids(&self) -> Vec<OutletId> {
        let mut ids: Vec<OutletId> = self.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn actors(&self) -> Vec<Addr<OutletActor>> {
        self.read().values().map(|o| o.addr.clone()).collect()
    }

    fn snapshot(&self) -> HashMap<OutletId, Owned> {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<OutletId, Owned>> {
        self.owned.read().expect("owners lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<OutletId, Owned>> {
        self.owned.write().expect("owners lock")
    }

    fn insert(&self, outlet: OutletId, addr: Addr<OutletActor>, token: u64) {
        let renewed = Instant::now();
        let owned = Owned {
            addr,
            token,
            renewed,
        };
        self.write().insert(outlet, owned);
    }

    /// The actor took the lease again under a new token (its lease had lapsed and nobody
    /// else had taken it).
    pub fn retoken(&self, outlet: &OutletId, old: u64, new: u64) {
        if let Some(o) = self.write().get_mut(outlet).filter(|o| o.token == old) {
            o.token = new;
            o.renewed = Instant::now();
        }
    }

    fn renewed(&self, outlet: &OutletId, token: u64) {
        if let Some(o) = self.write().get_mut(outlet).filter(|o| o.token == token) {
            o.renewed = Instant::now();
        }
    }

    /// Forgets the outlet if it is still owned under `token`; true when it was.
    pub fn remove_if(&self, outlet: &OutletId, token: u64) -> bool {
        let mut owned = self.write();
        if owned.get(outlet).is_some_and(|o| o.token == token) {
            owned.remove(outlet);
            return true;
        }
        false
    }
}

/// Rendezvous (highest random weight) hashing: the live member that owns `outlet`. FNV-1a
/// with a 64-bit finalizer: stable across builds and processes, unlike std's hasher.
pub fn owner_of<'a>(members: &'a [String], outlet: &OutletId) -> Option<&'a str> {
    fn weight(node: &str, outlet: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node.bytes().chain([0]).chain(outlet.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // splitmix64's finalizer, so that similar names spread.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
    members
        .iter()
        .max_by_key(|m| (weight(m, outlet.as_str()), m.as_str()))
        .map(String::as_str)
}

/// Takes, keeps and gives up this process's outlets.
pub struct Ownership {
    shared: Shared,
    /// The chain's outlets; one added while running joins at the next round (`add`).
    outlets: RwLock<Vec<OutletId>>,
    /// One round at a time: the timer's and one run for an added outlet.
    rounds: tokio::sync::Mutex<()>,
    /// Set by `release_all` (under `rounds`): no round runs after it, so nothing takes a
    /// lease back once the process has given them up.
    stopped: std::sync::atomic::AtomicBool,
    limits: OutletLimits,
    /// Set after the first round: only the first takes over leases an earlier run of this
    /// node id left (a second live process under the same id would otherwise take them back
    /// and forth).
    started: std::sync::atomic::AtomicBool,
}

impl Ownership {
    pub fn new(shared: Shared, outlets: Vec<OutletId>, limits: OutletLimits) -> Self {
        Self {
            shared,
            outlets: RwLock::new(outlets),
            rounds: tokio::sync::Mutex::new(()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            limits,
            started: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// An outlet added while running, owned from the next round by the process rendezvous
    /// gives it to.
    pub fn add(&self, outlet: &OutletId) {
        let mut outlets = self.outlets.write().expect("outlets lock");
        if !outlets.contains(outlet) {
            outlets.push(outlet.clone());
        }
    }

    fn owners(&self) -> &Owners {
        &self.shared.owners
    }

    fn lease_ms(&self) -> u64 {
        self.owners().lease.as_millis() as u64
    }

    fn count(&self, outlet: &OutletId, change: &str) {
        self.shared
            .metrics
            .ownership_changes
            .with_label_values(&[outlet.as_str(), change])
            .inc();
    }

    fn gauge(&self, outlet: &OutletId, owned: bool) {
        self.shared
            .metrics
            .owned_outlets
            .with_label_values(&[self.owners().node.as_str(), outlet.as_str()])
            .set(i64::from(owned));
    }

    /// One round: beat, renew, step down, hand over at most one outlet, take free leases.
    /// Returns the actors it started (the caller may wait for them to load), and when the
    /// earliest lease this process waits for (rendezvous gives it the outlet, another node
    /// still holds it) runs out, so that the next round comes right then.
    pub async fn round(&self) -> anyhow::Result<(Vec<Addr<OutletActor>>, Option<Duration>)> {
        let _one = self.rounds.lock().await;
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Ok((Vec::new(), None));
        }
        let store = &self.shared.store;
        let node = self.owners().node.clone();
        let beats = store.heartbeat(&node, self.lease_ms()).await?;
        if let Some(url) = self.owners().advertised() {
            store.advertise(&node, &url).await?;
        }
        let now = crate::domain::now_ms();
        // A member that stopped beating drops out of the list a lease after its last beat:
        // the next round comes right then, not up to a third of a lease later.
        let mut wait: Option<Duration> = beats
            .iter()
            .filter(|(m, _)| *m != node)
            .map(|(_, at)| Duration::from_millis((at + self.lease_ms() as i64 - now).max(0) as u64))
            .filter(|left| *left < self.owners().lease / 3)
            .min();
        let members: Vec<String> = beats.into_iter().map(|(m, _)| m).collect();
        let owned = self.owners().snapshot();
        let mut hand_over = None;
        for (outlet, o) in &owned {
            let keys = store.keys(outlet);
            match store
                .renew_lease(&keys, &node, o.token, self.lease_ms())
                .await
            {
                Ok(true) => self.owners().renewed(outlet, o.token),
                Ok(false) => {
                    warn!(%outlet, token = o.token, "the outlet's lease is not ours any more; stepping down");
                    self.step_down(outlet, o, "lost");
                    continue;
                }
                Err(e) => {
                    // Not renewed: the lease may lapse. Past it, another process may own the
                    // outlet; the scripts refuse our writes then, and we stop acting.
                    warn!(%outlet, error = %format!("{e:#}"), "renewing the outlet's lease failed");
                    if o.renewed.elapsed() >= self.owners().lease {
                        self.step_down(outlet, o, "lost");
                        continue;
                    }
                }
            }
            let wanted = owner_of(&members, outlet);
            if hand_over.is_none() && wanted.is_some_and(|w| w != node) {
                hand_over = Some((outlet.clone(), o.clone()));
            }
        }
        if let Some((outlet, o)) = hand_over {
            self.hand_over(&outlet, &o, "handed_over").await;
        }
        let mut started = Vec::new();
        let takeover = !self.started.swap(true, std::sync::atomic::Ordering::AcqRel);
        let outlets = self.outlets.read().expect("outlets lock").clone();
        for outlet in &outlets {
            if self.owners().owns(outlet) || owner_of(&members, outlet) != Some(node.as_str()) {
                continue;
            }
            let keys = store.keys(outlet);
            let acquired = store.acquire_lease(&keys, &node, self.lease_ms(), takeover);
            let Some(token) = acquired.await? else {
                // A dead owner's lease: try again as it runs out, not a whole round later.
                if let Some(left) = store.lease_ttl(&keys).await? {
                    wait = Some(wait.map_or(left, |w| w.min(left)));
                }
                continue;
            };
            match self.take(outlet, token).await {
                Ok(addr) => started.push(addr),
                Err(e) => {
                    // Give the lease back, so that the outlet is not held by nobody's actor;
                    // the next round tries again.
                    warn!(%outlet, error = %format!("{e:#}"), "starting the outlet failed; its lease is given back");
                    let _ = store.release_lease(&keys, &node, token).await;
                }
            }
        }
        Ok((started, wait))
    }

    /// Starts the outlet's actor under `token`, once the ledger watermark is what is provably
    /// durable now (another process may have written the outlet since this one last owned
    /// it).
    async fn take(&self, outlet: &OutletId, token: u64) -> anyhow::Result<Addr<OutletActor>> {
        let shared = &self.shared;
        let durable = provably_durable(&shared.store, &shared.ledger, outlet).await?;
        shared.durable.advance(outlet, durable);
        let actor = OutletActor::new(outlet.clone(), shared.clone(), self.limits.clone(), token);
        let addr = actor.start();
        self.owners().insert(outlet.clone(), addr.clone(), token);
        self.count(outlet, "acquired");
        self.gauge(outlet, true);
        info!(%outlet, token, node = %self.owners().node, "outlet lease acquired");
        Ok(addr)
    }

    fn step_down(&self, outlet: &OutletId, o: &Owned, change: &str) {
        if self.owners().remove_if(outlet, o.token) {
            o.addr.do_send(StepDown { token: o.token });
            self.count(outlet, change);
            self.gauge(outlet, false);
        }
    }

    /// Lets the outlet finish what it has queued, stops its actor and gives the lease up, so
    /// that the next owner takes it at its next round instead of after the lease expires.
    /// Requests that arrive meanwhile get 503 with Retry-After.
    async fn hand_over(&self, outlet: &OutletId, o: &Owned, change: &str) {
        if !self.owners().remove_if(outlet, o.token) {
            return;
        }
        let _ = o.addr.send(Drain).await;
        o.addr.do_send(StepDown { token: o.token });
        let keys = self.shared.store.keys(outlet);
        if let Err(e) = (self.shared.store)
            .release_lease(&keys, &self.owners().node, o.token)
            .await
        {
            warn!(%outlet, error = %format!("{e:#}"), "releasing the outlet's lease failed; it expires");
        }
        self.count(outlet, change);
        self.gauge(outlet, false);
        info!(%outlet, "outlet handed over");
    }

    /// A graceful stop, after the outlets drained and the ledger writer flushed: leaves the
    /// members and gives every lease up.
    pub async fn release_all(&self) {
        let _one = self.rounds.lock().await;
        self.stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let node = &self.owners().node;
        if let Err(e) = self.shared.store.leave(node).await {
            warn!(error = %format!("{e:#}"), "leaving the members failed");
        }
        for (outlet, o) in self.owners().snapshot() {
            self.hand_over(&outlet, &o, "released").await;
        }
    }

    /// Runs rounds every third of the lease (sooner when a lease it waits for runs out
    /// first) until `stop` is set.
    pub fn spawn(self: Arc<Self>, stop: Arc<std::sync::atomic::AtomicBool>) {
        let every = self.owners().lease / 3;
        actix::spawn(async move {
            let mut next = every;
            loop {
                tokio::time::sleep(next).await;
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                next = match self.round().await {
                    // A few ms past the expiry, and never a busy loop.
                    Ok((_, Some(left))) => {
                        (left + Duration::from_millis(5)).clamp(Duration::from_millis(20), every)
                    }
                    Ok((_, None)) => every,
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "ownership round failed");
                        every
                    }
                };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlet(s: &str) -> OutletId {
        OutletId::parse("o", s).unwrap()
    }

    #[test]
    fn rendezvous_moves_only_the_leaving_members_outlets() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let outlets: Vec<OutletId> = (0..60).map(|i| outlet(&format!("outlet-{i}"))).collect();
        let mut per = HashMap::new();
        for o in &outlets {
            let before = owner_of(&three, o).unwrap();
            *per.entry(before).or_insert(0) += 1;
            let after = owner_of(&two, o).unwrap();
            if before != "c" {
                assert_eq!(before, after, "{o} moved although its owner stayed");
            }
        }
        assert_eq!(per.len(), 3, "every member owns some: {per:?}");
        assert!(per.values().all(|&n| n >= 10), "spread: {per:?}");
        assert_eq!(owner_of(&[], &outlets[0]), None);
    }
}
