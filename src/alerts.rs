//! Sell-out and low-stock alerts: what they say, how each (outlet, SKU)'s sales history is
//! kept, and when an alert is raised or cleared.
//!
//! Two kinds, judged on a SKU's free units (on hand, less what holds have):
//!
//! - `sell_out`: at the rates its outlet sells it at this hour of the week (forecast.rs),
//!   the SKU's free units are gone (sold, or their lots expired) within `alerts.horizon_mins`.
//!   A SKU its outlet has not sold in `alerts.history_weeks` has no forecast and no such
//!   alert.
//! - `low_stock`: `alerts.low_stock` free units or fewer.
//!
//! An alert is raised once per crossing and cleared when the condition no longer holds:
//! the outlet's Redis hash `alerts` has a field per raised alert, and only the HSETNX that
//! creates it (or the HDEL that removes it) announces the change, so a restart, a takeover
//! by another process or a second look never announces it twice (actors/alerts.rs).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::domain::{rfc3339_ms, Counters, Lot, OutletId, Sku};
use crate::forecast::{free_units, local_hour, week_slot, Profile, HOURS_PER_WEEK};

/// Hours from a SKU's first sale before it is forecast (one sale an hour ago is no rate).
pub const MIN_HISTORY_HOURS: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    SellOut,
    LowStock,
}

impl AlertKind {
    pub const ALL: [AlertKind; 2] = [Self::SellOut, Self::LowStock];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SellOut => "sell_out",
            Self::LowStock => "low_stock",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Cleared,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raised => "raised",
            Self::Cleared => "cleared",
        }
    }
}

/// One alert's change, as every channel carries it (SSE `alert`, WebSocket `type: alert`,
/// MQTT `alerts/{outlet}`, the webhook) and as `GET /v1/alerts` lists the raised ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{outlet}:{sku}:{kind}:{raised_at ms}`: one crossing; its clearing carries the same.
    pub id: String,
    pub state: AlertState,
    pub kind: AlertKind,
    pub outlet: OutletId,
    pub sku: Sku,
    /// Free units when it was judged.
    pub available: i64,
    /// When the forecast has the free units gone, if within the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sell_out_at: Option<String>,
    pub low_stock: i64,
    pub horizon_mins: u32,
    pub raised_at: String,
    /// When this change was judged.
    pub at: String,
}

impl Alert {
    /// The field of the outlet's `alerts` hash this alert lives in while raised.
    pub fn field(kind: AlertKind, sku: &Sku) -> String {
        format!("{}:{sku}", kind.as_str())
    }
}

/// The alerts raised now at `outlets`, earliest first (from each outlet's Redis hash).
pub async fn raised(
    store: &crate::store::RedisStore,
    outlets: &[OutletId],
) -> anyhow::Result<Vec<Alert>> {
    let mut alerts: Vec<Alert> = Vec::new();
    for outlet in outlets {
        let raised = store.raised_alerts(&store.keys(outlet)).await?;
        for json in raised {
            match serde_json::from_str(&json) {
                Ok(alert) => alerts.push(alert),
                // Written by this service: only a bug or a hand edit gets here.
                Err(e) => {
                    tracing::warn!(%outlet, error = %e, "an unreadable raised alert; left out")
                }
            }
        }
    }
    alerts.sort_by(|a, b| (&a.raised_at, &a.id).cmp(&(&b.raised_at, &b.id)));
    Ok(alerts)
}

/// How a SKU stands against both kinds at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub available: i64,
    pub sell_out_at: Option<i64>,
    /// Per kind (`AlertKind::ALL` order): whether its condition holds.
    pub holds: [bool; 2],
}

/// Judges a SKU's numbers now. `profile` is its outlet's forecast of it, if it sells there.
pub fn judge(
    profile: Option<&Profile>,
    counters: &Counters,
    lots: &[Lot],
    now_ms: i64,
    settings: &crate::settings::AlertSettings,
    utc_offset_minutes: i32,
) -> Judgement {
    let available = counters.available();
    let horizon_end = now_ms + i64::from(settings.horizon_mins) * 60_000;
    let sell_out_at = profile.filter(|p| p.level > 0.0).and_then(|p| {
        let free = free_units(counters, lots);
        (p.sell_through(&free, now_ms, utc_offset_minutes, horizon_end)).out_at
    });
    Judgement {
        available,
        sell_out_at,
        holds: [sell_out_at.is_some(), available <= settings.low_stock],
    }
}

