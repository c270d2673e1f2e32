//! `PaymentError`: one typed error for a whole gateway stack.
//!
//! Every variant maps to exactly one [`Outcome`], so every layer (retry, breaker, idempotency) reads the same
//! meaning from the same error. Errors serialize with their type intact (`{"kind":"card_declined",...}`), so a
//! stored decline is replayed as the same decline, not as a generic failure.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::card::mask_card_like;
use crate::outcome::Outcome;
use crate::text::{Compact, deserialize_text, text_traits};

/// Free text that can never carry a card number: card-like digit runs are masked on construction and on
/// deserialization. Short text is kept inline (see [`GatewayId`](crate::GatewayId)), so cloning an order
/// reference or a short message does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SafeText(Compact);

impl SafeText {
    /// Builds safe text, masking any card-like digit run as `[REDACTED_PAN]`.
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let text = if crate::card::contains_card_like(&text) { mask_card_like(&text) } else { text };
        SafeText(Compact::from_string(text))
    }
    /// The (already masked) text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
impl From<String> for SafeText {
    fn from(s: String) -> Self {
        SafeText::new(s)
    }
}
impl From<&str> for SafeText {
    fn from(s: &str) -> Self {
        SafeText::new(s)
    }
}
text_traits!(SafeText);
impl<'de> Deserialize<'de> for SafeText {
    /// Masks card-like digit runs in what it reads, as [`SafeText::new`] does.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = deserialize_text(d)?;
        Ok(if crate::card::contains_card_like(text.as_str()) { SafeText::new(text.as_str()) } else { SafeText(text) })
    }
}

impl From<crate::text::ReferenceError> for PaymentError {
    fn from(e: crate::text::ReferenceError) -> Self {
        PaymentError::invalid_request(e.to_string())
    }
}

/// A gateway's own reason code (`card_declined`, `do_not_honor`, `51`...), sanitized: lowercase ASCII letters,
/// digits, `_`, `-` and `.` only, at most 64 characters. Anything else is replaced by `_`, so a gateway that echoes
/// a card number or free text in its code cannot smuggle it into logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GatewayCode(Compact);

impl GatewayCode {
    /// Maximum length kept; longer codes are truncated.
    pub const MAX_LEN: usize = 64;

    /// Sanitizes `code` into a gateway code.
    #[must_use]
    pub fn new(code: &str) -> Self {
        let masked = mask_card_like(code);
        let s: String = masked
            .chars()
            .take(Self::MAX_LEN)
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }
            })
            .collect();
        GatewayCode(Compact::from_string(s))
    }
    /// The sanitized code.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
impl From<String> for GatewayCode {
    fn from(s: String) -> Self {
        GatewayCode::new(&s)
    }
}
text_traits!(GatewayCode);
impl<'de> Deserialize<'de> for GatewayCode {
    /// Sanitizes what it reads, as [`GatewayCode::new`] does.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_text(d).map(|text| GatewayCode::new(text.as_str()))
    }
}

