//! The audit after the load: zero oversells, the ledger equals Redis, every acknowledged POS
//! sale is in the ledger exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::args::Args;
use crate::lots::LotAudit;
use crate::world::{get_json, World};

/// The figures the audit reads from `/metrics`.
#[derive(Clone)]
pub struct Metrics {
    pub oversell_units: f64,
    pub outbox_entries: f64,
    /// The service process's CPU seconds and resident memory (Linux builds).
    pub cpu_secs: Option<f64>,
    pub rss_bytes: Option<f64>,
    /// Ledger documents the service has written since it started.
    pub ledger_documents: Option<f64>,
    /// The most behind outlet's ledger lag (seconds), as of this read.
    pub lag_max_secs: f64,
    /// New holds the service shed since it started, for any reason.
    pub shed_holds: f64,
    /// Ledger insert_many calls since the start: their total seconds, their count, and the
    /// cumulative histogram buckets `(le seconds, count)`.
    pub insert_secs: f64,
    pub inserts: f64,
    pub insert_buckets: Vec<(f64, f64)>,
}

impl Metrics {
    /// The `q` quantile (0..1) of the inserts between `before` and `self`, in ms, by the upper
    /// bound of the histogram bucket it falls in; `None` without inserts.
    pub fn insert_quantile_ms(&self, before: &Metrics, q: f64) -> Option<f64> {
        let n = self.inserts - before.inserts;
        if n <= 0.0 {
            return None;
        }
        let was = |le: f64| {
            before
                .insert_buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c)
        };
        self.insert_buckets
            .iter()
            .find(|(le, c)| c - was(*le) >= q * n)
            .map(|(le, _)| le * 1000.0)
    }
}

