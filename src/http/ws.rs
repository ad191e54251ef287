//! `GET /v1/ws`: the live events as WebSocket JSON text frames, with `subscribe` messages
//! that change the filter, confirmed orders for kitchen and picker tablets, and a ping/pong
//! heartbeat.
//!
//! The session actor runs only as fast as its socket takes frames (actix polls it with the
//! response body), so a client that stops reading cannot grow a buffer here: it falls behind
//! the hub's ring and is closed when it lags.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::auth::{Action, Caller};
use super::context::AppState;
use super::error::ApiError;
use crate::domain::{OutletId, Sku};
use crate::hub::{Filter, LiveEvent, Membership};

const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    key: Option<String>,
    outlets: Option<String>,
    skus: Option<String>,
}

/// What a client may send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    subscribe: Subscribe,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(default)]
    outlets: Option<Vec<String>>,
    #[serde(default)]
    skus: Option<Vec<String>>,
}

/// Live stock over a WebSocket: JSON text frames `{"type": "snapshot" | "stock" | "order", ...}`
/// (`order` frames only for keys that may read reservations); the client sends
/// `{"subscribe": {"outlets": [..], "skus": [..]}}` to change its filter. Pings every 5 s.
#[utoipa::path(get, path = "/v1/ws", tag = "streams",
    security(("api_key" = []), ("query_key" = [])),
    params(
        ("outlets" = Option<String>, Query, description = "Comma-separated outlet ids (default: all)"),
        ("skus" = Option<String>, Query, description = "Comma-separated SKUs (default: all)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake"),
        (status = 401, description = "No key or an unknown key", body = super::openapi::Error),
        (status = 403, description = "The key's role may not read stock", body = super::openapi::Error),
        (status = 422, description = "Unknown outlet or SKU in a filter, or an unknown parameter", body = super::openapi::Error),
        (status = 429, description = "Past the key's rate limit (`Retry-After`)", body = super::openapi::Error),
        (status = 503, description = "Past `streams.clients_max` live clients, or the key holds `streams.clients_per_key_max`", body = super::openapi::Error),
    ))]
pub async fn ws(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let q = query.into_inner();
    let caller = Caller::from_request_or_key(&req, &state.auth, q.key.as_deref())?;
    caller.require(Action::ReadStock, None)?;
    let filter = Filter::parse(
        &state.catalogue.now(),
        q.outlets.as_deref(),
        q.skus.as_deref(),
    )
    .map_err(ApiError::from)?;
    let member = state.shared.hub.join(&caller.0.label).map_err(|full| {
        (state.shared.metrics.stream_refused)
            .with_label_values(&["ws", full.reason()])
            .inc();
        ApiError::unavailable(full.message())
    })?;
    // Confirmed orders name customers' reservations: only those the key may read.
    let subscribes =
        governor::RateLimiter::direct(super::auth::quota(state.settings.streams.subscribe));
    let session = WsSession {
        subscribes,
        orders: caller.reservation_scope(),
        alerts: caller.alert_scope(),
        state: state.clone(),
        filter,
        seen: HashMap::new(),
        heartbeat: Instant::now(),
        member: Some(member),
    };
    ws::start(session, &req, payload)
}

struct WsSession {
    /// The budget of `subscribe` messages (`streams.subscribe`): each sends a snapshot.
    subscribes: governor::DefaultDirectRateLimiter,
    /// Whether this client may see `order` frames.
    orders: crate::hub::ReservationScope,
    /// Whose `alert` frames this client may see.
    alerts: crate::hub::ReservationScope,
    state: web::Data<AppState>,
    filter: Filter,
    seen: HashMap<(OutletId, Sku), u64>,
    heartbeat: Instant,
    member: Option<Membership>,
}

/// An event from the hub, or the news that this client fell behind it.
#[derive(Message)]
#[rtype(result = "()")]
enum FromHub {
    Event(LiveEvent),
    FellBehind,
}

impl WsSession {
    fn send_snapshot(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let rows = self
            .filter
            .snapshot(&self.state.catalogue.now(), &self.state.shared.stock);
        self.seen = rows
            .iter()
            .map(|(o, s, c)| ((o.clone(), s.clone()), c.seq))
            .collect();
        let stock: Vec<_> = rows
            .iter()
            .map(|(o, s, c)| self.state.shared.stock.json(o, true, s, c))
            .collect();
        ctx.text(json!({"type": "snapshot", "stock": stock}).to_string());
    }

    fn error(ctx: &mut ws::WebsocketContext<Self>, message: &str) {
        ctx.text(
            json!({"type": "error", "error": "validation_failed", "message": message}).to_string(),
        );
    }

