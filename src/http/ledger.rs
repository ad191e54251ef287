//! `GET /v1/ledger`: an outlet's movements in seq order, paged; `GET /v1/ledger/lag`: how far
//! each outlet's ledger is behind its committed changes.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::{Error, LedgerLag, LedgerPage};
use crate::domain::Invalid;

const LIMIT_DEFAULT: i64 = 100;
const LIMIT_MAX: i64 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    outlet: Option<String>,
    sku: Option<String>,
    after_seq: Option<u64>,
    limit: Option<i64>,
}

/// An outlet's ledger in seq order, paged: every movement and hold that explains its numbers.
#[utoipa::path(get, path = "/v1/ledger", tag = "movements", operation_id = "ledger_page",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Query, description = "Outlet id (required)",
            pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar"),
        ("sku" = Option<String>, Query, description = "Only this SKU's entries",
            pattern = "^[A-Za-z0-9_-]{1,64}$"),
        ("after_seq" = Option<u64>, Query, description = "Entries after this seq (default 0)",
            minimum = 0),
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 1000 (default 100)",
            minimum = 1, maximum = 1000),
    ),
    responses(
        (status = 200, description = "A page; `next_after_seq` is null on the last", body = LedgerPage),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read this outlet's ledger", body = Error),
        (status = 422, description = "Missing or invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB is unreachable", body = Error),
    ))]
pub async fn page(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let outlet = q
        .outlet
        .ok_or_else(|| Invalid::new("outlet", "is required"))?;
    let outlet = state.catalogue.now().known_outlet("outlet", &outlet)?;
    caller.require(Action::ReadLedger, Some(&outlet))?;
    let sku = q
        .sku
        .map(|s| state.catalogue.now().known_sku("sku", &s))
        .transpose()?;
    let limit = q.limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(Invalid::new("limit", format!("must be 1 to {LIMIT_MAX}")).into());
    }
    let after_seq = q.after_seq.unwrap_or(0);
    // The ledger keeps seqs as i64: past i64::MAX (less a page) there is nothing, and the
    // query's `after_seq as i64 + limit` would wrap to the first page.
    let entries = if after_seq > (i64::MAX - LIMIT_MAX) as u64 {
        Vec::new()
    } else {
        state
            .shared
            .ledger
            .page(&outlet, sku.as_ref(), after_seq, limit)
            .await?
    };
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let entries: Vec<_> = entries.iter().map(|e| e.to_json()).collect();
    Ok(HttpResponse::Ok()
        .json(json!({"outlet": outlet, "entries": entries, "next_after_seq": next})))
}

/// The ledger lag of every outlet: its changes committed in Redis and not yet durable in the
/// ledger, and the age of the oldest. Past `budget_secs`, the outlet refuses new holds
/// (`shedding_holds`) until the ledger catches up.
#[utoipa::path(get, path = "/v1/ledger/lag", tag = "movements", operation_id = "ledger_lag",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every outlet's lag, by outlet id", body = LedgerLag),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read metrics", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn lag(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadMetrics, None)?;
    let budget_secs = state.settings.ledger.lag_max_secs;
    let outlets: Vec<_> = state
        .shared
        .ledger_lags(crate::domain::now_ms())
        .into_iter()
        .map(|(outlet, lag)| {
            json!({"outlet": outlet, "entries": lag.entries,
                "age_secs": lag.age_ms as f64 / 1000.0,
                "shedding_holds": lag.age_ms as u64 > budget_secs * 1000})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"budget_secs": budget_secs, "outlets": outlets})))
}
