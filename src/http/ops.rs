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
/// Anyone may ask whether the process is ready; what is down and why, and which outlets it
/// owns, only a key that may read metrics learns. One check (at most one a second) answers
/// every caller.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Every dependency is reachable", body = Readiness),
        (status = 401, description = "An unknown key", body = Error),
        (status = 403, description = "The key's role may not read metrics", body = Error),
        (status = 503, description = "Something is not; with a key, `message` says what", body = Readiness),
    ))]
pub async fn readyz(
    req: actix_web::HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let detailed = req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION);
    if detailed {
        Caller::from_request_or_key(&req, &state.auth, None)?.require(Action::ReadMetrics, None)?;
    }
    let report = state.health.report().await;
    let mut body = json!({"status": if report.ready() { "ready" } else { "unavailable" }});
    if detailed {
        let owners = &state.shared.owners;
        body["redis"] = report.redis.clone().into();
        body["mongo"] = report.mongo.clone().into();
        body["mqtt"] = report.mqtt.clone().into();
        body["node"] = owners.node.clone().into();
        body["owns"] = json!(owners.ids());
    }
    if report.ready() {
        return Ok(HttpResponse::Ok().json(body));
    }
    body["error"] = "unavailable".into();
    if detailed {
        body["message"] = format!("not ready: {}", report.down().join(", ")).into();
    }
    Ok(HttpResponse::ServiceUnavailable()
        .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
        .json(body))
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
    // shows as a growing age. An outlet owned elsewhere has none here (its owner reports it).
    for (outlet, lag) in state.shared.ledger_lags(crate::domain::now_ms()) {
        let m = &state.shared.metrics;
        m.ledger_lag_seconds
            .with_label_values(&[outlet.as_str()])
            .set(lag.age_ms as f64 / 1000.0);
        m.ledger_lag_entries
            .with_label_values(&[outlet.as_str()])
            .set(lag.entries as i64);
    }
    // Readiness as of the scrape (the health check's pings are reused for a second), and
    // every outlet's series the alert rules read.
    let report = state.health.report().await;
    let m = &state.shared.metrics;
    m.ready.set(i64::from(report.ready()));
    for (dependency, status) in report.each() {
        (m.dependency_up.with_label_values(&[dependency])).set(i64::from(status == "ok"));
    }
    m.observe_outlets(state.catalogue.now().outlets.iter().map(|o| &o.id), |o| {
        state.pos_links.get(o).map(|(seen_ms, _)| seen_ms)
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(m.render()))
}
