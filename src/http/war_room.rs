//! `GET /v1/war-room`: what the war-room screen shows (war_room.rs).

use actix_web::{web, HttpResponse};

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use super::openapi::{Error, WarRoomBody};
use crate::domain::now_ms;
use crate::war_room::{self, Figures};

/// Per outlet: its POS link (last message received, how late), sales per minute over the last
/// half hour, ledger lag, drift and holds at risk; and the raised sell-out and low-stock
/// alerts (README, War room).
#[utoipa::path(get, path = "/v1/war-room", tag = "operations",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The war room's figures", body = WarRoomBody),
        (status = 401, description = "No key or an unknown key", body = Error),
        (status = 403, description = "The key may not read metrics", body = Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = Error),
        (status = 503, description = "Redis did not answer (`Retry-After`)", body = Error),
    ))]
pub async fn get(caller: Caller, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now = now_ms();
    let catalogue = state.catalogue.now();
    let all = catalogue.outlets.iter().map(|o| o.id.clone());
    let ids = caller.outlets_for(Action::ReadMetrics, &catalogue, None, all)?;
    let m = &state.shared.metrics;
    let figures = (ids.iter().filter_map(|id| catalogue.outlet(id)))
        .map(|o| {
            let lag = state.shared.ledger_lag(&o.id, now);
            let label = [o.id.as_str()];
            let f = Figures {
                name: o.name.clone(),
                ledger_entries: lag.entries,
                ledger_age_ms: lag.age_ms,
                drift_skus: m.reconciler_drift_skus.with_label_values(&label).get(),
                at_risk_holds: m.at_risk_holds.with_label_values(&label).get(),
            };
            (o.id.clone(), f)
        })
        .collect();
    let budget = state.settings.ledger.lag_max_secs;
    let room = war_room::gather(&state.shared.store, &state.pos_links, figures, now, budget)
        .await
        .map_err(crate::error::Error::store)?;
    Ok(HttpResponse::Ok().json(room))
}