pub async fn metrics(http: &reqwest::Client, args: &Args) -> anyhow::Result<Metrics> {
    let res = http
        .get(format!("{}/metrics", args.url))
        .bearer_auth(&args.admin_key)
        .send()
        .await
        .context("GET /metrics")?;
    anyhow::ensure!(
        res.status().is_success(),
        "/metrics answered {}",
        res.status()
    );
    let text = res.text().await?;
    let mut m = Metrics {
        oversell_units: 0.0,
        outbox_entries: 0.0,
        cpu_secs: None,
        rss_bytes: None,
        ledger_documents: None,
        lag_max_secs: 0.0,
        shed_holds: 0.0,
        insert_secs: 0.0,
        inserts: 0.0,
        insert_buckets: Vec::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name == "shelfsync_oversell_units_total" {
            m.oversell_units = value;
        } else if name.starts_with("shelfsync_ledger_outbox_entries") {
            m.outbox_entries += value;
        } else if name == "shelfsync_process_cpu_seconds_total" {
            m.cpu_secs = Some(value);
        } else if name == "shelfsync_process_resident_memory_bytes" {
            m.rss_bytes = Some(value);
        } else if name == "shelfsync_ledger_documents_total" {
            m.ledger_documents = Some(value);
        } else if name.starts_with("shelfsync_ledger_lag_seconds{") {
            m.lag_max_secs = m.lag_max_secs.max(value);
        } else if name.starts_with("shelfsync_shed_total{") && name.contains(r#"operation="hold""#)
        {
            m.shed_holds += value;
        } else if name == "shelfsync_ledger_insert_seconds_sum" {
            m.insert_secs = value;
        } else if name == "shelfsync_ledger_insert_seconds_count" {
            m.inserts = value;
        } else if let Some(le) = name
            .strip_prefix(r#"shelfsync_ledger_insert_seconds_bucket{le=""#)
            .and_then(|l| l.strip_suffix(r#""}"#))
        {
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::NAN)
            };
            m.insert_buckets.push((le, value));
        }
    }
    Ok(m)
}

/// An outlet's ledger documents after `after`, in seq order (`GET /v1/ledger`, paged).
async fn ledger(
    http: &reqwest::Client,
    args: &Args,
    outlet: &str,
    mut after: u64,
) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    loop {
        let page = get_json(
            http,
            format!(
                "{}/v1/ledger?outlet={outlet}&after_seq={after}&limit=1000",
                args.url
            ),
            &args.admin_key,
        )
        .await?;
        if let Some(entries) = page["entries"].as_array() {
            all.extend(entries.iter().cloned());
        }
        match page["next_after_seq"].as_u64() {
            Some(next) => after = next,
            None => return Ok(all),
        }
    }
}

/// Counters of one SKU as the ledger folds them.
#[derive(Default, Clone, Copy)]
struct Fold {
    on_hand: i64,
    reserved: i64,
    /// The SKU's availability is below zero because of a fact (see [`replay`]).
    short_by_fact: bool,
}

/// Replays an outlet's ledger and returns its folded counters and the oversells found.
///
/// Starting from each SKU's counters before the run (`start`: the outlet's stock as the
/// simulator read it before the load, when its last seq was `after_seq`; a SKU missing there
/// starts at zero), each document's `lines[].d_on_hand` / `d_reserved` are added in seq order,
/// giving every SKU's `on_hand`, `reserved` and `available = on_hand - reserved` after each
/// seq. Only the run's documents are read, so the audit's cost follows the run, not the
/// ledger's history (which `shelfsync check` audits whole). Should a change have slipped in
/// between that read and `after_seq`, the fold misses it and the comparison with Redis fails:
/// loudly, never silently.
///
/// An **oversell** is a `reservation_held` or `sale_web` document with `seq > after_seq`
/// (the run's documents) that leaves one of its SKUs with `available < 0` after it, except:
/// a `sale_web` is excused when the SKU's `available` was already below zero because of a
/// *fact*: a document of another kind than `reservation_held`, `reservation_released` and
/// `sale_web` (a counter sale, wastage, count, ...), which the service records whatever the
/// holds and whose shortfall it re-routes or counts in `shelfsync_oversell_units_total`. The
/// excuse lasts until a document leaves the SKU's `available` at or above zero again. A hold is
/// never excused: the service grants holds only from available units, so a hold that takes
/// `available` below zero is an oversell whatever came before. The simulator's own counter
/// sales use SKUs its web side does not hold, so in its runs the excuse should not arise; the
/// facts that left `available` below zero are counted as `shortfall_facts`.
fn replay(
    entries: &[Value],
    start: &HashMap<String, (i64, i64)>,
    after_seq: u64,
) -> (BTreeMap<String, Fold>, Vec<Value>, u64, BTreeSet<String>) {
    let mut skus: BTreeMap<String, Fold> = BTreeMap::new();
    let mut oversells = Vec::new();
    let mut shortfall_facts = 0;
    let mut touched = BTreeSet::new();
    for e in entries {
        let seq = e["seq"].as_u64().unwrap_or(0);
        let kind = e["kind"].as_str().unwrap_or_default();
        let reservation_doc = matches!(
            kind,
            "reservation_held" | "reservation_released" | "sale_web"
        );
        for line in e["lines"].as_array().into_iter().flatten() {
            let sku = line["sku"].as_str().unwrap_or_default().to_owned();
            let f = skus.entry(sku.clone()).or_insert_with(|| {
                let (on_hand, reserved) = start.get(&sku).copied().unwrap_or_default();
                // Short before the run: only a fact (a counter sale over holds) gets a SKU
                // there, so the run's web sales of those holds are excused as in a replay
                // of the whole ledger.
                Fold {
                    on_hand,
                    reserved,
                    short_by_fact: on_hand < reserved,
                }
            });
            f.on_hand += line["d_on_hand"].as_i64().unwrap_or(0);
            f.reserved += line["d_reserved"].as_i64().unwrap_or(0);
            let available = f.on_hand - f.reserved;
            let in_run = seq > after_seq;
            if in_run {
                touched.insert(sku.clone());
            }
            if available >= 0 {
                f.short_by_fact = false;
            } else if !reservation_doc {
                f.short_by_fact = true;
                if in_run {
                    shortfall_facts += 1;
                }
            } else if in_run
                && (kind == "reservation_held" || (kind == "sale_web" && !f.short_by_fact))
            {
                oversells.push(json!({"outlet": e["outlet"], "seq": seq, "kind": kind,
                    "sku": sku, "on_hand": f.on_hand, "reserved": f.reserved}));
            }
        }
    }
    (skus, oversells, shortfall_facts, touched)
}

/// One comparison of every outlet's ledger with Redis, and the POS tally.
struct Pass {
    ledger_documents: usize,
    run_documents: usize,
    oversells: Vec<Value>,
    shortfall_facts: u64,
    compared: usize,
    mismatches: Vec<Value>,
    pos_missing: Vec<String>,
    pos_duplicated: Vec<String>,
    by_kind: BTreeMap<String, u64>,
    /// Commit time (ms since the epoch) of each of the run's documents, by (outlet, seq).
    commits: HashMap<(String, u64), i64>,
    /// Each acknowledged POS sale's `at` (when the simulator sent it, ms since the epoch) and
    /// how long after it the service committed it (ms): the POS apply latency.
    pos_apply: Vec<(i64, i64)>,
    /// No expired unit held or sold, each lot's expiry once.
    lots: LotAudit,
}

/// `sku`'s fold as of `seq`: `folded` (to the last of `entries`) less the deltas of the
/// documents after `seq` that touch it.
fn fold_at(folded: Fold, entries: &[Value], sku: &str, seq: u64) -> Fold {
    let mut f = folded;
    for e in entries
        .iter()
        .rev()
        .take_while(|e| e["seq"].as_u64().unwrap_or(0) > seq)
    {
        for line in e["lines"].as_array().into_iter().flatten() {
            if line["sku"] == sku {
                f.on_hand -= line["d_on_hand"].as_i64().unwrap_or(0);
                f.reserved -= line["d_reserved"].as_i64().unwrap_or(0);
            }
        }
    }
    f
}

async fn pass(
    http: &reqwest::Client,
    args: &Args,
    world: &World,
    acked: &BTreeSet<String>,
) -> anyhow::Result<Pass> {
    let mut p = Pass {
        ledger_documents: 0,
        run_documents: 0,
        oversells: Vec::new(),
        shortfall_facts: 0,
        compared: 0,
        mismatches: Vec::new(),
        pos_missing: Vec::new(),
        pos_duplicated: Vec::new(),
        by_kind: BTreeMap::new(),
        commits: HashMap::new(),
        pos_apply: Vec::new(),
        lots: LotAudit::default(),
    };
    let mut pos_seen: HashMap<String, u32> = HashMap::new();
    for outlet in &world.outlets {
        let start = world.start_seq.get(outlet).copied().unwrap_or(0);
        // The outlet's whole stock in one read (the service's live view of its Redis state),
        // before its ledger: each SKU is compared at the seq this read shows for it, so a
        // change made while the ledger is read (a WhatsApp hold expiring, 15 minutes after it
        // was made) cannot look like a difference.
        let stock = get_json(
            http,
            format!("{}/v1/outlets/{outlet}/stock", args.url),
            &args.admin_key,
        )
        .await?;
        let live: HashMap<String, (Option<i64>, Option<i64>, u64)> = stock
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    r["sku"].as_str()?.to_owned(),
                    (
                        r["on_hand"].as_i64(),
                        r["reserved"].as_i64(),
                        r["seq"].as_u64().unwrap_or(0),
                    ),
                ))
            })
            .collect();
        let entries = ledger(http, args, outlet, start).await?;
        p.ledger_documents += entries.len();
        for e in &entries {
            let seq = e["seq"].as_u64().unwrap_or(0);
            if seq > start {
                p.run_documents += 1;
                if let Some(at) = e["at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                {
                    p.commits
                        .insert((outlet.clone(), seq), at.timestamp_millis());
                }
                *p.by_kind
                    .entry(e["kind"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            if e["kind"] == "sale_counter" {
                if let Some(id) = e["event_id"].as_str().filter(|id| acked.contains(*id)) {
                    let seen = pos_seen.entry(id.to_owned()).or_default();
                    *seen += 1;
                    let ms = |k: &str| {
                        e[k].as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.timestamp_millis())
                    };
                    if let (1, Some(sent), Some(committed)) = (*seen, ms("event_at"), ms("at")) {
                        p.pos_apply.push((sent, committed - sent));
                    }
                }
            }
        }
        let empty = HashMap::new();
        let start_stock = world.start_stock.get(outlet).unwrap_or(&empty);
        p.lots.outlet(&entries, start);
        let (folded, oversells, shortfalls, touched) = replay(&entries, start_stock, start);
        p.oversells.extend(oversells);
        p.shortfall_facts += shortfalls;
        for sku in touched {
            let (on_hand, reserved, seq) = live.get(&sku).copied().unwrap_or((None, None, 0));
            let f = fold_at(folded[&sku], &entries, &sku, seq);
            p.compared += 1;
            if on_hand != Some(f.on_hand) || reserved != Some(f.reserved) {
                p.mismatches
                    .push(json!({"outlet": outlet, "sku": sku, "seq": seq,
                    "ledger": {"on_hand": f.on_hand, "reserved": f.reserved},
                    "redis": {"on_hand": on_hand, "reserved": reserved}}));
            }
        }
    }
    for id in acked {
        match pos_seen.get(id).copied().unwrap_or(0) {
            0 => p.pos_missing.push(id.clone()),
            1 => {}
            _ => p.pos_duplicated.push(id.clone()),
        }
    }
    Ok(p)
}

