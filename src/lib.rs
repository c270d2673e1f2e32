//! Palisade: Tower middleware that makes calls against money safe.
//!
//! This facade re-exports each Palisade crate behind a feature of the same name. Depend on a single crate
//! (`palisade-retry`, ...) instead when you need only one layer.
//!
//! Stack order, outermost first: Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit → gateway.
//! [`Stack`] builds it in that order, whatever order its setters are called in (see `docs/stack.md` for why each
//! position):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//!
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::core::{ChargeRequest, ErrorKind, PaymentToken, Reference};
//! use palisade::fraud::FraudEngine;
//! use palisade::idempotency::IdempotencyLayer;
//! use palisade::prelude::*;
//! use palisade::rate_limit::RateLimitLayer;
//! use palisade::redaction::AuditLayer;
//! use palisade::retry::RetryLayer;
//! use palisade::sim::GatewaySim;
//! use palisade::{Stack, StackStores};
//! use tower::{Service, ServiceExt};
//!
//! let gateway = GatewaySim::new();
//! let mut svc = Stack::new()
//!     .stores(StackStores::memory()) // or StackStores::redis(url).await?, StackStores::postgres(url).await?
//!     .idempotency(IdempotencyLayer::builder())
//!     .fraud(FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap())
//!     .circuit_breaker(CircuitBreakerLayer::builder().failure_rate(0.5))
//!     .retry(RetryLayer::builder().max_attempts(3))
//!     .rate_limit(RateLimitLayer::builder().rate(100, Duration::from_secs(1)))
//!     .audit(AuditLayer::builder())
//!     .service(gateway.clone())
//!     .unwrap();
//!
//! let charge = |order: &str, email: &str| {
//!     let amount = Money::parse("12.34", Currency::USD).unwrap();
//!     let c = ChargeRequest::new(amount, PaymentToken::new("tok_visa").unwrap(), Reference::new(order).unwrap())
//!         .meta("email", Reference::new(email).unwrap())
//!         .idempotency_key(IdempotencyKey::new(format!("{order}-key")).unwrap());
//!     GatewayRequest::Charge(c)
//! };
//!
//! let first = svc.ready().await.unwrap().call(charge("order-1", "a@example.com")).await.unwrap();
//! // The client retries: answered by idempotency, nothing below it runs again.
//! let again = svc.ready().await.unwrap().call(charge("order-1", "a@example.com")).await.unwrap();
//! assert_eq!(first, again);
//! assert_eq!(gateway.calls(), 1);
//!
//! // A fraud block never reaches the breaker or the gateway.
//! let err = svc.ready().await.unwrap().call(charge("order-2", "m@fraud.test")).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::FraudBlocked);
//! assert_eq!(gateway.calls(), 1);
//! # }
//! ```
//!
//! [`Stack::http`] builds the same order for `http::Request` services, every layer in its HTTP mode.

pub use palisade_core as core;

#[cfg(feature = "circuit-breaker")]
pub use palisade_circuit_breaker as circuit_breaker;
#[cfg(feature = "fraud")]
pub use palisade_fraud as fraud;
#[cfg(feature = "idempotency")]
pub use palisade_idempotency as idempotency;
#[cfg(feature = "rate-limit")]
pub use palisade_rate_limit as rate_limit;
#[cfg(feature = "reconciliation")]
pub use palisade_reconciliation as reconciliation;
#[cfg(feature = "redaction")]
pub use palisade_redaction as redaction;
#[cfg(feature = "retry")]
pub use palisade_retry as retry;
#[cfg(feature = "saga")]
pub use palisade_saga as saga;
#[cfg(feature = "sim")]
pub use palisade_sim as sim;
#[cfg(feature = "webhook")]
pub use palisade_webhook as webhook;

#[cfg(all(
    feature = "idempotency",
    feature = "fraud",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "rate-limit",
    feature = "redaction"
))]
mod stack;
#[cfg(all(
    feature = "idempotency",
    feature = "fraud",
    feature = "circuit-breaker",
    feature = "retry",
    feature = "rate-limit",
    feature = "redaction"
))]
pub use stack::{
    Absent, AuditSlot, Backend, CircuitBreakerSlot, FraudSlot, IdempotencySlot, RateKey, RateLimitSlot, RetrySlot,
    Stack, StackError, StackLayer, StackService, StackStores,
};

/// The types most programs need.
pub mod prelude {
    pub use palisade_core::{
        Classify, Currency, DefaultClassifier, GatewayKeyed, GatewayRequest, GatewayResponse, HttpClassifier,
        IdempotencyKey, Money, Outcome, PaymentError,
    };
}