/// Serde helper: `Option<Duration>` as integer milliseconds.
mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Everything that can go wrong on a call against money, typed so each layer can act on it.
///
/// The [`Outcome`] of each variant (see [`PaymentError::outcome`]) is the contract every layer relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PaymentError {
    /// The request never left this process or was refused before the gateway read it (connection refused, DNS
    /// failure). Nothing happened at the gateway. Outcome: `Retriable`.
    #[error("network failure before the request was sent: {message}; nothing was charged, safe to retry")]
    NetworkBeforeSend {
        /// What failed.
        message: SafeText,
    },
    /// The request was sent but no answer came back in time (timeout, reset after send). The charge may have
    /// happened. Outcome: `Unknown`: retry only with the same gateway idempotency key.
    #[error(
        "gateway timed out after the request was sent: {message}; the charge may have happened, retry only with the same idempotency key"
    )]
    GatewayTimeout {
        /// What failed.
        message: SafeText,
    },
    /// The gateway answered with a server error (500, 502, 504) after receiving the request. Outcome: `Unknown`.
    #[error(
        "gateway server error (HTTP {status}); the charge may have happened, retry only with the same idempotency key"
    )]
    GatewayServerError {
        /// The HTTP status the gateway returned.
        status: u16,
        /// The gateway's code, if any.
        code: Option<GatewayCode>,
    },
    /// The gateway is temporarily unavailable and did nothing (503 without side effect). Outcome: `Retriable`.
    #[error("gateway unavailable; nothing was charged, retry later")]
    GatewayUnavailable {
        /// How long the gateway asked us to wait.
        #[serde(with = "opt_millis", default, rename = "retry_after_ms")]
        retry_after: Option<Duration>,
    },
    /// Too many requests (the gateway's 429, or Palisade's own rate limiter). Outcome: `Retriable`.
    #[error("rate limited; retry after {}", fmt_after(.retry_after))]
    RateLimited {
        /// When a retry may succeed.
        #[serde(with = "opt_millis", default, rename = "retry_after_ms")]
        retry_after: Option<Duration>,
    },
    /// The issuer declined the card. Final. Outcome: `Terminal`.
    #[error("card declined{}", fmt_code(.code))]
    CardDeclined {
        /// The decline code, e.g. `generic_decline`, `do_not_honor`.
        code: Option<GatewayCode>,
    },
    /// The card has insufficient funds. Final. Outcome: `Terminal`.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// Blocked by fraud rules (the gateway's or Palisade's). Final. Outcome: `Terminal`.
    #[error("blocked as suspected fraud{}", fmt_code(.rule))]
    FraudBlocked {
        /// The rule that blocked it.
        rule: Option<GatewayCode>,
    },
    /// The issuer requires customer authentication (3-D Secure). Final for this request; send the customer to
    /// the challenge. Outcome: `Terminal`.
    #[error("customer authentication required")]
    AuthenticationRequired {
        /// Where to send the customer.
        challenge_url: Option<String>,
    },
    /// The request was invalid (bad amount, unknown currency, unknown authorization). Outcome: `Terminal`.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// What was wrong.
        message: SafeText,
    },
    /// The idempotency key was already used with a different request. Use a new key. Outcome: `Terminal`.
    #[error("idempotency key reused with a different request; use a new key for a new request")]
    IdempotencyConflict,
    /// A request with this idempotency key is still being processed. Outcome: `Retriable`.
    #[error("a request with this idempotency key is in flight; retry after {}", fmt_after(.retry_after))]
    IdempotencyInFlight {
        /// When the in-flight request's lease ends at the latest.
        #[serde(with = "opt_millis", default, rename = "retry_after_ms")]
        retry_after: Option<Duration>,
    },
    /// An idempotency key was required but the request had none. Outcome: `Terminal`.
    #[error("an Idempotency-Key is required for this request")]
    IdempotencyKeyMissing,
    /// The circuit breaker is open: the gateway was failing, the call was not attempted. Outcome: `Retriable`.
    #[error("circuit open: gateway calls are failing fast; retry after {}", fmt_after(.retry_after))]
    CircuitOpen {
        /// Remaining open time.
        #[serde(with = "opt_millis", default, rename = "retry_after_ms")]
        retry_after: Option<Duration>,
    },
    /// A state store (Redis) could not be reached; the call was not attempted. Outcome: `Retriable`.
    #[error("state store unavailable: {message}; the call was not attempted")]
    StoreUnavailable {
        /// What failed.
        message: SafeText,
    },
    /// A saga step failed and its compensation failed too: money may be in an inconsistent state and needs
    /// attention. Outcome: `Unknown`.
    #[error("saga compensation failed at step {step}: {message}")]
    SagaCompensationFailed {
        /// The step whose compensation failed.
        step: SafeText,
        /// What failed.
        message: SafeText,
    },
    /// A webhook's signature was missing, malformed or did not match. Outcome: `Terminal`.
    #[error("webhook signature invalid: {reason}")]
    WebhookSignature {
        /// Which check failed.
        reason: SafeText,
    },
    /// A webhook was outside the replay window or was already processed. Outcome: `Terminal`.
    #[error("webhook replay rejected: {reason}")]
    WebhookReplay {
        /// Why.
        reason: SafeText,
    },
}

fn fmt_after(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!("{} ms", d.as_millis()),
        None => "a short wait".to_owned(),
    }
}
fn fmt_code(c: &Option<GatewayCode>) -> String {
    match c {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    }
}

