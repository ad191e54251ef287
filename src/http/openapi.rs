//! `GET /openapi.json`: the OpenAPI 3 document of every route, generated from the handlers'
//! `#[utoipa::path]` attributes and the request types. The route table in `http/mod.rs`
//! names the handlers, so a routed handler without a description does not compile, and
//! `tests/openapi.rs` checks that methods and paths agree with the table.
//!
//! The schemas below describe answers that handlers build as JSON; request bodies are the
//! handlers' own types (`CreateRequest`, `RawLine`, ...), except the movement body, whose
//! type lives with the MQTT intake and is described here as [`MovementBody`].
//! Bounds are the defaults of `config.toml` (a deployment may configure others).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The security scheme of every keyed operation: `Authorization: Bearer <api key>`.
pub const BEARER: &str = "api_key";
/// The same key as `?key=`, for the live streams (browsers cannot set their headers).
pub const QUERY_KEY: &str = "query_key";

/// Adds the security schemes the operations refer to.
pub struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An API key of config.toml's `api_keys` (roles storefront, pos, manager, viewer, \
             admin; pos and manager keys are scoped to outlets). No key or an unknown key: 401; \
             a role or outlet the key may not touch: 403; past the key's rate limit: 429."
                .into(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        let mut query = ApiKeyValue::new("key");
        query.description = Some("The API key as a query parameter (SSE and WebSocket).".into());
        components.add_security_scheme(QUERY_KEY, SecurityScheme::ApiKey(ApiKey::Query(query)));
    }
}

/// The document, serialized once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(super::ApiDoc::openapi())
            .expect("the OpenAPI document serializes");
        fix_links(&mut doc);
        add_body_rules(&mut doc);
        serde_json::to_string_pretty(&doc).expect("JSON serializes")
    })
}

/// utoipa 5.5 writes a Link object's fields in snake case (`operation_id`); OpenAPI's are
/// `operationId`, `operationRef` and `requestBody`.
fn fix_links(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(links)) = m.get_mut("links") {
                for link in links.values_mut().filter_map(Value::as_object_mut) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.into(), x);
                        }
                    }
                }
            }
            m.values_mut().for_each(fix_links);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// The rules between fields of a request body that the derived schemas cannot say: a hold
/// names exactly one of `outlet` and `pin`; availability at most one of `pin` and `outlets`;
/// a movement's `qty`, `to_outlet` and lot fields depend on its `kind`.
fn add_body_rules(doc: &mut Value) {
    let mut rule = |schema: &str, keyword: &str, value: Value| {
        doc["components"]["schemas"]
            .get_mut(schema)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("the document has a {schema} schema"))
            .insert(keyword.into(), value);
    };
    rule(
        "CreateRequest",
        "oneOf",
        json!([{"required": ["outlet"]}, {"required": ["pin"]}]),
    );
    rule(
        "AvailabilityRequest",
        "not",
        json!({"required": ["pin", "outlets"]}),
    );
    let no_transfer = json!({"not": {"required": ["to_outlet"]}});
    rule(
        "MovementRequest",
        "oneOf",
        json!([
            {
                "properties": {
                    "kind": {"enum": ["sale_counter", "receipt", "wastage", "return"]},
                    "qty": {"minimum": 1},
                },
                "allOf": [no_transfer],
            },
            {
                "properties": {"kind": {"const": "adjustment"}, "qty": {"not": {"const": 0}}},
                "allOf": [no_transfer],
            },
            {
                "properties": {"kind": {"const": "count"}, "qty": {"minimum": 0}},
                "allOf": [no_transfer, {"not": {"anyOf": [
                    {"required": ["lot"]}, {"required": ["made_at"]}, {"required": ["expires_at"]},
                ]}}],
            },
            {
                "properties": {"kind": {"const": "transfer"}, "qty": {"minimum": 1}},
                "required": ["to_outlet"],
            },
        ]),
    );
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document of this service",
        content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Every error: `{"error": "<code>", "message", ...details}` (API.md, Conventions).
#[derive(ToSchema)]
pub struct Error {
    /// `unauthorized`, `forbidden`, `not_found`, `validation_failed`, `out_of_stock`,
    /// `conflict`, `reservation_expired`, `payload_too_large`, `rate_limited`, `unavailable`.
    pub error: String,
    /// For a person.
    pub message: String,
    /// With `validation_failed`: which field of the request is wrong.
    pub field: Option<String>,
}

