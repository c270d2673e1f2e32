//! Typed errors: which verification check failed, why a secret was refused, why signing failed.

use palisade_core::{PaymentError, SafeText};

/// Why a webhook failed verification. Each variant names the check that failed; [`VerifyError::kind`] gives a
/// stable snake_case name for logs, metrics and the CLI.
///
/// Checks run in this order: headers present and well-formed, timestamp well-formed, signature matches one of
/// the configured secrets, and only then the timestamp window, so [`VerifyError::TooOld`] and
/// [`VerifyError::TooFarInFuture`] are only ever reported for requests the sender really signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error(
        "webhook header `{header}` is missing: the request was not signed with this scheme, or a proxy stripped the header"
    )]
    HeaderMissing {
        /// The header's name.
        header: &'static str,
    },
    /// A header is present but cannot be parsed.
    #[error("webhook header `{header}` is malformed ({reason}); check that the sender uses this scheme")]
    HeaderMalformed {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The signed timestamp is not a whole number of seconds since the Unix epoch.
    #[error("webhook timestamp is not a whole number of seconds since the Unix epoch")]
    TimestampMalformed,
    /// The signature is genuine but older than the past tolerance: a replay, or a delivery delayed that long.
    #[error(
        "webhook timestamp is {age_secs} s old, beyond the {tolerance_secs} s tolerance: a replay or a long-delayed delivery; check the clocks or raise the past tolerance"
    )]
    TooOld {
        /// How old the timestamp is.
        age_secs: u64,
        /// The configured past tolerance.
        tolerance_secs: u64,
    },
    /// The signature is genuine but its timestamp is further in the future than the future tolerance.
    #[error(
        "webhook timestamp is {ahead_secs} s in the future, beyond the {tolerance_secs} s tolerance: check the sender's and this host's clocks"
    )]
    TooFarInFuture {
        /// How far ahead the timestamp is.
        ahead_secs: u64,
        /// The configured future tolerance.
        tolerance_secs: u64,
    },
    /// No signature in the header matched any configured secret.
    #[error(
        "no webhook signature matched any configured secret: wrong secret, a body changed before verification (verify the raw bytes), or a forgery"
    )]
    NoSignatureMatched,
    /// The signature is genuine but the body names its event id twice (two top-level `"id"` members): which one
    /// is the event would depend on the JSON parser, so deduplication and the handler could disagree.
    #[error(
        "the webhook body has more than one top-level \"id\" member, so its event id is ambiguous; refused so deduplication and the handler cannot disagree"
    )]
    EventIdAmbiguous,
}

impl VerifyError {
    /// Every kind name, for exhaustive tables and documentation.
    pub const KINDS: [&'static str; 7] = [
        "header_missing",
        "header_malformed",
        "timestamp_malformed",
        "too_old",
        "too_far_in_future",
        "no_signature_matched",
        "event_id_ambiguous",
    ];

    /// Stable snake_case name of the failed check (`too_old`, `no_signature_matched`, ...).
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            VerifyError::HeaderMissing { .. } => "header_missing",
            VerifyError::HeaderMalformed { .. } => "header_malformed",
            VerifyError::TimestampMalformed => "timestamp_malformed",
            VerifyError::TooOld { .. } => "too_old",
            VerifyError::TooFarInFuture { .. } => "too_far_in_future",
            VerifyError::NoSignatureMatched => "no_signature_matched",
            VerifyError::EventIdAmbiguous => "event_id_ambiguous",
        }
    }

    /// True for the timestamp-window failures (a genuine signature outside the window).
    #[must_use]
    pub const fn is_replay(&self) -> bool {
        matches!(self, VerifyError::TooOld { .. } | VerifyError::TooFarInFuture { .. })
    }
}

impl From<VerifyError> for PaymentError {
    /// Window failures become [`PaymentError::WebhookReplay`], an ambiguous event id (the signature is genuine)
    /// [`PaymentError::InvalidRequest`], everything else [`PaymentError::WebhookSignature`]; the reason starts
    /// with the kind name.
    fn from(e: VerifyError) -> Self {
        let reason = SafeText::new(format!("{}: {e}", e.kind()));
        match e {
            VerifyError::EventIdAmbiguous => PaymentError::InvalidRequest { message: reason },
            e if e.is_replay() => PaymentError::WebhookReplay { reason },
            _ => PaymentError::WebhookSignature { reason },
        }
    }
}

/// A configured secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is empty.
    #[error("webhook secret is empty; copy the signing secret from the sender's dashboard")]
    Empty,
    /// A Standard Webhooks secret is not `whsec_` followed by base64.
    #[error("webhook secret is not valid base64 after the `whsec_` prefix; copy it exactly as the sender shows it")]
    NotBase64,
    /// No secret was configured.
    #[error("no webhook secret configured; add at least one with `.secret(..)`")]
    NoSecrets,
}

/// A message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The scheme signs a message id and none was given.
    #[error("the {scheme} scheme signs a message id: pass one (`--id` on the command line)")]
    MissingId {
        /// The scheme's name.
        scheme: &'static str,
    },
    /// The message id cannot be sent in an HTTP header.
    #[error("the message id must be visible ASCII without whitespace, so it travels in an HTTP header unchanged")]
    InvalidId,
    /// The timestamp is one no verifier accepts (negative, or more than 15 digits).
    #[error("timestamp {timestamp} cannot be verified: a Unix timestamp in seconds, 0 to 15 digits, is required")]
    TimestampOutOfRange {
        /// The timestamp given.
        timestamp: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_errors_map_to_webhook_replay_and_others_to_signature() {
        let e: PaymentError = VerifyError::TooOld { age_secs: 301, tolerance_secs: 300 }.into();
        assert!(matches!(&e, PaymentError::WebhookReplay { reason } if reason.as_str().starts_with("too_old")));
        let e: PaymentError = VerifyError::NoSignatureMatched.into();
        assert!(matches!(e, PaymentError::WebhookSignature { .. }));
        assert_eq!(e.http_status(), http::StatusCode::BAD_REQUEST);
        // The signature of a body with two event ids is genuine: not a signature failure.
        let e: PaymentError = VerifyError::EventIdAmbiguous.into();
        assert!(
            matches!(&e, PaymentError::InvalidRequest { message } if message.as_str().starts_with("event_id_ambiguous"))
        );
        assert_eq!(e.http_status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn kinds_table_matches_kind() {
        let all = [
            VerifyError::HeaderMissing { header: "x" },
            VerifyError::HeaderMalformed { header: "x", reason: "y" },
            VerifyError::TimestampMalformed,
            VerifyError::TooOld { age_secs: 1, tolerance_secs: 0 },
            VerifyError::TooFarInFuture { ahead_secs: 1, tolerance_secs: 0 },
            VerifyError::NoSignatureMatched,
            VerifyError::EventIdAmbiguous,
        ];
        let kinds: Vec<_> = all.iter().map(VerifyError::kind).collect();
        assert_eq!(kinds, VerifyError::KINDS);
    }
}
