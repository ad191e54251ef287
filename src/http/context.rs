//! What every handler is given: the application state and the reading of a request body.

use std::sync::Arc;

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::auth::Auth;
use super::error::ApiError;
use crate::domain::Invalid;
use crate::health::Health;
use crate::services::Services;

/// What every handler can reach: the shared services, plus what only HTTP needs.
pub struct AppState {
    pub services: Arc<Services>,
    pub health: Health,
    /// Also registered on its own, for the `Caller` extractor.
    pub auth: web::Data<Auth>,
    /// Where the webhook hands WhatsApp messages (kept, then queued for the worker).
    pub whatsapp: crate::whatsapp::Inbox,
    /// Ledger exports streaming now (at most `export::EXPORTS_MAX`).
    pub exports: Arc<tokio::sync::Semaphore>,
    /// Unit prices for the end-of-day report (`reports.prices_file`, read at start).
    pub prices: Arc<crate::end_of_day::Prices>,
    /// The kitchen plan's forecasts, per outlet for a few minutes (kitchen.rs).
    pub forecasts: Arc<crate::kitchen::Forecasts>,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

/// Reads a JSON body of at most `http.body_limit_bytes` and parses it, naming the field
/// that is wrong when it does not fit `T`.
pub(crate) async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<T, ApiError> {
    parse_json(&read_body(req, payload, state).await?)
}

/// The raw body, refused past `http.body_limit_bytes` (declared or streamed) and past
/// `http.body_read_secs`.
pub(crate) async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<web::BytesMut, ApiError> {
    let http = &state.settings.http;
    read_limited(req, payload, http.body_limit_bytes, http.body_read_secs).await
}

/// The whole body of `req`, refused past `limit` bytes (declared or streamed) and past `secs`.
pub(crate) async fn read_limited<E: std::fmt::Display>(
    req: &HttpRequest,
    mut payload: impl futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    limit: usize,
    secs: u64,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::from(Invalid::new("body", e.to_string())))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    within_body_deadline(secs, read).await
}

/// `read`, or `408 request_timeout` when the body takes longer than `secs` to arrive (a
/// slow body would otherwise hold its connection and worker for as long as it likes).
pub(crate) async fn within_body_deadline<T>(
    secs: u64,
    read: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(std::time::Duration::from_secs(secs), read)
        .await
        .unwrap_or(Err(ApiError::BodyTimeout { secs }))
}

/// A JSON body as `T`, or a 422 naming the field.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    Ok(crate::wire::parse_json(body)?)
}
