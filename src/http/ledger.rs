//! `GET /v1/ledger`: an outlet's movements in seq order, paged.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::AppState;
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

pub async fn page(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let outlet = q
        .outlet
        .ok_or_else(|| Invalid::new("outlet", "is required"))?;
    let outlet = state.catalogue.known_outlet("outlet", &outlet)?;
    caller.require(Action::ReadLedger, Some(&outlet))?;
    let sku = q
        .sku
        .map(|s| state.catalogue.known_sku("sku", &s))
        .transpose()?;
    let limit = q.limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(Invalid::new("limit", format!("must be 1 to {LIMIT_MAX}")).into());
    }
    let after_seq = q.after_seq.unwrap_or(0);
    let entries = state
        .ledger
        .page(&outlet, sku.as_ref(), after_seq, limit)
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    let entries: Vec<_> = entries.iter().map(|e| e.to_json()).collect();
    Ok(HttpResponse::Ok()
        .json(json!({"outlet": outlet, "entries": entries, "next_after_seq": next})))
}