/// The kind of a [`PaymentError`], without its data: cheap to copy, stable names for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum ErrorKind {
    NetworkBeforeSend,
    GatewayTimeout,
    GatewayServerError,
    GatewayUnavailable,
    RateLimited,
    CardDeclined,
    InsufficientFunds,
    FraudBlocked,
    AuthenticationRequired,
    InvalidRequest,
    IdempotencyConflict,
    IdempotencyInFlight,
    IdempotencyKeyMissing,
    CircuitOpen,
    StoreUnavailable,
    SagaCompensationFailed,
    WebhookSignature,
    WebhookReplay,
}

impl ErrorKind {
    /// Every kind, for exhaustive tables.
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::NetworkBeforeSend,
        ErrorKind::GatewayTimeout,
        ErrorKind::GatewayServerError,
        ErrorKind::GatewayUnavailable,
        ErrorKind::RateLimited,
        ErrorKind::CardDeclined,
        ErrorKind::InsufficientFunds,
        ErrorKind::FraudBlocked,
        ErrorKind::AuthenticationRequired,
        ErrorKind::InvalidRequest,
        ErrorKind::IdempotencyConflict,
        ErrorKind::IdempotencyInFlight,
        ErrorKind::IdempotencyKeyMissing,
        ErrorKind::CircuitOpen,
        ErrorKind::StoreUnavailable,
        ErrorKind::SagaCompensationFailed,
        ErrorKind::WebhookSignature,
        ErrorKind::WebhookReplay,
    ];

    /// Stable snake_case name (`card_declined`), used in logs, metrics labels and problem+json `type`s.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NetworkBeforeSend => "network_before_send",
            ErrorKind::GatewayTimeout => "gateway_timeout",
            ErrorKind::GatewayServerError => "gateway_server_error",
            ErrorKind::GatewayUnavailable => "gateway_unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::CardDeclined => "card_declined",
            ErrorKind::InsufficientFunds => "insufficient_funds",
            ErrorKind::FraudBlocked => "fraud_blocked",
            ErrorKind::AuthenticationRequired => "authentication_required",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::IdempotencyConflict => "idempotency_conflict",
            ErrorKind::IdempotencyInFlight => "idempotency_in_flight",
            ErrorKind::IdempotencyKeyMissing => "idempotency_key_missing",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::SagaCompensationFailed => "saga_compensation_failed",
            ErrorKind::WebhookSignature => "webhook_signature",
            ErrorKind::WebhookReplay => "webhook_replay",
        }
    }

    /// What this kind of error means for retry, breaker and idempotency (the table in DESIGN.md).
    #[must_use]
    pub const fn outcome_class(self) -> OutcomeClass {
        match self {
            ErrorKind::NetworkBeforeSend
            | ErrorKind::GatewayUnavailable
            | ErrorKind::RateLimited
            | ErrorKind::IdempotencyInFlight
            | ErrorKind::CircuitOpen
            | ErrorKind::StoreUnavailable => OutcomeClass::Retriable,
            ErrorKind::GatewayTimeout | ErrorKind::GatewayServerError | ErrorKind::SagaCompensationFailed => {
                OutcomeClass::Unknown
            }
            ErrorKind::CardDeclined
            | ErrorKind::InsufficientFunds
            | ErrorKind::FraudBlocked
            | ErrorKind::AuthenticationRequired
            | ErrorKind::InvalidRequest
            | ErrorKind::IdempotencyConflict
            | ErrorKind::IdempotencyKeyMissing
            | ErrorKind::WebhookSignature
            | ErrorKind::WebhookReplay => OutcomeClass::Terminal,
        }
    }

    /// True for rejections produced by a Palisade layer itself rather than by the gateway. Breakers can choose
    /// whether these count (see `palisade-circuit-breaker`).
    #[must_use]
    pub const fn is_layer_rejection(self) -> bool {
        matches!(
            self,
            ErrorKind::IdempotencyConflict
                | ErrorKind::IdempotencyInFlight
                | ErrorKind::IdempotencyKeyMissing
                | ErrorKind::CircuitOpen
                | ErrorKind::StoreUnavailable
                | ErrorKind::RateLimited
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// [`Outcome`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeClass {
    /// See [`Outcome::Success`].
    Success,
    /// See [`Outcome::Terminal`].
    Terminal,
    /// See [`Outcome::Retriable`].
    Retriable,
    /// See [`Outcome::Unknown`].
    Unknown,
}

impl OutcomeClass {
    /// Stable lowercase name, for logs and metric labels.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Success => "success",
            OutcomeClass::Terminal => "terminal",
            OutcomeClass::Retriable => "retriable",
            OutcomeClass::Unknown => "unknown",
        }
    }
}