impl Judgement {
    /// The alert of `kind` as it would be raised now.
    pub fn alert(
        &self,
        kind: AlertKind,
        outlet: &OutletId,
        sku: &Sku,
        now_ms: i64,
        settings: &crate::settings::AlertSettings,
    ) -> Alert {
        Alert {
            id: format!("{outlet}:{sku}:{}:{now_ms}", kind.as_str()),
            state: AlertState::Raised,
            kind,
            outlet: outlet.clone(),
            sku: sku.clone(),
            available: self.available,
            sell_out_at: self.sell_out_at.map(rfc3339_ms),
            low_stock: settings.low_stock,
            horizon_mins: settings.horizon_mins,
            raised_at: rfc3339_ms(now_ms),
            at: rfc3339_ms(now_ms),
        }
    }
}

/// The histories of the SKUs in `sales` (SKU, when, units), each of `weeks` weeks up to now.
pub fn histories(
    sales: &[(Sku, i64, i64)],
    weeks: u32,
    now_ms: i64,
    utc_offset_minutes: i32,
) -> std::collections::HashMap<Sku, History> {
    let now_hour = local_hour(now_ms, utc_offset_minutes);
    let mut skus = std::collections::HashMap::new();
    for (sku, at, qty) in sales {
        (skus.entry(sku.clone()))
            .or_insert_with(|| History::new(weeks, now_hour))
            .add(local_hour(*at, utc_offset_minutes), *qty as f64);
    }
    skus
}

/// The units one outlet sold of one SKU in each local hour of the last `hours` hours.
#[derive(Debug, Clone)]
pub struct History {
    /// The local hour (hours since the epoch, local time) of `sold[0]`.
    first: i64,
    sold: VecDeque<f32>,
    hours: usize,
    /// The profile fitted at local hour `fitted.0` (refitted once an hour, when asked).
    fitted: Option<(i64, Profile)>,
}

impl History {
    /// An empty history of `weeks` weeks ending at the local hour `now_hour`.
    pub fn new(weeks: u32, now_hour: i64) -> Self {
        let hours = (weeks.max(1) as usize) * HOURS_PER_WEEK;
        Self {
            first: now_hour + 1 - hours as i64,
            sold: std::iter::repeat_n(0.0, hours).collect(),
            hours,
            fitted: None,
        }
    }

    /// Moves the window on so that it ends at local hour `hour`.
    fn advance(&mut self, hour: i64) {
        let last = self.first + self.hours as i64 - 1;
        if hour <= last {
            return;
        }
        let steps = ((hour - last) as usize).min(self.hours);
        for _ in 0..steps {
            self.sold.pop_front();
            self.sold.push_back(0.0);
        }
        self.first = hour + 1 - self.hours as i64;
    }

    /// Counts `qty` units sold in local hour `hour`; a sale older than the window is left
    /// out, and one ahead of it (a till's clock) moves the window on.
    pub fn add(&mut self, hour: i64, qty: f64) {
        self.advance(hour);
        if hour < self.first {
            return;
        }
        self.sold[(hour - self.first) as usize] += qty as f32;
    }

    /// The forecast as of local hour `now_hour`: fitted to the window ending the hour before
    /// (the current hour is still filling), from the first hour the SKU sold in it (the
    /// hours before it was on sale say nothing of how it sells), once per hour.
    pub fn profile(&mut self, now_hour: i64) -> &Profile {
        self.advance(now_hour);
        if self.fitted.as_ref().is_none_or(|(at, _)| *at != now_hour) {
            let past = self.sold.iter().take(self.hours - 1);
            let start = past
                .clone()
                .position(|&x| x > 0.0)
                .unwrap_or(self.hours - 1);
            let mut sales: Vec<f64> = past.skip(start).map(|&x| f64::from(x)).collect();
            if sales.len() < MIN_HISTORY_HOURS {
                // Too little to tell an hour's rate from chance: no forecast yet.
                sales.clear();
            }
            let first = week_slot(self.first + start as i64);
            self.fitted = Some((now_hour, Profile::fit(&sales, first)));
        }
        &self.fitted.as_ref().expect("fitted above").1
    }

