//! `POST /v1/movements/bulk`: many movements in one request, JSON or CSV (bulk.rs applies
//! them). Every line is checked before any is applied: one bad line refuses the request whole,
//! with every bad line named (its line number), and nothing changes.

use std::collections::HashMap;

use actix_web::http::header::CONTENT_TYPE;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Action, Caller};
use super::context::{read_limited, AppState};
use super::error::ApiError;
use crate::bulk::{self, LineAnswer};
use crate::domain::{Invalid, Movement};
use crate::movements::MovementRequest;

/// The most bad lines one refusal lists (`errors`); `error_count` has them all.
const ERRORS_LISTED_MAX: usize = 100;
/// The columns of a CSV upload; the last two may be left out.
const CSV_COLUMNS: [&str; 8] = [
    "event_id",
    "outlet",
    "sku",
    "kind",
    "qty",
    "at",
    "note",
    "to_outlet",
];
const CSV_OPTIONAL: [&str; 2] = ["note", "to_outlet"];

/// One bad line: its number (the CSV file's line, the header being line 1; for JSON, the
/// position in `lines` from 1), the field and why.
struct LineError {
    line: usize,
    field: String,
    message: String,
}

/// A line as read, with its number: a movement to check, or why it could not be read.
type RawLine = (usize, Result<MovementRequest, LineError>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    /// Check every line (and the key's rights) and apply nothing.
    #[serde(default)]
    dry_run: bool,
}

/// `{"lines": [...]}`, read as at most `.0` lines.
struct BodySeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object {\"lines\": [movement, …]}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<Value>, A::Error> {
        let mut lines = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "lines" || lines.is_some() {
                return Err(serde::de::Error::custom(format!(
                    "unexpected field '{key}': the body is {{\"lines\": [movement, …]}}"
                )));
            }
            lines = Some(map.next_value_seed(LinesSeed(self.0))?);
        }
        lines.ok_or_else(|| serde::de::Error::missing_field("lines"))
    }
}

/// The `lines` array, read up to `.0` elements; the rest is skipped unread.
struct LinesSeed(usize);

impl<'de> serde::de::DeserializeSeed<'de> for LinesSeed {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for LinesSeed {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of movements")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut out = Vec::new();
        while out.len() < self.0 {
            match seq.next_element::<Value>()? {
                Some(v) => out.push(v),
                None => return Ok(out),
            }
        }
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// Many movements at once: a whole outlet's count, a dispatch from the kitchen to many
/// outlets as transfers (API.md, Movements; README, Bulk movements). The body is JSON
/// `{"lines": [movement, …]}` (each as `POST /v1/movements` takes it) or CSV
/// (`Content-Type: text/csv`) with the header `event_id,outlet,sku,kind,qty,at[,note][,to_outlet]`.
/// Every line is checked first: one bad line is `422` with every bad line's number and
/// nothing is applied. Then each line is applied on its own, idempotent by its `event_id`,
/// and answered on its own (`results`): `applied`, `replay` (the same line was applied
/// before: its first answer), `refused` (a conflict, a transfer of held units) or
/// `unavailable` (not applied: send it again).
#[utoipa::path(post, path = "/v1/movements/bulk", tag = "movements", operation_id = "bulk_movements",
    security(("api_key" = [])),
    params(("dry_run" = Option<bool>, Query, description = "Check every line and the key's rights, apply nothing: `200 {\"lines\": n, \"dry_run\": true}` or the `422` a real upload would get")),
    request_body(content = super::openapi::BulkBody, description = "JSON, or CSV with `Content-Type: text/csv`"),
    responses(
        (status = 200, description = "Every line's answer, in the request's order", body = super::openapi::BulkAnswer),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key may not record a line's kind at its outlet; nothing applied", body = super::openapi::Error),
        (status = 413, description = "Body over `movements.bulk_bytes_max`", body = super::openapi::Error),
        (status = 415, description = "Neither JSON nor CSV", body = super::openapi::Error),
        (status = 422, description = "Bad lines (each named with its number in `errors`), or more than `movements.bulk_lines_max`; nothing applied", body = super::openapi::BulkRefused),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
    ))]