impl PaymentError {
    /// The error's kind.
    #[must_use]
    pub const fn kind(&self) -> ErrorKind {
        match self {
            PaymentError::NetworkBeforeSend { .. } => ErrorKind::NetworkBeforeSend,
            PaymentError::GatewayTimeout { .. } => ErrorKind::GatewayTimeout,
            PaymentError::GatewayServerError { .. } => ErrorKind::GatewayServerError,
            PaymentError::GatewayUnavailable { .. } => ErrorKind::GatewayUnavailable,
            PaymentError::RateLimited { .. } => ErrorKind::RateLimited,
            PaymentError::CardDeclined { .. } => ErrorKind::CardDeclined,
            PaymentError::InsufficientFunds => ErrorKind::InsufficientFunds,
            PaymentError::FraudBlocked { .. } => ErrorKind::FraudBlocked,
            PaymentError::AuthenticationRequired { .. } => ErrorKind::AuthenticationRequired,
            PaymentError::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            PaymentError::IdempotencyConflict => ErrorKind::IdempotencyConflict,
            PaymentError::IdempotencyInFlight { .. } => ErrorKind::IdempotencyInFlight,
            PaymentError::IdempotencyKeyMissing => ErrorKind::IdempotencyKeyMissing,
            PaymentError::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            PaymentError::StoreUnavailable { .. } => ErrorKind::StoreUnavailable,
            PaymentError::SagaCompensationFailed { .. } => ErrorKind::SagaCompensationFailed,
            PaymentError::WebhookSignature { .. } => ErrorKind::WebhookSignature,
            PaymentError::WebhookReplay { .. } => ErrorKind::WebhookReplay,
        }
    }

