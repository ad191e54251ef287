//! The view of the outlets other processes own: it follows their commits through Redis.
//!
//! Every outlet batch that changes something publishes its commit to one Pub/Sub channel from
//! inside the same atomic script (apply_batch.lua): the outlet, the seq before and after, the
//! latest counters of every SKU it changed and the reservations it confirmed. This process
//! takes each commit of an outlet it does not own into its stock view and its live hub (SSE,
//! WebSocket), in seq order:
//!
//! - a commit whose `from` is the seq the view has is applied;
//! - one whose `to` is not past it is skipped (it is older than a resync);
//! - one past a gap (a message lost while the subscription was down, a rebuild that wrote
//!   without a batch) makes the view read the outlet's whole state from Redis (a resync),
//!   and every SKU that differs goes to the hub.
//!
//! Pub/Sub delivers at most once and says nothing of what it dropped, so once a second the
//! follower also reads every followed outlet's seq, and resyncs one whose seq in Redis is
//! not the view's at two reads in a row with no commit of it taken in between (at one read,
//! its commits may still be on their way); it resyncs everything after every
//! (re)subscription, and while it cannot subscribe it keeps reading seqs. After the last
//! commit is lost the view is behind for at most two seconds. A resync reads the outlet's
//! counters only (one MULTI), not its reservations. The outlets this process owns are left
//! to their actors, which write the same view as they commit.
//!
//! The same subscription carries the alerts other processes raise and clear (alerts.rs): each
//! goes to this process's stream clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tracing::{info, warn};

use super::Shared;
use crate::alerts::Alert;
use crate::domain::OutletId;
use crate::hub::LiveEvent;
use crate::store::{OutletCounters, ResRecord, StockRow};

/// How often the followed outlets' seqs are read, and the subscription is pinged.
const POLL: Duration = Duration::from_secs(1);

/// One outlet batch's commit as apply_batch.lua publishes it.
#[derive(Debug, Deserialize)]
struct Commit {
    outlet: OutletId,
    from: u64,
    to: u64,
    stock: Vec<StockRow>,
    orders: Vec<ResRecord>,
}

pub struct Follower {
    shared: Shared,
    /// The seq the view has of each followed outlet; an outlet not here is resynced first.
    seen: HashMap<OutletId, u64>,
    /// Outlets whose seq in Redis was not the view's at the last read, with the view's seq
    /// then: still the same at the next read, and the outlet is resynced.
    behind: HashMap<OutletId, u64>,
}

impl Follower {
    /// Follows until `stop` is set, reconnecting to Redis as often as it takes.
    /// The outlets followed are those `shared.signal` knows, as many as it has at each look.
    pub fn spawn(shared: Shared, stop: Arc<AtomicBool>) {
        let mut follower = Self {
            shared,
            seen: HashMap::new(),
            behind: HashMap::new(),
        };
        actix::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !stop.load(Ordering::Acquire) {
                match follower.shared.store.follow_commits().await {
                    Ok(pubsub) => {
                        backoff = Duration::from_millis(100);
                        // What was published while unsubscribed is gone: read everything again.
                        follower.seen.clear();
                        follower.follow(pubsub, &stop).await;
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "following the outlets' commits: redis unreachable; retrying");
                        // The seqs may still be readable (another node of a cluster).
                        follower.poll().await;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    }

    /// Takes commits until the subscription fails or `stop` is set.
    async fn follow(&mut self, pubsub: redis::aio::PubSub, stop: &AtomicBool) {
        let (mut sink, mut stream) = pubsub.split();
        let alerts = self.shared.store.alerts_channel();
        self.poll().await;
        info!("following the commits of outlets owned elsewhere");
        let mut tick = tokio::time::interval(POLL);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) if msg.get_channel_name() == alerts => self.alert(msg.get_payload_bytes()),
                    Some(msg) => self.take(msg.get_payload_bytes()).await,
                    None => {
                        warn!("the commits subscription ended; subscribing again");
                        return;
                    }
                },
                _ = tick.tick() => {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    // Subscribed, Redis answers a PING with ["pong", ""] (RESP2).
                    let ping = tokio::time::timeout(POLL * 2, sink.ping::<redis::Value>()).await;
                    if !matches!(ping, Ok(Ok(_))) {
                        warn!("the commits subscription does not answer; subscribing again");
                        return;
                    }
                    self.poll().await;
                }
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.shared
            .metrics
            .followed_commits
            .with_label_values(&[outcome])
            .inc();
    }

