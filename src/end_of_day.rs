//! The end-of-day report of an outlet: for each SKU, what it opened with, received, sold,
//! wasted by hand, lost to expiry (both by lot) and had left at the day's end, with values at
//! the configured prices. A day is the chain's local calendar day
//! (`reports.utc_offset_minutes`); the day running now is reported as of now.
//!
//! Read from the ledger alone, which explains every number: the day's documents are found by
//! time (a binary search over seqs, `Ledger::first_seq_at`) and summed by kind; what was left
//! at the day's end is the SKU's counters now (the stock view) less every change after the
//! day. So `opening + received + returned - transferred_out - sold - wasted - expired +
//! adjusted = left` holds for every row.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::catalogue::Catalogue;
use crate::domain::{rfc3339_ms, Counters, Invalid, LedgerKind, OutletId, Sku};
use crate::ledger::{Ledger, LedgerEntry};
use crate::stock_view::StockView;

const DAY_MS: i64 = 86_400_000;
/// Ledger documents read per query.
const PAGE_DOCS: u64 = 1000;
/// How long the report waits for the ledger to hold the changes the stock view shows.
const LEDGER_WAIT: Duration = Duration::from_secs(3);

/// The ledger did not reach the seq the stock view shows within `LEDGER_WAIT` (its writer
/// is behind): the report would not balance, so none is made.
#[derive(Debug, thiserror::Error)]
#[error("the ledger of {outlet} is behind its stock (seq {ledger_seq} of {view_seq}); try again shortly")]
pub struct LedgerBehind {
    pub outlet: OutletId,
    pub ledger_seq: u64,
    pub view_seq: u64,
}

/// Unit prices in paise (`reports.prices_file`, rupees there).
#[derive(Debug, Clone, Default)]
pub struct Prices(HashMap<Sku, i64>);

impl Prices {
    /// Reads `sku,price` (a header first); a missing file is no prices (logged).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            tracing::warn!(path = %path.display(), "no prices file: end-of-day reports carry no values");
            return Ok(Self::default());
        }
        let mut reader = csv::Reader::from_path(path)
            .with_context(|| format!("reading prices {}", path.display()))?;
        let mut prices = HashMap::new();
        for (i, row) in reader.records().enumerate() {
            let row = row.with_context(|| format!("{} line {}", path.display(), i + 2))?;
            let at = || format!("{} line {}", path.display(), i + 2);
            let sku = Sku::parse("sku", row.get(0).unwrap_or_default()).with_context(at)?;
            let price = parse_rupees(row.get(1).unwrap_or_default()).with_context(at)?;
            prices.insert(sku, price);
        }
        Ok(Self(prices))
    }

    pub fn get(&self, sku: &Sku) -> Option<i64> {
        self.0.get(sku).copied()
    }
}

/// `"120"`, `"120.5"` or `"120.50"` rupees as paise.
fn parse_rupees(s: &str) -> anyhow::Result<i64> {
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    anyhow::ensure!(
        !whole.is_empty()
            && whole.len() <= 9
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.len() <= 2
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "price {s:?}: rupees with at most 2 decimals, e.g. 120.50"
    );
    let frac = format!("{frac:0<2}");
    Ok(whole.parse::<i64>()? * 100 + frac.parse::<i64>()?)
}

/// What was wasted of one lot on the day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LotLoss {
    pub lot: String,
    pub expires_at: String,
    /// Written off by hand (`wastage` naming or taking the lot).
    pub wasted: i64,
    /// Written off at its expiry.
    pub expired: i64,
}

/// One SKU's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub sku: Sku,
    pub name: String,
    #[serde(flatten)]
    pub units: Units,
    pub price_paise: Option<i64>,
    pub sold_value_paise: Option<i64>,
    /// Wasted and expired units' value.
    pub waste_value_paise: Option<i64>,
    pub left_value_paise: Option<i64>,
    /// The lots wasted or expired, by lot.
    pub lots: Vec<LotLoss>,
}

/// One SKU's units over the day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Units {
    pub opening: i64,
    /// Receipts and transfers in.
    pub received: i64,
    pub returned: i64,
    pub transferred_out: i64,
    /// Counter and web sales.
    pub sold: i64,
    pub wasted: i64,
    pub expired: i64,
    /// Net of adjustments and counts.
    pub adjusted: i64,
    pub left: i64,
}

/// The outlet's totals (values count only priced SKUs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub sold: i64,
    pub wasted: i64,
    pub expired: i64,
    pub left: i64,
    pub sold_value_paise: i64,
    pub waste_value_paise: i64,
    pub left_value_paise: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outlet: OutletId,
    /// The local day, `YYYY-MM-DD`.
    pub date: String,
    pub from: String,
    pub to: String,
    /// False while the day runs: `left` is then what is left now.
    pub complete: bool,
    /// The SKUs with anything on the day or anything left, by SKU.
    pub rows: Vec<Row>,
    pub totals: Totals,
    /// SKUs of the report with no price (`reports.prices_file`).
    pub unpriced: Vec<Sku>,
}

