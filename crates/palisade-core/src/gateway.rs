//! The request and response shape every gateway `Service` in Palisade speaks.
//!
//! **Why one enum of operations, not a trait per operation:** a tower stack is built around one `Service<Req>`
//! type. With `GatewayRequest` as an enum, one `IdempotencyLayer`, one `RetryLayer`, one breaker wrap every
//! operation of a gateway at once, and a gateway adapter (the simulator, a Stripe client) is one `Service`
//! implementation. A trait per operation would force each layer to be written once per operation, or users to
//! build one stack per operation. Adding an operation later is a new variant (the enum is `#[non_exhaustive]`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::card::contains_card_like;
use crate::error::PaymentError;
use crate::key::{GatewayKeyed, IdempotencyKey};
use crate::money::Money;
use crate::text::Reference;
use crate::text::{Compact, GatewayId};

/// A gateway's token for a payment method (`tok_visa`, `pm_1Abc...`). Never a card number: construction refuses
/// anything that looks like one, so raw PANs cannot enter the typed API. `Debug` shows it shortened.
///
/// Kept inline up to [`INLINE_TEXT`](crate::INLINE_TEXT) bytes (`tok_visa`, Stripe's 27-character `pm_…`),
/// so a request clones without the heap: the retry layer keeps a clone of every request for its next attempt.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PaymentToken(Compact);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Looks like a card number (or contains one): tokenize it at the gateway, never pass it here.
    #[error("payment token looks like a card number: tokenize the card with your gateway and pass the token")]
    LooksLikeCardNumber,
    /// Empty, too long (over 255) or with characters outside visible ASCII.
    #[error("payment token must be 1 to 255 visible ASCII characters")]
    Malformed,
}

impl PaymentToken {
    /// Validates a token.
    ///
    /// # Errors
    /// [`TokenError::LooksLikeCardNumber`] for card-like input (any run of 12 or more digits, with or without
    /// spaces or dashes, counts: a token never needs one), [`TokenError::Malformed`] otherwise.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let t: String = token.into();
        let mut run = 0usize;
        let mut longest = 0usize;
        for b in t.bytes() {
            if b.is_ascii_digit() {
                run += 1;
                longest = longest.max(run);
            } else if b != b' ' && b != b'-' {
                run = 0;
            }
        }
        if longest >= 12 || contains_card_like(&t) {
            return Err(TokenError::LooksLikeCardNumber);
        }
        if t.is_empty() || t.len() > 255 || !t.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(TokenError::Malformed);
        }
        Ok(PaymentToken(Compact::from_string(t)))
    }
    /// The token text, to send to the gateway.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}
impl TryFrom<String> for PaymentToken {
    type Error = TokenError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PaymentToken::new(s)
    }
}
impl From<PaymentToken> for String {
    fn from(t: PaymentToken) -> Self {
        t.as_str().to_owned()
    }
}
impl fmt::Debug for PaymentToken {
    /// Shows a prefix and the last four characters: `tok_…visa`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        let prefix = s.find('_').map_or("", |i| &s[..=i]);
        let tail_start = s.len().saturating_sub(4).max(prefix.len());
        write!(f, "PaymentToken({prefix}…{})", &s[tail_start..])
    }
}

/// The operations a gateway performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// Authorize and capture in one step.
    Charge,
    /// Reserve funds.
    Authorize,
    /// Take reserved funds.
    Capture,
    /// Release an authorization.
    Void,
    /// Return captured funds.
    Refund,
}

impl Operation {
    /// Stable lowercase name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Charge => "charge",
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }
}
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Authorize (or charge) `amount` on `source` for an order. Its `Debug` (what the audit layer logs) masks email
/// addresses in the customer and in metadata values ([`mask_email`](crate::mask_email)) and card-like digits in
/// metadata keys, which nothing validates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The amount.
    pub amount: Money,
    /// The payment method token.
    pub source: PaymentToken,
    /// The customer, if any.
    #[serde(default)]
    pub customer: Option<Reference>,
    /// The merchant's order reference, sent exactly as given.
    pub order_reference: Reference,
    /// Free-form metadata, sent exactly as given (a value holding a card number is refused when it is made).
    #[serde(default)]
    pub metadata: BTreeMap<String, Reference>,
    /// The gateway idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A customer or metadata value as `Debug` writes it: an email address masked.