/// A refused hold: `409 out_of_stock` with the short lines and where else the cart could be
/// filled, or `409 conflict` (the `Idempotency-Key` was used with another body or outlet).
#[derive(ToSchema)]
pub struct HoldRefused {
    /// `out_of_stock` or `conflict`.
    pub error: String,
    pub message: String,
    /// With `out_of_stock`: the lines the outlet is short of.
    pub lines: Option<Vec<ShortLine>>,
    /// With `out_of_stock`: shops of the same city that could fill the whole cart; for a
    /// routed request, the outlets serving the PIN that could fill part of it (with `cost`
    /// and `lines`).
    pub alternatives: Option<Vec<Alternative>>,
    /// With `out_of_stock`: items like the short ones that the same outlet has enough of now
    /// (the same category and, where the names show one, the same pack size; up to 3 per
    /// short line, most available first), for a storefront's "try this one". Retired SKUs
    /// are never offered.
    pub similar: Option<Vec<SimilarItem>>,
}

/// An item the outlet has now in place of a short line's SKU.
#[derive(ToSchema)]
pub struct SimilarItem {
    /// The short line's SKU.
    pub for_sku: String,
    pub sku: String,
    pub name: String,
    /// At least the short line's `requested`.
    pub available: i64,
}

#[derive(ToSchema)]
pub struct ShortLine {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

#[derive(ToSchema)]
pub struct Alternative {
    pub outlet: String,
    pub can_serve: bool,
    /// Delivery cost (routed requests).
    pub cost: Option<i64>,
    /// What the outlet has of each line (routed requests).
    pub lines: Option<Vec<LineAvailability>>,
}

/// `POST /v1/movements/bulk` as JSON: each line as `POST /v1/movements` takes it. As CSV
/// (`Content-Type: text/csv`): a header `event_id,outlet,sku,kind,qty,at[,note][,to_outlet]`
/// and one movement per row.
#[derive(ToSchema)]
pub struct BulkBody {
    /// 1 to `movements.bulk_lines_max` (20,000 by default) lines, each `event_id` once.
    #[schema(min_items = 1, max_items = 20000)]
    pub lines: Vec<MovementBody>,
}

/// Every line's answer.
#[derive(ToSchema)]
pub struct BulkAnswer {
    pub lines: u64,
    pub applied: u64,
    pub replayed: u64,
    pub refused: u64,
    pub unavailable: u64,
    /// In the request's order.
    pub results: Vec<BulkLine>,
    /// Holds moved to another outlet because a line left them short.
    pub rerouted: Vec<serde_json::Value>,
    /// Holds left short that no outlet could take.
    pub at_risk: Vec<String>,
}

/// One line's answer.
#[derive(ToSchema)]
pub struct BulkLine {
    /// The CSV file's line (the header is line 1), or the position in `lines` from 1.
    pub line: u64,
    pub event_id: String,
    pub outlet: String,
    pub sku: String,
    /// `applied`; `replay` (applied before: the first answer); `refused` (`error` says why:
    /// `conflict`, `out_of_stock`, …; sending it again changes nothing); `unavailable` (not
    /// applied, or a transfer's receiving half is not: send the line again).
    #[schema(pattern = "^(applied|replay|refused|unavailable)$")]
    pub status: String,
    pub seq: Option<u64>,
    pub on_hand: Option<i64>,
    pub reserved: Option<i64>,
    pub available: Option<i64>,
    pub error: Option<String>,
    pub message: Option<String>,
    /// A transfer's receiving outlet and its counters there (or its `error`).
    pub to: Option<serde_json::Value>,
}

/// A bulk request refused whole: nothing was applied.
#[derive(ToSchema)]
pub struct BulkRefused {
    /// `validation_failed`.
    pub error: String,
    /// The first bad line and field, e.g. `line 14: qty`.
    pub field: String,
    pub message: String,
    pub error_count: u64,
    /// Up to 100 bad lines.
    pub errors: Vec<BulkLineError>,
}

#[derive(ToSchema)]
pub struct BulkLineError {
    pub line: u64,
    pub field: String,
    pub message: String,
}

/// A SKU of the catalogue as it is now.
#[derive(ToSchema)]
pub struct SkuDoc {
    pub sku: String,
    pub name: String,
    pub category: String,
    /// Days from making to expiry; null for goods that keep.
    pub shelf_life_days: Option<u32>,
    /// `active`, or `retired` (no new holds or receipts).
    #[schema(pattern = "^(active|retired)$")]
    pub status: String,
    /// 0 as the CSV has it; each edit is the next.
    #[schema(minimum = 0)]
    pub version: u64,
}

/// An outlet or kitchen of the catalogue.
#[derive(ToSchema)]
pub struct OutletInfo {
    pub id: String,
    pub name: String,
    pub city: String,
    #[schema(pattern = "^(outlet|kitchen)$")]
    pub kind: String,
    /// 0 as the CSV has it; each edit is the next.
    #[schema(minimum = 0)]
    pub version: u64,
}

/// One lot of a SKU at an outlet: units made together that expire together.
#[derive(ToSchema)]
pub struct StockLot {
    #[schema(example = "K-2026-12-06-A")]
    pub lot: String,
    #[schema(format = DateTime)]
    pub made_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Units of the lot on hand.
    pub qty: i64,
    /// Of them, units live holds hold.
    pub held: i64,
}

/// A lot's change in a ledger line or a movement's answer (times in ms since the epoch).
#[derive(ToSchema)]
pub struct LotChange {
    pub lot: String,
    pub made_at: i64,
    pub expires_at: i64,
    /// Units in (positive) or out (negative).
    pub d_qty: i64,
    /// Units held (positive) or let go (negative).
    pub d_held: i64,
}

/// One SKU's counters at an outlet.
#[derive(ToSchema)]
pub struct StockRow {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// `on_hand - reserved`.
    pub available: i64,
    /// The outlet's sequence number of the last change this value reflects.
    #[schema(minimum = 0)]
    pub seq: u64,
    /// Units of lots that expire within `catalogue.expiring_soon_mins` (4 h) from now.
    pub expiring_soon: i64,
    /// The SKU's lots, earliest expiry first; absent when it has none (loose units only).
    pub lots: Option<Vec<StockLot>>,
}

/// One SKU's counters at the named outlet.
#[derive(ToSchema)]
pub struct SkuStock {
    pub outlet: String,
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    #[schema(minimum = 0)]
    pub seq: u64,
    /// Units of lots that expire within `catalogue.expiring_soon_mins` (4 h) from now.
    pub expiring_soon: i64,
    /// The SKU's lots, earliest expiry first; absent when it has none (loose units only).
    pub lots: Option<Vec<StockLot>>,
}

#[derive(ToSchema)]
pub struct LineAvailability {
    pub sku: String,
    pub available: i64,
}

/// Whether an outlet can serve the whole cart now.
#[derive(ToSchema)]
pub struct Availability {
    pub outlet: String,
    pub can_serve: bool,
    /// Delivery cost, when asked by PIN.
    pub cost: Option<i64>,
    pub lines: Vec<LineAvailability>,
}

#[derive(ToSchema)]
pub struct CartLine {
    pub sku: String,
    #[schema(minimum = 1)]
    pub qty: i64,
}

/// A reservation as it is now.
#[derive(ToSchema)]
pub struct Reservation {
    pub id: String,
    pub outlet: String,
    /// `held`, `confirmed`, `cancelled`, `expired` or `rerouted` (with `rerouted_to`).
    #[schema(pattern = "^(held|confirmed|cancelled|expired|rerouted)$")]
    pub status: String,
    pub lines: Vec<CartLine>,
    /// RFC 3339 UTC.
    pub expires_at: String,
    #[schema(pattern = "^(web|whatsapp|counter)$")]
    pub channel: String,
    pub created_at: String,
    pub customer_ref: Option<String>,
    pub payment_ref: Option<String>,
    /// The reservation that carries the cart after a re-route.
    pub rerouted_to: Option<String>,
    /// A live hold its outlet cannot cover (a counter sale took its units) and no other
    /// outlet could take: only on `GET`, only when true.
    pub at_risk: Option<bool>,
}

/// The answer to a hold (a replay gets the first answer again).
#[derive(ToSchema)]
pub struct Held {
    pub id: String,
    pub outlet: String,
    /// `held`.
    pub status: String,
    pub lines: Vec<CartLine>,
    pub expires_at: String,
    pub channel: String,
    pub created_at: String,
    pub customer_ref: Option<String>,
    /// The outlet's seq of the hold.
    pub seq: u64,
    /// Routed holds: the PIN they were routed by.
    pub pin: Option<String>,
    /// Routed holds: the delivery cost from the outlet that holds them.
    pub delivery_cost: Option<i64>,
}

/// `409 conflict` or `410 reservation_expired` about a reservation.
#[derive(ToSchema)]
pub struct ReservationError {
    pub error: String,
    pub message: String,
    pub reservation: Option<Reservation>,
}

/// A movement, as a POS or a manager sends it (the MQTT payload is the same without
/// `outlet`).
#[derive(ToSchema)]
#[schema(as = MovementRequest)]
#[serde(deny_unknown_fields)]
pub struct MovementBody {
    /// The movement's idempotency key.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "pos-17-000123")]
    pub event_id: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "indore-vijay-nagar")]
    pub outlet: String,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "kaju-katli-1kg")]
    pub sku: String,
    #[schema(
        pattern = "^(sale_counter|receipt|wastage|return|adjustment|count|transfer)$",
        example = "sale_counter"
    )]
    pub kind: String,
    /// Positive (1 to `movements.qty_max`) but for `adjustment` (non-zero, signed) and
    /// `count` (the counted on-hand, 0 or more).
    #[schema(minimum = -100000, maximum = 100000, example = 1)]
    pub qty: i64,
    /// RFC 3339; late is fine up to `movements.at_age_max_secs` (3 days), at most
    /// `movements.at_ahead_max_secs` (5 minutes) ahead of the service's clock.
    #[schema(format = DateTime, example = "2025-08-09T09:42:00Z")]
    pub at: String,
    #[schema(max_length = 500)]
    pub note: Option<String>,
    /// Required for a `transfer`, refused otherwise.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub to_outlet: Option<String>,
    /// Units going out (`sale_counter`, `wastage`, `transfer`, a negative `adjustment`): the
    /// lot they come from (default: the lots good now, earliest expiry first, then loose
    /// units). Units coming in (`receipt`, `return`, a positive `adjustment`): the lot they
    /// go into (default for a `receipt` of a SKU with a shelf life, or with times given: a
    /// lot named by the `event_id`; otherwise the units are loose and never expire). Not
    /// for a `count`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "K-2026-12-06-A")]
    pub lot: Option<String>,
    /// Units coming in: when the lot was made (default `at`).
    #[schema(format = DateTime)]
    pub made_at: Option<String>,
    /// Units coming in: when the lot expires (default `made_at` plus the SKU's
    /// `shelf_life_days`; required when the SKU has none). Must be in the future.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// The receiving half of a transfer.