    /// Units sold in the window.
    #[cfg(test)]
    fn total(&self) -> f64 {
        self.sold.iter().map(|&x| f64::from(x)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;
    use crate::settings::AlertSettings;

    #[test]
    fn a_history_fits_the_hours_it_saw_and_slides_on() {
        // Monday 2026-12-07 00:00 local (+05:30).
        let monday = 1_796_581_800_000;
        let now_hour = local_hour(monday, 330) + 24 * 7 * 2 - 1;
        let mut h = History::new(2, now_hour);
        for hour in (now_hour - 335)..=now_hour {
            // 6 an hour from 10 to 20 local, every day.
            if (10..20).contains(&hour.rem_euclid(24)) {
                h.add(hour, 6.0);
            }
        }
        let p = h.profile(now_hour + 1).clone();
        let ten_am = monday + 10 * HOUR_MS;
        assert!((p.rate(crate::forecast::hour_of_week(ten_am, 330)) - 6.0).abs() < 1e-6);
        assert!(
            p.rate(crate::forecast::hour_of_week(ten_am - 2 * HOUR_MS, 330))
                .abs()
                < 1e-9
        );
        // A sale from before the window is left out; one far ahead empties it.
        let total = h.total();
        h.add(now_hour - 10_000, 5.0);
        assert_eq!(h.total(), total);
        h.add(now_hour + 10_000, 1.0);
        assert_eq!(h.total(), 1.0);
    }

    #[test]
    fn a_history_shorter_than_the_window_is_fitted_from_its_first_sale() {
        let now_hour = 500_000;
        let mut h = History::new(4, now_hour);
        // Sold 6 an hour for the last 3 days only, of a 4-week window.
        for hour in (now_hour - 72)..now_hour {
            h.add(hour, 6.0);
        }
        let p = h.profile(now_hour).clone();
        // 6 every hour: the four days of the week it has not been on sale yet keep the rate.
        for slot in 0..HOURS_PER_WEEK {
            assert!(
                (p.rate(slot) - 6.0).abs() < 1e-9,
                "slot {slot}: {}",
                p.rate(slot)
            );
        }
    }

    #[test]
    fn judged_on_free_units_against_the_horizon_and_the_mark() {
        let settings = AlertSettings {
            horizon_mins: 120,
            low_stock: 3,
            ..AlertSettings::default()
        };
        let flat = Profile {
            level: 6.0,
            weekday: [1.0; 7],
            hour: [1.0; 24],
        };
        let at = |on_hand, reserved| Counters {
            on_hand,
            reserved,
            seq: 1,
        };
        let now = 1_796_581_800_000;
        // 6 an hour: 13 free units last past two hours, 12 do not.
        let j = judge(Some(&flat), &at(15, 2), &[], now, &settings, 330);
        assert_eq!(j.holds, [false, false]);
        let j = judge(Some(&flat), &at(15, 3), &[], now, &settings, 330);
        assert_eq!(
            (j.holds, j.sell_out_at),
            ([true, false], Some(now + 2 * HOUR_MS))
        );
        // A lot expiring in 30 minutes counts only for what sells before then.
        let lot = Lot {
            lot: "tray".into(),
            made_at: now - HOUR_MS,
            expires_at: now + HOUR_MS / 2,
            qty: 10,
            held: 0,
        };
        let j = judge(Some(&flat), &at(13, 0), &[lot], now, &settings, 330);
        assert!(j.holds[0], "{j:?}");
        // No sales history: no sell-out alert, however little is left; the mark still counts.
        let j = judge(None, &at(3, 0), &[], now, &settings, 330);
        assert_eq!(j.holds, [false, true]);
    }
}
