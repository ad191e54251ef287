//! The alert engine: one task per process that judges the SKUs of the outlets this process
//! owns after their commits, and all of them with sales once every `alerts.sweep_secs` (a
//! forecast moves with the clock too), and announces each alert raised or cleared (alerts.rs).
//!
//! - Outlet actors tell it what changed and what sold through the `AlertInbox`, without ever
//!   waiting: the inbox keeps a set of changed (outlet, SKU) pairs and a sum of units sold
//!   per (outlet, SKU, hour), so it is bounded by the pairs that changed between two looks,
//!   however fast they commit.
//! - When this process comes to own an outlet, the engine reads its sales of the last
//!   `alerts.history_weeks` from the ledger (`alerts.read_after_secs` later, one outlet a
//!   second at most, so that
//!   a takeover's many outlets do not crowd the ledger it needs), then judges all its SKUs;
//!   the outlet's commits keep them current after that, and its forecasts are refitted once
//!   an hour. An outlet it no longer owns is forgotten (its new owner reads it).
//! - A change is announced only when Redis says it changed something (HSETNX of a raise,
//!   HDEL of a clear, `RedisStore::alert_changes`), then: to this process's stream clients;
//!   on the `alerts` channel to the other processes' clients (follower.rs); to MQTT
//!   `alerts/{outlet}` (the feed, bounded); to the webhook (webhook.rs, bounded).
//! - It also counts each minute's sales per outlet in Redis for the war room (war_room.rs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use super::Shared;
use crate::alerts::{histories, judge, Alert, AlertKind, AlertState, History};
use crate::domain::{now_ms, rfc3339_ms, OutletId, Sku};
use crate::forecast::local_hour;
use crate::hub::LiveEvent;
use crate::settings::AlertSettings;
use crate::webhook::Webhook;

#[derive(Default)]
struct Pending {
    changed: HashSet<(OutletId, Sku)>,
    /// Units sold per (outlet, SKU, local hour).
    sold: HashMap<(OutletId, Sku, i64), f64>,
    /// Units sold per (outlet, minute committed), for the war room.
    per_minute: HashMap<(OutletId, i64), i64>,
}

/// What outlet actors tell the engine (see the module comment).
pub struct AlertInbox {
    pending: Mutex<Pending>,
    notify: Notify,
    utc_offset_minutes: i32,
}

impl AlertInbox {
    pub fn new(utc_offset_minutes: i32) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            utc_offset_minutes,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("alert inbox")
    }

    /// A commit changed `sku` at `outlet`.
    pub fn changed(&self, outlet: &OutletId, sku: &Sku) {
        self.pending().changed.insert((outlet.clone(), sku.clone()));
        self.notify.notify_one();
    }

    /// `qty` units of `sku` sold at `outlet` at `at_ms`.
    pub fn sold(&self, outlet: &OutletId, sku: &Sku, at_ms: i64, qty: i64) {
        let hour = local_hour(at_ms, self.utc_offset_minutes);
        let mut p = self.pending();
        *(p.sold)
            .entry((outlet.clone(), sku.clone(), hour))
            .or_default() += qty as f64;
        *(p.per_minute)
            .entry((outlet.clone(), crate::war_room::minute(now_ms())))
            .or_default() += qty;
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }
}

pub struct AlertEngine {
    shared: Shared,
    settings: AlertSettings,
    utc_offset_minutes: i32,
    /// The sales histories of the outlets this process owns, read from the ledger.
    histories: HashMap<OutletId, HashMap<Sku, History>>,
    /// When reading an outlet's history last failed: tried again after `READ_RETRY`.
    failed: HashMap<OutletId, std::time::Instant>,
    /// When this process was first seen owning each outlet it owns.
    owned_since: HashMap<OutletId, std::time::Instant>,
    webhook: Option<Arc<Webhook>>,
}

/// How long after a failed read of an outlet's sales it is tried again.
const READ_RETRY: Duration = Duration::from_secs(5);