#[derive(ToSchema)]
pub struct TransferIn {
    pub outlet: String,
    pub seq: u64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
}

/// The outlet's counters after a movement, once it is durable in the ledger.
#[derive(ToSchema)]
pub struct MovementAnswer {
    pub seq: u64,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Units the movement left uncovered (`-available`), when it took `available` below 0.
    pub shortfall: Option<i64>,
    /// The lots the movement moved, and by how much (absent: loose units only).
    pub lots: Option<Vec<LotChange>>,
    /// A transfer's receiving outlet.
    pub to: Option<TransferIn>,
    /// With a shortfall: the holds this movement's pass moved to other outlets.
    pub rerouted: Option<Vec<Rerouted>>,
    /// With a shortfall: the ids of the holds no outlet could take.
    pub at_risk: Option<Vec<String>>,
}

/// A hold moved to another outlet after a counter sale left its outlet short.
#[derive(ToSchema)]
pub struct Rerouted {
    /// The old reservation (now `rerouted`).
    pub id: String,
    /// The reservation that carries the cart now.
    pub rerouted_to: String,
    pub to_outlet: String,
}

#[derive(ToSchema)]
pub struct LedgerLine {
    pub sku: String,
    pub d_on_hand: i64,
    pub d_reserved: i64,
    /// The line's lot changes (absent: none, as in documents from before lots).
    pub lots: Option<Vec<LotChange>>,
}

