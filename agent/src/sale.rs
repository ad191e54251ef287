//! A sale voucher as the till's webhook sends it, validated once here, and the shelfsync
//! movements it becomes: one per line, each with an event id that depends only on the
//! outlet, the voucher and the line's place, so every retry and every resend of a line
//! names the same event and shelfsync applies it once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shelfsync::domain::{rfc3339_ms, Invalid, MovementKind, OutletId, Sku};
use shelfsync::movements::MovementRequest;

pub const VOUCHER_CHARS_MAX: usize = 128;
pub const LINES_MAX: usize = 50;
pub const QTY_MAX: i64 = 10_000;
/// Hex characters of the voucher digest in an event id: 128 bits, so two vouchers of an
/// outlet never share one, and `v` + 32 + `-` + the line index stays within shelfsync's 64.
const EVENT_ID_HEX_LEN: usize = 32;
/// shelfsync counts a note's bytes (`movements.note_len_max`); well inside its bound.
const NOTE_BYTES_MAX: usize = 200;

/// The webhook body, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaleRequest {
    voucher: String,
    at: Option<String>,
    kind: Option<String>,
    lines: Vec<LineRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRequest {
    sku: String,
    qty: i64,
}

/// The movement kinds a till's voucher may stand for: a counter sale (the default) or a
/// return.
fn parse_kind(value: Option<&str>) -> Result<MovementKind, Invalid> {
    let kind = value.map_or(Ok(MovementKind::SaleCounter), |v| {
        MovementKind::parse("kind", v)
    });
    match kind {
        Ok(k @ (MovementKind::SaleCounter | MovementKind::Return)) => Ok(k),
        _ => Err(Invalid::new("kind", "must be sale_counter or return")),
    }
}

/// What one unit of a voucher's kind does to on_hand once shelfsync applies it.
fn on_hand_sign(kind: MovementKind) -> i64 {
    if kind == MovementKind::Return {
        1
    } else {
        -1
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: Sku,
    pub qty: i64,
}

/// A valid voucher. `at` is `None` when the till gave none: the time it is recorded is
/// used then, and a retry without `at` is still the same voucher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    pub voucher: String,
    pub at: Option<DateTime<Utc>>,
    pub kind: MovementKind,
    pub lines: Vec<Line>,
}

impl Sale {
    /// Parses and validates a webhook body; what is wrong names its field (`body` when it is
    /// not JSON at all), as the service's own bodies do.
    pub fn from_json(body: &[u8]) -> Result<Self, Invalid> {
        Self::parse(shelfsync::wire::parse_json(body)?)
    }

