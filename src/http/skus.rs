//! The catalogue's SKUs: read them with names, categories and status, and (admin) add, rename
//! or retire one while the service runs (live_catalogue.rs).

use actix_web::{web, HttpRequest, HttpResponse};
use mongodb::bson::{Bson, Document};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::openapi::{Error, SkuDoc};
use crate::catalogue::{SkuInfo, SkuStatus};
use crate::domain::Sku;
use crate::live_catalogue::EditError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuQuery {
    status: Option<SkuStatus>,
    category: Option<String>,
}

/// Every SKU of the catalogue as it is now (the CSV with the edits over it), in catalogue
/// order. Not paged: the catalogue lives in memory (6,400 SKUs are about 1 MB of JSON).
#[utoipa::path(get, path = "/v1/skus", tag = "catalogue", operation_id = "list_skus",
    security(("api_key" = [])),
    params(
        ("status" = Option<SkuStatus>, Query, description = "Only SKUs with this status"),
        ("category" = Option<String>, Query, description = "Only SKUs of this category"),
    ),
    responses(
        (status = 200, description = "The SKUs", body = [SkuDoc]),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 422, description = "Invalid query (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<SkuQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let q = query.into_inner();
    let catalogue = state.catalogue.now();
    let skus: Vec<&SkuInfo> = (catalogue.skus.iter())
        .filter(|s| q.status.is_none_or(|st| s.status == st))
        .filter(|s| q.category.as_ref().is_none_or(|c| &s.category == c))
        .collect();
    Ok(HttpResponse::Ok().json(skus))
}

/// One SKU, with every version its edits made (`history`, oldest first; the CSV's own is
/// version 0 and is not listed).
#[utoipa::path(get, path = "/v1/skus/{sku}", tag = "catalogue", operation_id = "get_sku",
    security(("api_key" = [])),
    params(("sku" = String, Path, description = "SKU id", pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "kaju-katli-1kg")),
    responses(
        (status = 200, description = "The SKU and its history", body = SkuDoc),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 404, description = "No such SKU", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB is unreachable", body = Error),
    ))]
pub async fn get(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let raw = path.into_inner();
    let catalogue = state.catalogue.now();
    let info = Sku::parse("sku", &raw)
        .ok()
        .and_then(|s| catalogue.sku(&s).cloned())
        .ok_or_else(|| ApiError::not_found(format!("no sku '{raw}'")))?;
    let history =
        (state.catalogue.sku_history(&info.sku).await).map_err(crate::error::Error::store)?;
    let body = with_history(&info, history);
    Ok(HttpResponse::Ok().json(body))
}

/// A SKU's fields from now on.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuRequest {
    /// 1 to 120 bytes of printable text; a pack size in it ("1 kg", "250 g") groups similar
    /// items.
    #[schema(example = "Kaju Katli 1 kg")]
    name: String,
    /// 1 to 40 of a-z, 0-9 and '-'.
    #[schema(pattern = "^[a-z0-9-]{1,40}$", example = "sweets")]
    category: String,
    /// Days from making to expiry, 1 to 3650; left out for goods that keep.
    #[schema(minimum = 1, maximum = 3650, example = 10)]
    shelf_life_days: Option<u32>,
    /// `active` (the default) or `retired`: a retired SKU takes no new holds or receipts.
    status: Option<SkuStatus>,
}

/// `PUT /v1/skus/{sku}`: adds the SKU, or sets its name, category, shelf life and status (a
/// rename, a retirement, a return to sale). Idempotent: the same fields again keep the
/// version. Seen at once by every request of this process and within `catalogue.refresh_ms`
/// by the others.
#[utoipa::path(put, path = "/v1/skus/{sku}", tag = "catalogue", operation_id = "put_sku",
    security(("api_key" = [])),
    params(("sku" = String, Path, description = "SKU id", pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "diwali-hamper-1kg")),
    request_body = SkuRequest,
    responses(
        (status = 200, description = "The SKU as it is now (a new version if it changed)", body = SkuDoc),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "Only an admin key may edit the catalogue", body = Error),
        (status = 409, description = "The SKU was changed at the same moment; read it and retry", body = Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = Error),
        (status = 422, description = "Invalid SKU id or body (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "MongoDB could not take the edit; nothing changed", body = Error),
    ))]
pub async fn put(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ManageCatalogue, None)?;
    let sku = Sku::parse("sku", &path)?;
    let body: SkuRequest = json_body(&req, payload, &state).await?;
    let edit = SkuInfo::new(
        sku,
        &body.name,
        &body.category,
        body.shelf_life_days,
        body.status.unwrap_or(SkuStatus::Active),
    )?;
    let info = (state.catalogue.set_sku(edit, &caller.0.label).await).map_err(edit_error)?;
    Ok(HttpResponse::Ok().json(info))
}

/// An entry of the catalogue as JSON with `history`: its stored versions as they were
/// written (with `at_ms` and `by`), less the id they repeat.
pub(super) fn with_history(entry: &impl serde::Serialize, versions: Vec<Document>) -> Value {
    let history: Vec<Value> = (versions.into_iter())
        .map(|mut d| {
            for repeated in ["_id", "sku", "outlet"] {
                d.remove(repeated);
            }
            Bson::Document(d).into_relaxed_extjson()
        })
        .collect();
    let mut body = serde_json::to_value(entry).expect("serializes");
    body["history"] = json!(history);
    body
}

/// A catalogue edit's refusal: 422 naming the field, 409 for a concurrent edit, 503 when
/// MongoDB could not take it.
pub(super) fn edit_error(e: EditError) -> ApiError {
    match e {
        EditError::Invalid(i) => ApiError::from(i),
        EditError::Raced(_) => ApiError::conflict(e.to_string()),
        EditError::Store(e) => crate::error::Error::store(e).into(),
    }
}
