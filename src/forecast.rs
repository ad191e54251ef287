//! Sell-out forecasts: how fast an outlet sells a SKU at each hour of the week, learnt from
//! its past sales, and when what it has now will be gone.
//!
//! The model is multiplicative: an hourly level, times a factor for the day of the week,
//! times a factor for the hour of the day. The factors are fitted to the hours of history
//! by a few rounds of proportional fitting (each day's factor makes that day's expected
//! units equal its sold units given the hour factors, then the other way round), with
//! each week weighing half as much as the one after it every `HALF_LIFE_WEEKS`. It asks
//! for 31 numbers rather than 168 separate hours, so a slow seller's forecast does not
//! follow one week's noise, as the same hour last week does. `load/` measures it against
//! that naive forecast on simulated history (README, Sell-out forecasts).
//!
//! Times are local: `hour_of_week` takes the chain's UTC offset, since a shop's day is its
//! own (a sweet shop in Indore opens at 9 in India, not in UTC).

/// Hours in a week; hour 0 is Monday 00:00 local time.
pub const HOURS_PER_WEEK: usize = 168;
/// How many weeks back a week's sales weigh half as much.
pub const HALF_LIFE_WEEKS: f64 = 4.0;
/// Rounds of proportional fitting (the factors settle in two or three).
const FIT_ROUNDS: usize = 4;

use crate::domain::{Counters, Lot};

const HOUR_MS: i64 = 3_600_000;

/// The local hour (hours since the epoch, in local time `utc_offset_minutes` east of UTC)
/// of `at_ms`.
pub fn local_hour(at_ms: i64, utc_offset_minutes: i32) -> i64 {
    (at_ms + i64::from(utc_offset_minutes) * 60_000).div_euclid(HOUR_MS)
}

/// The hour of the week (0 = Monday 00:00) of a local hour.
pub fn week_slot(local_hour: i64) -> usize {
    // 1970-01-01 was a Thursday: the Unix epoch is hour 72 of its week.
    (local_hour + 72).rem_euclid(HOURS_PER_WEEK as i64) as usize
}

/// The hour of the week (0 = Monday 00:00) of `at_ms` in local time `utc_offset_minutes`
/// east of UTC.
pub fn hour_of_week(at_ms: i64, utc_offset_minutes: i32) -> usize {
    week_slot(local_hour(at_ms, utc_offset_minutes))
}

/// The start of the local hour after the one `at_ms` is in (India's hours start at :30 UTC).
fn next_local_hour(at_ms: i64, utc_offset_minutes: i32) -> i64 {
    (local_hour(at_ms, utc_offset_minutes) + 1) * HOUR_MS - i64::from(utc_offset_minutes) * 60_000
}

/// How one outlet sells one SKU over the week.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Units per hour, averaged over the history's hours (recent weeks weigh more).
    pub level: f64,
    /// Per day of the week (Monday first), its hours' rate over the level.
    pub weekday: [f64; 7],
    /// Per hour of the day, its rate over the level (0 for hours nothing sells in).
    pub hour: [f64; 24],
}

impl Profile {
    /// Fits a profile to `sales`, the units sold in each hour of a history whose first hour
    /// is hour of the week `first` and whose last is the most recent.
    pub fn fit(sales: &[f64], first: usize) -> Self {
        let n = sales.len();
        let weights: Vec<f64> = (0..n)
            .map(|i| 0.5f64.powf(((n - 1 - i) / HOURS_PER_WEEK) as f64 / HALF_LIFE_WEEKS))
            .collect();
        let slot = |i: usize| (first + i) % HOURS_PER_WEEK;
        let total_w: f64 = weights.iter().sum();
        let sold_w: f64 = sales.iter().zip(&weights).map(|(x, w)| x * w).sum();
        let level = if total_w > 0.0 { sold_w / total_w } else { 0.0 };
        let mut profile = Self {
            level,
            weekday: [1.0; 7],
            hour: [1.0; 24],
        };
        if level <= 0.0 {
            return profile;
        }
        for _ in 0..FIT_ROUNDS {
            let mut sold = [0.0; 7];
            let mut expected = [0.0; 7];
            for i in 0..n {
                let (d, h) = (slot(i) / 24, slot(i) % 24);
                sold[d] += weights[i] * sales[i];
                expected[d] += weights[i] * level * profile.hour[h];
            }
            for d in 0..7 {
                profile.weekday[d] = ratio(sold[d], expected[d]);
            }
            let mut sold = [0.0; 24];
            let mut expected = [0.0; 24];
            for i in 0..n {
                let (d, h) = (slot(i) / 24, slot(i) % 24);
                sold[h] += weights[i] * sales[i];
                expected[h] += weights[i] * level * profile.weekday[d];
            }
            for h in 0..24 {
                profile.hour[h] = ratio(sold[h], expected[h]);
            }
        }
        profile
    }

