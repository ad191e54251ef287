//! `GET /v1/reports/end-of-day`: an outlet's day (end_of_day.rs), as JSON or CSV.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::{EndOfDay, Error};
use crate::domain::{now_ms, Invalid};
use crate::end_of_day;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndOfDayQuery {
    outlet: Option<String>,
    date: Option<String>,
    format: Option<String>,
}

/// An outlet's end of day: for each SKU, what it opened with, received, sold, wasted by hand,
/// lost to expiry (both by lot) and had left at the day's end, with values at the configured
/// prices (`reports.prices_file`). A day is a local calendar day (`reports.utc_offset_minutes`);
/// today's is as of now (`complete: false`).
#[utoipa::path(get, path = "/v1/reports/end-of-day", tag = "stock",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Query, description = "Outlet id (required)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("date" = Option<String>, Query, description = "The local day, YYYY-MM-DD (default: today)",
            example = "2026-12-06"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv` (values in rupees)"),
    ),
    responses(
        (status = 200, description = "The report (`text/csv` with `format=csv`)", body = EndOfDay),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's ledger", body = Error),
        (status = 422, description = "Missing or invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "The ledger did not answer, or is a moment behind the outlet's stock (`Retry-After`)", body = Error),
    ))]
pub async fn end_of_day(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<EndOfDayQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let outlet = q
        .outlet
        .as_deref()
        .ok_or_else(|| Invalid::new("outlet", "is required"))?;
    let catalogue = state.catalogue.now();
    let outlet = catalogue.known_outlet("outlet", outlet)?;
    caller.require(Action::ReadLedger, Some(&outlet))?;
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        _ => return Err(Invalid::new("format", "must be json or csv").into()),
    };
    let now = now_ms();
    let offset = state.settings.reports.utc_offset_minutes;
    let date = q.date.unwrap_or_else(|| end_of_day::today(offset, now));
    let bounds = end_of_day::day_bounds(&date, offset, now)?;
    let report = end_of_day::build(
        &state.shared.ledger,
        &state.shared.stock,
        &catalogue,
        &state.prices,
        &outlet,
        &date,
        bounds,
        now,
    )
    .await
    .map_err(|e| match e.downcast::<end_of_day::LedgerBehind>() {
        Ok(behind) => ApiError::unavailable(behind.to_string()),
        // MongoDB failed: logged with its cause, the caller told to retry.
        Err(e) => crate::error::Error::store(e).into(),
    })?;
    if csv {
        let body = end_of_day::csv(&report)?;
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "Content-Disposition",
                format!(
                    "attachment; filename=\"end-of-day-{}-{}.csv\"",
                    report.outlet, report.date
                ),
            ))
            .body(body));
    }
    Ok(HttpResponse::Ok().json(report))
}
