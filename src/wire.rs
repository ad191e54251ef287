//! JSON as both edges speak it: a body parsed with the field that is wrong named (HTTP
//! bodies, WebSocket messages, POS payloads), and a reservation as API.md shows it (HTTP
//! answers, the WebSocket and MQTT order feeds).

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::domain::{rfc3339_ms, Invalid};
use crate::store::ResRecord;

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