    /// Expected units per hour at hour of the week `slot`.
    pub fn rate(&self, slot: usize) -> f64 {
        let slot = slot % HOURS_PER_WEEK;
        self.level * self.weekday[slot / 24] * self.hour[slot % 24]
    }

    /// Expected units sold from `at_ms` for `hours` hours.
    pub fn expected(&self, at_ms: i64, utc_offset_minutes: i32, hours: f64) -> f64 {
        let mut left = hours;
        let mut units = 0.0;
        let mut at = at_ms;
        while left > 0.0 {
            let to_next = (next_local_hour(at, utc_offset_minutes) - at) as f64 / HOUR_MS as f64;
            let step = to_next.min(left);
            units += self.rate(hour_of_week(at, utc_offset_minutes)) * step;
            left -= step;
            at += (step * HOUR_MS as f64).round() as i64;
        }
        units
    }

    /// Walks the expected sales from `at_ms` to `until_ms` through `stock`, the units free to
    /// sell: each hour's expected units take the earliest-expiring first, and what is left of
    /// a lot at its expiry is lost. Says how many units sell, how many expire, and when
    /// nothing is left to sell (by sales or expiry), if that is before `until_ms`.
    pub fn sell_through(
        &self,
        stock: &[Units],
        at_ms: i64,
        utc_offset_minutes: i32,
        until_ms: i64,
    ) -> SellThrough {
        let mut stock: Vec<Units> = stock.iter().filter(|u| u.qty > 0.0).cloned().collect();
        // Earliest expiry first; units that never expire (loose) last.
        stock.sort_by_key(|u| u.expires_at.unwrap_or(i64::MAX));
        let mut out = SellThrough::default();
        let mut t = at_ms;
        loop {
            stock.retain(|u| {
                let gone = u.expires_at.is_some_and(|e| e <= t);
                if gone {
                    out.expired += u.qty;
                }
                !gone && u.qty > 1e-9
            });
            if stock.is_empty() {
                out.out_at = Some(t);
                return out;
            }
            if t >= until_ms {
                return out;
            }
            let next_hour = next_local_hour(t, utc_offset_minutes);
            let next_expiry = stock.iter().filter_map(|u| u.expires_at).min();
            let end = next_hour.min(until_ms).min(next_expiry.unwrap_or(i64::MAX));
            let rate = self.rate(hour_of_week(t, utc_offset_minutes));
            let mut demand = rate * (end - t) as f64 / HOUR_MS as f64;
            let total: f64 = stock.iter().map(|u| u.qty).sum();
            if demand >= total {
                out.sold += total;
                out.out_at = Some(t + (total / rate * HOUR_MS as f64).round() as i64);
                return out;
            }
            out.sold += demand;
            for u in stock.iter_mut() {
                let take = u.qty.min(demand);
                u.qty -= take;
                demand -= take;
                if demand <= 0.0 {
                    break;
                }
            }
            t = end;
        }
    }
}

/// Units free to sell that expire together (`None`: loose units, which never expire).
#[derive(Debug, Clone, PartialEq)]
pub struct Units {
    pub expires_at: Option<i64>,
    pub qty: f64,
}

/// The units of `lots` and the loose ones that no hold has: what is free to sell.
pub fn free_units(counters: &Counters, lots: &[Lot]) -> Vec<Units> {
    let in_lots: i64 = lots.iter().map(|l| l.qty).sum();
    let held_in_lots: i64 = lots.iter().map(|l| l.held).sum();
    let loose_free = (counters.on_hand - in_lots) - (counters.reserved - held_in_lots);
    (lots.iter())
        .map(|l| Units {
            expires_at: Some(l.expires_at),
            qty: (l.qty - l.held).max(0) as f64,
        })
        .chain(std::iter::once(Units {
            expires_at: None,
            qty: loose_free.max(0) as f64,
        }))
        .collect()
}

/// What `Profile::sell_through` expects of some stock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SellThrough {
    /// Units sold before they expire.
    pub sold: f64,
    /// Units lost to expiry.
    pub expired: f64,
    /// When nothing is left to sell, if within the walk.
    pub out_at: Option<i64>,
}

