//! The kitchen plan: for each outlet and SKU, how many units to send for the next window, set
//! beside the head cook's own number. The plan nudges; the cook decides.
//!
//! For a window of `kitchen.window_hours` from now, per (outlet, SKU) that sold in the last
//! `alerts.history_weeks` (the same forecast as the alerts, alerts.rs):
//!
//! - `expected`: the units the forecast sells in the window (every channel);
//! - `sellable`: the free units (on hand, less what holds have) that sell before their lot
//!   expires, walking the forecast earliest expiry first (`will_expire`: the rest of those
//!   lots, which will not sell in time);
//! - `held`: units live holds have. Those holds are sales of the window already served from
//!   stock, so the free units need to cover only `expected - held`;
//! - `safety`: `kitchen.safety_share` of `expected`, at least `kitchen.safety_min`;
//! - `suggested = max(0, ceil(expected - sellable - held + safety))`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::alerts::histories;
use crate::catalogue::{Catalogue, OutletKind};
use crate::domain::{rfc3339_ms, Invalid, OutletId, Sku};
use crate::forecast::{free_units, local_hour, Profile};
use crate::ledger::Ledger;
use crate::stock_view::StockView;
use crate::store::RedisStore;

/// How long an outlet's forecasts are reused before the ledger is read again.
const FORECAST_TTL_MS: i64 = 10 * 60_000;

/// A number the head cook entered for an outlet and SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CookNumber {
    pub qty: i64,
    pub at: String,
    /// The label of the key that entered it.
    pub by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub outlet: OutletId,
    pub sku: Sku,
    pub name: String,
    pub expected: f64,
    pub sellable: f64,
    pub will_expire: f64,
    pub held: i64,
    pub on_hand: i64,
    pub safety: i64,
    pub suggested: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cook: Option<CookNumber>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub at: String,
    pub from: String,
    pub to: String,
    pub window_hours: u32,
    pub rows: Vec<PlanRow>,
    pub suggested_total: i64,
    pub cook_total: i64,
}

/// An outlet's forecast of each SKU it sold.
type OutletForecasts = Arc<HashMap<Sku, Profile>>;

/// Each outlet's forecasts, fitted to its ledger sales and kept for `FORECAST_TTL_MS` (with
/// when they were fitted).
#[derive(Default)]
pub struct Forecasts {
    cache: Mutex<HashMap<OutletId, (i64, OutletForecasts)>>,
}

impl Forecasts {
    async fn of(
        &self,
        ledger: &Ledger,
        outlet: &OutletId,
        weeks: u32,
        now_ms: i64,
        utc_offset_minutes: i32,
    ) -> anyhow::Result<OutletForecasts> {
        if let Some((at, f)) = self.cache.lock().expect("forecasts").get(outlet) {
            if now_ms - at < FORECAST_TTL_MS {
                return Ok(f.clone());
            }
        }
        let since = now_ms - i64::from(weeks) * 7 * 86_400_000;
        let sales = ledger.sales_since(outlet, since).await?;
        let now_hour = local_hour(now_ms, utc_offset_minutes);
        let fitted: HashMap<Sku, Profile> = (histories(&sales, weeks, now_ms, utc_offset_minutes))
            .into_iter()
            .map(|(sku, mut h)| (sku, h.profile(now_hour).clone()))
            .collect();
        let fitted = Arc::new(fitted);
        (self.cache.lock().expect("forecasts")).insert(outlet.clone(), (now_ms, fitted.clone()));
        Ok(fitted)
    }
}

/// The field of the head cook's number of `sku` at `outlet`.
pub fn cook_field(outlet: &OutletId, sku: &Sku) -> String {
    format!("{outlet}/{sku}")
}

/// Enters (`Some`) or clears the head cook's number of `sku` at `outlet`; the number as kept.
pub async fn set_cook(
    store: &RedisStore,
    outlet: &OutletId,
    sku: &Sku,
    qty: Option<i64>,
    by: &str,
    now_ms: i64,
) -> anyhow::Result<Option<CookNumber>> {
    let field = cook_field(outlet, sku);
    let number = qty.map(|qty| CookNumber {
        qty,
        at: rfc3339_ms(now_ms),
        by: by.to_owned(),
    });
    let json = number.as_ref().map(|n| serde_json::json!(n).to_string());
    store.set_cook(&field, json.as_deref()).await?;
    Ok(number)
}