/// The day `date` (`YYYY-MM-DD`, local) as `[from_ms, to_ms)`; a day that has not begun is
/// refused.
pub fn day_bounds(date: &str, utc_offset_minutes: i32, now_ms: i64) -> Result<(i64, i64), Invalid> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map_err(|_| Invalid::new("date", "must be a day as YYYY-MM-DD, e.g. 2026-12-06"))?;
    let midnight = day
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis();
    let from = midnight - i64::from(utc_offset_minutes) * 60_000;
    if from > now_ms {
        return Err(Invalid::new("date", "is a day that has not begun"));
    }
    Ok((from, from + DAY_MS))
}

/// The local day running at `now_ms`, as `YYYY-MM-DD`.
pub fn today(utc_offset_minutes: i32, now_ms: i64) -> String {
    let local = now_ms + i64::from(utc_offset_minutes) * 60_000;
    chrono::DateTime::from_timestamp_millis(local)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// One SKU's sums over the documents of the day, and over those after it.
#[derive(Debug, Default)]
struct Sums {
    units: Units,
    /// d_on_hand of the documents after the day, up to the view's seq of the SKU.
    after: i64,
    lots: BTreeMap<String, LotLoss>,
}

/// Builds the report of `outlet` for `[from_ms, to_ms)`.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    ledger: &Ledger,
    stock: &StockView,
    catalogue: &Catalogue,
    prices: &Prices,
    outlet: &OutletId,
    date: &str,
    (from_ms, to_ms): (i64, i64),
    now_ms: i64,
) -> anyhow::Result<Report> {
    let view: BTreeMap<Sku, Counters> = stock.outlet(outlet).into_iter().collect();
    let view_seq = view.values().map(|c| c.seq).max().unwrap_or(0);
    let first = ledger.first_seq_at(outlet, from_ms).await?;
    let mut sums: BTreeMap<Sku, Sums> = BTreeMap::new();
    let mut after_seq = first.saturating_sub(1);
    let waited = tokio::time::Instant::now();
    loop {
        let page = ledger
            .page(outlet, None, after_seq, PAGE_DOCS as i64)
            .await?;
        // Only the run of seqs without a gap: the writer inserts a batch unordered, so a seq
        // may be in before the one below it. Read on from the gap.
        let run = (page.iter())
            .zip(after_seq + 1..)
            .take_while(|(e, seq)| e.seq as u64 == *seq)
            .count();
        for e in &page[..run] {
            add(&mut sums, e, (from_ms, to_ms), &view);
        }
        after_seq += run as u64;
        if run as u64 == PAGE_DOCS {
            continue;
        }
        // The stock view may be a moment ahead of the ledger (the outbox): wait for it.
        if after_seq >= view_seq || waited.elapsed() > LEDGER_WAIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if after_seq < view_seq {
        return Err(LedgerBehind {
            outlet: outlet.clone(),
            ledger_seq: after_seq,
            view_seq,
        }
        .into());
    }
    for (sku, c) in &view {
        sums.entry(sku.clone()).or_default().units.left = c.on_hand;
    }
    let mut totals = Totals::default();
    let mut unpriced = Vec::new();
    let mut rows = Vec::new();
    for (sku, s) in sums {
        let mut u = s.units;
        u.left -= s.after;
        let moved = u.received + u.returned - u.transferred_out - u.sold - u.wasted - u.expired
            + u.adjusted;
        u.opening = u.left - moved;
        let figures = [
            u.opening,
            u.received,
            u.returned,
            u.transferred_out,
            u.sold,
            u.wasted,
            u.expired,
            u.adjusted,
            u.left,
        ];
        if figures.iter().all(|&n| n == 0) {
            continue;
        }
        let price = prices.get(&sku);
        let value = |units: i64| price.map(|p| p * units);
        let row = Row {
            sku: sku.clone(),
            name: catalogue
                .sku(&sku)
                .map(|i| i.name.clone())
                .unwrap_or_default(),
            price_paise: price,
            sold_value_paise: value(u.sold),
            waste_value_paise: value(u.wasted + u.expired),
            left_value_paise: value(u.left.max(0)),
            lots: s.lots.into_values().collect(),
            units: u,
        };
        let u = &row.units;
        totals.sold += u.sold;
        totals.wasted += u.wasted;
        totals.expired += u.expired;
        totals.left += u.left;
        totals.sold_value_paise += row.sold_value_paise.unwrap_or(0);
        totals.waste_value_paise += row.waste_value_paise.unwrap_or(0);
        totals.left_value_paise += row.left_value_paise.unwrap_or(0);
        if row.price_paise.is_none() {
            unpriced.push(sku);
        }
        rows.push(row);
    }
    Ok(Report {
        outlet: outlet.clone(),
        date: date.to_owned(),
        from: rfc3339_ms(from_ms),
        to: rfc3339_ms(to_ms),
        complete: to_ms <= now_ms,
        rows,
        totals,
        unpriced,
    })
}

/// Adds one document: to the day's sums when it is of the day, to `after` when it is later;
/// a SKU's documents only up to the view's seq of it, the numbers `left` is taken from (a
/// change after those is in the next report).
fn add(
    sums: &mut BTreeMap<Sku, Sums>,
    e: &LedgerEntry,
    (from_ms, to_ms): (i64, i64),
    view: &BTreeMap<Sku, Counters>,
) {
    let seq = e.seq as u64;
    for line in &e.lines {
        if view.get(&line.sku).is_none_or(|c| seq > c.seq) {
            continue;
        }
        let s = sums.entry(line.sku.clone()).or_default();
        if e.at_ms >= to_ms {
            s.after += line.d_on_hand;
            continue;
        }
        if e.at_ms < from_ms {
            // Before the day, though past the search's first seq (the clocks of two processes
            // that owned the outlet in turn): part of the opening, which the sums give.
            continue;
        }
        let d = line.d_on_hand;
        let r = &mut s.units;
        match e.kind {
            LedgerKind::Receipt | LedgerKind::TransferIn => r.received += d,
            LedgerKind::Return => r.returned += d,
            LedgerKind::TransferOut => r.transferred_out -= d,
            LedgerKind::SaleCounter | LedgerKind::SaleWeb => r.sold -= d,
            LedgerKind::Wastage => r.wasted -= d,
            LedgerKind::Expiry => r.expired -= d,
            LedgerKind::Adjustment | LedgerKind::Count => r.adjusted += d,
            LedgerKind::ReservationHeld | LedgerKind::ReservationReleased => {}
        }
        if matches!(e.kind, LedgerKind::Wastage | LedgerKind::Expiry) {
            for l in line.lots.iter().filter(|l| l.d_qty < 0) {
                let loss = s.lots.entry(l.lot.clone()).or_insert_with(|| LotLoss {
                    lot: l.lot.clone(),
                    expires_at: rfc3339_ms(l.expires_at),
                    ..LotLoss::default()
                });
                if e.kind == LedgerKind::Wastage {
                    loss.wasted -= l.d_qty;
                } else {
                    loss.expired -= l.d_qty;
                }
            }
        }
    }
}

/// The report as CSV: one line per SKU, values in rupees.
pub fn csv(report: &Report) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "outlet",
        "date",
        "sku",
        "name",
        "opening",
        "received",
        "returned",
        "transferred_out",
        "sold",
        "wasted",
        "expired",
        "adjusted",
        "left",
        "price",
        "sold_value",
        "waste_value",
        "left_value",
    ])?;
    let rupees = |p: Option<i64>| {
        p.map(|p| {
            format!(
                "{}{}.{:02}",
                if p < 0 { "-" } else { "" },
                p.abs() / 100,
                p.abs() % 100
            )
        })
        .unwrap_or_default()
    };
    for r in &report.rows {
        let n = |v: i64| v.to_string();
        let u = &r.units;
        w.write_record([
            report.outlet.to_string(),
            report.date.clone(),
            r.sku.to_string(),
            r.name.clone(),
            n(u.opening),
            n(u.received),
            n(u.returned),
            n(u.transferred_out),
            n(u.sold),
            n(u.wasted),
            n(u.expired),
            n(u.adjusted),
            n(u.left),
            rupees(r.price_paise),
            rupees(r.sold_value_paise),
            rupees(r.waste_value_paise),
            rupees(r.left_value_paise),
        ])?;
    }
    Ok(w.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rupees_are_read_to_the_paisa_and_odd_prices_are_refused() {
        assert_eq!(parse_rupees("120").unwrap(), 12_000);
        assert_eq!(parse_rupees("120.5").unwrap(), 12_050);
        assert_eq!(parse_rupees("0.05").unwrap(), 5);
        for bad in ["", "-1", "1.234", "1e3", "abc", ".5"] {
            assert!(parse_rupees(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_day_is_a_local_calendar_day() {
        // 2026-12-06 in India (UTC+05:30) runs from 2026-12-05T18:30Z.
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T20:00:00Z")
            .unwrap()
            .timestamp_millis();
        let (from, to) = day_bounds("2026-12-06", 330, now).unwrap();
        assert_eq!(rfc3339_ms(from), "2026-12-05T18:30:00.000Z");
        assert_eq!(to - from, DAY_MS);
        // 20:00Z is 01:30 on the 7th there.
        assert_eq!(today(330, now), "2026-12-07");
        assert_eq!(
            day_bounds("2026-12-08", 330, now).unwrap_err().field,
            "date"
        );
        assert_eq!(day_bounds("6/12/2026", 330, now).unwrap_err().field, "date");
    }
}
