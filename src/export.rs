//! Exports for the accounts system or a spreadsheet, each streamed page by page so that memory
//! stays bounded whatever the size: the ledger of an outlet over a time range, the drift records
//! the reconciler wrote, and an outlet's reservations by status (CSV or NDJSON).
//!
//! The range is `[from, to)` on each document's `at` (when the service committed it). Seqs
//! are read in pages of `PAGE_SEQS` from the first whose time is at `from` less a margin for
//! the clocks of several processes (`CLOCK_MARGIN_MS`), so an export is a scan of the range,
//! not of the ledger; it ends at the outlet's last seq when the export began, or at the first
//! page past `to` plus the margin. Each page is formatted and handed to a channel of
//! `PAGES_BUFFERED`: a reader slower than MongoDB holds the scan back (nothing is dropped, and
//! at most that many pages are in memory).

use std::collections::HashSet;

use actix_web::web::Bytes;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use tokio::sync::mpsc;

use crate::domain::{rfc3339_ms, OutletId, ReservationId, ReservationStatus};
use crate::ledger::{Ledger, LedgerEntry};
use crate::store::{RedisStore, ResRecord};

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
    let scanned = scan(&ledger, &outlet, from_ms, to_ms, format, &tx, &rows).await;
    end(scanned, "ledger", format, &tx).await;
}

/// Ends an export that failed part way with a line that says so (`# export failed: …` in CSV,
/// `{"error": …}` in NDJSON), so that a reader can tell a short body from a whole one.
async fn end(result: anyhow::Result<()>, what: &str, format: Format, tx: &mpsc::Sender<Bytes>) {
    let Err(e) = result else { return };
    tracing::warn!(error = %format!("{e:#}"), "a {what} export failed");
    let tail = match format {
        Format::Csv => format!("# export failed: the {what} could not be read; the rows above are complete, the rest is missing\n"),
        Format::Ndjson => format!("{{\"error\":\"unavailable\",\"message\":\"the {what} could not be read; the lines above are complete, the rest is missing\"}}\n"),
    };
    let _ = tx.send(Bytes::from(tail)).await;
}

/// Sends a header line for CSV; false when the reader is gone.
async fn header(format: Format, columns: &[&str], tx: &mpsc::Sender<Bytes>) -> bool {
    format != Format::Csv
        || tx
            .send(Bytes::from(format!("{}\n", columns.join(","))))
            .await
            .is_ok()
}

/// Rows as CSV (no header) or, with `json` for each, NDJSON.
fn rows_bytes(format: Format, rows: &[(Vec<String>, serde_json::Value)]) -> anyhow::Result<Bytes> {
    let mut out = Vec::with_capacity(rows.len() * 160);
    match format {
        Format::Ndjson => {
            let mut last = None;
            for (_, json) in rows {
                // Several CSV rows of one record share its JSON: written once.
                if last == Some(json) {
                    continue;
                }
                serde_json::to_writer(&mut out, json)?;
                out.push(b'\n');
                last = Some(json);
            }
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(out);
            for (cells, _) in rows {
                w.write_record(cells)?;
            }
            out = w.into_inner()?;
        }
    }
    Ok(Bytes::from(out))
}

/// The drift records' CSV columns: one row per SKU of a record.
pub const DRIFT_COLUMNS: [&str; 9] = [
    "outlet",
    "seq",
    "at",
    "healed",
    "sku",
    "redis_on_hand",
    "redis_reserved",
    "ledger_on_hand",
    "ledger_reserved",
];

/// Records per page of a drift export.
const DRIFT_PAGE: u32 = 500;

/// The reconciler's drift records (`drift`) with `at_ms` in `[from_ms, to_ms)`, of one outlet
/// or all, oldest first, as the cursor gives them in pages of `DRIFT_PAGE`.
pub async fn drift(
    ledger: Ledger,
    outlet: Option<OutletId>,
    from_ms: i64,
    to_ms: i64,
    format: Format,
    tx: mpsc::Sender<Bytes>,
    rows: prometheus::IntCounter,
) {
    if !header(format, &DRIFT_COLUMNS, &tx).await {
        return;
    }
    let scanned = async {
        let mut filter = doc! {"at_ms": {"$gte": from_ms, "$lt": to_ms}};
        if let Some(o) = &outlet {
            filter.insert("outlet", o.as_str());
        }
        let mut cursor = (ledger
            .db
            .collection::<Document>(crate::actors::reconciler::DRIFT))
        .find(filter)
        .sort(doc! {"at_ms": 1, "_id": 1})
        .batch_size(DRIFT_PAGE)
        .await?;
        let mut page = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            page.extend(drift_rows(&d));
            if page.len() >= DRIFT_PAGE as usize {
                rows.inc_by(page.len() as u64);
                if tx
                    .send(rows_bytes(format, &std::mem::take(&mut page))?)
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        }
        rows.inc_by(page.len() as u64);
        let _ = tx.send(rows_bytes(format, &page)?).await;
        anyhow::Ok(())
    };
    end(scanned.await, "drift records", format, &tx).await;
}

