//! The layer's own refusals ([`IdempotencyRejection`]) and store failures ([`StoreError`]).

use std::time::Duration;

use http::StatusCode;
use palisade_core::{KeyError, PaymentError, Problem};

use palisade_store::StoreError;

/// Why the idempotency layer answered a request itself instead of executing it.
///
/// Converts into [`PaymentError`] (typed mode) and into an RFC 9457 [`Problem`] (HTTP mode).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IdempotencyRejection {
    /// A request with this key is being executed right now (its lease is alive). HTTP 409.
    #[error("a request with this idempotency key is in flight; retry after {} ms", retry_after.as_millis())]
    InFlight {
        /// When to try again.
        retry_after: Duration,
    },
    /// The key was used before with a different request (method, path, body or fingerprinted headers). HTTP 422.
    #[error("idempotency key reused with a different request; use a new key for a new request")]
    Conflict,
    /// The request has no idempotency key and the layer is configured to require one. HTTP 400.
    #[error("an Idempotency-Key is required for this request: send a unique key per operation")]
    KeyMissing,
    /// The key is malformed (empty, too long, characters outside visible ASCII, more than one header). HTTP 400.
    #[error("invalid Idempotency-Key: {0}")]
    InvalidKey(String),
    /// The body is larger than the configured limit, so it cannot be fingerprinted. HTTP 413.
    #[error("request body exceeds {limit} bytes, the most the idempotency layer buffers; send a smaller body")]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The request body could not be read. HTTP 400.
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// The store could not be reached to claim the key, so the request was not executed. HTTP 503.
    #[error("{0}; the request was not executed, retry later with the same key")]
    StoreUnavailable(#[from] StoreError),
    /// A stored result exists but cannot be decoded (written by an incompatible version?). The request was not
    /// executed again, because it may already have taken effect. HTTP 503.
    #[error("stored idempotent result for this key cannot be decoded: {0}; the request was not executed again")]
    UnreadableRecord(String),
}

impl From<KeyError> for IdempotencyRejection {
    fn from(e: KeyError) -> Self {
        IdempotencyRejection::InvalidKey(e.to_string())
    }
}

impl IdempotencyRejection {
    /// Stable snake_case name, for logs, metric labels and problem types.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            IdempotencyRejection::InFlight { .. } => "idempotency_in_flight",
            IdempotencyRejection::Conflict => "idempotency_conflict",
            IdempotencyRejection::KeyMissing => "idempotency_key_missing",
            IdempotencyRejection::InvalidKey(_) => "idempotency_key_invalid",
            IdempotencyRejection::BodyTooLarge { .. } => "payload_too_large",
            IdempotencyRejection::BodyRead(_) => "body_unreadable",
            IdempotencyRejection::StoreUnavailable(_) => "store_unavailable",
            IdempotencyRejection::UnreadableRecord(_) => "store_unavailable",
        }
    }

    /// The HTTP status of this rejection.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            IdempotencyRejection::InFlight { .. } => StatusCode::CONFLICT,
            IdempotencyRejection::Conflict => StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyRejection::KeyMissing
            | IdempotencyRejection::InvalidKey(_)
            | IdempotencyRejection::BodyRead(_) => StatusCode::BAD_REQUEST,
            IdempotencyRejection::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IdempotencyRejection::StoreUnavailable(_) | IdempotencyRejection::UnreadableRecord(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The RFC 9457 problem document for this rejection (with `Retry-After` where it has one).
    #[must_use]
    pub fn to_problem(&self) -> Problem {
        let title = match self {
            IdempotencyRejection::InFlight { .. } => "request in flight",
            IdempotencyRejection::Conflict => "idempotency key reused",
            IdempotencyRejection::KeyMissing => "idempotency key missing",
            IdempotencyRejection::InvalidKey(_) => "idempotency key invalid",
            IdempotencyRejection::BodyTooLarge { .. } => "payload too large",
            IdempotencyRejection::BodyRead(_) => "body unreadable",
            IdempotencyRejection::StoreUnavailable(_) | IdempotencyRejection::UnreadableRecord(_) => {
                "store unavailable"
            }
        };
        let p = Problem::new(self.status(), self.kind(), title, self.to_string());
        match self {
            IdempotencyRejection::InFlight { retry_after } => p.with_retry_after(*retry_after),
            IdempotencyRejection::StoreUnavailable(_) => p.with_retry_after(Duration::from_secs(1)),
            _ => p,
        }
    }
}

impl From<IdempotencyRejection> for PaymentError {
    fn from(r: IdempotencyRejection) -> Self {
        match r {
            IdempotencyRejection::InFlight { retry_after } => {
                PaymentError::IdempotencyInFlight { retry_after: Some(retry_after) }
            }
            IdempotencyRejection::Conflict => PaymentError::IdempotencyConflict,
            IdempotencyRejection::KeyMissing => PaymentError::IdempotencyKeyMissing,
            r @ (IdempotencyRejection::InvalidKey(_)
            | IdempotencyRejection::BodyTooLarge { .. }
            | IdempotencyRejection::BodyRead(_)) => PaymentError::invalid_request(r.to_string()),
            r @ (IdempotencyRejection::StoreUnavailable(_) | IdempotencyRejection::UnreadableRecord(_)) => {
                PaymentError::store_unavailable(r.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ErrorKind;

    #[test]
    fn rejections_map_to_the_right_payment_errors_and_statuses() {
        let cases: Vec<(IdempotencyRejection, ErrorKind, u16)> = vec![
            (
                IdempotencyRejection::InFlight { retry_after: Duration::from_secs(1) },
                ErrorKind::IdempotencyInFlight,
                409,
            ),
            (IdempotencyRejection::Conflict, ErrorKind::IdempotencyConflict, 422),
            (IdempotencyRejection::KeyMissing, ErrorKind::IdempotencyKeyMissing, 400),
            (IdempotencyRejection::InvalidKey("x".into()), ErrorKind::InvalidRequest, 400),
            (IdempotencyRejection::BodyTooLarge { limit: 1 }, ErrorKind::InvalidRequest, 413),
            (IdempotencyRejection::StoreUnavailable(StoreError::new("down")), ErrorKind::StoreUnavailable, 503),
            (IdempotencyRejection::UnreadableRecord("bad".into()), ErrorKind::StoreUnavailable, 503),
        ];
        for (r, kind, status) in cases {
            assert_eq!(r.status().as_u16(), status, "{r}");
            assert_eq!(r.to_problem().status.as_u16(), status, "{r}");
            assert_eq!(PaymentError::from(r.clone()).kind(), kind, "{r}");
        }
        let p = IdempotencyRejection::InFlight { retry_after: Duration::from_millis(1500) }.to_problem();
        assert_eq!(p.retry_after, Some(2));
    }

    /// Issue 16, finding 18: a store error says what failed, never what happened to the request (it is logged
    /// after executions too); only the refusal before execution says "not executed".
    #[test]
    fn messages_say_what_really_happened() {
        let e = StoreError::new("redis: timed out");
        assert!(!e.to_string().contains("executed"), "{e}");
        let refusal = IdempotencyRejection::StoreUnavailable(e).to_string();
        assert!(refusal.contains("was not executed"), "{refusal}");
    }
}