/// One ledger document (the stored milliseconds, with RFC 3339 copies).
#[derive(ToSchema)]
pub struct LedgerEntry {
    pub outlet: String,
    pub seq: i64,
    /// `reservation_held`, `reservation_released`, `sale_web`, `sale_counter`, `receipt`,
    /// `wastage`, `return`, `adjustment`, `count`, `transfer_out`, `transfer_in`, `expiry`
    /// (what was left of a lot at its `event_at`, written off by the outlet).
    pub kind: String,
    pub at_ms: i64,
    pub at: String,
    pub lines: Vec<LedgerLine>,
    pub reservation: Option<String>,
    pub event_id: Option<String>,
    pub qty: Option<i64>,
    pub event_at: Option<String>,
    pub expires_at: Option<String>,
    /// Who made the change: the label of the request's API key, or `expiry`, `reroute`,
    /// `mqtt`, `whatsapp`, `import`, `reconciler` (absent on documents older than it).
    pub by: Option<String>,
}

/// A page of an outlet's ledger in seq order.
#[derive(ToSchema)]
pub struct LedgerPage {
    pub outlet: String,
    pub entries: Vec<LedgerEntry>,
    /// `after_seq` of the next page; `null` on the last page.
    pub next_after_seq: Option<i64>,
}

/// One outlet's ledger lag.
#[derive(ToSchema)]
pub struct OutletLag {
    pub outlet: String,
    /// Changes committed in Redis and not yet durable in the ledger.
    pub entries: u64,
    /// Age of the oldest of them, in seconds (0 when there is none).
    pub age_secs: f64,
    /// Past the budget: new holds at this outlet are refused (`503`, `Retry-After`).
    pub shedding_holds: bool,
}