    fn parse(r: SaleRequest) -> Result<Self, Invalid> {
        let chars = r.voucher.chars().count();
        if !(1..=VOUCHER_CHARS_MAX).contains(&chars) {
            return Err(Invalid::new(
                "voucher",
                format!("must be 1 to {VOUCHER_CHARS_MAX} characters"),
            ));
        }
        let at =
            r.at.map(|at| {
                DateTime::parse_from_rfc3339(&at)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        Invalid::new("at", "must be an RFC 3339 time, e.g. 2026-01-09T09:42:00Z")
                    })
            })
            .transpose()?;
        let kind = parse_kind(r.kind.as_deref())?;
        if !(1..=LINES_MAX).contains(&r.lines.len()) {
            return Err(Invalid::new(
                "lines",
                format!("must hold 1 to {LINES_MAX} lines"),
            ));
        }
        let lines = (r.lines.into_iter().enumerate())
            .map(|(i, line)| {
                let sku = Sku::parse(&format!("lines[{i}].sku"), &line.sku)?;
                if !(1..=QTY_MAX).contains(&line.qty) {
                    return Err(Invalid::new(
                        format!("lines[{i}].qty"),
                        format!("must be 1 to {QTY_MAX}"),
                    ));
                }
                Ok(Line { sku, qty: line.qty })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            voucher: r.voucher,
            at,
            kind,
            lines,
        })
    }

    /// The sha256 (hex) of the sale in one canonical form: what a retry must repeat to be
    /// the same voucher. Times count by their instant, not their spelling.
    pub fn digest(&self) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            voucher: &'a str,
            at: Option<String>,
            kind: &'a str,
            lines: Vec<(&'a str, i64)>,
        }
        let canonical = Canonical {
            voucher: &self.voucher,
            at: self.at.map(rfc3339),
            kind: self.kind.as_str(),
            lines: (self.lines.iter())
                .map(|l| (l.sku.as_str(), l.qty))
                .collect(),
        };
        let text = serde_json::to_string(&canonical).expect("a sale serializes");
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The event id of each line, in line order.
    pub fn event_ids(&self, outlet: &OutletId) -> Vec<String> {
        let hash = hex::encode(Sha256::digest(
            format!("{outlet}\n{}", self.voucher).as_bytes(),
        ));
        let stem = &hash[..EVENT_ID_HEX_LEN];
        (0..self.lines.len())
            .map(|i| format!("v{stem}-{i}"))
            .collect()
    }

    /// What the store keeps for this sale when it is new: its digest and one shelfsync
    /// movement per line, dated `at` or else `now`.
    pub fn entry(&self, outlet: &OutletId, now: DateTime<Utc>) -> Entry {
        let at = rfc3339(self.at.unwrap_or(now));
        let note = note(&self.voucher);
        let events = (self.event_ids(outlet).into_iter())
            .zip(&self.lines)
            .map(|(event_id, line)| {
                // The POS message: the `/v1/movements` body without `outlet` (the topic names
                // it; the HTTP link adds it).
                let payload = serde_json::to_string(&MovementRequest {
                    event_id: event_id.clone(),
                    outlet: None,
                    sku: line.sku.as_str().to_owned(),
                    kind: self.kind.as_str().to_owned(),
                    qty: line.qty,
                    at: at.clone(),
                    note: Some(note.clone()),
                    to_outlet: None,
                    lot: None,
                    made_at: None,
                    expires_at: None,
                })
                .expect("a movement serializes");
                NewEvent {
                    d_on_hand: on_hand_sign(self.kind) * line.qty,
                    sku: line.sku.as_str().to_owned(),
                    event_id,
                    payload,
                }
            })
            .collect();
        Entry {
            voucher: self.voucher.clone(),
            digest: self.digest(),
            events,
        }
    }
}

/// A sale as the store keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub voucher: String,
    pub digest: String,
    pub events: Vec<NewEvent>,
}

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    /// What applying it does to the SKU's on_hand (a sale takes, a return gives back).
    pub d_on_hand: i64,
    pub sku: String,
    /// The exact movement JSON that is published, and published again, for this line.
    pub payload: String,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    rfc3339_ms(t.timestamp_millis())
}

