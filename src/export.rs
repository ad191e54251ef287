//! Exports for the accounts system or a spreadsheet: the ledger of an outlet over a time range
//! (CSV or NDJSON), streamed page by page so that memory stays bounded whatever the range.
//!
//! The range is `[from, to)` on each document's `at` (when the service committed it). Seqs
//! are read in pages of `PAGE_SEQS` from the first whose time is at `from` less a margin for
//! the clocks of several processes (`CLOCK_MARGIN_MS`), so an export is a scan of the range,
//! not of the ledger; it ends at the outlet's last seq when the export began, or at the first
//! page past `to` plus the margin. Each page is formatted and handed to a channel of
//! `PAGES_BUFFERED`: a reader slower than MongoDB holds the scan back (nothing is dropped, and
//! at most that many pages are in memory).

use actix_web::web::Bytes;
use tokio::sync::mpsc;

use crate::domain::{rfc3339_ms, OutletId};
use crate::ledger::{Ledger, LedgerEntry};

/// Seqs per query.
pub const PAGE_SEQS: u64 = 2000;
/// Formatted pages waiting for the reader.
pub const PAGES_BUFFERED: usize = 2;
/// How far the times of consecutive seqs may run backwards (another process's clock, after it
/// took the outlet over).
pub const CLOCK_MARGIN_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

/// The CSV columns: one row per line of a document (a hold of three SKUs is three rows).
pub const LEDGER_COLUMNS: [&str; 16] = [
    "outlet",
    "seq",
    "at",
    "kind",
    "sku",
    "d_on_hand",
    "d_reserved",
    "on_hand_after",
    "reserved_after",
    "event_id",
    "event_at",
    "reservation",
    "channel",
    "counterpart",
    "note",
    "by",
];

/// Writes the outlet's documents in `[from_ms, to_ms)` to `tx` as `format`, a page at a time;
/// stops early when the reader is gone. An error after the first page ends the body short
/// (a line `# export failed: …` in CSV, `{"error": …}` in NDJSON, so a reader can tell).
pub async fn ledger(
    ledger: Ledger,
    outlet: OutletId,
    from_ms: i64,
    to_ms: i64,
    format: Format,
    tx: mpsc::Sender<Bytes>,
    rows: prometheus::IntCounter,
) {
    if format == Format::Csv {
        let header = format!("{}\n", LEDGER_COLUMNS.join(","));
        if tx.send(Bytes::from(header)).await.is_err() {
            return;
        }
    }
    if let Err(e) = scan(&ledger, &outlet, from_ms, to_ms, format, &tx, &rows).await {
        tracing::warn!(%outlet, error = %format!("{e:#}"), "a ledger export failed");
        let tail = match format {
            Format::Csv => "# export failed: the ledger could not be read; the rows above are complete, the rest is missing\n".to_string(),
            Format::Ndjson => "{\"error\":\"unavailable\",\"message\":\"the ledger could not be read; the lines above are complete, the rest is missing\"}\n".to_string(),
        };
        let _ = tx.send(Bytes::from(tail)).await;
    }
}

async fn scan(
    ledger: &Ledger,
    outlet: &OutletId,
    from_ms: i64,
    to_ms: i64,
    format: Format,
    tx: &mpsc::Sender<Bytes>,
    rows: &prometheus::IntCounter,
) -> anyhow::Result<()> {
    let last = ledger.max_seq(outlet).await?;
    let first = ledger
        .first_seq_at(outlet, from_ms.saturating_sub(CLOCK_MARGIN_MS))
        .await?;
    let stop_ms = to_ms.saturating_add(CLOCK_MARGIN_MS);
    let mut after = first.saturating_sub(1);
    while after < last {
        let span = PAGE_SEQS.min(last - after);
        let page = ledger
            .range_page(outlet, after, span, from_ms, to_ms)
            .await?;
        after += span;
        if !page.is_empty() {
            let (bytes, n) = format_page(&page, format)?;
            if tx.send(bytes).await.is_err() {
                return Ok(());
            }
            rows.inc_by(n);
        }
        // Past the range by more than the margin: nothing after can be in it.
        let end_at = ledger.at_of(outlet, after).await?;
        if end_at.is_some_and(|at| at >= stop_ms) {
            break;
        }
    }
    Ok(())
}

/// One page as bytes, and the rows it holds.
fn format_page(page: &[LedgerEntry], format: Format) -> anyhow::Result<(Bytes, u64)> {
    match format {
        Format::Ndjson => {
            let mut out = Vec::with_capacity(page.len() * 256);
            for e in page {
                serde_json::to_writer(&mut out, &e.to_json())?;
                out.push(b'\n');
            }
            Ok((Bytes::from(out), page.len() as u64))
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::with_capacity(page.len() * 160));
            let mut n = 0;
            for e in page {
                let text = |v: &Option<String>| v.clone().unwrap_or_default();
                let num = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
                let common = |sku: &str, d_on: String, d_res: String| {
                    [
                        e.outlet.to_string(),
                        e.seq.to_string(),
                        rfc3339_ms(e.at_ms),
                        e.kind.as_str().to_owned(),
                        sku.to_owned(),
                        d_on,
                        d_res,
                        num(e.on_hand_after),
                        num(e.reserved_after),
                        text(&e.event_id),
                        e.event_at_ms.map(rfc3339_ms).unwrap_or_default(),
                        e.reservation
                            .as_ref()
                            .map(|r| r.to_string())
                            .unwrap_or_default(),
                        e.channel.map(|c| c.as_str().to_owned()).unwrap_or_default(),
                        text(&e.counterpart),
                        text(&e.note),
                        text(&e.by),
                    ]
                };
                if e.lines.is_empty() {
                    w.write_record(common("", String::new(), String::new()))?;
                    n += 1;
                }
                for l in &e.lines {
                    w.write_record(common(
                        l.sku.as_str(),
                        l.d_on_hand.to_string(),
                        l.d_reserved.to_string(),
                    ))?;
                    n += 1;
                }
            }
            Ok((Bytes::from(w.into_inner()?), n))
        }
    }
}