/// The ledger lag of every outlet and the budget new holds are admitted under
/// (`ledger.lag_max_secs`).
#[derive(ToSchema)]
pub struct LedgerLag {
    pub budget_secs: u64,
    pub outlets: Vec<OutletLag>,
}

#[derive(ToSchema)]
pub struct ZoneOutlet {
    pub outlet: String,
    /// Delivery cost in whole rupees.
    pub cost: i64,
}

/// A PIN's outlets, cheapest first, and the version of that list (0: from the CSV).
#[derive(ToSchema)]
pub struct Zone {
    pub pin: String,
    pub version: u64,
    pub outlets: Vec<ZoneOutlet>,
}

/// `/readyz`: without a key only `status`; with a key that may read metrics, each
/// dependency's state and this process's outlets too.
#[derive(ToSchema)]
pub struct Readiness {
    /// `ready` when everything is reachable, else `unavailable`.
    pub status: String,
    /// `ok`, or `down: <why>` (with a key).
    pub redis: Option<String>,
    pub mongo: Option<String>,
    pub mqtt: Option<String>,
    /// This process's `cluster.node_id` (with a key).
    pub node: Option<String>,
    /// The outlets this process owns now (through their leases), sorted (with a key).
    pub owns: Option<Vec<String>>,
    /// `unavailable` when something is not.
    pub error: Option<String>,
    pub message: Option<String>,
}

#[derive(ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// What was wasted of one lot on the day.
#[derive(ToSchema)]
pub struct LotLoss {
    pub lot: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Written off by hand.
    pub wasted: i64,
    /// Written off at its expiry.
    pub expired: i64,
}

/// One SKU's day: `opening + received + returned - transferred_out - sold - wasted - expired +
/// adjusted = left`. Values in paise at the configured price (absent without one).
#[derive(ToSchema)]
pub struct EndOfDayRow {
    pub sku: String,
    pub name: String,
    pub opening: i64,
    /// Receipts and transfers in.
    pub received: i64,
    pub returned: i64,
    pub transferred_out: i64,
    /// Counter and web sales.
    pub sold: i64,
    pub wasted: i64,
    pub expired: i64,
    /// Net of adjustments and counts.
    pub adjusted: i64,
    pub left: i64,
    pub price_paise: Option<i64>,
    pub sold_value_paise: Option<i64>,
    pub waste_value_paise: Option<i64>,
    pub left_value_paise: Option<i64>,
    pub lots: Vec<LotLoss>,
}

/// The outlet's totals (values count only priced SKUs).
#[derive(ToSchema)]
pub struct EndOfDayTotals {
    pub sold: i64,
    pub wasted: i64,
    pub expired: i64,
    pub left: i64,
    pub sold_value_paise: i64,
    pub waste_value_paise: i64,
    pub left_value_paise: i64,
}