pub async fn create(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<BulkQuery>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let limits = &state.settings.movements;
    let csv = match content_type(&req) {
        "" | "application/json" => false,
        "text/csv" => true,
        other => {
            return Ok(HttpResponse::UnsupportedMediaType().json(json!({
                "error": "unsupported_media_type",
                "message": format!("'{other}': send application/json or text/csv"),
            })))
        }
    };
    let body = read_limited(
        &req,
        payload,
        limits.bulk_bytes_max,
        state.settings.http.body_read_secs,
    )
    .await?;
    // Reading stops at one line past the bound: a body of millions of tiny lines is refused
    // without being held as millions of values.
    let max = limits.bulk_lines_max;
    let raw = if csv {
        read_csv(&body, max)
    } else {
        read_json(&body, max)
    }?;
    if raw.len() > max {
        return Err(Invalid::new(
            "lines",
            format!("more than {max} lines (movements.bulk_lines_max); split the upload"),
        )
        .into());
    }
    if raw.is_empty() {
        return Err(Invalid::new("lines", "there are no lines").into());
    }
    let (numbers, movements) = check(&state, raw)?;
    for m in &movements {
        caller.require(Action::Move(m.kind), Some(&m.outlet))?;
    }
    if query.dry_run {
        return Ok(HttpResponse::Ok().json(json!({"lines": movements.len(), "dry_run": true})));
    }
    let report = bulk::apply(&state, &movements, caller.by()).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let results: Vec<Value> = (report.lines.iter())
        .map(|a| {
            let (status, body) = line_json(a, numbers[a.index], &movements[a.index]);
            *counts.entry(status).or_default() += 1;
            body
        })
        .collect();
    let count = |s: &str| counts.get(s).copied().unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({
        "lines": results.len(),
        "applied": count("applied"),
        "replayed": count("replay"),
        "refused": count("refused"),
        "unavailable": count("unavailable"),
        "results": results,
        "rerouted": report.relief.rerouted,
        "at_risk": report.relief.at_risk,
    })))
}

fn content_type(req: &HttpRequest) -> &str {
    (req.headers().get(CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .map_or("", |v| v.split(';').next().unwrap_or("").trim())
}

/// A JSON body's lines (at most `max + 1` of them), each with its number (its position
/// from 1).
fn read_json(body: &[u8], max: usize) -> Result<Vec<RawLine>, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let lines = serde::de::DeserializeSeed::deserialize(BodySeed(max + 1), &mut de)
        .and_then(|lines| de.end().map(|()| lines))
        .map_err(|e| Invalid::new("body", e.to_string()))?;
    Ok((lines.into_iter().enumerate())
        .map(|(i, v)| {
            let line = i + 1;
            let request = serde_json::from_value::<MovementRequest>(v).map_err(|e| LineError {
                line,
                field: "line".into(),
                message: e.to_string(),
            });
            (line, request)
        })
        .collect())
}

/// A CSV body's rows (at most `max + 1` of them), each with its line in the file. A header
/// that misses a column, or names one this does not know, refuses the whole body.
fn read_csv(body: &[u8], max: usize) -> Result<Vec<RawLine>, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let body = crate::wire::unix_lines(body);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(&body[..]);
    let headers = reader
        .headers()
        .map_err(|e| Invalid::new("line 1", format!("not a CSV header: {e}")))?
        .clone();
    for h in &headers {
        if !CSV_COLUMNS.contains(&h) {
            return Err(Invalid::new(
                "line 1",
                format!(
                    "unknown column '{h}'; the columns are {}",
                    CSV_COLUMNS.join(",")
                ),
            )
            .into());
        }
    }
    for c in CSV_COLUMNS.iter().filter(|c| !CSV_OPTIONAL.contains(c)) {
        if !headers.iter().any(|h| h == *c) {
            return Err(Invalid::new("line 1", format!("the header has no column '{c}'")).into());
        }
    }
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    while rows.len() <= max {
        let line = reader.position().line() as usize;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line() as usize);
                let request = record
                    .deserialize::<MovementRequest>(Some(&headers))
                    .map_err(|e| LineError {
                        line,
                        field: csv_field(&e, &headers),
                        message: csv_message(&e),
                    });
                rows.push((line, request));
            }
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line() as usize);
                rows.push((
                    line,
                    Err(LineError {
                        line,
                        field: "line".into(),
                        message: csv_message(&e),
                    }),
                ));
                // A broken row (wrong field count, bad UTF-8) leaves the reader at the next.
            }
        }
    }
    Ok(rows)
}

/// The column a CSV deserialization error is about, when it says.
fn csv_field(e: &csv::Error, headers: &csv::StringRecord) -> String {
    if let csv::ErrorKind::Deserialize { err, .. } = e.kind() {
        if let Some(h) = err.field().and_then(|i| headers.get(i as usize)) {
            return h.to_owned();
        }
    }
    "line".into()
}

