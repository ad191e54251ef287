//! The one place where outcomes become the error codes and statuses of API.md.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::actors::outlet::OutletError;
use crate::domain::Invalid;
use crate::durable::NotDurable;
use crate::store::ShortLine;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Validation(#[from] Invalid),
    #[error("not enough stock for every line")]
    OutOfStock {
        lines: Vec<ShortLine>,
        alternatives: Vec<Value>,
    },
    #[error("{message}")]
    Conflict {
        message: String,
        details: Option<Value>,
    },
    #[error("the reservation expired before it was confirmed")]
    Expired { reservation: Value },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("too many requests for this API key; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// Shed to keep the service within its budgets (a new hold while the ledger is behind):
    /// nothing was changed; `503 unavailable` with `Retry-After`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    /// A bug or an unexpected failure: logged with its cause chain, answered 500.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// A store (Redis, MongoDB) failed: `503`, with the whole cause chain.
    pub fn store(e: anyhow::Error) -> Self {
        Self::Unavailable(format!("{e:#}"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            details: None,
        }
    }

    /// The API.md error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Validation(_) => "validation_failed",
            Self::OutOfStock { .. } => "out_of_stock",
            Self::Conflict { .. } => "conflict",
            Self::Expired { .. } => "reservation_expired",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable(_) | Self::Overloaded { .. } => "unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl From<OutletError> for ApiError {
    fn from(e: OutletError) -> Self {
        match e {
            OutletError::Unavailable(m) => Self::Unavailable(m),
            OutletError::Overloaded(message) => Self::Overloaded {
                message,
                retry_after_secs: 1,
            },
        }
    }
}

impl From<NotDurable> for ApiError {
    fn from(e: NotDurable) -> Self {
        Self::Unavailable(format!(
            "{e}; the change is recorded and will be written: retry with the same key for its final answer"
        ))
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        Self::Unavailable(format!("the outlet did not answer: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::OutOfStock { .. } | Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Expired { .. } => StatusCode::GONE,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            Self::Validation(invalid) => {
                body["field"] = invalid.field.clone().into();
                body["message"] = invalid.message.clone().into();
            }
            Self::OutOfStock {
                lines,
                alternatives,
            } => {
                body["lines"] = json!(lines);
                body["alternatives"] = json!(alternatives);
            }
            Self::Conflict {
                details: Some(details),
                ..
            } => {
                if let (Some(b), Some(d)) = (body.as_object_mut(), details.as_object()) {
                    b.extend(d.clone());
                }
            }
            Self::Expired { reservation } => body["reservation"] = reservation.clone(),
            Self::RateLimited { retry_after_secs }
            | Self::Overloaded {
                retry_after_secs, ..
            } => {
                return HttpResponse::build(self.status_code())
                    .insert_header((
                        actix_web::http::header::RETRY_AFTER,
                        retry_after_secs.to_string(),
                    ))
                    .json(body);
            }
            Self::Unexpected(e) => tracing::error!(error = %format!("{e:#}"), "request failed"),
            _ => {}
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}