struct Masked<'a>(&'a Reference);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.as_str();
        if text.contains('@') { fmt::Debug::fmt(&crate::mask_email(text), f) } else { fmt::Debug::fmt(self.0, f) }
    }
}

impl fmt::Debug for ChargeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Metadata<'a>(&'a BTreeMap<String, Reference>);
        impl fmt::Debug for Metadata<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.iter().map(|(k, v)| (crate::card::mask_card_like(k), Masked(v)))).finish()
            }
        }
        f.debug_struct("ChargeRequest")
            .field("amount", &self.amount)
            .field("source", &self.source)
            .field("customer", &self.customer.as_ref().map(Masked))
            .field("order_reference", &self.order_reference)
            .field("metadata", &Metadata(&self.metadata))
            .field("idempotency_key", &self.idempotency_key)
            .finish()
    }
}

impl ChargeRequest {
    /// A charge request with no customer or metadata and no key yet.
    #[must_use]
    pub fn new(amount: Money, source: PaymentToken, order_reference: Reference) -> Self {
        ChargeRequest {
            amount,
            source,
            customer: None,
            order_reference,
            metadata: BTreeMap::new(),
            idempotency_key: None,
        }
    }
    /// Sets the customer.
    #[must_use]
    pub fn customer(mut self, customer: Reference) -> Self {
        self.customer = Some(customer);
        self
    }
    /// Adds a metadata entry.
    #[must_use]
    pub fn meta(mut self, key: impl Into<String>, value: Reference) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }
    /// Sets the gateway idempotency key.
    #[must_use]
    pub fn idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;
    use crate::money::Currency;

    /// The audit layer logs a request's `Debug`: a customer's email and card digits in a metadata key stay out.
    #[test]
    fn debug_masks_emails_and_card_like_metadata_keys() -> Result<(), Box<dyn std::error::Error>> {
        let req = ChargeRequest::new(
            Money::parse("12.34", Currency::USD)?,
            PaymentToken::new("tok_visa")?,
            Reference::new("order-1")?,
        )
        .customer(Reference::new("jane.doe@example.com")?)
        .meta("email", Reference::new("jane.doe@example.com")?)
        .meta("note 4111111111111111", Reference::new("gift")?);
        let text = format!("{req:?}");
        assert!(!text.contains("jane.doe"), "{text}");
        assert!(!text.contains("4111111111111111"), "{text}");
        assert!(text.contains("j***@example.com") && text.contains("order-1") && text.contains("gift"), "{text}");
        Ok(())
    }
}

/// Capture an authorization (all of it when `amount` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// The authorization's id.
    pub authorization_id: GatewayId,
    /// The amount to capture; all when `None`.
    #[serde(default)]
    pub amount: Option<Money>,
    /// The gateway idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Void an authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidRequest {
    /// The authorization's id.
    pub authorization_id: GatewayId,
    /// The gateway idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Refund a captured payment (all of it when `amount` is `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The id of the charge or capture to refund.
    pub payment_id: GatewayId,
    /// The amount; all when `None`.
    #[serde(default)]
    pub amount: Option<Money>,
    /// The gateway idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A request to a gateway `Service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GatewayRequest {
    /// Authorize and capture.
    Charge(ChargeRequest),
    /// Authorize only.
    Authorize(ChargeRequest),
    /// Capture an authorization.
    Capture(CaptureRequest),
    /// Void an authorization.
    Void(VoidRequest),
    /// Refund a payment.
    Refund(RefundRequest),
}

impl GatewayRequest {
    /// The operation.
    #[must_use]
    pub const fn operation(&self) -> Operation {
        match self {
            GatewayRequest::Charge(_) => Operation::Charge,
            GatewayRequest::Authorize(_) => Operation::Authorize,
            GatewayRequest::Capture(_) => Operation::Capture,
            GatewayRequest::Void(_) => Operation::Void,
            GatewayRequest::Refund(_) => Operation::Refund,
        }
    }
    fn key_slot(&mut self) -> &mut Option<IdempotencyKey> {
        match self {
            GatewayRequest::Charge(r) | GatewayRequest::Authorize(r) => &mut r.idempotency_key,
            GatewayRequest::Capture(r) => &mut r.idempotency_key,
            GatewayRequest::Void(r) => &mut r.idempotency_key,
            GatewayRequest::Refund(r) => &mut r.idempotency_key,
        }
    }
    /// The same request without its idempotency key: what a gateway compares to tell "same parameters".
    #[must_use]
    pub fn without_key(&self) -> GatewayRequest {
        let mut r = self.clone();
        *r.key_slot() = None;
        r
    }
    /// The amount the request moves, where it names one.
    #[must_use]
    pub fn amount(&self) -> Option<Money> {
        match self {
            GatewayRequest::Charge(r) | GatewayRequest::Authorize(r) => Some(r.amount),
            GatewayRequest::Capture(r) => r.amount,
            GatewayRequest::Void(_) => None,
            GatewayRequest::Refund(r) => r.amount,
        }
    }
}

