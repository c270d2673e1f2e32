//! Palisade: Tower middleware that makes calls against money safe.
//!
//! This facade re-exports each Palisade crate behind a feature of the same name. Depend on a single crate
//! (`palisade-retry`, ...) instead when you need only one layer.
//!
//! Stack order, outermost first: Idempotency → CircuitBreaker → Retry → RateLimit → Redaction (audit) → gateway.
//! Fraud screening (`palisade-fraud`) is planned, not part of Palisade yet; the design leaves it a place between
//! Idempotency and CircuitBreaker.

pub use palisade_core as core;

#[cfg(feature = "circuit-breaker")]
pub use palisade_circuit_breaker as circuit_breaker;
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

/// The types most programs need.
pub mod prelude {
    pub use palisade_core::{
        Classify, Currency, DefaultClassifier, GatewayKeyed, GatewayRequest, GatewayResponse, HttpClassifier,
        IdempotencyKey, Money, Outcome, PaymentError,
    };
}
