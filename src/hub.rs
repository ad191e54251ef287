//! The live hub: every committed change fans out to SSE and WebSocket clients.
//!
//! Outlet actors publish into one bounded broadcast ring and never wait. Each client reads
//! at its own pace through a small forwarder with a bounded buffer of its own; a client that
//! falls behind (the ring overtook it, or its buffer stayed full for `stall_secs`) is
//! dropped. It reconnects and gets a fresh snapshot, and it can never slow the actors or
//! the other clients.
//!
//! Every event gets an id, one more than the last, and the hub keeps the latest
//! `streams.resume_events` of them: a client that reconnects with the id of the last event it
//! saw (SSE `Last-Event-ID`) gets only what came after, while the hub still holds it.

use std::collections::{HashSet, VecDeque};
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
    /// A sell-out or low-stock alert raised or cleared (alerts.rs).
    Alert(Arc<crate::alerts::Alert>),
    /// What became of a hold a counter sale left short: `rerouted` or `at_risk`, for the
    /// outlets it concerns.
    Reservation {
        event: &'static str,
        outlets: Vec<OutletId>,
        body: Arc<serde_json::Value>,
    },
}

/// An event and its id in this hub.
pub type Numbered = (u64, LiveEvent);

/// The latest events, for clients that resume.
struct Recent {
    /// The id of the last event published (0: none yet).
    last: u64,
    events: VecDeque<Numbered>,
    max: usize,
}

/// Where a joining client starts.
#[derive(Debug)]
pub enum Start {
    /// Every event after the one it named, in order (none: it missed nothing).
    Resume(Vec<Numbered>),
    /// A snapshot: it named no event, or one the hub no longer holds (or never had).
    Snapshot,
}

impl Start {
    /// The metric label (`shelfsync_stream_starts_total{outcome}`) of a client that asked to
    /// resume.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Resume(_) => "resumed",
            Self::Snapshot => "snapshot",
        }
    }
}

