//! The HTTP API of API.md: one file per resource. Handlers parse and authorize at the edge,
//! talk to outlet actors by message, and never touch Redis or the ledger's internals.

pub mod auth;
mod dashboard;
pub mod error;
mod ledger;
mod movements;
mod ops;
pub(crate) mod reservations;
mod stock;
mod stream;
pub mod whatsapp;
mod ws;
mod zones;

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::domain::Invalid;
use crate::health::Health;
use crate::services::Services;
use auth::Auth;
use error::ApiError;

/// What every handler can reach: the shared services, plus what only HTTP needs.
pub struct AppState {
    pub services: Arc<Services>,
    pub health: Health,
    pub auth: Auth,
    /// WhatsApp orders waiting for the worker (bounded).
    pub whatsapp: whatsapp::Queue,
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(dashboard::page))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .service(
            web::scope("/v1")
                .route("/outlets", web::get().to(stock::list_outlets))
                .route(
                    "/outlets/{outlet}/stock",
                    web::get().to(stock::outlet_stock),
                )
                .route(
                    "/outlets/{outlet}/stock/{sku}",
                    web::get().to(stock::sku_stock),
                )
                .route("/availability", web::post().to(stock::availability))
                .route("/webhooks/whatsapp", web::get().to(whatsapp::verify))
                .route("/webhooks/whatsapp", web::post().to(whatsapp::receive))
                .route("/zones", web::get().to(zones::list))
                .route("/zones/{pin}", web::get().to(zones::get))
                .route("/zones/{pin}", web::put().to(zones::put))
                .route("/reservations", web::post().to(reservations::create))
                .route("/reservations/{id}", web::get().to(reservations::get))
                .route(
                    "/reservations/{id}/confirm",
                    web::post().to(reservations::confirm),
                )
                .route(
                    "/reservations/{id}/cancel",
                    web::post().to(reservations::cancel),
                )
                .route("/movements", web::post().to(movements::create))
                .route("/ledger", web::get().to(ledger::page))
                .route("/stream", web::get().to(stream::stream))
                .route("/ws", web::get().to(ws::ws)),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::NotFound("no such route".into()))
        }));
}

/// Builds the actix `App` for one worker: routes, state, request metrics.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    actix_web::App::new()
        .app_data(state)
        .app_data(web::QueryConfig::default().error_handler(|e, _| {
            ApiError::Validation(Invalid::new("query", e.to_string())).into()
        }))
        .app_data(
            web::PathConfig::default()
                .error_handler(|e, _| ApiError::NotFound(e.to_string()).into()),
        )
        .configure(routes)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let method = req.method().to_string();
            let metrics = metrics.clone();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                let route = res
                    .request()
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                metrics
                    .http_seconds
                    .with_label_values(&[method.as_str(), route.as_str(), res.status().as_str()])
                    .observe(started.elapsed().as_secs_f64());
                Ok(res)
            }
        })
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

/// The raw body, refused past `http.body_limit_bytes` (declared or streamed).
pub(crate) async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
) -> Result<web::BytesMut, ApiError> {
    let limit = state.settings.http.body_limit_bytes;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Validation(Invalid::new("body", e.to_string())))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(Invalid::new("body", "a JSON body is required").into());
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
        ApiError::Validation(Invalid::new(field, message))
    })
}