impl GatewayKeyed for GatewayRequest {
    fn gateway_key(&self) -> Option<&IdempotencyKey> {
        match self {
            GatewayRequest::Charge(r) | GatewayRequest::Authorize(r) => r.idempotency_key.as_ref(),
            GatewayRequest::Capture(r) => r.idempotency_key.as_ref(),
            GatewayRequest::Void(r) => r.idempotency_key.as_ref(),
            GatewayRequest::Refund(r) => r.idempotency_key.as_ref(),
        }
    }
    fn set_gateway_key(&mut self, key: IdempotencyKey) {
        *self.key_slot() = Some(key);
    }
}

/// Where a payment stands after an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PaymentStatus {
    /// Funds reserved.
    Authorized,
    /// Funds taken.
    Captured,
    /// Authorization released.
    Voided,
    /// Funds returned.
    Refunded,
}

/// A gateway's answer to a successful operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayResponse {
    /// The gateway's id for the object this operation created or changed (`ch_…`, `auth_…`, `re_…`).
    pub id: GatewayId,
    /// The operation performed.
    pub operation: Operation,
    /// The status afterwards.
    pub status: PaymentStatus,
    /// The amount moved.
    pub amount: Money,
    /// The merchant's order reference, as the request sent it.
    pub order_reference: Reference,
}

/// The `Service` shape gateways implement: `Service<GatewayRequest, Response = GatewayResponse,
/// Error = PaymentError>`. A blanket trait alias, for bounds.
pub trait GatewayService:
    tower_service::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>
{
}
impl<S> GatewayService for S where
    S: tower_service::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn tokens_refuse_card_numbers() {
        for bad in [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "tok_4111111111111111",
            "pan4000056655665556x",
            "123456789012",
        ] {
            assert_eq!(PaymentToken::new(bad), Err(TokenError::LooksLikeCardNumber), "{bad}");
        }
        assert_eq!(PaymentToken::new(""), Err(TokenError::Malformed));
        assert_eq!(PaymentToken::new("tok visa"), Err(TokenError::Malformed));
        assert!(PaymentToken::new("tok_visa").is_ok());
        assert!(PaymentToken::new("pm_1Abc2345").is_ok());
        assert!(serde_json::from_str::<PaymentToken>("\"4242424242424242\"").is_err());
    }

    #[test]
    fn debug_never_shows_card_numbers_and_shortens_tokens() {
        let t = PaymentToken::new("tok_chargeDeclined").unwrap();
        assert_eq!(format!("{t:?}"), "PaymentToken(tok_…ined)");
        // Card data cannot get into a request's references at all...
        for text in ["order 4242424242424242", "cus 4111 1111 1111 1111", "card 5555555555554444", "cvv: 737"] {
            assert!(Reference::new(text).is_err(), "{text}");
        }
        // ...and the token is shortened.
        let req = ChargeRequest::new(Money::parse("10.00", Currency::USD).unwrap(), t, "order-1".parse().unwrap())
            .customer("cus_1".parse().unwrap());
        let shown = format!("{req:?}");
        assert!(!shown.contains("tok_chargeDeclined"), "{shown}");
    }

    #[test]
    fn keys_ride_the_request() {
        let t = PaymentToken::new("tok_visa").unwrap();
        let mut r =
            GatewayRequest::Charge(ChargeRequest::new(Money::from_minor(100, Currency::USD), t, "o1".parse().unwrap()));
        assert!(r.gateway_key().is_none());
        let k = r.ensure_gateway_key();
        assert_eq!(r.gateway_key(), Some(&k));
        assert!(r.without_key().gateway_key().is_none());
        assert_eq!(r.without_key(), r.without_key());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with(r#"{"op":"charge""#), "{json}");
        assert_eq!(serde_json::from_str::<GatewayRequest>(&json).unwrap(), r);
    }
}
