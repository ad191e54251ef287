//! Stock reads: outlets, an outlet's stock, one SKU, and cart availability.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Action, Caller};
use super::context::{json_body, AppState};
use super::error::ApiError;
use super::openapi::{Availability, Error, OutletInfo, SkuStock, StockRow};
use crate::domain::{Invalid, Line, OutletId, Qty};

fn path_outlet(state: &AppState, raw: &str) -> Result<OutletId, ApiError> {
    state
        .catalogue
        .now()
        .known_outlet("outlet", raw)
        .map_err(|_| ApiError::not_found(format!("no outlet '{raw}'")))
}

/// The chain's outlets and kitchens.
#[utoipa::path(get, path = "/v1/outlets", tag = "stock",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every outlet of the catalogue", body = [OutletInfo]),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn list_outlets(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    Ok(HttpResponse::Ok().json(&state.catalogue.now().outlets))
}

/// Every SKU's counters at an outlet.
#[utoipa::path(get, path = "/v1/outlets/{outlet}/stock", tag = "stock",
    security(("api_key" = [])),
    params(("outlet" = String, Path, description = "Outlet id", pattern = "^[A-Za-z0-9_-]{1,64}$",
        example = "indore-vijay-nagar")),
    responses(
        (status = 200, description = "The outlet's stock", body = [StockRow]),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 404, description = "No such outlet", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn outlet_stock(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let outlet = path_outlet(&state, &path)?;
    let rows: Vec<_> = state
        .shared
        .stock
        .outlet(&outlet)
        .into_iter()
        .map(|(sku, c)| state.shared.stock.json(&outlet, false, &sku, &c))
        .collect();
    Ok(HttpResponse::Ok().json(rows))
}

/// One SKU's counters at an outlet (`available = on_hand - reserved`).
#[utoipa::path(get, path = "/v1/outlets/{outlet}/stock/{sku}", tag = "stock",
    security(("api_key" = [])),
    params(
        ("outlet" = String, Path, description = "Outlet id", pattern = "^[A-Za-z0-9_-]{1,64}$",
            example = "indore-vijay-nagar"),
        ("sku" = String, Path, description = "SKU", pattern = "^[A-Za-z0-9_-]{1,64}$",
            example = "kaju-katli-1kg"),
    ),
    responses(
        (status = 200, description = "The SKU's counters", body = SkuStock),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 404, description = "No such outlet or SKU", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn sku_stock(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let (outlet, sku) = path.into_inner();
    let outlet = path_outlet(&state, &outlet)?;
    let sku = state
        .catalogue
        .now()
        .known_sku("sku", &sku)
        .map_err(|_| ApiError::not_found(format!("no sku '{sku}'")))?;
    let c = state.shared.stock.get(&outlet, &sku).unwrap_or_default();
    Ok(HttpResponse::Ok().json(state.shared.stock.json(&outlet, true, &sku, &c)))
}

/// One cart line: a known SKU, listed once per cart, and its quantity.
/// The most outlets one availability request may name (its schema's `maxItems`).
const OUTLETS_MAX: usize = 64;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLine {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "kaju-katli-1kg")]
    sku: String,
    /// 1 to `reservations.qty_max` (10000 by default).
    #[schema(minimum = 1, maximum = 10000, example = 2)]
    qty: i64,
}

/// Whether cart lines are for a new hold (only active SKUs) or an availability check (any
/// known SKU: a retired one answers what is left of it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LinesFor {
    Hold,
    Check,
}

