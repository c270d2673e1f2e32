//! Palisade's shared vocabulary. Every layer crate speaks these types:
//!
//! - [`PaymentError`]: one typed error for a whole gateway stack, serializable with its type intact.
//! - [`Outcome`] and [`Classify`]: what a result means for money (retry? breaker failure? store and replay?).
//! - [`Money`] and [`Currency`]: exact amounts, ISO 4217 exponents, minor units that never round silently.
//! - [`GatewayRequest`] / [`GatewayResponse`]: the shape of a gateway `Service`. Their ids ([`GatewayId`]), order
//!   references ([`Reference`]: sent exactly, refused when they hold a card) and messages ([`SafeText`]: masked)
//!   keep short text inline, so a response clones without the heap.
//! - [`IdempotencyKey`] and [`GatewayKeyed`]: how a key travels from the edge to the gateway.
//!
//! ```
//! use palisade_core::{Classify, DefaultClassifier, Outcome, PaymentError};
//!
//! let declined: Result<(), PaymentError> = Err(PaymentError::declined("do_not_honor"));
//! // A decline is final: never retried, never a breaker failure, stored and replayed as the same decline.
//! assert_eq!(DefaultClassifier.classify(&declined), Outcome::Terminal);
//!
//! let lost: Result<(), PaymentError> = Err(PaymentError::timeout("read timed out"));
//! // A lost response may have charged: retry only with the same gateway key.
//! assert_eq!(DefaultClassifier.classify(&lost), Outcome::Unknown);
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod backoff;
pub mod body;
pub mod card;
mod error;
mod gateway;
mod key;
pub mod mode;
mod money;
mod outcome;
pub mod problem;
pub mod store;
mod text;

pub use error::{ErrorKind, GatewayCode, OutcomeClass, PaymentError, SafeText};
pub use gateway::{
    CaptureRequest, ChargeRequest, GatewayRequest, GatewayResponse, GatewayService, Operation, PaymentStatus,
    PaymentToken, RefundRequest, TokenError, VoidRequest,
};
pub use key::{GatewayKey, GatewayKeyed, IDEMPOTENCY_KEY, IdempotencyKey, KeyError};
pub use money::{Currency, IsoRules, MinorUnitRules, Money, MoneyError, StripeRules};
pub use outcome::{Classify, DefaultClassifier, ErrorOutcome, HttpClassifier, Outcome, parse_retry_after};
pub use problem::Problem;
pub use store::FailurePolicy;
pub use text::{GatewayId, INLINE_TEXT, Reference, ReferenceError, mask_email};

/// `tower::BoxError`, without depending on tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
