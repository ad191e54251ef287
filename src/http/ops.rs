//! Operations: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::{Error, Health, Readiness};

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: Redis, MongoDB and the MQTT session; and which outlets this process owns.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Every dependency is reachable", body = Readiness),
        (status = 503, description = "Something is not; `message` says what", body = Readiness),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let report = state.health.check().await;
    let owners = &state.shared.owners;
    let mut body = json!({
        "redis": report.redis, "mongo": report.mongo, "mqtt": report.mqtt,
        "node": owners.node, "owns": owners.ids(),
    });
    if report.ready() {
        body["status"] = "ready".into();
        HttpResponse::Ok().json(body)
    } else {
        body["error"] = "unavailable".into();
        body["message"] = format!("not ready: {}", report.down().join(", ")).into();
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics: request latency per route, reservations by outcome, oversells,
/// ledger lag, reconciler drift, MQTT, stream clients.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key's role may not read metrics", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
    ))]
pub async fn metrics(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadMetrics, None)?;
    // The lag is computed as of the scrape, not as of the writer's last pass: a stuck insert
    // shows as a growing age.
    for (outlet, lag) in state.shared.durable.lags(crate::domain::now_ms()) {
        let m = &state.shared.metrics;
        m.ledger_lag_seconds
            .with_label_values(&[outlet.as_str()])
            .set(lag.age_ms as f64 / 1000.0);
        m.ledger_lag_entries
            .with_label_values(&[outlet.as_str()])
            .set(lag.entries as i64);
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.shared.metrics.render()))
}
