//! A request for an outlet another process owns goes to that process.
//!
//! A handler that finds its outlet owned elsewhere changes nothing and answers `503` naming
//! the outlet (`Error::Overloaded { elsewhere }`, marked on the response with
//! [`OwnedElsewhere`]). This middleware then sends the same request (method, path, query,
//! headers, body) to the owner, whose address it reads from Redis (the lease names the node,
//! the node's heartbeat its address), signed with `cluster.secret`, and answers with the
//! owner's answer, marked `x-shelfsync-forwarded-to: {node}`.
//!
//! - The owner checks the signature (a wrong or stale one is `403`, nothing done) and never
//!   forwards a forwarded request again: one hop at most. It does not count a signed request
//!   against the client's rate limit again: the process the client reached did.
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
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use anyhow::Context;
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tracing::debug;

use super::context::AppState;
use super::error::ApiError;
use crate::domain::{now_ms, OutletId};

/// The signature of a forwarded request: `{node} {at_ms} {hex HMAC-SHA256}`.
pub const FORWARDED: &str = "x-shelfsync-forwarded";
/// On an answer that came from another process: that process's node id.
pub const FORWARDED_TO: &str = "x-shelfsync-forwarded-to";
/// How far a signature's time may be from this process's clock.
const SKEW_MS: i64 = 30_000;

/// On a `503` response: the outlet another process owns (set by `ApiError`'s response).
#[derive(Debug, Clone)]
pub struct OwnedElsewhere(pub OutletId);

/// On a request that came signed from another process of the chain.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

fn signature(
    secret: &str,
    node: &str,
    at_ms: i64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{node}\n{at_ms}\n{method}\n{path}\n").as_bytes());
    mac.update(hex::encode(Sha256::digest(body)).as_bytes());
    mac
}

/// The header value that signs a request this process forwards.
pub fn sign(secret: &str, node: &str, at_ms: i64, method: &str, path: &str, body: &[u8]) -> String {
    let mac = signature(secret, node, at_ms, method, path, body);
    format!(
        "{node} {at_ms} {}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Whether `value` signs this request with `secret`, at a time within `SKEW_MS` of `now`
/// (compared in constant time).
pub fn verify(secret: &str, value: &str, now: i64, method: &str, path: &str, body: &[u8]) -> bool {
    let mut parts = value.split(' ');
    let (Some(node), Some(at), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let (Ok(at), Ok(sig)) = (at.parse::<i64>(), hex::decode(sig)) else {
        return false;
    };
    (now - at).abs() <= SKEW_MS
        && signature(secret, node, at, method, path, body)
            .verify_slice(&sig)
            .is_ok()
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
            // Only a request with a body is read here; a GET is forwarded without one (and a
            // WebSocket upgrade's payload is never touched).
            let body = if has_body(req.method()) {
                let limit = state.settings.http.body_limit_bytes;
                match read_all(req.take_payload(), limit).await {
                    Ok(body) => body,
                    Err(e) => return Ok(req.error_response(e)),
                }
            } else {
                Bytes::new()
            };
            if has_body(req.method()) {
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
            if let Some(value) = req.headers().get(FORWARDED) {
                let secret = state.settings.cluster.secret.expose();
                let path = path_and_query(req.request());
                let signed = value
                    .to_str()
                    .is_ok_and(|v| verify(secret, v, now_ms(), req.method().as_str(), path, &body));
                if !signed {
                    count("bad_signature");
                    let refused = ApiError::Forbidden(
                        "the signature of a request forwarded between processes is not valid"
                            .into(),
                    );
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

fn has_body(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn path_and_query(req: &HttpRequest) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

/// The whole body, refused past `limit` (the handlers' own limit).
async fn read_all(mut payload: Payload, limit: usize) -> Result<Bytes, ApiError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::from(crate::domain::Invalid::new(
                "body",
                format!("reading it: {e}"),
            ))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Headers that belong to one connection, not to the request or the answer.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static(FORWARDED),
    ]
    .contains(name)
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
    let path = path_and_query(req);
    let signed = sign(
        state.settings.cluster.secret.expose(),
        &owners.node,
        now_ms(),
        req.method().as_str(),
        path,
        &body,
    );
    let mut request = client.request(req.method().clone(), format!("{url}{path}"));
    for (name, value) in req.headers() {
        if !hop_by_hop(name) {
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
        .limit(64 << 20)
        .await
        .with_context(|| format!("reading the answer of {node}"))?;
    let mut out = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !hop_by_hop(name) {
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
    fn a_signature_holds_only_for_its_secret_request_and_time() {
        let (secret, body) = ("a-secret-of-16-chars", br#"{"payment_ref":"p1"}"#);
        let path = "/v1/reservations/x/confirm";
        let at = 1_000_000;
        let v = sign(secret, "a", at, "POST", path, body);
        assert!(verify(secret, &v, at + 1000, "POST", path, body));
        assert!(!verify("another-secret-16ch", &v, at, "POST", path, body));
        assert!(!verify(
            secret,
            &v,
            at,
            "POST",
            "/v1/reservations/y/confirm",
            body
        ));
        assert!(!verify(
            secret,
            &v,
            at,
            "POST",
            path,
            br#"{"payment_ref":"p2"}"#
        ));
        assert!(!verify(secret, &v, at, "PUT", path, body));
        assert!(!verify(secret, &v, at + SKEW_MS + 1, "POST", path, body));
        let other_node = v.replacen("a ", "b ", 1);
        assert!(!verify(secret, &other_node, at, "POST", path, body));
        assert!(!verify(secret, "a 1000000 zz", at, "POST", path, body));
        assert!(!verify(secret, "", at, "POST", path, body));
    }
}