    async fn take(&mut self, payload: &[u8]) {
        let commit: Commit = match serde_json::from_slice(payload) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "an undecodable commit on the channel; ignored");
                self.count("undecodable");
                return;
            }
        };
        let outlet = commit.outlet.clone();
        if !self.shared.signal.knows(&outlet) {
            return;
        }
        if self.shared.owners.owns(&outlet) {
            // Its actor keeps the view; when it goes elsewhere, the view is read again first.
            self.seen.remove(&outlet);
            return;
        }
        match self.seen.get(&outlet) {
            Some(&seen) if commit.from == seen => {
                self.apply(commit);
                self.count("applied");
            }
            Some(&seen) if commit.to <= seen => self.count("skipped"),
            Some(_) => {
                self.count("gap");
                self.resync(&outlet, "gap").await;
            }
            None => self.resync(&outlet, "start").await,
        }
    }

    /// An alert raised or cleared by the owner of an outlet elsewhere: to this process's
    /// stream clients (the owner's own clients had it from its engine).
    fn alert(&self, payload: &[u8]) {
        match serde_json::from_slice::<Alert>(payload) {
            Ok(alert) => {
                if self.shared.signal.knows(&alert.outlet)
                    && !self.shared.owners.owns(&alert.outlet)
                {
                    self.shared.hub.publish(LiveEvent::Alert(Arc::new(alert)));
                }
            }
            Err(e) => warn!(error = %e, "an undecodable alert on the channel; ignored"),
        }
    }

    fn apply(&mut self, commit: Commit) {
        let outlet = commit.outlet;
        for row in &commit.stock {
            self.publish(&outlet, row.clone());
        }
        for order in commit.orders {
            self.shared.hub.publish(LiveEvent::Order(Arc::new(order)));
        }
        self.seen.insert(outlet, commit.to);
    }

    fn publish(&self, outlet: &OutletId, row: StockRow) {
        let counters = row.counters();
        self.shared
            .stock
            .record(outlet, &row.sku, counters, row.lots());
        self.shared.hub.publish(LiveEvent::Stock {
            outlet: outlet.clone(),
            sku: row.sku,
            counters,
        });
    }

    /// Resyncs every followed outlet not read yet, and every one whose seq in Redis was not
    /// the view's at this read and the last, with no commit of it taken in between.
    async fn poll(&mut self) {
        for outlet in self.shared.signal.ids() {
            if self.shared.owners.owns(&outlet) {
                self.seen.remove(&outlet);
                self.behind.remove(&outlet);
                continue;
            }
            let keys = self.shared.store.keys(&outlet);
            match self.shared.store.outlet_seq(&keys).await {
                Ok(Some(seq)) => match self.seen.get(&outlet).copied() {
                    None => self.resync(&outlet, "start").await,
                    Some(seen) if seen == seq => {
                        self.behind.remove(&outlet);
                    }
                    Some(seen) => {
                        if self.behind.insert(outlet.clone(), seen) == Some(seen) {
                            self.resync(&outlet, "seq_moved").await;
                        }
                    }
                },
                // No state yet (its owner rebuilds it): nothing to read.
                Ok(None) => {}
                Err(e) => {
                    warn!(%outlet, error = %format!("{e:#}"), "reading a followed outlet's seq failed");
                    return;
                }
            }
        }
    }

    /// Reads the outlet's counters whole and sends every SKU that differs to the hub.
    async fn resync(&mut self, outlet: &OutletId, reason: &str) {
        self.behind.remove(outlet);
        let keys = self.shared.store.keys(outlet);
        let OutletCounters {
            seq,
            counters,
            mut lots,
        } = match self.shared.store.counters(&keys).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                warn!(%outlet, error = %format!("{e:#}"), "reading a followed outlet failed");
                self.seen.remove(outlet);
                return;
            }
        };
        if self.shared.owners.owns(outlet) {
            return;
        }
        self.shared
            .metrics
            .follower_resyncs
            .with_label_values(&[outlet.as_str(), reason])
            .inc();
        // A first read, or a state that went back (rebuilt from the ledger), replaces the
        // view; otherwise a SKU's numbers only move forward.
        let back = self.seen.get(outlet).is_none_or(|&seen| seq < seen);
        let rows: Vec<StockRow> = counters
            .iter()
            .map(|(sku, c)| StockRow {
                sku: sku.clone(),
                on_hand: c.on_hand,
                reserved: c.reserved,
                seq: c.seq,
                lots: lots.remove(sku).unwrap_or_default(),
            })
            .collect();
        let stock = &self.shared.stock;
        let changed: Vec<StockRow> = (rows.iter())
            .filter(|r| {
                stock.get(outlet, &r.sku) != Some(r.counters())
                    || *stock.lots(outlet, &r.sku) != r.lots[..]
            })
            .cloned()
            .collect();
        if back {
            stock.replace(
                outlet,
                (rows.iter()).map(|r| (r.sku.clone(), r.counters(), r.lots())),
            );
        }
        for row in changed {
            self.publish(outlet, row);
        }
        self.seen.insert(outlet.clone(), seq);
    }
}