/// Everything a plan reads.
pub struct PlanInputs<'a> {
    pub forecasts: &'a Forecasts,
    pub ledger: &'a Ledger,
    pub store: &'a RedisStore,
    pub stock: &'a StockView,
    pub catalogue: &'a Catalogue,
    pub settings: &'a crate::settings::Settings,
}

/// The outlets a plan covers by default: every shop, not the kitchens.
pub fn shops(catalogue: &Catalogue) -> Vec<OutletId> {
    (catalogue.outlets.iter())
        .filter(|o| o.kind == OutletKind::Outlet)
        .map(|o| o.id.clone())
        .collect()
}

/// Checks a window asked for (`None`: `kitchen.window_hours`).
pub fn window(asked: Option<u32>, default: u32) -> Result<u32, Invalid> {
    match asked.unwrap_or(default) {
        w @ 1..=168 => Ok(w),
        _ => Err(Invalid::new("window_hours", "must be 1 to 168")),
    }
}

/// The plan for `outlets` over the next `window_hours`.
pub async fn plan(
    inputs: &PlanInputs<'_>,
    outlets: &[OutletId],
    window_hours: u32,
    now_ms: i64,
) -> anyhow::Result<Plan> {
    let s = inputs.settings;
    let offset = s.reports.utc_offset_minutes;
    let until = now_ms + i64::from(window_hours) * 3_600_000;
    let cook: HashMap<String, CookNumber> = (inputs.store.cook_numbers().await?)
        .into_iter()
        .filter_map(|(f, j)| Some((f, serde_json::from_str(&j).ok()?)))
        .collect();
    let mut rows = Vec::new();
    for outlet in outlets {
        let forecasts = (inputs.forecasts)
            .of(
                inputs.ledger,
                outlet,
                s.alerts.history_weeks,
                now_ms,
                offset,
            )
            .await?;
        let mut skus: Vec<&Sku> = (forecasts.iter())
            .filter(|(_, p)| p.level > 0.0)
            .map(|(sku, _)| sku)
            .collect();
        let prefix = format!("{outlet}/");
        let entered: Vec<Sku> = (cook.keys())
            .filter_map(|f| f.strip_prefix(&prefix))
            .filter_map(|sku| Sku::parse("sku", sku).ok())
            .collect();
        let entered: Vec<&Sku> = (entered.iter()).filter(|s| !skus.contains(s)).collect();
        skus.extend(entered);
        for sku in skus {
            let counters = inputs.stock.get(outlet, sku).unwrap_or_default();
            let lots = inputs.stock.lots(outlet, sku);
            let (expected, through) = match forecasts.get(sku) {
                Some(p) => (
                    p.expected(now_ms, offset, f64::from(window_hours)),
                    p.sell_through(&free_units(&counters, &lots), now_ms, offset, until),
                ),
                None => Default::default(),
            };
            let safety = if expected > 0.0 {
                ((s.kitchen.safety_share * expected).ceil() as i64).max(s.kitchen.safety_min)
            } else {
                0
            };
            let need = expected - through.sold - counters.reserved as f64 + safety as f64;
            rows.push(PlanRow {
                outlet: outlet.clone(),
                sku: sku.clone(),
                name: (inputs.catalogue.sku(sku))
                    .map(|i| i.name.clone())
                    .unwrap_or_default(),
                expected: round1(expected),
                sellable: round1(through.sold),
                will_expire: round1(through.expired),
                held: counters.reserved,
                on_hand: counters.on_hand,
                safety,
                suggested: (need - 1e-9).ceil().max(0.0) as i64,
                cook: cook.get(&cook_field(outlet, sku)).cloned(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.outlet, std::cmp::Reverse(a.suggested), &a.sku).cmp(&(
            &b.outlet,
            std::cmp::Reverse(b.suggested),
            &b.sku,
        ))
    });
    Ok(Plan {
        at: rfc3339_ms(now_ms),
        from: rfc3339_ms(now_ms),
        to: rfc3339_ms(until),
        window_hours,
        suggested_total: rows.iter().map(|r| r.suggested).sum(),
        cook_total: rows
            .iter()
            .filter_map(|r| r.cook.as_ref())
            .map(|c| c.qty)
            .sum(),
        rows,
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
