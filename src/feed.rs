//! Committed changes waiting to be published: the latest counters per (outlet, SKU) and
//! confirmed orders. Outlet actors push without ever waiting; publishers take in batches.
//!
//! Stock coalesces: a newer value replaces an unpublished older one, so the pending set is
//! bounded by the number of (outlet, SKU) pairs, and a publisher that was away (broker down)
//! sends each SKU's latest value once. Orders are bounded by `orders_max`; past it the oldest
//! is dropped and counted (the ledger keeps every sale; the orders topic is a picking aid).
//! Alerts (alerts.rs) are bounded by `alerts_max` the same way (`GET /v1/alerts` keeps the
//! raised ones).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::alerts::Alert;
use crate::domain::{Counters, OutletId, Sku};
use crate::store::ResRecord;

/// Appends `item` to a queue of at most `max` (at least 1), dropping the oldest when it is
/// full; whether it dropped one.
pub fn push_dropping_oldest<T>(queue: &mut VecDeque<T>, item: T, max: usize) -> bool {
    let full = queue.len() >= max.max(1);
    if full {
        queue.pop_front();
    }
    queue.push_back(item);
    full
}

#[derive(Default)]
struct Pending {
    stock: HashMap<(OutletId, Sku), Counters>,
    orders: VecDeque<ResRecord>,
    alerts: VecDeque<Arc<Alert>>,
}

/// What a publisher takes in one go.
#[derive(Default)]
pub struct Batch {
    pub stock: Vec<(OutletId, Sku, Counters)>,
    pub orders: Vec<ResRecord>,
    pub alerts: Vec<Arc<Alert>>,
}

pub struct Feed {
    // A std Mutex: nothing awaits while it is held, and pushes come from actor threads.
    pending: Mutex<Pending>,
    notify: Notify,
    orders_max: usize,
    dropped_orders: AtomicU64,
    alerts_max: usize,
    dropped_alerts: AtomicU64,
}

impl Feed {
    pub fn new(orders_max: usize, alerts_max: usize) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            orders_max: orders_max.max(1),
            dropped_orders: AtomicU64::new(0),
            alerts_max: alerts_max.max(1),
            dropped_alerts: AtomicU64::new(0),
        }
    }

    pub fn stock_changed(&self, outlet: &OutletId, sku: &Sku, counters: Counters) {
        {
            let mut p = self.pending.lock().expect("feed lock");
            let slot = p
                .stock
                .entry((outlet.clone(), sku.clone()))
                .or_insert(counters);
            if counters.seq >= slot.seq {
                *slot = counters;
            }
        }
        self.notify.notify_one();
    }

    pub fn order_confirmed(&self, order: ResRecord) {
        {
            let mut p = self.pending.lock().expect("feed lock");
            if push_dropping_oldest(&mut p.orders, order, self.orders_max) {
                self.dropped_orders.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.notify.notify_one();
    }

    pub fn alert(&self, alert: Arc<Alert>) {
        {
            let mut p = self.pending.lock().expect("feed lock");
            if push_dropping_oldest(&mut p.alerts, alert, self.alerts_max) {
                self.dropped_alerts.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.notify.notify_one();
    }

    /// Waits until something is pending and takes all of it.
    pub async fn take(&self) -> Batch {
        loop {
            let notified = self.notify.notified();
            {
                let mut p = self.pending.lock().expect("feed lock");
                if !p.stock.is_empty() || !p.orders.is_empty() || !p.alerts.is_empty() {
                    let stock = std::mem::take(&mut p.stock)
                        .into_iter()
                        .map(|((o, s), c)| (o, s, c))
                        .collect();
                    let orders = std::mem::take(&mut p.orders).into();
                    let alerts = std::mem::take(&mut p.alerts).into();
                    return Batch {
                        stock,
                        orders,
                        alerts,
                    };
                }
            }
            notified.await;
        }
    }

    /// Items waiting (for the publish queue depth metric).
    pub fn depth(&self) -> usize {
        let p = self.pending.lock().expect("feed lock");
        p.stock.len() + p.orders.len() + p.alerts.len()
    }

    pub fn dropped_orders(&self) -> u64 {
        self.dropped_orders.load(Ordering::Relaxed)
    }

    pub fn dropped_alerts(&self) -> u64 {
        self.dropped_alerts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_newer_value_replaces_an_unpublished_one() {
        let feed = Feed::new(2, 2);
        let o = OutletId::parse("o", "a").unwrap();
        let s = Sku::parse("s", "b").unwrap();
        let c = |seq| Counters {
            on_hand: seq as i64,
            reserved: 0,
            seq,
        };
        feed.stock_changed(&o, &s, c(5));
        feed.stock_changed(&o, &s, c(7));
        feed.stock_changed(&o, &s, c(6));

        let batch = feed.take().await;

        assert_eq!(batch.stock.len(), 1);
        assert_eq!(
            batch.stock[0].2.seq, 7,
            "the latest value wins, an older one never replaces it"
        );
        assert_eq!(feed.depth(), 0);
    }
}
