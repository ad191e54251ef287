//! A request for an outlet another process owns goes to that process.
//!
//! A handler that finds its outlet owned elsewhere changes nothing and answers `503` naming
//! the outlet (`Error::Overloaded { elsewhere }`, marked on the response with
//! [`OwnedElsewhere`]). This middleware then sends the same request (method, path, query,
//! headers, body) to the owner, whose address it reads from Redis (the lease names the node,
//! the node's heartbeat its address), signed with `cluster.secret`, and answers with the
//! owner's answer, marked `x-shelfsync-forwarded-to: {node}`.
//!
//! - The signature covers the sending and the receiving node, the time, the method, the path
//!   and query, the headers that decide what the request does (`Authorization`,
//!   `Idempotency-Key`, `Content-Type`) and the body. The owner checks it (a wrong one, one
//!   more than 30 s off its clock, or one already used is `403`, nothing done: each signature
//!   is taken once, remembered in Redis for a minute) and never forwards a forwarded request
//!   again: one hop at most. It does not count a signed request against the client's rate
//!   limit again: the process the client reached did.
//! - The signature authenticates, it does not hide: between hosts, run the processes' own
//!   ports on a private network (or behind TLS terminated in front of each process).
//! - When nobody holds the outlet's lease (it is moving) or its owner does not answer, the
//!   first `503` with `Retry-After` stands, and the client's retry finds the new owner.
//! - Every forwardable request is idempotent (Idempotency-Key, payment_ref, event_id, a
//!   cancel), so a forwarded request whose answer was lost on the way back is safe to retry.
//!
//! The client's own `Authorization` travels with it: the owner authorizes the client as the
//! first process did. Streams (SSE, WebSocket) and stock reads never need the owner: every
//! process's view follows the owners' commits (actors/follower.rs).

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderName};
use actix_web::http::Method;
use actix_web::web::{self, Bytes};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tracing::debug;

use super::auth::Forwarded;
use super::context::AppState;
use super::error::{ApiError, OwnedElsewhere};
use crate::domain::{now_ms, OutletId};

/// The signature of a forwarded request: `{node} {at_ms} {hex HMAC-SHA256}`.
pub const FORWARDED: &str = "x-shelfsync-forwarded";
/// On an answer that came from another process: that process's node id.
pub const FORWARDED_TO: &str = "x-shelfsync-forwarded-to";
/// The largest answer taken from an owner (a reservation or a movement's answer is a few KiB).
const ANSWER_MAX: usize = 1 << 20;
/// How far a signature's time may be from this process's clock.
const SKEW_MS: u64 = 30_000;
/// How long a used signature is remembered (past the skew both ways, so a replay is refused
/// while its time would still pass).
const USED_MS: u64 = 2 * SKEW_MS;
/// The request headers a signature covers, in this order.
const SIGNED_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("idempotency-key"),
    header::CONTENT_TYPE,
];

/// What a signature covers beside the secret.
pub struct Signed<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub at_ms: i64,
    pub method: &'a str,
    pub path: &'a str,
    /// The values of `SIGNED_HEADERS` (empty when absent).
    pub headers: [&'a [u8]; 3],
    pub body: &'a [u8],
}

impl<'a> Signed<'a> {
    fn of(req: &'a HttpRequest, from: &'a str, to: &'a str, at_ms: i64, body: &'a [u8]) -> Self {
        let header = |name: &HeaderName| req.headers().get(name).map_or(&[][..], |v| v.as_bytes());
        Self {
            from,
            to,
            at_ms,
            method: req.method().as_str(),
            path: path_and_query(req),
            headers: SIGNED_HEADERS.each_ref().map(header),
            body,
        }
    }
}

fn signature(secret: &str, m: &Signed<'_>) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    let Signed {
        from,
        to,
        at_ms,
        method,
        path,
        ..
    } = m;
    mac.update(format!("{from}\n{to}\n{at_ms}\n{method}\n{path}\n").as_bytes());
    for value in m.headers {
        // Each header's digest, so that no value can run into the next.
        mac.update(hex::encode(Sha256::digest(value)).as_bytes());
        mac.update(b"\n");
    }
    mac.update(hex::encode(Sha256::digest(m.body)).as_bytes());
    mac
}

