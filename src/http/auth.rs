//! API keys, roles and outlet scopes (API.md, Conventions; the matrix is in the README).

use std::collections::{HashMap, HashSet};
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::{web, FromRequest, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::domain::{MovementKind, OutletId};
use crate::settings::{ApiKeySettings, Role};

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ReadStock,
    Reserve,
    ReadReservation,
    Move(MovementKind),
    ReadLedger,
    ReadMetrics,
}

#[derive(Debug)]
pub struct Grant {
    pub role: Role,
    outlets: HashSet<OutletId>,
    pub label: String,
}

pub struct Auth {
    keys: HashMap<String, Arc<Grant>>,
}

impl Auth {
    pub fn new(keys: &[ApiKeySettings]) -> anyhow::Result<Self> {
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
                };
                Ok((k.key.expose().to_owned(), Arc::new(grant)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { keys })
    }

    pub fn grant(&self, key: &str) -> Option<Arc<Grant>> {
        self.keys.get(key).cloned()
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
        state: &AppState,
        key: Option<&str>,
    ) -> Result<Self, ApiError> {
        bearer(req)
            .or(key)
            .and_then(|k| state.auth.grant(k))
            .map(Caller)
            .ok_or(ApiError::Unauthorized)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered");
        let grant = bearer(req).and_then(|key| state.auth.grant(key));
        ready(grant.map(Caller).ok_or(ApiError::Unauthorized))
    }
}
