//! API keys, roles and outlet scopes (API.md, Conventions; the matrix is in the README).

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, FromRequest, HttpRequest};

use super::error::ApiError;
use crate::domain::{MovementKind, OutletId};
use crate::settings::{ApiKeySettings, BucketSettings, RateLimitSettings, Role};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadStock,
    Reserve,
    ReadReservation,
    Move(MovementKind),
    ReadLedger,
    ReadMetrics,
    /// Edit delivery zones (admin only).
    ManageZones,
}

#[derive(Debug)]
pub struct Grant {
    pub role: Role,
    outlets: HashSet<OutletId>,
    pub label: String,
    bucket: Bucket,
}

pub struct Auth {
    keys: HashMap<String, Arc<Grant>>,
}

/// A key's token bucket (see `rate_limits`).
#[derive(Debug)]
struct Bucket {
    per_sec: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(b: BucketSettings) -> Self {
        Self {
            per_sec: b.per_sec,
            burst: f64::from(b.burst),
            state: Mutex::new((f64::from(b.burst), Instant::now())),
        }
    }

    /// Takes a token, or says how many seconds until one is there.
    fn take(&self) -> Result<(), u64> {
        let mut state = self.state.lock().expect("bucket lock");
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u64)
        }
    }
}

impl Auth {
    pub fn new(keys: &[ApiKeySettings], limits: &RateLimitSettings) -> anyhow::Result<Self> {
        let keys = keys
            .iter()
            .map(|k| {
                let outlets = k
                    .outlets
                    .iter()
                    .map(|o| OutletId::parse("api_keys.outlets", o))
                    .collect::<Result<_, _>>()?;
                let grant = Grant {
                    role: k.role,
                    outlets,
                    label: k.label.clone(),
                    bucket: Bucket::new(limits.for_role(k.role)),
                };
                Ok((k.key.expose().to_owned(), Arc::new(grant)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { keys })
    }

    pub fn grant(&self, key: &str) -> Option<Arc<Grant>> {
        self.keys.get(key).cloned()
    }

    /// The caller of `key`: 401 for an unknown key, 429 when its bucket is empty.
    /// The caller of `key`, charged one token of its rate limit unless the request was
    /// `forwarded` by another process of the chain (which charged it already).
    fn caller(&self, key: Option<&str>, forwarded: bool) -> Result<Caller, ApiError> {
        let grant = key
            .and_then(|k| self.grant(k))
            .ok_or(ApiError::Unauthorized)?;
        if !forwarded {
            grant
                .bucket
                .take()
                .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
        }
        Ok(Caller(grant))
    }
}

impl Grant {
    fn role_allows(&self, action: Action) -> bool {
        use Action::*;
        use MovementKind::*;
        match self.role {
            Role::Admin => true,
            Role::Viewer => matches!(
                action,
                ReadStock | ReadReservation | ReadLedger | ReadMetrics
            ),
            Role::Storefront => matches!(action, ReadStock | Reserve | ReadReservation),
            Role::Pos => matches!(
                action,
                ReadStock | ReadLedger | Move(SaleCounter | Receipt | Wastage | Return | Transfer)
            ),
            Role::Manager => matches!(
                action,
                ReadStock | ReadReservation | ReadLedger | ReadMetrics | Move(_)
            ),
        }
    }

    fn scoped(&self) -> bool {
        matches!(self.role, Role::Pos | Role::Manager)
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Arc<Grant>);

impl Caller {
    /// Whose reservation events this key may get on a stream.
    pub fn reservation_scope(&self) -> crate::hub::ReservationScope {
        use crate::hub::ReservationScope;
        let grant = &self.0;
        if !grant.role_allows(Action::ReadReservation) {
            ReservationScope::Nothing
        } else if grant.scoped() {
            ReservationScope::Only(grant.outlets.clone())
        } else {
            ReservationScope::Every
        }
    }

    /// Refuses with 403 unless the key's role allows `action` on `outlet`.
    pub fn require(&self, action: Action, outlet: Option<&OutletId>) -> Result<(), ApiError> {
        let grant = &self.0;
        if !grant.role_allows(action) {
            return Err(ApiError::Forbidden(
                format!("a {:?} key may not do this", grant.role).to_lowercase(),
            ));
        }
        if let (true, Some(outlet)) = (grant.scoped(), outlet) {
            if !grant.outlets.contains(outlet) {
                return Err(ApiError::Forbidden(format!(
                    "this key may not touch outlet {outlet}"
                )));
            }
        }
        Ok(())
    }
}

/// On a request that came signed from another process of the chain (set by the forwarding
/// middleware, forward.rs, once it checked the signature).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded;

fn forwarded(req: &HttpRequest) -> bool {
    actix_web::HttpMessage::extensions(req)
        .get::<Forwarded>()
        .is_some()
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

impl Caller {
    /// The caller by its `Authorization` header, or else by a `?key=` (browsers' EventSource
    /// and WebSocket cannot set headers).
    pub fn from_request_or_key(
        req: &HttpRequest,
        auth: &Auth,
        key: Option<&str>,
    ) -> Result<Self, ApiError> {
        auth.caller(bearer(req).or(key), forwarded(req))
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let auth = req
            .app_data::<web::Data<Auth>>()
            .expect("Auth is registered");
        ready(auth.caller(bearer(req), forwarded(req)))
    }
}
