//! The live hub: every committed change fans out to SSE and WebSocket clients.
//!
//! Outlet actors publish into one bounded broadcast ring and never wait. Each client reads
//! at its own pace through a small forwarder with a bounded buffer of its own; a client that
//! falls behind (the ring overtook it, or its buffer stayed full for `stall_secs`) is
//! dropped. It reconnects and gets a fresh snapshot, and it can never slow the actors or
//! the other clients.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::catalogue::Catalogue;
use crate::domain::{Counters, Invalid, OutletId, Sku};
use crate::stock_view::StockView;
use crate::store::ResRecord;

#[derive(Debug, Clone)]
pub enum LiveEvent {
    Stock {
        outlet: OutletId,
        sku: Sku,
        counters: Counters,
    },
    Order(Arc<ResRecord>),
    /// What became of a hold a counter sale left short: `rerouted` or `at_risk`, for the
    /// outlets it concerns.
    Reservation {
        event: &'static str,
        outlets: Vec<OutletId>,
        body: Arc<serde_json::Value>,
    },
}

pub struct Hub {
    tx: broadcast::Sender<LiveEvent>,
    clients: AtomicUsize,
    clients_max: usize,
    /// Clients per API key (by its label, which names one key), at most `per_key_max` each.
    per_key: std::sync::Mutex<std::collections::HashMap<Arc<str>, usize>>,
    per_key_max: usize,
    /// Set at shutdown: every live stream ends, so a graceful stop need not wait for them.
    closed: tokio::sync::watch::Sender<bool>,
}

/// A client's place in the hub; leaving (drop) frees it.
pub struct Membership {
    pub rx: broadcast::Receiver<LiveEvent>,
    hub: Arc<Hub>,
    key: Arc<str>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.clients.fetch_sub(1, Ordering::AcqRel);
        let mut per_key = self.hub.per_key.lock().expect("hub lock");
        if let Some(n) = per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

/// Why a client found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `streams.clients_max` clients are connected.
    Hub,
    /// Its key holds `streams.clients_per_key_max` of them.
    Key,
}

impl Full {
    /// The metric label (`shelfsync_stream_refused_total{reason}`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Hub => "clients_max",
            Self::Key => "key_slots",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Hub => "too many live stream clients; try again shortly",
            Self::Key => "this API key holds as many live streams as it may; close one first",
        }
    }
}

impl Hub {
    pub fn new(ring_events: usize, clients_max: usize, per_key_max: usize) -> Self {
        Self {
            tx: broadcast::channel(ring_events.max(1)).0,
            clients: AtomicUsize::new(0),
            clients_max,
            per_key: Default::default(),
            per_key_max,
            closed: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends every live stream (graceful shutdown).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once the hub is closed.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Never waits; with no client connected the event is simply not kept.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(event);
    }

    /// A place for one more client of the API key labelled `key`, unless the hub or the
    /// key is full.
    pub fn join(self: &Arc<Self>, key: &str) -> Result<Membership, Full> {
        let key: Arc<str> = key.into();
        {
            let mut per_key = self.per_key.lock().expect("hub lock");
            let n = per_key.entry(key.clone()).or_insert(0);
            if *n >= self.per_key_max {
                return Err(Full::Key);
            }
            *n += 1;
        }
        // From here the membership exists: dropping it gives back both places.
        let member = Membership {
            rx: self.tx.subscribe(),
            hub: self.clone(),
            key,
        };
        if self.clients.fetch_add(1, Ordering::AcqRel) >= self.clients_max {
            return Err(Full::Hub);
        }
        Ok(member)
    }
}

/// Which outlets and SKUs a client wants (empty: all).
/// Which outlets' reservation events (confirmed orders, re-routed and at-risk holds, which
/// name customers' reservations) a client may get: its key's.
#[derive(Debug, Clone, Default)]
pub enum ReservationScope {
    /// A key that may not read reservations.
    #[default]
    Nothing,
    Every,
    /// A key scoped to these outlets.
    Only(HashSet<OutletId>),
}

impl ReservationScope {
    pub fn allows(&self, outlet: &OutletId) -> bool {
        match self {
            Self::Nothing => false,
            Self::Every => true,
            Self::Only(outlets) => outlets.contains(outlet),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    outlets: Option<HashSet<OutletId>>,
    skus: Option<HashSet<Sku>>,
    /// The outlets whose `rerouted` and `at_risk` events the client may get.
    reservations: ReservationScope,
}

impl Filter {
    /// Parses comma-separated lists, each id checked against the catalogue.
    pub fn parse(
        catalogue: &Catalogue,
        outlets: Option<&str>,
        skus: Option<&str>,
    ) -> Result<Self, Invalid> {
        let split = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        Self::from_lists(catalogue, outlets.map(split), skus.map(split))
    }

    pub fn from_lists(
        catalogue: &Catalogue,
        outlets: Option<Vec<String>>,
        skus: Option<Vec<String>>,
    ) -> Result<Self, Invalid> {
        let outlets = outlets
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.iter()
                    .map(|o| catalogue.known_outlet("outlets", o))
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        let skus = skus
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.iter()
                    .map(|s| catalogue.known_sku("skus", s))
                    .collect::<Result<HashSet<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            outlets,
            skus,
            reservations: ReservationScope::Nothing,
        })
    }

    /// Lets the reservation events of `scope`'s outlets through (the key's).
    pub fn with_reservations(mut self, scope: ReservationScope) -> Self {
        self.reservations = scope;
        self
    }

    /// A reservation event concerning `outlets`: one the client asked for and may read.
    pub fn wants_reservation(&self, outlets: &[OutletId]) -> bool {
        (outlets.iter()).any(|o| self.wants_outlet(o) && self.reservations.allows(o))
    }

    pub fn wants_outlet(&self, outlet: &OutletId) -> bool {
        self.outlets.as_ref().is_none_or(|o| o.contains(outlet))
    }

    pub fn wants(&self, outlet: &OutletId, sku: &Sku) -> bool {
        self.wants_outlet(outlet) && self.skus.as_ref().is_none_or(|s| s.contains(sku))
    }

    /// Every matching (outlet, SKU) with its committed numbers.
    pub fn snapshot(
        &self,
        catalogue: &Catalogue,
        stock: &StockView,
    ) -> Vec<(OutletId, Sku, Counters)> {
        let mut rows = Vec::new();
        for outlet in catalogue
            .outlets
            .iter()
            .map(|o| &o.id)
            .filter(|o| self.wants_outlet(o))
        {
            for (sku, c) in stock.outlet(outlet) {
                if self.wants(outlet, &sku) {
                    rows.push((outlet.clone(), sku, c));
                }
            }
        }
        rows
    }
}
