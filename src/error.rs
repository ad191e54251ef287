//! The core's error: why an operation (a hold, a confirm, a movement, …) was refused or
//! failed, as domain values. The edges map it: `http/error.rs` to API.md's statuses and
//! bodies, `mqtt/pos.rs` to a rejection on `dlq/…`. Its `code` is API.md's error code, the
//! one vocabulary both edges speak.

use serde::Serialize;

use crate::actors::outlet::OutletError;
use crate::domain::{Invalid, OutletId};
use crate::durable::NotDurable;
use crate::stock_view::LineStock;
use crate::store::{ResRecord, ShortLine};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value the caller sent, and the field it came in.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    NotFound(String),
    /// Nothing was held: the lines short, and where else the cart could be filled.
    #[error("not enough stock for every line")]
    OutOfStock {
        lines: Vec<ShortLine>,
        alternatives: Vec<Alternative>,
        /// Items like the short ones that the outlet has now.
        similar: Vec<Similar>,
    },
    /// A key used with another body or outlet, or a reservation in the wrong state (which
    /// is then given as it is now).
    #[error("{message}")]
    Conflict {
        message: String,
        reservation: Option<Box<ResRecord>>,
    },
    #[error("the reservation expired before it was confirmed")]
    Expired { reservation: Box<ResRecord> },
    /// Nothing was decided, or what was decided is not durable yet: a retry with the same
    /// key gets the final answer.
    #[error("{0}")]
    Unavailable(String),
    /// Shed to keep the service within its budgets (a new hold while the ledger is behind),
    /// or the outlet is moving between the service's processes: nothing was changed; come
    /// back after `retry_after_secs`.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
        /// The outlet, when another process owns it: the HTTP edge forwards the request to
        /// that process (http/forward.rs) and answers with its answer.
        elsewhere: Option<OutletId>,
    },
    /// A bug or an unexpected failure, with its cause chain.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

/// Another outlet that could fill a cart (the `alternatives` of an `out_of_stock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alternative {
    pub outlet: OutletId,
    pub can_serve: bool,
    /// The delivery cost, for an outlet serving the request's PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<i64>,
    /// What the outlet has of each line, for an outlet serving the request's PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<LineStock>>,
}

/// An item like a short line's SKU that the outlet has now: the same category and, when the
/// name shows a pack size, the same size (catalogue.rs, `similar`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Similar {
    /// The short line's SKU this could stand in for.
    pub for_sku: crate::domain::Sku,
    pub sku: crate::domain::Sku,
    pub name: String,
    pub available: i64,
}

impl Error {
    /// A store (Redis, MongoDB) failed: unavailable. The cause chain (addresses, server
    /// messages) goes to the log, never to the caller.
    pub fn store(e: anyhow::Error) -> Self {
        tracing::warn!(error = %format!("{e:#}"), "a store failed");
        Self::Unavailable(crate::store::STORE_DOWN.to_owned())
    }

    /// The same refusal, without naming an outlet owned elsewhere: the HTTP edge answers it
    /// `503` instead of forwarding the request.
    pub fn not_forwarded(self) -> Self {
        match self {
            Self::Overloaded {
                message,
                retry_after_secs,
                ..
            } => Self::Overloaded {
                message,
                retry_after_secs,
                elsewhere: None,
            },
            e => e,
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            reservation: None,
        }
    }

    /// The API.md error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "validation_failed",
            Self::NotFound(_) => "not_found",
            Self::OutOfStock { .. } => "out_of_stock",
            Self::Conflict { .. } => "conflict",
            Self::Expired { .. } => "reservation_expired",
            Self::Unavailable(_) | Self::Overloaded { .. } => "unavailable",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl From<OutletError> for Error {
    fn from(e: OutletError) -> Self {
        match e {
            OutletError::Unavailable(m) => Self::Unavailable(m),
            OutletError::Overloaded(message) | OutletError::Moved(message) => Self::Overloaded {
                message,
                retry_after_secs: 1,
                elsewhere: None,
            },
        }
    }
}

impl From<NotDurable> for Error {
    fn from(e: NotDurable) -> Self {
        Self::Unavailable(format!(
            "{e}; the change is recorded and will be written: retry with the same key for its final answer"
        ))
    }
}

impl From<actix::MailboxError> for Error {
    fn from(e: actix::MailboxError) -> Self {
        Self::Unavailable(format!("the outlet did not answer: {e}"))
    }
}
