//! Operations: liveness, readiness, metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::{Action, Caller};
use super::error::ApiError;
use super::AppState;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let report = state.health.check().await;
    let mut body = json!({"redis": report.redis, "mongo": report.mongo, "mqtt": report.mqtt});
    if report.ready() {
        body["status"] = "ready".into();
        HttpResponse::Ok().json(body)
    } else {
        body["error"] = "unavailable".into();
        body["message"] = format!("not ready: {}", report.down().join(", ")).into();
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    caller.require(Action::ReadMetrics, None)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