/// The commit time (ms since the epoch) of each of the run's ledger documents.
pub type Commits = HashMap<(String, u64), i64>;

/// What the audit found beside its verdict.
pub struct Found {
    /// The commit time of each of the run's documents (for the push latencies).
    pub commits: Commits,
    /// Each acknowledged POS sale's send time and apply latency (ms).
    pub pos_apply: Vec<(i64, i64)>,
}

/// Waits for the outbox to drain, then audits; the JSON result has `"passed"`.
pub async fn run(
    args: &Args,
    http: &reqwest::Client,
    world: &World,
    oversell_before: f64,
    acked: &BTreeSet<String>,
) -> anyhow::Result<(Value, Found)> {
    // The outbox is drained when `/metrics` shows no entry three times in a row.
    let started = Instant::now();
    let mut zeros = 0;
    while zeros < 3 && started.elapsed() < Duration::from_secs(args.drain_secs) {
        let m = metrics(http, args).await?;
        zeros = if m.outbox_entries == 0.0 {
            zeros + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained = zeros >= 3;
    let drain_secs = started.elapsed().as_secs_f64();
    // The ledger writer and the POS intake may still be a moment behind: compare again for a
    // while before calling a difference a failure.
    let mut p = pass(http, args, world, acked).await?;
    let settle = Instant::now();
    while (!p.mismatches.is_empty() || !p.pos_missing.is_empty())
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        p = pass(http, args, world, acked).await?;
    }
    let oversell_after = metrics(http, args).await?.oversell_units;
    let metric_ok = oversell_after == oversell_before;
    let zero_oversells = metric_ok && p.oversells.is_empty();
    let ledger_eq_redis = p.mismatches.is_empty() && p.compared > 0;
    let pos_once = p.pos_missing.is_empty() && p.pos_duplicated.is_empty();
    let lots_ok = p.lots.passed();
    let passed = drained && zero_oversells && ledger_eq_redis && pos_once && lots_ok;
    let few = |v: &[Value]| v.iter().take(20).cloned().collect::<Vec<_>>();
    let report = json!({
        "passed": passed,
        "outbox_drained": drained,
        "outbox_drain_secs": (drain_secs * 10.0).round() / 10.0,
        "zero_oversells": zero_oversells,
        "oversell_units_metric": {"before": oversell_before, "after": oversell_after},
        "ledger_oversells": p.oversells.len(),
        "ledger_oversell_examples": few(&p.oversells),
        "shortfall_facts": p.shortfall_facts,
        "ledger_equals_redis": ledger_eq_redis,
        "skus_compared": p.compared,
        "mismatches": p.mismatches.len(),
        "mismatch_examples": few(&p.mismatches),
        "pos_exactly_once": pos_once,
        "pos_acked": acked.len(),
        "pos_missing": p.pos_missing.len(),
        "pos_duplicated": p.pos_duplicated.len(),
        "pos_missing_examples": p.pos_missing.iter().take(20).collect::<Vec<_>>(),
        "ledger_documents_read": p.ledger_documents,
        "run_documents": p.run_documents,
        "run_documents_by_kind": p.by_kind,
        "lots": p.lots.report(),
    });
    let found = Found {
        commits: p.commits,
        pos_apply: p.pos_apply,
    };
    Ok((report, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(seq: u64, kind: &str, d_on_hand: i64, d_reserved: i64) -> Value {
        json!({"outlet": "o", "seq": seq, "kind": kind,
            "lines": [{"sku": "s", "d_on_hand": d_on_hand, "d_reserved": d_reserved}]})
    }

    #[test]
    fn a_sku_is_compared_at_the_seq_its_live_value_shows() {
        let entries = vec![
            doc(1, "count", 10, 0),
            doc(2, "reservation_held", 0, 3),
            doc(3, "reservation_released", 0, -3),
        ];
        let (folds, _, _, _) = replay(&entries, &HashMap::new(), 0);
        let f = folds["s"];
        assert_eq!((f.on_hand, f.reserved), (10, 0));
        let at2 = fold_at(f, &entries, "s", 2);
        assert_eq!(
            (at2.on_hand, at2.reserved),
            (10, 3),
            "the release at 3 came after the read"
        );
        let at3 = fold_at(f, &entries, "s", 3);
        assert_eq!((at3.on_hand, at3.reserved), (10, 0));
    }

    #[test]
    fn a_hold_past_the_stock_is_an_oversell() {
        let entries = [doc(1, "count", 2, 0), doc(2, "reservation_held", 0, 3)];
        let (folds, oversells, _, _) = replay(&entries, &HashMap::new(), 0);
        assert_eq!(oversells.len(), 1, "{oversells:?}");
        assert_eq!(oversells[0]["seq"], 2);
        assert_eq!((folds["s"].on_hand, folds["s"].reserved), (2, 3));
    }

    #[test]
    fn a_web_sale_after_a_counter_sale_shortfall_is_excused_but_not_a_new_hold() {
        let entries = [
            doc(1, "count", 3, 0),
            doc(2, "reservation_held", 0, 3),
            doc(3, "sale_counter", -1, 0),
            doc(4, "sale_web", -3, -3),
            doc(5, "reservation_held", 0, 1),
        ];
        let (_, oversells, facts, _) = replay(&entries, &HashMap::new(), 0);
        assert_eq!(facts, 1);
        assert_eq!(oversells.len(), 1, "{oversells:?}");
        assert_eq!(
            oversells[0]["seq"], 5,
            "only the hold that took a unit not there"
        );
        // Documents before the run are not judged.
        assert!(replay(&entries, &HashMap::new(), 5).1.is_empty());
    }

    #[test]
    fn the_run_is_folded_onto_the_stock_before_it() {
        // Before the run: 2 on hand, 1 held. The run holds 1 (fine), then 1 more (oversell).
        let start: HashMap<String, (i64, i64)> = [("s".to_owned(), (2, 1))].into();
        let entries = [
            doc(8, "reservation_held", 0, 1),
            doc(9, "reservation_held", 0, 1),
        ];
        let (folds, oversells, _, touched) = replay(&entries, &start, 7);
        assert_eq!((folds["s"].on_hand, folds["s"].reserved), (2, 3));
        assert_eq!(oversells.len(), 1, "{oversells:?}");
        assert_eq!(oversells[0]["seq"], 9);
        assert!(touched.contains("s"));
        // From an empty start the same documents would not be judged the same way: the
        // starting stock matters.
        assert_eq!(replay(&entries, &HashMap::new(), 7).1.len(), 2);
    }

    #[test]
    fn a_sku_short_before_the_run_excuses_the_sale_of_its_holds() {
        // Before the run a counter sale left 1 on hand under 2 held; the run sells one hold.
        let start: HashMap<String, (i64, i64)> = [("s".to_owned(), (1, 2))].into();
        let sale = [doc(8, "sale_web", -1, -1)];
        assert!(replay(&sale, &start, 7).1.is_empty());
        // A new hold there is still an oversell.
        let hold = [doc(8, "reservation_held", 0, 1)];
        assert_eq!(replay(&hold, &start, 7).1.len(), 1);
    }
}
