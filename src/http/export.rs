//! Exports: `GET /v1/export/ledger` (an outlet's ledger over a time range), `/drift` (the
//! reconciler's drift records), `/reservations` (an outlet's reservations by status), each CSV
//! or NDJSON and streamed; `/stock` (every outlet's counters with SKU names, CSV or JSON).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::Error;
use crate::domain::{Invalid, OutletId, ReservationStatus};
use crate::export::{self, Format};

/// Ledger exports streaming at once, per process; one more is `503` with `Retry-After`.
pub const EXPORTS_MAX: usize = 4;

/// The query of the exports over a time range (ledger, drift).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeExportQuery {
    outlet: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

impl RangeExportQuery {
    /// `[from, to)` in ms: the beginning and now by default; `to` after `from`.
    fn range(&self) -> Result<(i64, i64), Invalid> {
        let from_ms = time("from", self.from.as_deref(), 0)?;
        let to_ms = time("to", self.to.as_deref(), crate::domain::now_ms() + 1)?;
        if from_ms >= to_ms {
            return Err(Invalid::new("to", "must be after from"));
        }
        Ok((from_ms, to_ms))
    }
}

fn time(field: &str, value: Option<&str>, default: i64) -> Result<i64, Invalid> {
    match value {
        None => Ok(default),
        Some(v) => chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_millis())
            .map_err(|_| {
                Invalid::new(field, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
            }),
    }
}

/// `csv` (the default), or `other` (`ndjson` for the ledger, `json` for stock).
fn format(value: Option<&str>, other: &'static str) -> Result<Format, Invalid> {
    match value.unwrap_or("csv") {
        "csv" => Ok(Format::Csv),
        v if v == other => Ok(Format::Ndjson),
        _ => Err(Invalid::new("format", format!("must be csv or {other}"))),
    }
}

/// An outlet's ledger documents whose `at` is in `[from, to)`, in seq order, as CSV (one row
/// per line of a document) or NDJSON (one document per line, as `GET /v1/ledger` gives
/// them). Streamed: memory stays bounded however long the range.
#[utoipa::path(get, path = "/v1/export/ledger", tag = "movements", operation_id = "export_ledger",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Query, description = "Outlet id (required)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("from" = Option<String>, Query, description = "RFC 3339; the start, included (default: the beginning)"),
        ("to" = Option<String>, Query, description = "RFC 3339; the end, left out (default: now)"),
        ("format" = Option<String>, Query, description = "`csv` (default) or `ndjson`"),
    ),
    responses(
        (status = 200, description = "The documents, streamed (`text/csv` or `application/x-ndjson`); a body that ends in a line `# export failed` (CSV) or `{\"error\": …}` (NDJSON) was cut short by MongoDB", content_type = "text/csv"),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's ledger", body = Error),
        (status = 422, description = "Missing or invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "As many exports as a process streams at once are running (`Retry-After`)", body = Error),
    ))]
pub async fn ledger(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<RangeExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let outlet = (q.outlet.as_deref()).ok_or_else(|| Invalid::new("outlet", "is required"))?;
    let outlet: OutletId = state.catalogue.now().known_outlet("outlet", outlet)?;
    caller.require(Action::ReadLedger, Some(&outlet))?;
    let (from_ms, to_ms) = q.range()?;
    let format = format(q.format.as_deref(), "ndjson")?;
    let ledger = state.shared.ledger.clone();
    let label = outlet.clone();
    stream(&state, &label, "ledger", format, move |tx, rows| {
        export::ledger(ledger, outlet, from_ms, to_ms, format, tx, rows)
    })
}

/// Starts an export (`produce` writes its pages to the channel it is given) under the
/// process's bound of exports at once, and answers with its stream.
fn stream<F, Fut>(
    state: &web::Data<AppState>,
    outlet: &OutletId,
    what: &'static str,
    format: Format,
    produce: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(tokio::sync::mpsc::Sender<web::Bytes>, prometheus::IntCounter) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let Ok(permit) = state.exports.clone().try_acquire_owned() else {
        state.shed(outlet, "export", "exports_busy");
        return Err(crate::error::Error::Overloaded {
            message: format!(
                "{EXPORTS_MAX} exports are streaming from this process; try again shortly"
            ),
            retry_after_secs: 5,
            elsewhere: None,
        }
        .into());
    };
    let (tx, rx) = tokio::sync::mpsc::channel(export::PAGES_BUFFERED);
    let rows = (state.shared.metrics.export_rows).with_label_values(&[what]);
    let produced = produce(tx, rows);
    actix_web::rt::spawn(async move {
        let _permit = permit;
        produced.await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    let extension = if format == Format::Csv {
        "csv"
    } else {
        "ndjson"
    };
    Ok(HttpResponse::Ok()
        .content_type(match format {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        })
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"{what}-{outlet}.{extension}\""),
        ))
        .streaming(body))
}