    /// Takes one `subscribe` from the budget, or tells the client it is past it (its filter
    /// stays as it was).
    fn may_subscribe(&self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        if self.subscribes.check().is_ok() {
            return true;
        }
        (self.state.shared.metrics.stream_refused)
            .with_label_values(&["ws", "subscribe_rate"])
            .inc();
        let message = "too many subscribe messages; the filter is unchanged, try again shortly";
        ctx.text(json!({"type": "error", "error": "rate_limited", "message": message}).to_string());
        false
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.state
            .shared
            .metrics
            .stream_clients
            .with_label_values(&["ws"])
            .inc();
        // Subscribed before the snapshot: a change in between is in both, and the seq check
        // drops the older copy. Nothing falls between them.
        let rx = self.member.as_ref().expect("joined").rx.resubscribe();
        self.send_snapshot(ctx);
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok((_, event)) => Some((FromHub::Event(event), rx)),
                Err(RecvError::Lagged(_)) => Some((FromHub::FellBehind, rx)),
                Err(RecvError::Closed) => None,
            }
        });
        ctx.add_stream(events);
        let closing = self.state.shared.hub.closing();
        ctx.spawn(closing.into_actor(self).map(|_, _, ctx| {
            ctx.close(Some(ws::CloseCode::Away.into()));
            ctx.stop();
        }));
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if act.heartbeat.elapsed() > CLIENT_TIMEOUT {
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.member = None;
        self.state
            .shared
            .metrics
            .stream_clients
            .with_label_values(&["ws"])
            .dec();
    }
}

impl StreamHandler<FromHub> for WsSession {
    fn handle(&mut self, msg: FromHub, ctx: &mut Self::Context) {
        match msg {
            FromHub::Event(LiveEvent::Stock {
                outlet,
                sku,
                counters,
            }) => {
                if !self.filter.wants(&outlet, &sku) {
                    return;
                }
                let last = self.seen.entry((outlet.clone(), sku.clone())).or_insert(0);
                if counters.seq <= *last {
                    return;
                }
                *last = counters.seq;
                let mut frame = (self.state.shared.stock).json(&outlet, true, &sku, &counters);
                frame["type"] = "stock".into();
                ctx.text(frame.to_string());
            }
            FromHub::Event(LiveEvent::Order(order)) => {
                let outlet = order.id.outlet();
                if self.orders.allows(&outlet) && self.filter.wants_outlet(&outlet) {
                    let reservation = crate::wire::reservation_json(&order);
                    ctx.text(json!({"type": "order", "reservation": reservation}).to_string());
                }
            }
            FromHub::Event(LiveEvent::Alert(alert)) => {
                if self.alerts.allows(&alert.outlet) && self.filter.wants(&alert.outlet, &alert.sku)
                {
                    let mut frame = serde_json::json!(*alert);
                    frame["type"] = "alert".into();
                    ctx.text(frame.to_string());
                }
            }
            FromHub::Event(LiveEvent::Reservation {
                event,
                outlets,
                body,
            }) => {
                if (outlets.iter()).any(|o| self.orders.allows(o) && self.filter.wants_outlet(o)) {
                    let mut frame = (*body).clone();
                    frame["type"] = event.into();
                    ctx.text(frame.to_string());
                }
            }
            FromHub::FellBehind => {
                self.state
                    .shared
                    .metrics
                    .stream_dropped
                    .with_label_values(&["ws"])
                    .inc();
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Again,
                    description: Some("fell behind; reconnect for a fresh snapshot".into()),
                }));
                ctx.stop();
            }
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let Ok(msg) = msg else {
            ctx.stop();
            return;
        };
        match msg {
            ws::Message::Ping(bytes) => {
                self.heartbeat = Instant::now();
                ctx.pong(&bytes);
            }
            ws::Message::Pong(_) => self.heartbeat = Instant::now(),
            ws::Message::Text(text) => {
                self.heartbeat = Instant::now();
                let parsed = match super::context::parse_json::<ClientMessage>(text.as_bytes()) {
                    Ok(m) => m,
                    Err(e) => return Self::error(ctx, &e.to_string()),
                };
                if !self.may_subscribe(ctx) {
                    return;
                }
                match Filter::from_lists(
                    &self.state.catalogue.now(),
                    parsed.subscribe.outlets,
                    parsed.subscribe.skus,
                ) {
                    Ok(filter) => {
                        self.filter = filter;
                        self.send_snapshot(ctx);
                    }
                    Err(invalid) => Self::error(ctx, &invalid.to_string()),
                }
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            _ => {}
        }
    }
}
