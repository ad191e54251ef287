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
use crate::hub::{Filter, LiveEvent, Membership, Numbered, Start};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    outlets: Option<String>,
    skus: Option<String>,
    /// Browsers' EventSource cannot set headers: the API key may come here instead.
    key: Option<String>,
    /// The `Last-Event-ID` header's value, for a client that opens a new stream itself (a
    /// browser's own reconnect sends the header); the header wins.
    last_event_id: Option<String>,
}

/// One event; `id` is the hub's id of the last event this client has been given or passed
/// over (its `Last-Event-ID` from here on).
fn sse(event: &str, id: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\nid: {id}\ndata: {data}\n\n"))
}

/// Live stock as Server-Sent Events: a `snapshot` event with every matching
/// `{outlet, sku, on_hand, reserved, available, seq}`, then one `stock` event per change (in
/// seq order per outlet), and a `: keep-alive` comment every `streams.keepalive_secs`.
/// Every event and keep-alive carries an `id:`; a client that reconnects with it as
/// `Last-Event-ID` gets a `resumed` event and only the changes since, while the hub still
/// holds them (`streams.resume_events`), else a fresh `snapshot`. The stream opens with a
/// `retry:` hint (`streams.retry_ms`).
#[utoipa::path(get, path = "/v1/stream", tag = "streams",
    security(("api_key" = []), ("query_key" = [])),
    params(
        ("outlets" = Option<String>, Query, description = "Comma-separated outlet ids (default: all)",
            example = "indore-vijay-nagar"),
        ("skus" = Option<String>, Query, description = "Comma-separated SKUs (default: all)",
            example = "kaju-katli-1kg"),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event (the `Last-Event-ID` header wins)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event: the `id:` of the last event received"),
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
    let filter = Filter::parse(
        &state.catalogue.now(),
        q.outlets.as_deref(),
        q.skus.as_deref(),
    )?
    .with_reservations(caller.reservation_scope())
    .with_alerts(caller.alert_scope());
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.last_event_id.as_deref());
    let hub = &state.shared.hub;
    let (member, start) = hub
        .join_after(&caller.0.label, last_event_id)
        .map_err(|full| {
            (state.shared.metrics.stream_refused)
                .with_label_values(&["sse", full.reason()])
                .inc();
            ApiError::unavailable(full.message())
        })?;
    let limits = &state.settings.streams;
    let (tx, rx) = mpsc::channel::<Bytes>(limits.client_buffer_events.max(1));
    let at = hub.event_id(member.joined_at);
    let retry = Bytes::from(format!("retry: {}\n\n", limits.retry_ms));
    tx.try_send(retry).expect("a fresh buffer has room");
    let outcome = if last_event_id.is_none() {
        "fresh"
    } else {
        start.outcome()
    };
    (state.shared.metrics.stream_starts)
        .with_label_values(&[outcome])
        .inc();
    let (seen, missed) = match start {
        Start::Snapshot => {
            // Subscribed first, snapshot second: a change in between is in both, and the seq
            // check in `forward` drops the older copy. Nothing falls between them.
            let snapshot = filter.snapshot(&state.catalogue.now(), &state.shared.stock);
            let seen: HashMap<(OutletId, Sku), u64> = snapshot
                .iter()
                .map(|(o, s, c)| ((o.clone(), s.clone()), c.seq))
                .collect();
            let rows: Vec<_> = snapshot
                .iter()
                .map(|(o, s, c)| state.shared.stock.json(o, true, s, c))
                .collect();
            let frame = sse("snapshot", &at, &serde_json::Value::from(rows));
            tx.try_send(frame).expect("a fresh buffer has room");
            (seen, Vec::new())
        }
        Start::Resume(missed) => {
            let since = last_event_id.unwrap_or_default().trim();
            let body = serde_json::json!({"since": since, "events": missed.len()});
            tx.try_send(sse("resumed", since, &body))
                .expect("a fresh buffer has room");
            (HashMap::new(), missed)
        }
    };
    state
        .shared
        .metrics
        .stream_clients
        .with_label_values(&["sse"])
        .inc();
    actix_web::rt::spawn(forward(
        Client {
            member,
            filter,
            seen,
            tx,
            stock: state.shared.stock.clone(),
        },
        missed,
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

/// One SSE client: its place in the hub, what it wants, the seq it has of each SKU, and its
/// bounded buffer.
struct Client {
    member: Membership,
    filter: Filter,
    seen: HashMap<(OutletId, Sku), u64>,
    tx: mpsc::Sender<Bytes>,
    stock: std::sync::Arc<crate::stock_view::StockView>,
}

impl Client {
    /// The frame for one hub event, if this client wants it.
    fn frame(&mut self, id: &str, event: LiveEvent) -> Option<Bytes> {
        match event {
            LiveEvent::Stock {
                outlet,
                sku,
                counters,
            } => {
                if !self.filter.wants(&outlet, &sku) {
                    return None;
                }
                let last = self.seen.entry((outlet.clone(), sku.clone())).or_insert(0);
                if counters.seq <= *last {
                    return None;
                }
                *last = counters.seq;
                Some(sse(
                    "stock",
                    id,
                    &self.stock.json(&outlet, true, &sku, &counters),
                ))
            }
            LiveEvent::Reservation {
                event,
                outlets,
                body,
            } => (self.filter.wants_reservation(&outlets)).then(|| sse(event, id, &body)),
            LiveEvent::Alert(alert) => (self.filter.wants_alert(&alert.outlet, &alert.sku))
                .then(|| sse("alert", id, &serde_json::json!(*alert))),
            LiveEvent::Order(_) => None,
        }
    }
}

/// Sends the events this client missed (a resume), then moves its events from the hub into
/// its own bounded buffer; ends (dropping the client) when it falls behind, and when the
/// client goes away. A keep-alive carries the id of the last event passed over, so that a
/// client whose filter matched nothing for a while still resumes from where it is.
async fn forward(mut client: Client, missed: Vec<Numbered>, state: std::sync::Arc<AppState>) {
    let metrics = &state.shared.metrics;
    let limits = &state.settings.streams;
    let stall = Duration::from_secs(limits.stall_secs);
    let hub = &state.shared.hub;
    let mut at = client.member.joined_at;
    let mut slow = false;
    for (id, event) in missed {
        at = id;
        let Some(frame) = client.frame(&hub.event_id(id), event) else {
            continue;
        };
        if client.tx.send_timeout(frame, stall).await.is_err() {
            slow = !client.tx.is_closed();
            break;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(limits.keepalive_secs));
    tick.tick().await;
    let closing = hub.closing();
    tokio::pin!(closing);
    while !client.tx.is_closed() && !slow {
        let frame = tokio::select! {
            _ = client.tx.closed() => break,
            _ = &mut closing => break,
            _ = tick.tick() => Bytes::from(format!(": keep-alive\nid: {}\n\n", hub.event_id(at))),
            event = client.member.rx.recv() => match event {
                Ok((id, event)) => {
                    at = id;
                    match client.frame(&hub.event_id(id), event) {
                        Some(frame) => frame,
                        None => continue,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    slow = true;
                    break;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        };
        if client.tx.send_timeout(frame, stall).await.is_err() {
            slow = !client.tx.is_closed();
        }
    }
    if slow {
        metrics.stream_dropped.with_label_values(&["sse"]).inc();
    }
    metrics.stream_clients.with_label_values(&["sse"]).dec();
}
