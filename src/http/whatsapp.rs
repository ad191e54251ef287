//! The WhatsApp Cloud API webhook (API.md, WhatsApp).
//!
//! `GET` answers Meta's verification challenge. `POST` accepts only a body whose
//! `X-Hub-Signature-256` is `sha256=` + the hex HMAC-SHA256 of the raw body under the app
//! secret (compared in constant time), hands it to the WhatsApp inbox (`whatsapp/`), which
//! keeps every message as `queued` before the 200, and answers 200. The worker there turns
//! each order into a reservation.

use actix_web::{web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::context::{read_body, AppState};
use super::error::ApiError;

const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

#[derive(Deserialize)]
pub struct Verify {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /v1/webhooks/whatsapp`: the challenge back when the token matches, else 403.
#[utoipa::path(get, path = "/v1/webhooks/whatsapp", tag = "whatsapp", operation_id = "whatsapp_verify",
    params(
        ("hub.mode" = Option<String>, Query, description = "`subscribe`"),
        ("hub.verify_token" = Option<String>, Query, description = "The configured `whatsapp.verify_token`"),
        ("hub.challenge" = Option<String>, Query, description = "Echoed back when the token matches"),
    ),
    responses(
        (status = 200, description = "The challenge", content_type = "text/plain", body = String),
        (status = 403, description = "The verify token does not match", body = super::openapi::Error),
        (status = 422, description = "Invalid query", body = super::openapi::Error),
    ))]
pub async fn verify(
    state: web::Data<AppState>,
    query: web::Query<Verify>,
) -> Result<HttpResponse, ApiError> {
    let expected = state.settings.whatsapp.verify_token.expose();
    let token_ok = query
        .verify_token
        .as_deref()
        .is_some_and(|t| same_secret(t, expected));
    match (query.mode.as_deref(), token_ok, &query.challenge) {
        (Some("subscribe"), true, Some(challenge)) => Ok(HttpResponse::Ok()
            .content_type("text/plain")
            .body(challenge.clone())),
        _ => Err(ApiError::Forbidden(
            "the verify token does not match".into(),
        )),
    }
}

/// `a == b` in time that does not depend on where they differ: both are hashed to equal
/// lengths and compared by `verify_slice`, which is constant-time.
fn same_secret(a: &str, b: &str) -> bool {
    let digest_of = |s: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"compare").expect("any key length");
        mac.update(s.as_bytes());
        mac
    };
    digest_of(a)
        .verify_slice(&digest_of(b).finalize().into_bytes())
        .is_ok()
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_ok(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `POST /v1/webhooks/whatsapp`.
///
/// A WhatsApp Cloud API webhook, signed with `X-Hub-Signature-256`: `sha256=` and the hex
/// HMAC-SHA256 of the raw body under the app secret. Each message is kept before the 200, and
/// `order` messages become reservations right after.
#[utoipa::path(post, path = "/v1/webhooks/whatsapp", tag = "whatsapp", operation_id = "whatsapp_receive",
    params(("X-Hub-Signature-256" = Option<String>, Header,
        description = "`sha256=` + hex HMAC-SHA256 of the raw body under the app secret")),
    request_body(content = Object, content_type = "application/json",
        description = "A webhook body: `entry[].changes[].value.messages[]`"),
    responses(
        (status = 200, description = "Accepted (messages kept; orders are made right after)"),
        (status = 401, description = "Missing or wrong signature", body = super::openapi::Error),
        (status = 413, description = "Body over `http.body_limit_bytes`", body = super::openapi::Error),
        (status = 503, description = "MongoDB could not keep the messages; the sender retries", body = super::openapi::Error),
    ))]
pub async fn receive(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, &state).await?;
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let secret = state.settings.whatsapp.app_secret.expose().as_bytes();
    if !signature_ok(secret, &body, header) {
        return Err(ApiError::Unauthorized);
    }
    state.whatsapp.receive(&body).await?;
    Ok(HttpResponse::Ok().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_ok(b"s3cret", body, Some(&good)));
        assert!(!signature_ok(b"other", body, Some(&good)));
        assert!(!signature_ok(b"s3cret", b"{}", Some(&good)));
        assert!(!signature_ok(
            b"s3cret",
            body,
            Some(good.trim_start_matches("sha256="))
        ));
        assert!(!signature_ok(b"s3cret", body, None));
    }
}