/// The header value that signs a request this process forwards.
pub fn sign(secret: &str, m: &Signed<'_>) -> String {
    let mac = signature(secret, m);
    format!(
        "{} {} {}",
        m.from,
        m.at_ms,
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `value` signs, with `secret`, the request `m` describes (its `from` and `at_ms`
/// are taken from `value`) at a time within `SKEW_MS` of `now` (compared in constant time).
pub fn verify(secret: &str, value: &str, now: i64, m: Signed<'_>) -> bool {
    let mut parts = value.split(' ');
    let (Some(from), Some(at), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(at_ms), Ok(sig)) = (at.parse::<i64>(), hex::decode(sig)) else {
        return false;
    };
    let m = Signed { from, at_ms, ..m };
    now.abs_diff(at_ms) <= SKEW_MS && signature(secret, &m).verify_slice(&sig).is_ok()
}

/// The middleware (one per worker).
pub struct Forwarding {
    client: awc::Client,
}

impl Forwarding {
    /// `timeout`: how long a forwarded request may take (the owner may wait for the ledger).
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: awc::Client::builder()
                .timeout(timeout)
                .disable_redirects()
                .finish(),
        }
    }
}

impl<S> Transform<S, ServiceRequest> for Forwarding
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>
        + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = ForwardingService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ForwardingService {
            service: Rc::new(service),
            client: self.client.clone(),
        }))
    }
}

pub struct ForwardingService<S> {
    service: Rc<S>,
    client: awc::Client,
}

type Answer = Pin<Box<dyn Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>>>>;

impl<S> Service<ServiceRequest> for ForwardingService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>
        + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = Answer;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        let (service, client) = (self.service.clone(), self.client.clone());
        Box::pin(async move {
            let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
                return service.call(req).await;
            };
            let signed = req.headers().get(FORWARDED).cloned();
            if !forwardable(req.method(), req.path()) {
                if signed.is_some() {
                    return Ok(req.error_response(ApiError::Forbidden(
                        "this route is never forwarded between processes".into(),
                    )));
                }
                return service.call(req).await;
            }
            // The body of a request that may be forwarded, read once and given back.
            let http = &state.settings.http;
            let body = if *req.method() == Method::GET {
                Bytes::new()
            } else {
                let (request, payload) = (req.request().clone(), req.take_payload());
                let read = super::context::read_limited(
                    &request,
                    payload,
                    http.body_limit_bytes,
                    http.body_read_secs,
                );
                match read.await {
                    Ok(body) => body.freeze(),
                    Err(e) => return Ok(req.error_response(e)),
                }
            };
            if *req.method() != Method::GET {
                let again = body.clone();
                req.set_payload(Payload::Stream {
                    payload: Box::pin(futures_util::stream::once(async move { Ok(again) })),
                });
            }
            let count = |outcome: &str| {
                (state.shared.metrics.forwarded_requests)
                    .with_label_values(&[outcome])
                    .inc()
            };
            if let Some(value) = signed {
                if let Err(refused) = check(&state, req.request(), &value, &body).await {
                    count("bad_signature");
                    return Ok(req.error_response(refused));
                }
                count("received");
                req.extensions_mut().insert(Forwarded);
                return service.call(req).await;
            }
            let res = service.call(req).await?;
            let Some(OwnedElsewhere(outlet)) = res.response().extensions().get().cloned() else {
                return Ok(res);
            };
            match forward(&state, &client, res.request(), body, &outlet).await {
                Ok(answer) => {
                    count("forwarded");
                    Ok(ServiceResponse::new(res.request().clone(), answer))
                }
                Err(e) => {
                    // The 503 with Retry-After stands: the client's retry finds the owner.
                    count("unreachable");
                    debug!(%outlet, error = %format!("{e:#}"), "forwarding to the outlet's owner failed");
                    Ok(res)
                }
            }
        })
    }
}

/// Checks a forwarded request's signature, and takes it (a signature is good once).
async fn check(
    state: &AppState,
    req: &HttpRequest,
    value: &header::HeaderValue,
    body: &[u8],
) -> Result<(), ApiError> {
    let invalid = || {
        ApiError::Forbidden(
            "the signature of a request forwarded between processes is not valid".into(),
        )
    };
    let value = value.to_str().map_err(|_| invalid())?;
    let me = &state.shared.owners.node;
    let described = Signed::of(req, "", me, 0, body);
    if !verify(
        state.settings.cluster.secret.expose(),
        value,
        now_ms(),
        described,
    ) {
        return Err(invalid());
    }
    let first = (state.shared.store)
        .first_use(value, USED_MS)
        .await
        .map_err(|e| ApiError::from(crate::error::Error::store(e)))?;
    if !first {
        return Err(ApiError::Forbidden(
            "this forwarded request was already taken once (a replay)".into(),
        ));
    }
    Ok(())
}