/// Validates cart lines: 1 to `lines_max`, known SKUs (active ones for a hold), bounded
/// quantities, no SKU twice.
pub(super) fn parse_lines(
    state: &AppState,
    raw: &[RawLine],
    purpose: LinesFor,
) -> Result<Vec<Line>, ApiError> {
    let limits = &state.settings.reservations;
    if raw.is_empty() || raw.len() > limits.lines_max {
        return Err(Invalid::new(
            "lines",
            format!("must hold 1 to {} lines", limits.lines_max),
        )
        .into());
    }
    let catalogue = state.catalogue.now();
    let mut lines: Vec<Line> = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        let field = format!("lines[{i}].sku");
        let sku = match purpose {
            LinesFor::Hold => catalogue.active_sku(&field, &l.sku)?,
            LinesFor::Check => catalogue.known_sku(&field, &l.sku)?,
        };
        if lines.iter().any(|x| x.sku == sku) {
            return Err(
                Invalid::new(format!("lines[{i}].sku"), "the same sku is listed twice").into(),
            );
        }
        let qty = Qty::parse(&format!("lines[{i}].qty"), l.qty, limits.qty_max)?;
        lines.push(Line { sku, qty });
    }
    Ok(lines)
}

/// A cart to check: at the outlets delivering to `pin`, at the given `outlets`, or (neither)
/// at every outlet. At most one of `pin` and `outlets`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityRequest {
    /// Delivery PIN code: answers for the outlets serving it, cheapest first, with `cost`.
    #[schema(pattern = "^[1-9][0-9]{5}$", example = "452010")]
    pin: Option<String>,
    /// Outlet ids (known outlets).
    #[schema(max_items = 64)]
    outlets: Option<Vec<String>>,
    /// 1 to `reservations.lines_max` (50 by default) lines, each SKU once.
    #[schema(min_items = 1, max_items = 50)]
    lines: Vec<RawLine>,
}

/// Whether each outlet can serve the whole cart now, and what it has of each line.
#[utoipa::path(post, path = "/v1/availability", tag = "stock",
    security(("api_key" = [])),
    request_body = AvailabilityRequest,
    responses(
        (status = 200, description = "One row per outlet", body = [Availability]),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read stock", body = Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = Error),
        (status = 422, description = "Invalid body (the field is named)", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn availability(
    caller: Caller,
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadStock, None)?;
    let body: AvailabilityRequest = json_body(&req, payload, &state).await?;
    let lines = parse_lines(&state, &body.lines, LinesFor::Check)?;
    if let Some(raw) = &body.pin {
        if body.outlets.is_some() {
            return Err(Invalid::new("outlets", "give at most one of pin and outlets").into());
        }
        let pin = crate::zones::Pin::parse("pin", raw)?;
        // The outlets delivering to the PIN, cheapest first, with their delivery cost.
        let answer: Vec<_> = state
            .zones
            .serving(&pin)
            .iter()
            .map(|z| {
                let (all, per_line) = state.shared.stock.cover(&z.outlet, &lines);
                json!({"outlet": z.outlet, "can_serve": all, "cost": z.cost, "lines": per_line})
            })
            .collect();
        return Ok(HttpResponse::Ok().json(answer));
    }
    let outlets: Vec<OutletId> = match body.outlets {
        Some(raw) => {
            if raw.len() > OUTLETS_MAX {
                let message = format!("must list at most {OUTLETS_MAX} outlets");
                return Err(Invalid::new("outlets", message).into());
            }
            let mut outlets: Vec<OutletId> = Vec::with_capacity(raw.len());
            for (i, o) in raw.iter().enumerate() {
                let outlet = state
                    .catalogue
                    .now()
                    .known_outlet(&format!("outlets[{i}]"), o)?;
                if outlets.contains(&outlet) {
                    let message = "the same outlet is listed twice";
                    return Err(Invalid::new(format!("outlets[{i}]"), message).into());
                }
                outlets.push(outlet);
            }
            outlets
        }
        None => state
            .catalogue
            .now()
            .outlets
            .iter()
            .map(|o| o.id.clone())
            .collect(),
    };
    let answer: Vec<_> = outlets
        .iter()
        .map(|o| {
            let (all, per_line) = state.shared.stock.cover(o, &lines);
            json!({"outlet": o, "can_serve": all, "lines": per_line})
        })
        .collect();
    Ok(HttpResponse::Ok().json(answer))
}