/// The drift the reconciler found between Redis and the ledger (its `drift` records), of one
/// outlet or all, over a time range: CSV (one row per SKU of a record) or NDJSON (one record
/// per line). Streamed.
#[utoipa::path(get, path = "/v1/export/drift", tag = "operations", operation_id = "export_drift",
    security(("api_key" = [])),
    params(
        ("outlet" = Option<String>, Query, description = "Only this outlet",
            pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("from" = Option<String>, Query, description = "RFC 3339; the start, included (default: the beginning)"),
        ("to" = Option<String>, Query, description = "RFC 3339; the end, left out (default: now)"),
        ("format" = Option<String>, Query, description = "`csv` (default) or `ndjson`"),
    ),
    responses(
        (status = 200, description = "`outlet,seq,at,healed,sku,redis_on_hand,redis_reserved,ledger_on_hand,ledger_reserved`, streamed", content_type = "text/csv"),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read metrics", body = Error),
        (status = 422, description = "Invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "As many exports as a process streams at once are running (`Retry-After`)", body = Error),
    ))]
pub async fn drift(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<RangeExportQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadMetrics, None)?;
    let q = query.into_inner();
    let outlet = (q.outlet.as_deref())
        .map(|o| state.catalogue.now().known_outlet("outlet", o))
        .transpose()?;
    let (from_ms, to_ms) = q.range()?;
    let format = format(q.format.as_deref(), "ndjson")?;
    let ledger = state.shared.ledger.clone();
    let label = match &outlet {
        Some(o) => o.clone(),
        None => OutletId::parse("outlet", "all").expect("a valid id"),
    };
    stream(&state, &label, "drift", format, move |tx, rows| {
        export::drift(ledger, outlet, from_ms, to_ms, format, tx, rows)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationExportQuery {
    outlet: Option<String>,
    status: Option<String>,
    format: Option<String>,
}

/// An outlet's reservations kept in Redis — the live holds, and finished ones for
/// `reservations.retain_secs` (a day) — of the given statuses (comma-separated; all by
/// default): CSV (one row per line of a reservation) or NDJSON (one reservation per line, as
/// `GET /v1/reservations/{id}` gives it). Streamed. Older finished ones are in the ledger.
#[utoipa::path(get, path = "/v1/export/reservations", tag = "reservations", operation_id = "export_reservations",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Query, description = "Outlet id (required)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("status" = Option<String>, Query, description = "Comma-separated: held, confirmed, cancelled, expired, rerouted"),
        ("format" = Option<String>, Query, description = "`csv` (default) or `ndjson`"),
    ),
    responses(
        (status = 200, description = "`outlet,id,status,sku,qty,channel,created_at,expires_at,ended_at,payment_ref,customer_ref`, streamed", content_type = "text/csv"),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's reservations", body = Error),
        (status = 422, description = "Missing or invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "As many exports as a process streams at once are running (`Retry-After`)", body = Error),
    ))]
pub async fn reservations(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<ReservationExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let outlet = q
        .outlet
        .ok_or_else(|| Invalid::new("outlet", "is required"))?;
    let outlet: OutletId = state.catalogue.now().known_outlet("outlet", &outlet)?;
    caller.require(Action::ReadReservation, Some(&outlet))?;
    let statuses = (q.status.as_deref().unwrap_or_default().split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            serde_json::from_value::<ReservationStatus>(json!(s)).map_err(|_| {
                Invalid::new(
                    "status",
                    format!(
                        "unknown status '{s}': held, confirmed, cancelled, expired or rerouted"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let format = format(q.format.as_deref(), "ndjson")?;
    let store = state.shared.store.clone();
    let label = outlet.clone();
    stream(&state, &label, "reservations", format, move |tx, rows| {
        export::reservations(store, outlet, statuses, format, tx, rows)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockExportQuery {
    outlet: Option<String>,
    format: Option<String>,
}

/// The counters of every SKU with stock records at every outlet (or one), with the SKU's name,
/// category and status, sorted by outlet and SKU: CSV, or NDJSON (one row per line; `json` is
/// taken for it too). Streamed an outlet at a time, under the bound of exports at once.
#[utoipa::path(get, path = "/v1/export/stock", tag = "stock", operation_id = "export_stock",
    security(("api_key" = [])),
    params(
        ("outlet" = Option<String>, Query, description = "Only this outlet",
            pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("format" = Option<String>, Query, description = "`csv` (default), or `ndjson` (also `json`)"),
    ),
    responses(
        (status = 200, description = "`outlet,sku,name,category,status,on_hand,reserved,available,seq`", content_type = "text/csv"),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 422, description = "Invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "As many exports as a process streams at once are running (`Retry-After`)", body = Error),
    ))]
pub async fn stock(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<StockExportQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let q = query.into_inner();
    let catalogue = state.catalogue.now();
    let only = (q.outlet.as_deref())
        .map(|o| catalogue.known_outlet("outlet", o))
        .transpose()?;
    let format = match q.format.as_deref() {
        Some("json") => Format::Ndjson,
        other => format(other, "ndjson")?,
    };
    let outlets: Vec<OutletId> = (catalogue.outlets.iter().map(|o| o.id.clone()))
        .filter(|o| only.as_ref().is_none_or(|x| x == o))
        .collect();
    let label = only.unwrap_or_else(|| OutletId::parse("outlet", "all").expect("a valid id"));
    let stock = state.shared.stock.clone();
    stream(&state, &label, "stock", format, move |tx, rows| {
        export::stock(stock, catalogue, outlets, format, tx, rows)
    })
}
