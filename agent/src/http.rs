//! The till's side over HTTP: the sale webhook, the local stock read, the status page and
//! metrics. Errors are shelfsync's shape, `{"error": code, "message", "field"?}`.
//!
//! `POST /v1/sales` answers `202` only once the sale is committed to the store (fsynced), and
//! at once: a till's single-threaded hook stalls when a webhook takes more than about 2 s, so
//! nothing here waits on the link. A body that has not fully arrived `http.body_read_secs`
//! after its headers is refused (`408`) with nothing recorded.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::error;

use crate::link::{LinkState, Outbox};
use crate::metrics::Metrics;
use crate::sale::Sale;
use crate::settings::{Settings, Via};
use crate::store::{blocking, RecordError, Recorded, Store};
use shelfsync::domain::{now_ms, rfc3339_ms, Invalid, OutletId, Sku};

/// How long a store that is full asks the till to wait before it sends again.
const FULL_RETRY_AFTER_SECS: u64 = 30;
/// Rejected events the status page lists.
const STATUS_REJECTED_MAX: usize = 20;

pub struct State {
    pub settings: Settings,
    pub outlet: OutletId,
    pub store: Arc<Store>,
    pub outbox: Arc<Outbox>,
    pub link: Arc<LinkState>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of `http.token`, when one is set.
    pub token_digest: Option<[u8; 32]>,
}

impl State {
    /// Values older than this since the link last heard from shelfsync are stale.
    fn stale_after_ms(&self) -> i64 {
        let s = &self.settings;
        let secs = match s.forward.via {
            // No PINGRESP for two keep-alives: the link is dead, whatever TCP says.
            Via::Mqtt => 2 * s.mqtt.keep_alive_secs + 5,
            // The stock stream's own deadline for silence.
            Via::Http => s.shelfsync.stream_silence_secs,
        };
        (secs * 1000) as i64
    }

    fn stale(&self) -> bool {
        !self.link.up() || now_ms() - self.link.heard_ms() > self.stale_after_ms()
    }
}

/// An error answer, in shelfsync's shape.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl Failure {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl actix_web::ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(field) = &self.field {
            body["field"] = field.as_str().into();
        }
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header(("Retry-After", secs.to_string()));
        }
        res.json(body)
    }
}

impl From<Invalid> for Failure {
    fn from(invalid: Invalid) -> Self {
        Self {
            field: Some(invalid.field.clone()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                invalid.to_string(),
            )
        }
    }
}

/// The store could not be read: logged with its cause, answered without it.
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        error!(error = %format!("{e:#}"), "reading the store failed");
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_error",
                "the store could not be read",
            )
        }
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sales", web::post().to(record_sale))
        .route("/v1/stock", web::get().to(all_stock))
        .route("/v1/stock/{sku}", web::get().to(one_stock))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(metrics))
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(Failure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            ))
        }));
}

/// With `http.token` set, the request must carry it as a bearer token.
fn authorize(req: &HttpRequest, state: &State) -> Result<(), Failure> {
    let Some(want) = &state.token_digest else {
        return Ok(());
    };
    let given = (req.headers().get("authorization"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| <[u8; 32]>::from(Sha256::digest(t.as_bytes())));
    if given.as_ref() == Some(want) {
        Ok(())
    } else {
        Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this agent needs Authorization: Bearer <http.token>",
        ))
    }
}

/// The whole body, refused past `http.body_limit_bytes` and past `http.body_read_secs`.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &State,
) -> Result<web::BytesMut, Failure> {
    let limit = state.settings.http.body_limit_bytes;
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = (req.headers().get("content-length"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("reading the body: {e}"),
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    let secs = state.settings.http.body_read_secs;
    match tokio::time::timeout(Duration::from_secs(secs), read).await {
        Ok(read) => read,
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the body did not arrive within {secs} s; nothing was recorded"),
        )),
    }
}

async fn record_sale(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<State>,
) -> Result<HttpResponse, Failure> {
    let recorded = record(&req, payload, &state).await;
    let outcome = match &recorded {
        Ok((outcome, _)) => *outcome,
        Err(f) => f.code,
    };
    state.metrics.sales.with_label_values(&[outcome]).inc();
    recorded.map(|(_, res)| res)
}

async fn record(
    req: &HttpRequest,
    payload: web::Payload,
    state: &State,
) -> Result<(&'static str, HttpResponse), Failure> {
    authorize(req, state)?;
    let body = read_body(req, payload, state).await?;
    let sale = Sale::from_json(&body)?;
    let entry = sale.entry(&state.outlet, chrono::Utc::now());
    let events: Vec<String> = entry.events.iter().map(|e| e.event_id.clone()).collect();
    let voucher = entry.voucher.clone();
    let now = now_ms();
    let recorded = blocking(&state.store, move |s| s.record(&entry, now)).await;
    let outcome = match recorded {
        Ok(Recorded::New) => {
            state.outbox.wake.notify_one();
            "stored"
        }
        Ok(Recorded::Duplicate) => "duplicate",
        Err(RecordError::Conflict(v)) => {
            return Err(Failure {
                field: Some("voucher".into()),
                ..Failure::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("voucher {v} was recorded before with other content; nothing changed"),
                )
            })
        }
        Err(RecordError::Full(why)) => {
            return Err(Failure {
                retry_after: Some(FULL_RETRY_AFTER_SECS),
                ..Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_full",
                    format!("the agent cannot keep more sales until shelfsync takes some ({why}); keep this sale and send it again"),
                )
            })
        }
        Err(RecordError::Store(e)) => {
            error!(error = %format!("{e:#}"), "recording a sale failed");
            return Err(Failure {
                retry_after: Some(1),
                ..Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_error",
                    "the sale could not be written to disk; keep it and send it again",
                )
            });
        }
    };
    let body = json!({"voucher": voucher, "status": "recorded", "duplicate": outcome == "duplicate",
        "events": events});
    Ok((outcome, HttpResponse::Accepted().json(body)))
}

