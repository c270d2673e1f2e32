//! Retry middleware for Tower that decides from the payment [`Outcome`](palisade_core::Outcome), with jittered
//! backoff, `Retry-After`, a total deadline, a shared retry budget, and always the same gateway idempotency key.
//!
//! | outcome | retried? |
//! |---|---|
//! | `Success`, `Terminal` (a decline, an invalid request) | never |
//! | `Retriable { retry_after }` | yes: after `retry_after` if given (never sooner; a `retry_after` past the deadline or longer than the max delay is returned at once), else after the backoff |
//! | `Unknown` (timeout or reset after send, 500/502/504, a per-attempt timeout) | only when the request carries a gateway idempotency key, which the layer assigns before the first attempt if it has none |
//!
//! A rejection from a layer below (a rate limiter inside the retry, as the stack order puts it) is classified like
//! any other result; with the default classifier over `PaymentError`:
//!
//! | rejection | outcome | what the retry layer does |
//! |---|---|---|
//! | `RateLimited { retry_after }` (rate limit layer, gateway 429) | Retriable | waits `retry_after`, retries; past the deadline or the max delay, returns it at once |
//! | `CircuitOpen { retry_after }` (a breaker placed inside) | Retriable | waits `retry_after`; past the deadline or the max delay, returns it at once |
//! | `IdempotencyInFlight { retry_after }` (the gateway's or a layer's) | Retriable | waits, retries with the same key |
//! | `StoreUnavailable` | Retriable | backs off and retries (the call was not attempted) |
//! | `IdempotencyConflict`, `IdempotencyKeyMissing` | Terminal | returned at once |
//!
//! In HTTP mode the same rejections arrive as problem+json responses (429, 503, 409 with `Retry-After`) and
//! [`HttpClassifier`](palisade_core::HttpClassifier) reads them the same way.
//!
//! Every retry is bounded four ways: `max_attempts`, the total deadline, a retry budget shared by every clone of
//! the layer ([`RetryBudget`]: a share of recent calls plus a floor per second), and — for `Unknown` — the key
//! rule. Each retry emits a tracing event (target `palisade_retry`, fields `attempt`, `delay_ms`, `outcome`,
//! `reason`); each refusal to retry a failure emits one with `reason` = `max_attempts`, `deadline`,
//! `retry_after_over_max_delay`, `budget` or `unknown_without_key`. With the `metrics` feature the same appear as
//! the counters `palisade_retry_retries_total{outcome,reason}` and `palisade_retry_gave_up_total{outcome,reason}`.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::*;
//! use palisade_retry::RetryLayer;
//! use palisade_sim::{Fault, GatewaySim};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let sim = GatewaySim::new();
//! // The gateway charges, then the response is lost, twice in a row.
//! sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);
//! let mut gateway = RetryLayer::builder()
//!     .max_attempts(3)
//!     .attempt_timeout(Duration::from_secs(10))
//!     .build()
//!     .layer(sim.clone());
//!
//! // No key on the request: the layer assigns one before the first attempt and every attempt reuses it.
//! let charge = GatewayRequest::Charge(ChargeRequest::new(
//!     Money::parse("25.00", Currency::USD).unwrap(),
//!     PaymentToken::new("tok_visa").unwrap(),
//!     "order-7".parse().unwrap(),
//! ));
//! let res = gateway.ready().await.unwrap().call(charge).await;
//! assert!(res.is_ok(), "the third attempt gets the stored result");
//! assert_eq!(sim.charges_for("order-7").len(), 1, "and the card was charged once");
//! # }
//! ```
//!
//! The layer needs a Tokio runtime with the time driver (its waits and timeouts are `tokio::time`, so tests run
//! under paused time).

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod budget;
pub mod config;
pub mod defaults;
mod error;
pub mod future;
pub mod http;
mod layer;
mod policy;
mod service;

pub use budget::{BudgetError, RetryBudget};
pub use config::RetryLayerBuilder;
pub use error::AttemptTimedOut;
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use palisade_core::backoff::{Backoff, Jitter};
pub use palisade_core::mode::{Http, Rejection, Typed};
pub use service::Retry;
