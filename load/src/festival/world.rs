//! The world the run plays in, read from the service before it starts (outlets, SKUs, PINs,
//! stock and seqs), and the simulator's deterministic choices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::args::Args;

pub use shelfsync_load::mix;

/// A uniform draw in [0, 1) for the `n`th choice of kind `k`.
pub(crate) fn draw(seed: u64, k: u64, n: u64) -> f64 {
    (mix(seed ^ mix(k ^ mix(n))) >> 11) as f64 / (1u64 << 53) as f64
}

pub struct World {
    pub outlets: Vec<String>,
    /// (outlet, sku) the web and WhatsApp streams hold.
    pub web: Vec<(String, String)>,
    /// (outlet, sku, available at the start) the counter sells.
    pub counter: Vec<(String, String, i64)>,
    /// PINs with the web SKUs of the outlets serving them.
    pub pins: Vec<(String, Vec<String>)>,
    pub web_skus: Vec<String>,
    /// Per outlet, the last seq before the run.
    pub start_seq: BTreeMap<String, u64>,
    /// Per outlet, every SKU's (on_hand, reserved) before the run: the audit folds the run's
    /// ledger documents onto these.
    pub start_stock: BTreeMap<String, HashMap<String, (i64, i64)>>,
}

/// GET as `key`; a `429` is waited out (its `Retry-After`, at most 50 times): the audit's
/// reads can outrun the admin key's rate limit.
pub(crate) async fn get_json(
    http: &reqwest::Client,
    url: String,
    key: &str,
) -> anyhow::Result<Value> {
    let mut tries = 0;
    let res = loop {
        let res = http
            .get(&url)
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("GET {url} (is shelfsync running? make run)"))?;
        if res.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || tries == 50 {
            break res;
        }
        tries += 1;
        let wait = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 5);
        tokio::time::sleep(Duration::from_secs(wait)).await;
    };
    anyhow::ensure!(
        res.status().is_success(),
        "GET {url} answered {}",
        res.status()
    );
    Ok(res.json().await?)
}

pub(crate) async fn discover(args: &Args, http: &reqwest::Client) -> anyhow::Result<World> {
    let outlets = get_json(http, format!("{}/v1/outlets", args.url), &args.admin_key).await?;
    let mut targets = Vec::new();
    let mut start_seq = BTreeMap::new();
    let mut start_stock = BTreeMap::new();
    let mut ids = Vec::new();
    for o in outlets.as_array().context("outlets")? {
        let id = o["id"].as_str().context("outlet id")?.to_owned();
        // The audit folds the run onto this read, so it must be one state: read until two
        // reads in a row agree (no change landed in between, none was half seen).
        let url = format!("{}/v1/outlets/{id}/stock", args.url);
        let mut rows = get_json(http, url.clone(), &args.admin_key).await?;
        for _ in 0..20 {
            let again = get_json(http, url.clone(), &args.admin_key).await?;
            if again == rows {
                break;
            }
            rows = again;
        }
        let rows = rows.as_array().context("stock")?;
        let seq = rows.iter().filter_map(|r| r["seq"].as_u64()).max();
        start_seq.insert(id.clone(), seq.unwrap_or(0));
        let counters: HashMap<String, (i64, i64)> = rows
            .iter()
            .filter_map(|r| {
                let c = (r["on_hand"].as_i64()?, r["reserved"].as_i64()?);
                Some((r["sku"].as_str()?.to_owned(), c))
            })
            .collect();
        start_stock.insert(id.clone(), counters);
        for r in rows
            .iter()
            .filter(|r| r["available"].as_i64().unwrap_or(0) > 0)
            .take(args.skus)
        {
            let sku = r["sku"].as_str().context("sku")?.to_owned();
            targets.push((id.clone(), sku, r["available"].as_i64().unwrap_or(0)));
        }
        ids.push(id);
    }
    let all: BTreeSet<&String> = targets.iter().map(|(_, s, _)| s).collect();
    let counter_skus: BTreeSet<String> = all.iter().step_by(4).map(|s| (*s).clone()).collect();
    let web_skus: Vec<String> = all
        .iter()
        .filter(|s| !counter_skus.contains(**s))
        .map(|s| (*s).clone())
        .collect();
    let (counter, web): (Vec<_>, Vec<_>) = targets
        .into_iter()
        .partition(|(_, s, _)| counter_skus.contains(s));
    let web: Vec<(String, String)> = web.into_iter().map(|(o, s, _)| (o, s)).collect();
    anyhow::ensure!(
        !web.is_empty() && !counter.is_empty(),
        "not enough stock to simulate; run `make run` (it imports the demo chain)"
    );
    let zones = get_json(http, format!("{}/v1/zones", args.url), &args.admin_key).await?;
    let mut pins = Vec::new();
    for z in zones.as_array().context("zones")? {
        let pin = z["pin"].as_str().context("pin")?.to_owned();
        let served: BTreeSet<&str> = z["outlets"]
            .as_array()
            .map(|v| v.iter().filter_map(|o| o["outlet"].as_str()).collect())
            .unwrap_or_default();
        let skus: BTreeSet<String> = web
            .iter()
            .filter(|(o, _)| served.contains(o.as_str()))
            .map(|(_, s)| s.clone())
            .collect();
        if !skus.is_empty() {
            pins.push((pin, skus.into_iter().collect()));
        }
    }
    Ok(World {
        outlets: ids,
        web,
        counter,
        pins,
        web_skus,
        start_seq,
        start_stock,
    })
}

/// Gives every web SKU without a shelf life `--shelf-life-days` (`PUT /v1/skus/{sku}`, admin
/// key), so that the run's long-lived deliveries become lots by the SKU's shelf life.
pub(crate) async fn give_shelf_lives(
    args: &Args,
    http: &reqwest::Client,
    world: &World,
) -> anyhow::Result<()> {
    for sku in &world.web_skus {
        let info = get_json(http, format!("{}/v1/skus/{sku}", args.url), &args.admin_key).await?;
        if info["shelf_life_days"].is_u64() {
            continue;
        }
        let body = serde_json::json!({"name": info["name"], "category": info["category"],
            "shelf_life_days": args.shelf_life_days});
        let res = http
            .put(format!("{}/v1/skus/{sku}", args.url))
            .bearer_auth(&args.admin_key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PUT /v1/skus/{sku}"))?;
        anyhow::ensure!(
            res.status().is_success(),
            "PUT /v1/skus/{sku} answered {}",
            res.status()
        );
    }
    Ok(())
}