/// A factor: what sold over what the others expected. A day or hour the history never saw
/// (a SKU on sale for a few days) keeps 1, the level's own rate, rather than none.
fn ratio(sold: f64, expected: f64) -> f64 {
    if expected > 0.0 {
        sold / expected
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A separable week: 2 units an hour, Saturday twice as busy, open 9 to 21.
    fn truth(slot: usize) -> f64 {
        let (d, h) = (slot / 24, slot % 24);
        let day = if d == 5 { 2.0 } else { 1.0 };
        let hour = if (9..21).contains(&h) { 1.0 } else { 0.0 };
        2.0 * day * hour
    }

    #[test]
    fn hours_of_the_week_are_local() {
        // 2026-12-07 was a Monday; 03:30 UTC is 09:00 in India (+05:30).
        let monday_0330_utc = 1_796_614_200_000;
        assert_eq!(hour_of_week(monday_0330_utc, 330), 9);
        assert_eq!(hour_of_week(monday_0330_utc, 0), 3);
        // Sunday 23:00 UTC is Monday 04:30 in India.
        assert_eq!(
            hour_of_week(monday_0330_utc - 4 * 3_600_000 - 1_800_000, 0),
            167
        );
    }

    #[test]
    fn a_fit_to_noiseless_weeks_gives_their_rates_back() {
        // Three weeks starting on a Wednesday (slot 48).
        let sales: Vec<f64> = (0..3 * HOURS_PER_WEEK)
            .map(|i| truth((48 + i) % 168))
            .collect();
        let p = Profile::fit(&sales, 48);
        for slot in 0..HOURS_PER_WEEK {
            assert!(
                (p.rate(slot) - truth(slot)).abs() < 1e-9,
                "slot {slot}: {}",
                p.rate(slot)
            );
        }
    }

    #[test]
    fn sell_out_walks_the_hours_ahead() {
        let sales: Vec<f64> = (0..HOURS_PER_WEEK).map(truth).collect();
        let p = Profile::fit(&sales, 0);
        // Monday 09:00 UTC: 2 an hour until 21:00, so 5 units go at 11:30.
        let monday_9 = 1_796_601_600_000 + 9 * HOUR_MS;
        assert_eq!(hour_of_week(monday_9, 0), 9);
        let loose = |qty: f64| {
            [Units {
                expires_at: None,
                qty,
            }]
        };
        let out = |stock: &[Units], hours: i64| {
            (p.sell_through(stock, monday_9, 0, monday_9 + hours * HOUR_MS)
                .out_at)
                .map(|t| t - monday_9)
        };
        assert_eq!(out(&loose(5.0), 48), Some(2 * HOUR_MS + HOUR_MS / 2));
        // 30 units: 24 on Monday, the rest from Tuesday 09:00, gone at 12:00.
        assert_eq!(out(&loose(30.0), 48), Some(27 * HOUR_MS));
        assert_eq!(out(&loose(30.0), 24), None);
        assert_eq!(out(&[], 24), Some(0));
        assert!((p.expected(monday_9, 0, 12.0) - 24.0).abs() < 1e-9);
    }

    #[test]
    fn the_walk_steps_on_local_hours() {
        // Open 9 to 21 local time, 2 an hour. In India (+05:30) the shop opens at 03:30 UTC:
        // from 03:00 UTC, the first half hour sells nothing.
        let sales: Vec<f64> = (0..HOURS_PER_WEEK).map(truth).collect();
        let p = Profile::fit(&sales, 0);
        let monday_0300_utc = 1_796_614_200_000 - HOUR_MS / 2;
        assert!((p.expected(monday_0300_utc, 330, 1.0) - 1.0).abs() < 1e-9);
        let two = [Units {
            expires_at: None,
            qty: 2.0,
        }];
        let t = p.sell_through(&two, monday_0300_utc, 330, monday_0300_utc + 4 * HOUR_MS);
        // Nothing until 03:30 UTC, then 2 an hour: gone at 04:30 UTC.
        assert_eq!(t.out_at, Some(monday_0300_utc + 3 * HOUR_MS / 2));
    }

    #[test]
    fn units_that_expire_before_they_sell_are_lost_and_end_the_stock() {
        let sales: Vec<f64> = (0..HOURS_PER_WEEK).map(truth).collect();
        let p = Profile::fit(&sales, 0);
        let monday_9 = 1_796_601_600_000 + 9 * HOUR_MS;
        // 10 units expiring at 11:00 and 1 loose: 4 of the lot sell by 11:00, 6 expire, the
        // loose one sells by 11:30.
        let stock = [
            Units {
                expires_at: None,
                qty: 1.0,
            },
            Units {
                expires_at: Some(monday_9 + 2 * HOUR_MS),
                qty: 10.0,
            },
        ];
        let t = p.sell_through(&stock, monday_9, 0, monday_9 + 24 * HOUR_MS);
        assert!((t.sold - 5.0).abs() < 1e-9, "{t:?}");
        assert!((t.expired - 6.0).abs() < 1e-9, "{t:?}");
        assert_eq!(t.out_at, Some(monday_9 + 2 * HOUR_MS + HOUR_MS / 2));
        // The free units of a SKU: lots less what holds have, and the loose ones no hold has.
        let lots = [Lot {
            lot: "a".into(),
            made_at: 0,
            expires_at: 5,
            qty: 4,
            held: 1,
        }];
        let c = Counters {
            on_hand: 10,
            reserved: 3,
            seq: 1,
        };
        let free = free_units(&c, &lots);
        assert_eq!((free[0].qty, free[1].qty), (3.0, 4.0));
    }
}