/// An outlet's end of day.
#[derive(ToSchema)]
pub struct EndOfDay {
    pub outlet: String,
    #[schema(example = "2026-12-06")]
    pub date: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// False while the day runs: `left` is then what is left now.
    pub complete: bool,
    pub rows: Vec<EndOfDayRow>,
    pub totals: EndOfDayTotals,
    /// SKUs of the report with no price.
    pub unpriced: Vec<String>,
}

/// A sell-out or low-stock alert (README, Alerts).
#[derive(ToSchema)]
pub struct AlertBody {
    /// `{outlet}:{sku}:{kind}:{raised at, ms}`: one crossing; its clearing carries the same id.
    pub id: String,
    /// `raised` or `cleared` (the list holds raised ones only).
    #[schema(example = "raised")]
    pub state: String,
    /// `sell_out` (the forecast has the free units gone within `horizon_mins`) or `low_stock`
    /// (free units at or below `low_stock`).
    #[schema(example = "sell_out")]
    pub kind: String,
    pub outlet: String,
    pub sku: String,
    /// Free units (on hand less held) when judged.
    pub available: i64,
    /// When the forecast has the free units gone (sell_out).
    #[schema(format = DateTime)]
    pub sell_out_at: Option<String>,
    pub low_stock: i64,
    pub horizon_mins: u32,
    #[schema(format = DateTime)]
    pub raised_at: String,
    /// When this state was judged.
    #[schema(format = DateTime)]
    pub at: String,
}

/// The alerts raised now.
#[derive(ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertBody>,
}

/// The head cook's number for one shop and SKU.
#[derive(ToSchema)]
pub struct CookNumberBody {
    /// Units (0 to 1,000,000); `null` clears it.
    pub qty: Option<i64>,
    /// When it was entered (answers only).
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// The label of the key that entered it (answers only).
    pub by: Option<String>,
}

/// One shop and SKU of the kitchen plan.
#[derive(ToSchema)]
pub struct KitchenPlanRow {
    pub outlet: String,
    pub sku: String,
    pub name: String,
    /// Units the forecast sells in the window.
    pub expected: f64,
    /// Free units that sell before their lot expires.
    pub sellable: f64,
    /// Free units of lots that expire before they sell.
    pub will_expire: f64,
    /// Units live holds have.
    pub held: i64,
    pub on_hand: i64,
    pub safety: i64,
    /// max(0, ceil(expected - sellable - held + safety)).
    pub suggested: i64,
    pub cook: Option<CookNumberBody>,
}

/// What to send each shop for the next window.
#[derive(ToSchema)]
pub struct KitchenPlan {
    #[schema(format = DateTime)]
    pub at: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    pub window_hours: u32,
    pub rows: Vec<KitchenPlanRow>,
    pub suggested_total: i64,
    pub cook_total: i64,
}

/// An outlet's POS link: the last POS message this process received.
#[derive(ToSchema)]
pub struct PosLinkBody {
    #[schema(format = DateTime)]
    pub last_seen: String,
    pub silent_secs: f64,
    /// How long after the sale's own time (the till's clock) it arrived.
    pub lag_ms: i64,
}

/// One outlet on the war-room screen.
#[derive(ToSchema)]
pub struct WarRoomOutlet {
    pub outlet: String,
    pub name: String,
    /// None: no POS message received since this process started.
    pub pos: Option<PosLinkBody>,
    /// Units sold per minute over the last 30, oldest first (the last is the minute now).
    pub sales_per_min: Vec<i64>,
    /// Changes committed and not yet in the ledger, and the age of the oldest.
    pub ledger_entries: u64,
    pub ledger_age_secs: f64,
    /// SKUs drifted at the reconciler's last pass.
    pub drift_skus: i64,
    pub at_risk_holds: i64,
    /// Alerts raised now.
    pub alerts: u64,
}

/// The war-room screen's figures.
#[derive(ToSchema)]
pub struct WarRoomBody {
    #[schema(format = DateTime)]
    pub at: String,
    pub ledger_budget_secs: u64,
    pub outlets: Vec<WarRoomOutlet>,
    /// Raised sell-out alerts, the soonest first.
    pub sell_out: Vec<AlertBody>,
    pub low_stock: Vec<AlertBody>,
}