    /// What this error means for retry, breaker and idempotency. Retriable outcomes carry the error's
    /// `retry_after`, if it has one.
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        match self.kind().outcome_class() {
            OutcomeClass::Success => Outcome::Success,
            OutcomeClass::Terminal => Outcome::Terminal,
            OutcomeClass::Unknown => Outcome::Unknown,
            OutcomeClass::Retriable => Outcome::Retriable { retry_after: self.retry_after() },
        }
    }

    /// The wait the error asks for, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PaymentError::GatewayUnavailable { retry_after }
            | PaymentError::RateLimited { retry_after }
            | PaymentError::IdempotencyInFlight { retry_after }
            | PaymentError::CircuitOpen { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The sanitized gateway code: the gateway's own code where it gave one, else the kind's stable name.
    #[must_use]
    pub fn gateway_code(&self) -> &str {
        match self {
            PaymentError::CardDeclined { code: Some(c) }
            | PaymentError::GatewayServerError { code: Some(c), .. }
            | PaymentError::FraudBlocked { rule: Some(c) } => c.as_str(),
            _ => self.kind().as_str(),
        }
    }

    /// The HTTP status an API should answer with for this error.
    #[must_use]
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self.kind() {
            ErrorKind::NetworkBeforeSend | ErrorKind::GatewayServerError => S::BAD_GATEWAY,
            ErrorKind::GatewayTimeout => S::GATEWAY_TIMEOUT,
            ErrorKind::GatewayUnavailable | ErrorKind::CircuitOpen | ErrorKind::StoreUnavailable => {
                S::SERVICE_UNAVAILABLE
            }
            ErrorKind::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorKind::CardDeclined
            | ErrorKind::InsufficientFunds
            | ErrorKind::FraudBlocked
            | ErrorKind::AuthenticationRequired => S::PAYMENT_REQUIRED,
            ErrorKind::InvalidRequest | ErrorKind::IdempotencyKeyMissing => S::BAD_REQUEST,
            ErrorKind::IdempotencyConflict => S::UNPROCESSABLE_ENTITY,
            ErrorKind::IdempotencyInFlight => S::CONFLICT,
            ErrorKind::SagaCompensationFailed => S::INTERNAL_SERVER_ERROR,
            ErrorKind::WebhookSignature | ErrorKind::WebhookReplay => S::BAD_REQUEST,
        }
    }

    /// Shorthand for [`PaymentError::InvalidRequest`].
    #[must_use]
    pub fn invalid_request(message: impl Into<String>) -> Self {
        PaymentError::InvalidRequest { message: SafeText::new(message) }
    }
    /// Shorthand for [`PaymentError::CardDeclined`] with a code.
    #[must_use]
    pub fn declined(code: &str) -> Self {
        PaymentError::CardDeclined { code: Some(GatewayCode::new(code)) }
    }
    /// Shorthand for [`PaymentError::GatewayTimeout`].
    #[must_use]
    pub fn timeout(message: impl Into<String>) -> Self {
        PaymentError::GatewayTimeout { message: SafeText::new(message) }
    }
    /// Shorthand for [`PaymentError::NetworkBeforeSend`].
    #[must_use]
    pub fn network(message: impl Into<String>) -> Self {
        PaymentError::NetworkBeforeSend { message: SafeText::new(message) }
    }
    /// Shorthand for [`PaymentError::StoreUnavailable`].
    #[must_use]
    pub fn store_unavailable(message: impl Into<String>) -> Self {
        PaymentError::StoreUnavailable { message: SafeText::new(message) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip_keeps_type() {
        let e = PaymentError::declined("do_not_honor");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"kind":"card_declined","code":"do_not_honor"}"#);
        let back: PaymentError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let e = PaymentError::RateLimited { retry_after: Some(Duration::from_millis(1500)) };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, r#"{"kind":"rate_limited","retry_after_ms":1500}"#);
        assert_eq!(serde_json::from_str::<PaymentError>(&json).unwrap(), e);
    }

    #[test]
    fn messages_never_carry_card_numbers() {
        let e = PaymentError::invalid_request("bad card 4242424242424242");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("4242424242424242"), "{shown}");
        let back: PaymentError =
            serde_json::from_str(r#"{"kind":"invalid_request","message":"pan 4111111111111111"}"#).unwrap();
        assert!(!format!("{back:?}").contains("4111111111111111"));
        let code = GatewayCode::new("Decline 4111 1111 1111 1111 <script>");
        assert!(!code.as_str().contains("4111"));
        assert!(code.as_str().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c)));
    }

    #[test]
    fn text_reads_sanitized_whether_short_long_borrowed_or_escaped() {
        let long = "x".repeat(crate::INLINE_TEXT + 20);
        // serde_json hands a visitor a borrowed str for plain text and an owned String for escaped text: both are
        // masked, short (inline) or long (heap).
        for json in [
            r#""pan 4111111111111111""#.to_owned(),
            r#""pan \u0034111111111111111""#.to_owned(),
            format!(r#""{long} pan 4111111111111111""#),
        ] {
            let text: SafeText = serde_json::from_str(&json).unwrap();
            assert!(!text.as_str().contains("4111111111111111"), "{json}: {text}");
            assert!(text.as_str().contains("[REDACTED_PAN]"), "{json}: {text}");
        }
        let text: SafeText = serde_json::from_str(&format!(r#""{long}""#)).unwrap();
        assert_eq!(text.as_str(), long);
        assert_eq!(serde_json::to_string(&text).unwrap(), format!(r#""{long}""#));
        let code: GatewayCode = serde_json::from_str(r#""Do Not Honor 4111111111111111""#).unwrap();
        assert_eq!(code.as_str(), "do_not_honor__redacted_pan_");
        assert_eq!(String::from(code.clone()), code.as_str());
    }

    #[test]
    fn every_kind_has_an_outcome_and_a_status() {
        for k in ErrorKind::ALL {
            let _ = k.outcome_class();
            assert!(!k.as_str().is_empty());
        }
    }

    #[test]
    fn gateway_code_prefers_the_gateways() {
        assert_eq!(PaymentError::declined("do_not_honor").gateway_code(), "do_not_honor");
        assert_eq!(PaymentError::InsufficientFunds.gateway_code(), "insufficient_funds");
    }
}