impl AlertEngine {
    pub fn spawn(
        shared: Shared,
        settings: AlertSettings,
        utc_offset_minutes: i32,
        webhook: Option<Arc<Webhook>>,
        stop: Arc<AtomicBool>,
    ) {
        let mut engine = Self {
            shared,
            settings,
            utc_offset_minutes,
            histories: HashMap::new(),
            failed: HashMap::new(),
            owned_since: HashMap::new(),
            webhook,
        };
        actix::spawn(async move {
            let inbox = engine.shared.alerts.clone();
            let mut sweep = tokio::time::interval(Duration::from_secs(engine.settings.sweep_secs));
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Acquire) {
                let swept = tokio::select! {
                    _ = inbox.notify.notified() => false,
                    _ = sweep.tick() => true,
                    // The stop flag, and the next history to read, now and then.
                    _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                };
                let loaded = engine.follow_owners().await;
                let pending = inbox.take();
                engine.take_sales(pending.sold);
                let per_minute: Vec<(OutletId, i64, i64)> = (pending.per_minute.into_iter())
                    .map(|((o, m), q)| (o, m, q))
                    .collect();
                if let Err(e) = engine.shared.store.count_sales(&per_minute).await {
                    warn!(error = %format!("{e:#}"), "counting sales by minute failed");
                }
                let mut look: HashSet<(OutletId, Sku)> = pending.changed;
                // An outlet whose history was just read is judged whole.
                if let Some(skus) = loaded.and_then(|o| engine.histories.get_key_value(&o)) {
                    look.extend((skus.1.keys()).map(|sku| (skus.0.clone(), sku.clone())));
                }
                if swept {
                    for (outlet, skus) in &engine.histories {
                        look.extend((skus.keys()).map(|sku| (outlet.clone(), sku.clone())));
                        engine.recount(outlet).await;
                    }
                }
                engine.look(look).await;
            }
        });
    }

    /// Reads the histories of outlets this process came to own; forgets those it lost.
    /// Forgets the outlets this process lost, and reads the history of at most one it came
    /// to own (`SETTLE` after it did): a takeover moves many outlets at once, and their
    /// ledger reads must not crowd the ledger the takeover itself needs. The one read, if any.
    async fn follow_owners(&mut self) -> Option<OutletId> {
        let owned: HashSet<OutletId> = self.shared.owners.ids().into_iter().collect();
        self.owned_since.retain(|o, _| owned.contains(o));
        let lost: Vec<OutletId> = (self.histories.keys())
            .filter(|o| !owned.contains(*o))
            .cloned()
            .collect();
        for outlet in lost {
            self.histories.remove(&outlet);
            // Its new owner counts its alerts.
            for kind in AlertKind::ALL {
                let labels = [outlet.as_str(), kind.as_str()];
                let _ = self
                    .shared
                    .metrics
                    .alerts_raised
                    .remove_label_values(&labels);
            }
        }
        let mut read = None;
        for outlet in owned {
            let since =
                *(self.owned_since.entry(outlet.clone())).or_insert_with(std::time::Instant::now);
            let retry_later =
                (self.failed.get(&outlet)).is_some_and(|at| at.elapsed() < READ_RETRY);
            if self.histories.contains_key(&outlet)
                || retry_later
                || since.elapsed() < Duration::from_secs(self.settings.read_after_secs)
                || read.is_some()
            {
                continue;
            }
            read = Some(outlet.clone());
            let now = now_ms();
            let since = now - i64::from(self.settings.history_weeks) * 7 * 86_400_000;
            match self.shared.ledger.sales_since(&outlet, since).await {
                Ok(sales) => {
                    let weeks = self.settings.history_weeks;
                    let skus = histories(&sales, weeks, now, self.utc_offset_minutes);
                    info!(%outlet, sales = sales.len(), skus = skus.len(), "sales history read for alerts");
                    self.failed.remove(&outlet);
                    self.histories.insert(outlet, skus);
                }
                // Tried again at a look after READ_RETRY.
                Err(e) => {
                    warn!(%outlet, error = %format!("{e:#}"), "reading sales for alerts failed");
                    self.failed.insert(outlet, std::time::Instant::now());
                }
            }
        }
        let forecasts: usize = self.histories.values().map(HashMap::len).sum();
        self.shared.metrics.alert_forecasts.set(forecasts as i64);
        read.filter(|o| self.histories.contains_key(o))
    }

    fn take_sales(&mut self, sold: HashMap<(OutletId, Sku, i64), f64>) {
        let weeks = self.settings.history_weeks;
        for ((outlet, sku, hour), qty) in sold {
            if let Some(skus) = self.histories.get_mut(&outlet) {
                (skus.entry(sku))
                    .or_insert_with(|| History::new(weeks, hour))
                    .add(hour, qty);
            }
        }
    }

    /// Judges each pair of an outlet this process owns, and announces what changed.
    async fn look(&mut self, pairs: HashSet<(OutletId, Sku)>) {
        let now = now_ms();
        let now_hour = local_hour(now, self.utc_offset_minutes);
        let mut by_outlet: HashMap<OutletId, Vec<Sku>> = HashMap::new();
        for (outlet, sku) in pairs {
            if self.shared.owners.owns(&outlet) {
                by_outlet.entry(outlet).or_default().push(sku);
            }
        }
        for (outlet, skus) in by_outlet {
            // Until its history is read, an outlet is judged for low stock only: without a
            // forecast a raised sell-out would look recovered.
            let forecast = self.histories.contains_key(&outlet);
            let mut raise = Vec::new();
            let mut clear = Vec::new();
            for sku in skus {
                let Some(counters) = self.shared.stock.get(&outlet, &sku) else {
                    continue;
                };
                let lots = self.shared.stock.lots(&outlet, &sku);
                let profile = (self.histories.get_mut(&outlet))
                    .and_then(|skus| skus.get_mut(&sku))
                    .map(|h| h.profile(now_hour).clone());
                let j = judge(
                    profile.as_ref(),
                    &counters,
                    &lots,
                    now,
                    &self.settings,
                    self.utc_offset_minutes,
                );
                for (i, kind) in AlertKind::ALL.into_iter().enumerate() {
                    if kind == AlertKind::SellOut && !forecast {
                        continue;
                    }
                    let field = Alert::field(kind, &sku);
                    if j.holds[i] {
                        raise.push((field, j.alert(kind, &outlet, &sku, now, &self.settings)));
                    } else {
                        clear.push((field, j.available));
                    }
                }
            }
            self.announce(&outlet, raise, clear, now).await;
        }
    }

    async fn announce(
        &self,
        outlet: &OutletId,
        raise: Vec<(String, Alert)>,
        clear: Vec<(String, i64)>,
        now: i64,
    ) {
        let keys = self.shared.store.keys(outlet);
        let raise_json: Vec<(String, String)> = (raise.iter())
            .map(|(f, a)| (f.clone(), serde_json::json!(a).to_string()))
            .collect();
        let clear_fields: Vec<String> = clear.iter().map(|c| c.0.clone()).collect();
        let Some(token) = self.shared.owners.token(outlet) else {
            return;
        };
        let owners = &self.shared.owners;
        let done = (self.shared.store)
            .alert_changes(&keys, token, &owners.node, &raise_json, &clear_fields)
            .await;
        let (raised_now, cleared_now) = match done {
            Ok(Some(done)) => done,
            // Another process owns the outlet now: it judges it.
            Ok(None) => return,
            Err(e) => {
                // Looked at again with the next commit or sweep.
                warn!(%outlet, error = %format!("{e:#}"), "changing alerts failed");
                return;
            }
        };
        let mut changes = Vec::new();
        for ((_, alert), new) in raise.into_iter().zip(raised_now) {
            if new {
                changes.push(alert);
            }
        }
        for ((_, available), was) in clear.into_iter().zip(cleared_now) {
            // The alert this call removed: its clearing carries its id.
            if let Some(was) = was.and_then(|j| serde_json::from_str::<Alert>(&j).ok()) {
                changes.push(Alert {
                    state: AlertState::Cleared,
                    available,
                    sell_out_at: None,
                    at: rfc3339_ms(now),
                    ..was
                });
            }
        }
        let m = &self.shared.metrics;
        for alert in &changes {
            let gauge =
                (m.alerts_raised).with_label_values(&[outlet.as_str(), alert.kind.as_str()]);
            match alert.state {
                AlertState::Raised => gauge.inc(),
                AlertState::Cleared => gauge.set((gauge.get() - 1).max(0)),
            }
        }
        for alert in changes {
            let state = alert.state.as_str();
            info!(%outlet, sku = %alert.sku, kind = alert.kind.as_str(), state, available = alert.available, "alert");
            (m.alerts)
                .with_label_values(&[alert.kind.as_str(), state])
                .inc();
            let alert = Arc::new(alert);
            self.shared.hub.publish(LiveEvent::Alert(alert.clone()));
            let json = serde_json::json!(*alert).to_string();
            if let Err(e) = self.shared.store.publish_alert(&json).await {
                warn!(%outlet, error = %format!("{e:#}"), "publishing an alert to the other processes failed");
            }
            self.shared.feed.alert(alert.clone());
            if let Some(webhook) = &self.webhook {
                webhook.push(alert);
            }
        }
    }

    /// Sets the raised-alerts gauges of `outlet` from Redis (at each sweep: the engine's
    /// running count starts at 0 and another process may have changed the hash).
    async fn recount(&self, outlet: &OutletId) {
        let keys = self.shared.store.keys(outlet);
        let all = match self.shared.store.raised_alerts(&keys).await {
            Ok(all) => all,
            Err(e) => {
                warn!(%outlet, error = %format!("{e:#}"), "counting raised alerts failed");
                return;
            }
        };
        let mut count: HashMap<AlertKind, i64> = HashMap::new();
        for a in all
            .iter()
            .filter_map(|j| serde_json::from_str::<Alert>(j).ok())
        {
            *count.entry(a.kind).or_default() += 1;
        }
        for kind in AlertKind::ALL {
            (self.shared.metrics.alerts_raised)
                .with_label_values(&[outlet.as_str(), kind.as_str()])
                .set(count.get(&kind).copied().unwrap_or(0));
        }
    }
}
