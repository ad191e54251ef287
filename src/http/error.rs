//! The one place where outcomes become the error codes and statuses of API.md: the core's
//! `Error`, and what only HTTP refuses (keys, roles, rate limits, body sizes).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::outlet::OutletError;
use crate::domain::Invalid;
use crate::error::Error;
use crate::wire::reservation_json;

/// On a `503` response: the outlet another process owns, for the forwarding middleware
/// (forward.rs), which sends the request there.
#[derive(Debug, Clone)]
pub struct OwnedElsewhere(pub crate::domain::OutletId);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("too many requests for this API key; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Past the budget of requests without a valid key from one client address.
    #[error(
        "too many requests without a valid key from this address; retry after {retry_after_secs} s"
    )]
    AddressRateLimited { retry_after_secs: u64 },
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    /// Bad lines of a bulk request, each named: the whole `422` body.
    #[error("bad lines in a bulk request")]
    BulkRefused(serde_json::Value),
    /// What the core refused or failed at.
    #[error(transparent)]
    Core(#[from] Error),
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into()).into()
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable(message.into()).into()
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::conflict(message).into()
    }

    /// The API.md error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } | Self::AddressRateLimited { .. } => "rate_limited",
            Self::BodyTimeout { .. } => "request_timeout",
            Self::BulkRefused(_) => "validation_failed",
            Self::Core(e) => e.code(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Error::from(e).into()
    }
}

impl From<OutletError> for ApiError {
    fn from(e: OutletError) -> Self {
        Error::from(e).into()
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        Error::from(e).into()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Error::from(e).into()
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::AddressRateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::BulkRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Core(e) => match e {
                Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::OutOfStock { .. } | Error::Conflict { .. } => StatusCode::CONFLICT,
                Error::Expired { .. } => StatusCode::GONE,
                Error::Unavailable(_) | Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
                Error::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::BulkRefused(body) = self {
            return HttpResponse::build(self.status_code()).json(body);
        }
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        let retry_after_secs = match self {
            Self::RateLimited { retry_after_secs }
            | Self::AddressRateLimited { retry_after_secs }
            | Self::Core(Error::Overloaded {
                retry_after_secs, ..
            }) => Some(*retry_after_secs),
            // Every 503 says when to come back: a dependency that is down, a change not yet
            // durable (the retry with the same key gets its final answer), an outlet reloading.
            Self::Core(Error::Unavailable(_)) => Some(1),
            _ => None,
        };
        match self {
            Self::Core(Error::Invalid(invalid)) => {
                body["field"] = invalid.field.clone().into();
                body["message"] = invalid.message.clone().into();
            }
            Self::Core(Error::OutOfStock {
                lines,
                alternatives,
                similar,
            }) => {
                body["lines"] = json!(lines);
                body["alternatives"] = json!(alternatives);
                body["similar"] = json!(similar);
            }
            Self::Core(Error::Conflict {
                reservation: Some(r),
                ..
            })
            | Self::Core(Error::Expired { reservation: r }) => {
                body["reservation"] = reservation_json(r);
            }
            Self::Core(Error::Unexpected(e)) => {
                tracing::error!(error = %format!("{e:#}"), "request failed")
            }
            _ => {}
        }
        let mut answer = HttpResponse::build(self.status_code());
        if let Some(secs) = retry_after_secs {
            answer.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        if let Self::Core(Error::Overloaded {
            elsewhere: Some(outlet),
            ..
        }) = self
        {
            // For the forwarding middleware: another process owns the outlet.
            answer
                .extensions_mut()
                .insert(OwnedElsewhere(outlet.clone()));
        }
        answer.json(body)
    }
}
