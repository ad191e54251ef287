//! API keys, roles and outlet scopes (API.md, Conventions; the matrix is in the README).

use std::collections::HashSet;
use std::future::{ready, Ready};
use std::sync::Arc;

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
    /// Add, rename and retire SKUs (admin only).
    ManageCatalogue,
    /// Enter the head cook's numbers of the kitchen plan (admin, or a manager for its
    /// outlets).
    PlanKitchen,
}

#[derive(Debug)]
pub struct Grant {
    pub role: Role,
    outlets: HashSet<OutletId>,
    pub label: String,
    bucket: Bucket,
}

/// The configured keys by the SHA-256 of each. A presented key is hashed and compared with
/// every entry in constant time (no early exit, no map probe), so that the time an answer
/// takes says nothing about how much of a key was right.
pub struct Auth {
    keys: Vec<([u8; 32], Arc<Grant>)>,
    /// The budget of requests without a valid key, per client address.
    addresses: AddressLimiter,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Requests without a valid key, per client address (an IPv6 address by its /64, which one
/// subscriber typically holds whole), through `governor`'s keyed GCRA limiter. Addresses
/// whose budget is full again are dropped every 1,024 checks, so the map holds only the
/// addresses seen within one refill of their burst.
pub struct AddressLimiter {
    limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    checks: std::sync::atomic::AtomicU64,
}

impl AddressLimiter {
    pub fn new(b: BucketSettings) -> Self {
        Self {
            limiter: governor::RateLimiter::keyed(quota(b)),
            checks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Takes one request from `peer`'s budget, or says how many seconds until there is one.
    pub fn take(&self, peer: std::net::IpAddr) -> Result<(), u64> {
        use std::net::IpAddr;
        use std::sync::atomic::Ordering;
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        let key = match peer {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut octets = v6.octets();
                    octets[8..].fill(0);
                    IpAddr::V6(octets.into())
                }
            },
            v4 => v4,
        };
        self.limiter.check_key(&key).map_err(retry_after_secs)
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// A `{ per_sec, burst }` of the settings as governor's GCRA quota.
pub fn quota(b: BucketSettings) -> governor::Quota {
    let burst = std::num::NonZeroU32::new(b.burst).expect("checked at load");
    governor::Quota::with_period(std::time::Duration::from_secs_f64(1.0 / b.per_sec))
        .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MAX))
        .allow_burst(burst)
}

type Clock = governor::clock::DefaultClock;

/// Whole seconds (at least 1) until a refused request would be let through.
fn retry_after_secs(
    not_until: governor::NotUntil<<Clock as governor::clock::Clock>::Instant>,
) -> u64 {
    use governor::clock::Clock as _;
    let wait = not_until.wait_time_from(Clock::default().now());
    wait.as_secs_f64().ceil().max(1.0) as u64
}

fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// A key's budget (see `rate_limits`).
struct Bucket(governor::DefaultDirectRateLimiter);

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bucket")
    }
}

impl Bucket {
    fn new(b: BucketSettings) -> Self {
        Self(governor::RateLimiter::direct(quota(b)))
    }

    /// Takes a token, or says how many seconds until one is there.
    fn take(&self) -> Result<(), u64> {
        self.0.check().map_err(retry_after_secs)
    }
}

