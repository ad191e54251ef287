//! The printed table's rows.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::stats::{percentiles, OpStats, OPS};

/// A row of the printed table that has only a count and latencies (push, POS apply).
pub(crate) fn print_latency_row(name: &str, count: u64, p: &Value) {
    let f = |k: &str| ms_cell(p, k);
    println!(
        "{name:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "-",
        count,
        "-",
        "-",
        "-",
        f("p50"),
        f("p90"),
        f("p99"),
        f("p99_9"),
        f("max")
    );
}

/// A latency figure of `percentiles` for the printed table.
pub(crate) fn ms_cell(p: &Value, k: &str) -> String {
    p[k].as_f64()
        .map(|v| format!("{v:.2}"))
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn fmt_opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

/// Prints the operations' table (offered, taken, rates, client overload, latency) and
/// returns it for the report, one entry per operation of `OPS`.
pub(crate) fn operations_table(
    stats: &HashMap<&'static str, OpStats>,
    sent_secs: f64,
) -> serde_json::Map<String, Value> {
    let mut ops = serde_json::Map::new();
    println!(
        "\n{:<10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "operation",
        "offered",
        "ok",
        "offer/s",
        "ok/s",
        "overload",
        "p50 ms",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    for op in OPS {
        let s = &stats[op];
        let rate = |n: u64| n as f64 / sent_secs.max(0.001);
        let p = percentiles(&s.hist);
        let f = |k: &str| ms_cell(&p, k);
        println!(
            "{op:<10} {:>8} {:>8} {:>9.1} {:>9.1} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            s.offered,
            s.ok,
            rate(s.offered),
            rate(s.ok),
            s.overload,
            f("p50"),
            f("p90"),
            f("p99"),
            f("p99_9"),
            f("max")
        );
        ops.insert(
            op.into(),
            json!({"offered": s.offered, "ok": s.ok, "client_overload": s.overload,
                "offered_per_sec": rate(s.offered), "achieved_per_sec": rate(s.ok),
                "latency_ms": p, "statuses": s.statuses}),
        );
    }
    ops
}