/// A SKU's stock as the till should count it.
#[derive(Serialize)]
struct StockJson {
    sku: String,
    /// shelfsync's numbers with this outlet's sales it does not hold yet.
    on_hand: i64,
    reserved: i64,
    available: i64,
    /// What those sales did to on_hand (0 when shelfsync holds them all).
    local_delta: i64,
    /// shelfsync's seq and time of the value.
    seq: i64,
    at: String,
    received_at: String,
    /// The link is down or silent: shelfsync may have changed since (web holds, other
    /// channels).
    stale: bool,
}

fn stock_json(l: crate::store::LocalStock, stale: bool) -> StockJson {
    StockJson {
        on_hand: l.value.on_hand + l.d_local,
        reserved: l.value.reserved,
        available: l.value.available + l.d_local,
        local_delta: l.d_local,
        seq: l.value.seq,
        at: l.value.at,
        received_at: rfc3339_ms(l.received_ms),
        sku: l.value.sku,
        stale,
    }
}

async fn one_stock(
    req: HttpRequest,
    sku: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, Failure> {
    authorize(&req, &state)?;
    let sku = Sku::parse("sku", &sku)?;
    let wanted = sku.clone();
    let mut rows = blocking(&state.store, move |s| s.local_stock(Some(wanted.as_str()))).await?;
    if rows.is_empty() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stock value of {sku} has reached this agent yet"),
        ));
    }
    Ok(HttpResponse::Ok().json(stock_json(rows.remove(0), state.stale())))
}

async fn all_stock(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Failure> {
    authorize(&req, &state)?;
    let rows = blocking(&state.store, |s| s.local_stock(None)).await?;
    let stale = state.stale();
    let rows: Vec<StockJson> = rows.into_iter().map(|l| stock_json(l, stale)).collect();
    Ok(HttpResponse::Ok()
        .json(json!({"outlet": state.outlet.as_str(), "stale": stale, "stock": rows})))
}

/// Sets the store's gauges; returns its stats.
async fn refresh_gauges(state: &State) -> anyhow::Result<crate::store::Stats> {
    let stats = blocking(&state.store, |s| s.stats()).await?;
    let m = &state.metrics;
    m.pending.set(stats.pending);
    m.oldest_pending_seconds.set(
        stats
            .oldest_pending_ms
            .map_or(0, |t| (now_ms() - t).max(0) / 1000),
    );
    m.rejected_kept.set(stats.rejected);
    m.disk_bytes.set(stats.disk_bytes as i64);
    m.stock_values.set(stats.stock_values);
    Ok(stats)
}

async fn status(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Failure> {
    authorize(&req, &state)?;
    let stats = refresh_gauges(&state).await?;
    let rejected = blocking(&state.store, |s| s.rejected(STATUS_REJECTED_MAX)).await?;
    let s = &state.settings;
    let now = now_ms();
    let link = &state.link;
    let via = match s.forward.via {
        Via::Mqtt => format!("mqtt {}:{}", s.mqtt.host, s.mqtt.port),
        Via::Http => format!("http {}", s.shelfsync.url),
    };
    let rejected: Vec<_> = (rejected.into_iter())
        .map(|r| {
            json!({"event_id": r.event_id, "voucher": r.voucher, "sku": r.sku,
            "code": r.code, "reason": r.reason, "at": rfc3339_ms(r.settled_ms)})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "outlet": state.outlet.as_str(),
        "via": via,
        "link": {
            "up": link.up(),
            "since": (link.since_ms() > 0).then(|| rfc3339_ms(link.since_ms())),
            "heard_at": (link.heard_ms() > 0).then(|| rfc3339_ms(link.heard_ms())),
            "stale": state.stale(),
            "losses": state.metrics.link_losses.get(),
        },
        "pending": {
            "events": stats.pending,
            "in_flight": state.outbox.in_flight(),
            "oldest_at": stats.oldest_pending_ms.map(rfc3339_ms),
            "oldest_secs": stats.oldest_pending_ms.map(|t| (now - t).max(0) / 1000),
            "max": s.store.pending_max,
        },
        "applied_kept": stats.applied,
        "rejected_kept": stats.rejected,
        "rejected": rejected,
        "vouchers_kept": stats.vouchers,
        "stock_values": stats.stock_values,
        // `used` is what store.disk_max_bytes bounds; `files` what is on disk (free pages and
        // the WAL too).
        "disk": {"used": stats.used_bytes, "max": s.store.disk_max_bytes, "files": stats.disk_bytes},
    })))
}

async fn metrics(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Failure> {
    authorize(&req, &state)?;
    refresh_gauges(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render()))
}