/// The routes whose handlers may find their outlet owned elsewhere: a hold, a reservation
/// (read, confirm, cancel), a movement. Nothing else is read here or forwarded.
fn forwardable(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET => path.starts_with("/v1/reservations/"),
        Method::POST => {
            path == "/v1/reservations"
                || path == "/v1/movements"
                || path.starts_with("/v1/reservations/")
        }
        _ => false,
    }
}

fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// Headers that belong to one connection, not to the request or the answer (RFC 9110
/// section 7.6.1), and those `Connection` names; and our own signature.
fn hop_by_hop(name: &HeaderName, headers: &actix_web::http::header::HeaderMap) -> bool {
    const FIXED: [&str; 11] = [
        "connection",
        "host",
        "content-length",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
        "expect",
    ];
    FIXED.contains(&name.as_str())
        || name.as_str() == FORWARDED
        || (headers.get_all(header::CONNECTION))
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

/// Sends the request to the process that owns `outlet` and returns its answer.
async fn forward(
    state: &AppState,
    client: &awc::Client,
    req: &HttpRequest,
    body: Bytes,
    outlet: &OutletId,
) -> anyhow::Result<HttpResponse> {
    let store = &state.shared.store;
    let Some((node, url)) = store.owner_address(&store.keys(outlet)).await? else {
        anyhow::bail!("nobody owns outlet {outlet} now, or its owner advertised no address");
    };
    let owners = &state.shared.owners;
    anyhow::ensure!(
        node != owners.node,
        "this process is taking outlet {outlet} over"
    );
    let signed = sign(
        state.settings.cluster.secret.expose(),
        &Signed::of(req, &owners.node, &node, now_ms(), &body),
    );
    let path = path_and_query(req);
    let mut request = client.request(req.method().clone(), format!("{url}{path}"));
    for (name, value) in req.headers() {
        if !hop_by_hop(name, req.headers()) {
            request = request.append_header((name.clone(), value.clone()));
        }
    }
    let mut answer = request
        .insert_header((FORWARDED, signed))
        .send_body(body)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("sending to {node} at {url}"))?;
    let bytes = answer
        .body()
        .limit(ANSWER_MAX)
        .await
        .with_context(|| format!("reading the answer of {node}"))?;
    let mut out = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name, answer.headers()) {
            out.append_header((name.clone(), value.clone()));
        }
    }
    out.insert_header((FORWARDED_TO, node));
    Ok(out.body(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_secret_request_nodes_and_time() {
        let secret = "a-secret-of-16-chars";
        let m = |body: &'static [u8], idem: &'static [u8]| Signed {
            from: "a",
            to: "b",
            at_ms: 1_000_000,
            method: "POST",
            path: "/v1/reservations/x/confirm",
            headers: [b"Bearer k", idem, b"application/json"],
            body,
        };
        let body: &[u8] = br#"{"payment_ref":"p1"}"#;
        let v = sign(secret, &m(body, b"key-1"));
        let at = 1_000_000;
        assert!(verify(secret, &v, at + 1000, m(body, b"key-1")));
        assert!(!verify("another-secret-16ch", &v, at, m(body, b"key-1")));
        assert!(!verify(
            secret,
            &v,
            at,
            m(br#"{"payment_ref":"p2"}"#, b"key-1")
        ));
        assert!(
            !verify(secret, &v, at, m(body, b"key-2")),
            "the Idempotency-Key is signed"
        );
        assert!(
            !verify(
                secret,
                &v,
                at,
                Signed {
                    to: "c",
                    ..m(body, b"key-1")
                }
            ),
            "and the receiver"
        );
        assert!(!verify(
            secret,
            &v,
            at,
            Signed {
                path: "/v1/reservations/y/confirm",
                ..m(body, b"key-1")
            }
        ));
        assert!(!verify(
            secret,
            &v,
            at,
            Signed {
                method: "PUT",
                ..m(body, b"key-1")
            }
        ));
        assert!(!verify(
            secret,
            &v,
            at + SKEW_MS as i64 + 1,
            m(body, b"key-1")
        ));
        let other_node = v.replacen("a ", "z ", 1);
        assert!(!verify(secret, &other_node, at, m(body, b"key-1")));
        assert!(!verify(secret, "a 1000000 zz", at, m(body, b"key-1")));
        assert!(!verify(
            secret,
            "a -9223372036854775808 00",
            at,
            m(body, b"key-1")
        ));
        assert!(!verify(secret, "", at, m(body, b"key-1")));
    }
}