/// `voucher …`, cut on a character boundary to at most `NOTE_BYTES_MAX` bytes.
fn note(voucher: &str) -> String {
    let full = format!("voucher {voucher}");
    let cut = (0..=NOTE_BYTES_MAX.min(full.len()))
        .rev()
        .find(|&i| full.is_char_boundary(i))
        .unwrap_or(0);
    full[..cut].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn outlet() -> OutletId {
        OutletId::parse("outlet", "indore-vijay-nagar").unwrap()
    }

    fn parse(body: Value) -> Result<Sale, Invalid> {
        Sale::from_json(body.to_string().as_bytes())
    }

    fn field_of(body: Value) -> String {
        parse(body).expect_err("refused").field
    }

    #[test]
    fn a_full_voucher_parses_with_its_defaults() {
        let sale = parse(
            json!({"voucher": "INV/2026/0042", "lines": [{"sku": "kaju-katli-1kg", "qty": 2}]}),
        )
        .unwrap();
        assert_eq!(sale.kind, MovementKind::SaleCounter);
        assert_eq!(sale.at, None);
        assert_eq!(sale.lines[0].qty, 2);
    }

    #[test]
    fn each_rule_names_its_field() {
        let line = json!({"sku": "a", "qty": 1});
        assert_eq!(field_of(json!({"voucher": "", "lines": [line]})), "voucher");
        let long: String = "ग".repeat(129);
        assert_eq!(
            field_of(json!({"voucher": long, "lines": [line]})),
            "voucher"
        );
        let ok: String = "ग".repeat(128);
        assert!(parse(json!({"voucher": ok, "lines": [line]})).is_ok());
        assert_eq!(field_of(json!({"voucher": "v", "lines": []})), "lines");
        let many: Vec<Value> = (0..51).map(|_| line.clone()).collect();
        assert_eq!(field_of(json!({"voucher": "v", "lines": many})), "lines");
        let bad_sku = json!({"voucher": "v", "lines": [line, {"sku": "a b", "qty": 1}]});
        assert_eq!(field_of(bad_sku), "lines[1].sku");
        let zero = json!({"voucher": "v", "lines": [{"sku": "a", "qty": 0}]});
        assert_eq!(field_of(zero), "lines[0].qty");
        let big = json!({"voucher": "v", "lines": [{"sku": "a", "qty": 10_001}]});
        assert_eq!(field_of(big), "lines[0].qty");
        let at = json!({"voucher": "v", "at": "yesterday", "lines": [line]});
        assert_eq!(field_of(at), "at");
        let kind = json!({"voucher": "v", "kind": "wastage", "lines": [line]});
        assert_eq!(field_of(kind), "kind");
        let extra = json!({"voucher": "v", "lines": [line], "till": 3});
        assert_eq!(field_of(extra), "till", "the unknown field is named");
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_as_the_body() {
        let cut = Sale::from_json(b"{\"voucher\": \"v\", \"li").unwrap_err();
        assert_eq!(cut.field, "body");
        assert_eq!(Sale::from_json(b"").unwrap_err().field, "body");
    }

    #[test]
    fn event_ids_fit_shelfsyncs_id_rule_whatever_the_voucher_holds() {
        let voucher: String = "INV/२०२६/ 'x'\n".repeat(9);
        let lines: Vec<Value> = (0..50).map(|_| json!({"sku": "a", "qty": 1})).collect();
        let sale = parse(json!({"voucher": voucher, "lines": lines})).unwrap();
        let ids = sale.event_ids(&outlet());
        assert_eq!(ids.len(), 50);
        for (i, id) in ids.iter().enumerate() {
            assert!(shelfsync::domain::EventId::parse("id", id).is_ok(), "{id}");
            assert!(
                id.starts_with('v') && id.ends_with(&format!("-{i}")),
                "{id}"
            );
            assert_eq!(id.len(), 1 + 32 + 1 + i.to_string().len());
        }
        let other = OutletId::parse("outlet", "indore-palasia").unwrap();
        assert_ne!(sale.event_ids(&other)[0], ids[0], "ids are per outlet");
    }

    #[test]
    fn the_digest_sees_content_not_spelling() {
        let a = parse(
            json!({"voucher": "v", "at": "2026-01-09T10:00:00+05:30", "lines": [{"sku": "a", "qty": 1}]}),
        );
        let b = parse(
            json!({"lines": [{"qty": 1, "sku": "a"}], "at": "2026-01-09T04:30:00.000Z", "voucher": "v"}),
        );
        assert_eq!(a.unwrap().digest(), b.unwrap().digest());
        let without_at = parse(json!({"voucher": "v", "lines": [{"sku": "a", "qty": 1}]})).unwrap();
        let more = parse(json!({"voucher": "v", "lines": [{"sku": "a", "qty": 2}]})).unwrap();
        assert_ne!(without_at.digest(), more.digest());
    }

    #[test]
    fn each_line_becomes_a_shelfsync_movement() {
        let sale = parse(
            json!({"voucher": "INV/1", "kind": "return", "at": "2026-01-09T04:30:00Z",
            "lines": [{"sku": "a", "qty": 3}]}),
        )
        .unwrap();
        let entry = sale.entry(&outlet(), Utc::now());
        let event = &entry.events[0];
        let payload: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(
            payload,
            json!({"event_id": event.event_id, "sku": "a", "kind": "return", "qty": 3,
                "at": "2026-01-09T04:30:00.000Z", "note": "voucher INV/1"})
        );
        assert_eq!(event.d_on_hand, 3);
    }

    #[test]
    fn the_note_is_cut_to_200_bytes_on_a_character_boundary() {
        let sale =
            parse(json!({"voucher": "ग".repeat(128), "lines": [{"sku": "a", "qty": 1}]})).unwrap();
        let entry = sale.entry(&outlet(), Utc::now());
        let payload: Value = serde_json::from_str(&entry.events[0].payload).unwrap();
        let note = payload["note"].as_str().unwrap();
        assert!(note.len() <= 200 && note.len() > 195, "{}", note.len());
        assert!(note.starts_with("voucher ग"));
    }
}
