//! `GET /v1/stream`: Server-Sent Events of live stock (API.md, Live streams).

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use crate::domain::{OutletId, Sku};
use crate::hub::{Filter, LiveEvent, Membership};
use crate::stock_view::counters_json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    outlets: Option<String>,
    skus: Option<String>,
    /// Browsers' EventSource cannot set headers: the API key may come here instead.
    key: Option<String>,
}

fn sse(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Live stock as Server-Sent Events: a `snapshot` event with every matching
/// `{outlet, sku, on_hand, reserved, available, seq}`, then one `stock` event per change (in
/// seq order per outlet), and a `: keep-alive` comment every `streams.keepalive_secs`.
#[utoipa::path(get, path = "/v1/stream", tag = "streams",
    security(("api_key" = []), ("query_key" = [])),
    params(
        ("outlets" = Option<String>, Query, description = "Comma-separated outlet ids (default: all)",
            example = "indore-vijay-nagar"),
        ("skus" = Option<String>, Query, description = "Comma-separated SKUs (default: all)",
            example = "kaju-katli-1kg"),
    ),
    responses(
        (status = 200, description = "The event stream (it does not end)", content_type = "text/event-stream", body = String),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not read stock", body = super::openapi::Error),
        (status = 422, description = "Unknown outlet or SKU in a filter, or an unknown parameter", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "Past `streams.clients_max` live clients, or the key holds `streams.clients_per_key_max`", body = super::openapi::Error),
    ))]
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let caller = Caller::from_request_or_key(&req, &state.auth, q.key.as_deref())?;
    caller.require(Action::ReadStock, None)?;
    // Re-routed and at-risk holds name customers' reservations: only for keys that may read them.
    let filter = Filter::parse(&state.catalogue, q.outlets.as_deref(), q.skus.as_deref())?
        .with_reservations(caller.reservation_scope());
    let member = state.shared.hub.join(&caller.0.label).map_err(|full| {
        (state.shared.metrics.stream_refused)
            .with_label_values(&["sse", full.reason()])
            .inc();
        ApiError::unavailable(full.message())
    })?;
    // Subscribed first, snapshot second: a change in between is in both, and the seq check
    // below drops the older copy. Nothing falls between them.
    let snapshot = filter.snapshot(&state.catalogue, &state.shared.stock);
    let seen: HashMap<(OutletId, Sku), u64> = snapshot
        .iter()
        .map(|(o, s, c)| ((o.clone(), s.clone()), c.seq))
        .collect();
    let rows: Vec<_> = snapshot
        .iter()
        .map(|(o, s, c)| counters_json(Some(o), s, c))
        .collect();
    let limits = &state.settings.streams;
    let (tx, rx) = mpsc::channel::<Bytes>(limits.client_buffer_events.max(1));
    tx.try_send(sse("snapshot", &serde_json::Value::from(rows)))
        .expect("a fresh buffer has room");
    state
        .shared
        .metrics
        .stream_clients
        .with_label_values(&["sse"])
        .inc();
    actix_web::rt::spawn(forward(
        member,
        filter,
        seen,
        tx,
        Duration::from_secs(limits.stall_secs),
        Duration::from_secs(limits.keepalive_secs),
        state.into_inner(),
    ));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Moves this client's events from the hub into its own bounded buffer; ends (dropping the
/// client) when it falls behind, and when the client goes away.
async fn forward(
    mut member: Membership,
    filter: Filter,
    mut seen: HashMap<(OutletId, Sku), u64>,
    tx: mpsc::Sender<Bytes>,
    stall: Duration,
    keepalive: Duration,
    state: std::sync::Arc<AppState>,
) {
    let metrics = &state.shared.metrics;
    let mut tick = tokio::time::interval(keepalive);
    tick.tick().await;
    let closing = state.shared.hub.closing();
    tokio::pin!(closing);
    let slow = loop {
        let frame = tokio::select! {
            _ = tx.closed() => break false,
            _ = &mut closing => break false,
            _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            event = member.rx.recv() => match event {
                Ok(LiveEvent::Stock { outlet, sku, counters }) => {
                    if !filter.wants(&outlet, &sku) {
                        continue;
                    }
                    let last = seen.entry((outlet.clone(), sku.clone())).or_insert(0);
                    if counters.seq <= *last {
                        continue;
                    }
                    *last = counters.seq;
                    sse("stock", &counters_json(Some(&outlet), &sku, &counters))
                }
                Ok(LiveEvent::Reservation { event, outlets, body }) => {
                    if !filter.wants_reservation(&outlets) {
                        continue;
                    }
                    sse(event, &body)
                }
                Ok(LiveEvent::Order(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break false,
            },
        };
        if tx.send_timeout(frame, stall).await.is_err() {
            break !tx.is_closed();
        }
    };
    if slow {
        metrics.stream_dropped.with_label_values(&["sse"]).inc();
    }
    metrics.stream_clients.with_label_values(&["sse"]).dec();
}
