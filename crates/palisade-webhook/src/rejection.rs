//! The layer's own refusals, typed, and their problem+json form.

use std::time::Duration;

use http::StatusCode;
use palisade_core::{PaymentError, Problem};

use crate::error::VerifyError;

/// Why the webhook layer answered instead of the handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookRejection {
    /// Verification failed: 400, type `webhook_signature` (`webhook_replay` for the timestamp window,
    /// `webhook_event_id_ambiguous` for a genuine body that names its event id twice).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// Webhooks are delivered with POST; any other method gets 405 with `Allow: POST` before anything is read.
    #[error("webhooks are delivered with POST; this route accepts nothing else")]
    MethodNotAllowed,
    /// The body is larger than the limit: 413.
    #[error(
        "webhook body is larger than the {limit}-byte limit; raise `body_limit` if the sender's events are this big"
    )]
    BodyTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away mid-body): 400.
    #[error("the webhook body could not be read to the end; the sender will retry")]
    BodyUnreadable,
    /// Deduplication is on but the verified event carries no id it could key on: 400. (Not for GitHub, which
    /// deduplicates on the body's digest.)
    #[error("the webhook carries no event id (webhook-id header, Stripe event `id`), so it cannot be deduplicated")]
    EventIdMissing,
    /// Another delivery of this event is being handled right now: 503 with `Retry-After`.
    #[error("this event is being handled by another delivery; retry after {} s", .retry_after.as_secs())]
    InProgress {
        /// Remaining lease of the running delivery.
        retry_after: Duration,
    },
    /// The delivery store could not be reached to claim the event: 503 with `Retry-After: 1`, the handler was not
    /// run. A claim that landed anyway is undone, so the redelivery is handled once the store answers.
    #[error("{0}")]
    Store(PaymentError),
}

impl WebhookRejection {
    /// The problem+json response for this rejection.
    #[must_use]
    pub fn problem(&self) -> Problem {
        match self {
            // The signature is genuine: say what is wrong, not "signature invalid".
            WebhookRejection::Invalid(e @ VerifyError::EventIdAmbiguous) => Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook_event_id_ambiguous",
                "webhook event id ambiguous",
                format!("{}: {e}", e.kind()),
            ),
            WebhookRejection::Invalid(e) => Problem::from_error(&PaymentError::from(e.clone())),
            WebhookRejection::MethodNotAllowed => Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
                self.to_string(),
            )
            .with_header(http::header::ALLOW, http::HeaderValue::from_static("POST")),
            WebhookRejection::BodyTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "webhook_body_too_large",
                "webhook body too large",
                self.to_string(),
            ),
            WebhookRejection::BodyUnreadable => Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook_body_unreadable",
                "webhook body unreadable",
                self.to_string(),
            ),
            WebhookRejection::EventIdMissing => Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook_event_id_missing",
                "webhook event id missing",
                self.to_string(),
            ),
            WebhookRejection::InProgress { retry_after } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook_in_progress",
                "webhook in progress",
                self.to_string(),
            )
            .with_retry_after((*retry_after).max(Duration::from_secs(1))),
            // A claim whose answer was lost is undone right after it, on the same connection (see the layer), so
            // the event can be redelivered as soon as the store answers again. Worst case (the undo is lost too):
            // a redelivery meanwhile gets 503 "in progress" with the true remaining lease, at most one lease.
            WebhookRejection::Store(e) => Problem::from_error(e).with_retry_after(Duration::from_secs(1)),
        }
    }
}

impl From<WebhookRejection> for PaymentError {
    fn from(r: WebhookRejection) -> Self {
        match r {
            WebhookRejection::Invalid(e) => e.into(),
            WebhookRejection::InProgress { retry_after } => {
                PaymentError::IdempotencyInFlight { retry_after: Some(retry_after) }
            }
            WebhookRejection::Store(e) => e,
            other @ (WebhookRejection::MethodNotAllowed
            | WebhookRejection::BodyTooLarge { .. }
            | WebhookRejection::BodyUnreadable
            | WebhookRejection::EventIdMissing) => PaymentError::invalid_request(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_conversions() {
        let p = WebhookRejection::InProgress { retry_after: Duration::from_millis(1500) }.problem();
        assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(p.retry_after, Some(2));
        assert_eq!(WebhookRejection::BodyTooLarge { limit: 1 }.problem().status, StatusCode::PAYLOAD_TOO_LARGE);
        let p = WebhookRejection::Invalid(VerifyError::NoSignatureMatched).problem();
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert_eq!(p.type_uri, "urn:palisade:problem:webhook_signature");
        let p = WebhookRejection::Invalid(VerifyError::EventIdAmbiguous).problem();
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert_eq!(p.type_uri, "urn:palisade:problem:webhook_event_id_ambiguous");
        let e: PaymentError = WebhookRejection::InProgress { retry_after: Duration::from_secs(3) }.into();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
}