fn drift_rows(d: &Document) -> Vec<(Vec<String>, serde_json::Value)> {
    let json = serde_json::to_value(d).unwrap_or_default();
    let text = |k: &str| json[k].as_str().unwrap_or_default().to_owned();
    let num = |v: &serde_json::Value| match v {
        serde_json::Value::Object(o) if o.contains_key("$numberLong") => {
            o["$numberLong"].as_str().unwrap_or_default().to_owned()
        }
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    };
    let mut out = Vec::new();
    for s in json["skus"].as_array().into_iter().flatten() {
        let cells = vec![
            text("outlet"),
            num(&json["seq"]),
            text("at"),
            json["healed"].as_bool().unwrap_or(false).to_string(),
            s["sku"].as_str().unwrap_or_default().to_owned(),
            num(&s["redis"]["on_hand"]),
            num(&s["redis"]["reserved"]),
            num(&s["ledger"]["on_hand"]),
            num(&s["ledger"]["reserved"]),
        ];
        out.push((cells, json.clone()));
    }
    out
}

/// The reservations' CSV columns: one row per line of a reservation.
pub const RESERVATION_COLUMNS: [&str; 11] = [
    "outlet",
    "id",
    "status",
    "sku",
    "qty",
    "channel",
    "created_at",
    "expires_at",
    "ended_at",
    "payment_ref",
    "customer_ref",
];

/// Reservations per `HSCAN` step.
const RESERVATION_PAGE: usize = 1000;

/// An outlet's reservations in Redis (live holds, and finished ones for
/// `reservations.retain_secs`), of the given statuses (all when empty), in the order a scan
/// meets them, each once.
pub async fn reservations(
    store: RedisStore,
    outlet: OutletId,
    statuses: Vec<ReservationStatus>,
    format: Format,
    tx: mpsc::Sender<Bytes>,
    rows: prometheus::IntCounter,
) {
    if !header(format, &RESERVATION_COLUMNS, &tx).await {
        return;
    }
    let keys = store.keys(&outlet);
    let scanned = async {
        let mut seen: HashSet<ReservationId> = HashSet::new();
        let mut cursor = 0;
        loop {
            let (next, records) = store
                .scan_reservations(&keys, cursor, RESERVATION_PAGE)
                .await?;
            let page: Vec<_> = (records.iter())
                .filter(|r| statuses.is_empty() || statuses.contains(&r.status))
                .filter(|r| seen.insert(r.id.clone()))
                .flat_map(reservation_rows)
                .collect();
            if !page.is_empty() {
                rows.inc_by(page.len() as u64);
                if tx.send(rows_bytes(format, &page)?).await.is_err() {
                    return Ok(());
                }
            }
            if next == 0 {
                return anyhow::Ok(());
            }
            cursor = next;
        }
    };
    end(scanned.await, "reservations", format, &tx).await;
}

fn reservation_rows(r: &ResRecord) -> Vec<(Vec<String>, serde_json::Value)> {
    let json = crate::wire::reservation_json(r);
    let status = json["status"].as_str().unwrap_or_default().to_owned();
    let channel = r.channel.as_str().to_owned();
    r.lines
        .iter()
        .map(|l| {
            let cells = vec![
                r.id.outlet().to_string(),
                r.id.to_string(),
                status.clone(),
                l.sku.to_string(),
                l.qty.get().to_string(),
                channel.clone(),
                rfc3339_ms(r.created_at),
                rfc3339_ms(r.expires_at),
                r.ended_at.map(rfc3339_ms).unwrap_or_default(),
                r.payment_ref.clone().unwrap_or_default(),
                r.customer_ref.clone().unwrap_or_default(),
            ];
            (cells, json.clone())
        })
        .collect()
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

/// The stock export's CSV columns.
pub const STOCK_COLUMNS: [&str; 9] = [
    "outlet",
    "sku",
    "name",
    "category",
    "status",
    "on_hand",
    "reserved",
    "available",
    "seq",
];

/// The counters of every SKU with stock records at `outlets`, with the SKU's name, category
/// and status, a page per outlet.
pub async fn stock(
    view: std::sync::Arc<crate::stock_view::StockView>,
    catalogue: std::sync::Arc<crate::catalogue::Catalogue>,
    outlets: Vec<OutletId>,
    format: Format,
    tx: mpsc::Sender<Bytes>,
    rows: prometheus::IntCounter,
) {
    if !header(format, &STOCK_COLUMNS, &tx).await {
        return;
    }
    let pages = async {
        for outlet in outlets {
            let page: Vec<_> = (view.outlet(&outlet).into_iter())
                .map(|(sku, c)| {
                    let info = catalogue.sku(&sku);
                    let json = serde_json::json!({
                        "outlet": outlet, "sku": sku,
                        "name": info.map(|i| i.name.as_str()),
                        "category": info.map(|i| i.category.as_str()),
                        "status": info.map(|i| i.status),
                        "on_hand": c.on_hand, "reserved": c.reserved,
                        "available": c.available(), "seq": c.seq,
                    });
                    let cells = STOCK_COLUMNS
                        .iter()
                        .map(|k| match &json[*k] {
                            serde_json::Value::String(s) => s.clone(),
                            serde_json::Value::Null => String::new(),
                            v => v.to_string(),
                        })
                        .collect();
                    (cells, json)
                })
                .collect();
            if page.is_empty() {
                continue;
            }
            rows.inc_by(page.len() as u64);
            if tx.send(rows_bytes(format, &page)?).await.is_err() {
                return Ok(());
            }
        }
        anyhow::Ok(())
    };
    end(pages.await, "stock", format, &tx).await;
}