pub struct Hub {
    tx: broadcast::Sender<Numbered>,
    recent: std::sync::Mutex<Recent>,
    /// Names this hub's run in the ids it hands out: an id from another process or an earlier
    /// run never resumes here, it gets a snapshot.
    instance: String,
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
    pub rx: broadcast::Receiver<Numbered>,
    /// The id of the last event published before the client joined: every later one is in
    /// `rx`, and a snapshot taken after joining reflects at least this one.
    pub joined_at: u64,
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
    pub fn new(
        ring_events: usize,
        resume_events: usize,
        clients_max: usize,
        per_key_max: usize,
    ) -> Self {
        Self {
            tx: broadcast::channel(ring_events.max(1)).0,
            recent: std::sync::Mutex::new(Recent {
                last: 0,
                events: VecDeque::new(),
                max: resume_events,
            }),
            instance: format!("{:08x}", rand::random::<u32>()),
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

    /// Never waits. The id is taken and the event sent under one lock, so that a client
    /// joining (under the same lock) finds each event either in the kept ones or in its
    /// receiver, never in both or neither.
    pub fn publish(&self, event: LiveEvent) {
        let mut recent = self.recent.lock().expect("hub lock");
        recent.last += 1;
        let id = recent.last;
        if recent.max > 0 {
            if recent.events.len() >= recent.max {
                recent.events.pop_front();
            }
            recent.events.push_back((id, event.clone()));
        }
        let _ = self.tx.send((id, event));
    }

    /// The id a client sends back to resume after the event numbered `id`.
    pub fn event_id(&self, id: u64) -> String {
        format!("{}-{id}", self.instance)
    }

    /// The event a client's `Last-Event-ID` names, if it is one of this hub's ids.
    fn parse_event_id(&self, text: &str) -> Option<u64> {
        let (instance, id) = text.trim().split_once('-')?;
        (instance == self.instance).then(|| id.parse().ok())?
    }

    /// A place for one more client of the API key labelled `key`, unless the hub or the
    /// key is full; it starts with a snapshot.
    pub fn join(self: &Arc<Self>, key: &str) -> Result<Membership, Full> {
        self.join_after(key, None).map(|(member, _)| member)
    }

    /// Like `join`, for a client that saw the event `last_event_id`: it gets what it
    /// missed if the hub still holds all of it, else a snapshot.
    pub fn join_after(
        self: &Arc<Self>,
        key: &str,
        last_event_id: Option<&str>,
    ) -> Result<(Membership, Start), Full> {
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
        let recent = self.recent.lock().expect("hub lock");
        let member = Membership {
            rx: self.tx.subscribe(),
            joined_at: recent.last,
            hub: self.clone(),
            key,
        };
        let since = last_event_id.and_then(|text| self.parse_event_id(text));
        let start = match since {
            Some(since) if since <= recent.last => {
                let oldest = recent.events.front().map_or(recent.last + 1, |(id, _)| *id);
                if since + 1 >= oldest {
                    let missed = recent.events.iter().filter(|(id, _)| *id > since);
                    Start::Resume(latest_only(missed))
                } else {
                    Start::Snapshot
                }
            }
            _ => Start::Snapshot,
        };
        drop(recent);
        if self.clients.fetch_add(1, Ordering::AcqRel) >= self.clients_max {
            return Err(Full::Hub);
        }
        Ok((member, start))
    }
}

/// The events after a client's last, with only the latest stock value of each (outlet, SKU):
/// a stock event is the whole state of its SKU, so the older ones would only cost a slow
/// link bytes. Every reservation event stays (each is news of its own), all in id order.
fn latest_only<'a>(missed: impl DoubleEndedIterator<Item = &'a Numbered>) -> Vec<Numbered> {
    let mut newer = HashSet::new();
    let mut kept: Vec<Numbered> = missed
        .rev()
        .filter(|(_, event)| match event {
            LiveEvent::Stock { outlet, sku, .. } => newer.insert((outlet, sku)),
            _ => true,
        })
        .cloned()
        .collect();
    kept.reverse();
    kept
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
    /// The outlets whose alerts the client may get.
    alerts: ReservationScope,
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
            alerts: ReservationScope::Nothing,
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

    /// Lets the alerts of `scope`'s outlets through (the key's).
    pub fn with_alerts(mut self, scope: ReservationScope) -> Self {
        self.alerts = scope;
        self
    }

    /// An alert of `sku` at `outlet`: one the client asked for, and its key may read the
    /// outlet's ledger (alerts are for the chain's staff, not for public browsers).
    pub fn wants_alert(&self, outlet: &OutletId, sku: &Sku) -> bool {
        self.wants(outlet, sku) && self.alerts.allows(outlet)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A change of SKU `sku` at seq `seq`.
    fn change(sku: &str, seq: u64) -> LiveEvent {
        LiveEvent::Stock {
            outlet: OutletId::parse("o", "a").unwrap(),
            sku: Sku::parse("s", sku).unwrap(),
            counters: Counters {
                on_hand: seq as i64,
                reserved: 0,
                seq,
            },
        }
    }

    fn ids(start: &Start) -> Vec<u64> {
        match start {
            Start::Resume(events) => events.iter().map(|(id, _)| *id).collect(),
            Start::Snapshot => panic!("a snapshot, not a resume"),
        }
    }

    #[test]
    fn a_client_resumes_with_exactly_what_it_missed_while_the_hub_holds_it() {
        let hub = Arc::new(Hub::new(16, 3, 10, 10));
        for seq in 1..=5 {
            hub.publish(change(&format!("sku-{seq}"), seq));
        }
        let (mut member, start) = hub.join_after("k", Some(&hub.event_id(3))).unwrap();
        assert_eq!(ids(&start), vec![4, 5], "the two after event 3, in order");
        assert_eq!(member.joined_at, 5);
        hub.publish(change("sku-6", 6));
        let (id, _) = member
            .rx
            .try_recv()
            .expect("a later event is in the receiver");
        assert_eq!(id, 6, "nothing twice, nothing missing between the two");

        let (_, start) = hub.join_after("k", Some(&hub.event_id(6))).unwrap();
        assert_eq!(
            ids(&start),
            Vec::<u64>::new(),
            "up to date: nothing to send"
        );
    }

    #[test]
    fn an_id_the_hub_no_longer_holds_or_never_gave_gets_a_snapshot() {
        let hub = Arc::new(Hub::new(16, 3, 10, 10));
        for seq in 1..=5 {
            hub.publish(change(&format!("sku-{seq}"), seq));
        }
        // Events 3..=5 are held: after 2 is a resume, after 1 lost event 2.
        assert_eq!(
            ids(&hub.join_after("k", Some(&hub.event_id(2))).unwrap().1),
            vec![3, 4, 5]
        );
        for named in [
            hub.event_id(1),
            hub.event_id(9),
            "0000zzzz-4".to_owned(),
            "garbage".to_owned(),
        ] {
            let (_, start) = hub.join_after("k", Some(&named)).unwrap();
            assert!(matches!(start, Start::Snapshot), "{named}: {start:?}");
        }
        assert!(matches!(
            hub.join_after("k", None).unwrap().1,
            Start::Snapshot
        ));
    }

    #[test]
    fn a_resume_sends_only_each_skus_latest_value_and_every_reservation_event() {
        let hub = Arc::new(Hub::new(16, 100, 10, 10));
        hub.publish(change("x", 1));
        hub.publish(change("x", 2));
        hub.publish(change("y", 3));
        hub.publish(LiveEvent::Reservation {
            event: "at_risk",
            outlets: vec![OutletId::parse("o", "a").unwrap()],
            body: Arc::new(serde_json::json!({})),
        });
        hub.publish(change("x", 5));
        let (_, start) = hub.join_after("k", Some(&hub.event_id(0))).unwrap();
        assert_eq!(ids(&start), vec![3, 4, 5], "x's 1 and 2 are overtaken by 5");
    }
}