fn csv_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => err.kind().to_string(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("{len} fields where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8".into(),
        _ => e.to_string(),
    }
}

/// Every line checked as `POST /v1/movements` checks one, and no `event_id` twice: the line
/// numbers and the movements, or `422` listing the bad lines.
fn check(state: &AppState, raw: Vec<RawLine>) -> Result<(Vec<usize>, Vec<Movement>), ApiError> {
    let catalogue = state.catalogue.now();
    let limits = &state.settings.movements;
    let mut errors = Vec::new();
    let mut error_count = 0usize;
    let mut numbers = Vec::with_capacity(raw.len());
    let mut movements = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, request) in raw {
        let parsed = request.and_then(|r| {
            let id = r.event_id.clone();
            let m = r.parse(&catalogue, limits).map_err(|e| LineError {
                line,
                field: e.field,
                message: e.message,
            })?;
            if let Some(first) = seen.insert(id, line) {
                return Err(LineError {
                    line,
                    field: "event_id".into(),
                    message: format!("repeats line {first}'s; each line needs its own"),
                });
            }
            Ok(m)
        });
        match parsed {
            Ok(m) => {
                numbers.push(line);
                movements.push(m);
            }
            Err(e) => {
                error_count += 1;
                if errors.len() < ERRORS_LISTED_MAX {
                    errors.push(e);
                }
            }
        }
    }
    // The receiving halves are applied after every outlet's own lines (bulk.rs): a transfer
    // into an outlet with lines of its own here would apply in another order than sent.
    let senders: std::collections::HashSet<&crate::domain::OutletId> =
        movements.iter().map(|m| &m.outlet).collect();
    for (m, &line) in movements.iter().zip(&numbers) {
        if let Some(to) = m.to_outlet.as_ref().filter(|to| senders.contains(to)) {
            error_count += 1;
            if errors.len() < ERRORS_LISTED_MAX {
                errors.push(LineError {
                    line,
                    field: "to_outlet".into(),
                    message: format!(
                        "moves stock into {to}, which has lines of its own in this upload; \
                         send those in another request"
                    ),
                });
            }
        }
    }
    if errors.is_empty() {
        return Ok((numbers, movements));
    }
    errors.sort_by_key(|e| e.line);
    let first = &errors[0];
    let listed: Vec<Value> = (errors.iter().take(ERRORS_LISTED_MAX))
        .map(|e| json!({"line": e.line, "field": e.field, "message": e.message}))
        .collect();
    Err(ApiError::BulkRefused(json!({
        "error": "validation_failed",
        "field": format!("line {}: {}", first.line, first.field),
        "message": format!(
            "line {}: {} {}; {} bad line(s), nothing was applied",
            first.line, first.field, first.message, error_count
        ),
        "error_count": error_count,
        "errors": listed,
    })))
}

/// One line's answer: its status and its body.
fn line_json(a: &LineAnswer, line: usize, m: &Movement) -> (&'static str, Value) {
    let mut body = json!({"line": line, "event_id": m.event_id.as_str(),
        "outlet": m.outlet, "sku": m.sku});
    let status = match &a.outcome {
        Ok((r, fresh)) => {
            body["seq"] = r.seq.into();
            body["on_hand"] = r.on_hand.into();
            body["reserved"] = r.reserved.into();
            body["available"] = r.available.into();
            if let Some(s) = r.shortfall {
                body["shortfall"] = s.into();
            }
            if *fresh {
                "applied"
            } else {
                "replay"
            }
        }
        Err(e) => {
            body["error"] = e.code().into();
            body["message"] = e.to_string().into();
            match e {
                crate::error::Error::Unavailable(_) | crate::error::Error::Overloaded { .. } => {
                    "unavailable"
                }
                _ => "refused",
            }
        }
    };
    let mut status = status;
    if let Some((to, r)) = &a.to {
        body["to"] = match r {
            Ok(r) => json!({"outlet": to, "seq": r.seq, "on_hand": r.on_hand,
                "reserved": r.reserved, "available": r.available}),
            Err(e) => {
                // The sending half stands; the line is not done until the receiving half is,
                // which sending the line again completes.
                status = "unavailable";
                json!({"outlet": to, "error": e.code(), "message": e.to_string()})
            }
        };
    }
    body["status"] = status.into();
    (status, body)
}
