//! JSON as both edges speak it: a body parsed with the field that is wrong named (HTTP
//! bodies, WebSocket messages, POS payloads), and a reservation as API.md shows it (HTTP
//! answers, the WebSocket and MQTT order feeds).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::{rfc3339_ms, Invalid};
use crate::store::ResRecord;

/// What became of a POS message with an `event_id`, published on `acks/{outlet}` once its
/// fate is durable: `{"event_id", "result": "applied", "seq"}` or `{"event_id", "result":
/// "rejected", "code", "reason"}`. The outlet agent reads it with this same type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosAck {
    pub event_id: String,
    #[serde(flatten)]
    pub fate: PosFate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PosFate {
    /// In the ledger at the outlet's `seq`, so that a POS that also reads stock knows whether
    /// a stock value already holds it (a duplicate is acked with the first answer's seq).
    Applied { seq: u64 },
    /// Refused for good, with the error code and why.
    Rejected { code: String, reason: String },
}

/// Parses `body` as `T`; the error names the field (`lines[0].qty`, or `body`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Invalid> {
    if body.is_empty() {
        return Err(Invalid::new("body", "a JSON body is required"));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // "missing field `qty`" names the field below the path.
        let field = match message.split('`').nth(1) {
            // Not JSON (cut short, a syntax error): the body, wherever the parser stopped.
            _ if !inner.is_data() => "body".to_owned(),
            Some(name) if message.starts_with("missing field") => {
                if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                }
            }
            _ if path == "." => "body".to_owned(),
            _ => path,
        };
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        Invalid::new(field, message)
    })
}

/// A reservation as it is now (API.md, Reservations).
pub fn reservation_json(r: &ResRecord) -> Value {
    let mut v = json!({
        "id": r.id, "outlet": r.id.outlet(), "status": r.status, "lines": r.lines,
        "expires_at": rfc3339_ms(r.expires_at), "channel": r.channel,
        "created_at": rfc3339_ms(r.created_at),
    });
    if let Some(c) = &r.customer_ref {
        v["customer_ref"] = json!(c);
    }
    if let Some(p) = &r.payment_ref {
        v["payment_ref"] = json!(p);
    }
    if let Some(to) = &r.rerouted_to {
        v["rerouted_to"] = json!(to);
    }
    v
}

/// The body with `\r\n` and lone `\r` line ends made `\n`, so that the reader's line numbers
/// are the file's (with `\r\n` it counts a record's `\n` only after the next record began).
pub fn unix_lines(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !body.contains(&b'\r') {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter().peekable();
    while let Some(&b) = bytes.next() {
        if b == b'\r' {
            if bytes.peek() == Some(&&b'\n') {
                bytes.next();
            }
            out.push(b'\n');
        } else {
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_become_unix_ones() {
        assert_eq!(&*unix_lines(b"a,b\r\nc\rd\ne"), b"a,b\nc\nd\ne");
        assert!(matches!(unix_lines(b"a\nb"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_as_the_body_wherever_it_breaks() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            a: i64,
        }
        for body in [&b"{\"a\": 1, \"b"[..], b"{\"a\": }", b"not json"] {
            assert_eq!(parse_json::<T>(body).unwrap_err().field, "body", "{body:?}");
        }
        assert_eq!(parse_json::<T>(b"{\"a\": \"x\"}").unwrap_err().field, "a");
    }

    #[test]
    fn a_pos_ack_is_the_json_a_pos_reads() {
        let applied = PosAck {
            event_id: "e-1".into(),
            fate: PosFate::Applied { seq: 7 },
        };
        let text = serde_json::to_value(&applied).unwrap();
        assert_eq!(
            text,
            json!({"event_id": "e-1", "result": "applied", "seq": 7})
        );
        let rejected: PosAck = serde_json::from_value(json!({"event_id": "e-2",
            "result": "rejected", "code": "validation_failed", "reason": "sku: unknown"}))
        .unwrap();
        assert_eq!(
            rejected.fate,
            PosFate::Rejected {
                code: "validation_failed".into(),
                reason: "sku: unknown".into()
            }
        );
    }
}