impl Auth {
    pub fn new(
        keys: &[ApiKeySettings],
        limits: &RateLimitSettings,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Self> {
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
                Ok((key_digest(k.key.expose()), Arc::new(grant)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            keys,
            addresses: AddressLimiter::new(limits.unauthenticated),
            metrics,
        })
    }

    /// Charges a request that carries no valid key to its client address: `429` past the
    /// address's budget (`rate_limits.unauthenticated`).
    pub fn charge_address(&self, peer: Option<std::net::IpAddr>) -> Result<(), ApiError> {
        let Some(peer) = peer else { return Ok(()) };
        self.addresses.take(peer).map_err(|retry_after_secs| {
            self.metrics
                .rate_limited
                .with_label_values(&["address"])
                .inc();
            ApiError::AddressRateLimited { retry_after_secs }
        })
    }

    pub fn grant(&self, key: &str) -> Option<Arc<Grant>> {
        use subtle::ConstantTimeEq;
        let digest = key_digest(key);
        let mut found = None;
        for (candidate, grant) in &self.keys {
            if bool::from(candidate.ct_eq(&digest)) {
                found = Some(grant.clone());
            }
        }
        found
    }

    /// The caller of `key`, charged one token of its rate limit unless the request was
    /// `forwarded` by another process of the chain (which charged it already).
    /// No key: `401` (the request was charged to its client address as it came in, see
    /// http/mod.rs). An unknown key: `401`, charged to the client address (`429` past its
    /// budget, so that guessing keys is as slow as any unauthenticated request).
    fn caller(
        &self,
        key: Option<&str>,
        forwarded: bool,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Caller, ApiError> {
        let Some(grant) = key.and_then(|k| self.grant(k)) else {
            if key.is_some() && !forwarded {
                self.charge_address(peer)?;
            }
            return Err(ApiError::Unauthorized);
        };
        if !forwarded {
            grant.bucket.take().map_err(|retry_after_secs| {
                self.metrics.rate_limited.with_label_values(&["key"]).inc();
                ApiError::RateLimited { retry_after_secs }
            })?;
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
            Role::Public => matches!(action, ReadStock),
            Role::Storefront => matches!(action, ReadStock | Reserve | ReadReservation),
            Role::Pos => matches!(
                action,
                ReadStock | ReadLedger | Move(SaleCounter | Receipt | Wastage | Return | Transfer)
            ),
            Role::Manager => matches!(
                action,
                ReadStock | ReadReservation | ReadLedger | ReadMetrics | Move(_) | PlanKitchen
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
    /// Who this caller is in the ledger (`by`): its key's label.
    pub fn by(&self) -> crate::store::By {
        self.0.label.as_str().into()
    }

    /// Whose reservation events this key may get on a stream.
    pub fn reservation_scope(&self) -> crate::hub::ReservationScope {
        self.scope(Action::ReadReservation)
    }

    /// Whose alerts this key may get on a stream: the outlets whose ledger it may read, as
    /// for `GET /v1/alerts`.
    pub fn alert_scope(&self) -> crate::hub::ReservationScope {
        self.scope(Action::ReadLedger)
    }

    fn scope(&self, action: Action) -> crate::hub::ReservationScope {
        use crate::hub::ReservationScope;
        let grant = &self.0;
        if !grant.role_allows(action) {
            ReservationScope::Nothing
        } else if grant.scoped() {
            ReservationScope::Only(grant.outlets.clone())
        } else {
            ReservationScope::Every
        }
    }

    /// The outlets a request covers: the one it `named` (known, and `action` allowed there:
    /// else 422 or 403), or, naming none, those of `all` where the key may do `action` (403
    /// when its role may not do it at all).
    pub fn outlets_for(
        &self,
        action: Action,
        catalogue: &crate::catalogue::Catalogue,
        named: Option<&str>,
        all: impl IntoIterator<Item = OutletId>,
    ) -> Result<Vec<OutletId>, ApiError> {
        if let Some(named) = named {
            let outlet = catalogue.known_outlet("outlet", named)?;
            self.require(action, Some(&outlet))?;
            return Ok(vec![outlet]);
        }
        self.require(action, None)?;
        Ok((all.into_iter())
            .filter(|o| self.require(action, Some(o)).is_ok())
            .collect())
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

/// The client's address as the socket gives it (a proxy in front is not looked through).
pub fn peer(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// The key of an `Authorization: Bearer` header.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
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
        auth.caller(bearer(req).or(key), forwarded(req), peer(req))
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let auth = req
            .app_data::<web::Data<Auth>>()
            .expect("Auth is registered");
        ready(auth.caller(bearer(req), forwarded(req), peer(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Secret;

    fn auth(keys: &[(&str, &str)]) -> Auth {
        let keys: Vec<ApiKeySettings> = keys
            .iter()
            .map(|(key, label)| ApiKeySettings {
                key: Secret::new(*key),
                role: Role::Viewer,
                outlets: Vec::new(),
                label: (*label).to_owned(),
            })
            .collect();
        let bucket = BucketSettings {
            per_sec: 1.0,
            burst: 1,
        };
        let limits = RateLimitSettings {
            public: bucket,
            storefront: bucket,
            pos: bucket,
            manager: bucket,
            viewer: bucket,
            admin: bucket,
            unauthenticated: bucket,
        };
        Auth::new(&keys, &limits, Arc::new(crate::metrics::Metrics::new())).unwrap()
    }

    #[test]
    fn a_key_is_found_only_whole() {
        let auth = auth(&[
            ("first-key-of-sixteen", "one"),
            ("second-key-of-sixteen", "two"),
        ]);
        assert_eq!(auth.grant("second-key-of-sixteen").unwrap().label, "two");
        assert_eq!(auth.grant("first-key-of-sixteen").unwrap().label, "one");
        for near in [
            "second-key-of-sixtee",
            "second-key-of-sixteen ",
            "second-key-of-sixteeN",
            "",
        ] {
            assert!(auth.grant(near).is_none(), "{near:?}");
        }
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let limiter = AddressLimiter::new(BucketSettings {
            per_sec: 0.001,
            burst: 2,
        });
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.take(a).is_ok());
        assert!(limiter.take(b).is_ok());
        assert!(limiter.take(a).is_err(), "the same /64");
        assert!(limiter.take(other).is_ok(), "another /64");
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(limiter.take(v4).is_ok());
        assert!(limiter.take(mapped).is_ok());
        assert!(
            limiter.take(v4).is_err(),
            "a mapped address is its IPv4 one"
        );
        assert_eq!(limiter.tracked(), 3);
    }
}
