//! GCRA rate limiting middleware for Tower: lock-free local, keyed with bounded memory, and Redis-wide.
//!
//! [`RateLimitLayer`] caps calls to a gateway (TPS fees, card-testing attacks) or to an API (per merchant, per
//! card, per IP) with the Generic Cell Rate Algorithm: `rate` units per `period`, bursts of up to `burst`,
//! each request spending its cost.
//!
//! - **Exact.** A refusal says exactly when the same request would be admitted (`retry_after`), and admission is
//!   exactly the configured quota, not a fixed window's approximation.
//! - **Lock-free, one word.** A global limit is one `AtomicU64` updated by compare-and-swap.
//! - **Keyed, bounded memory.** [`RateLimitLayerBuilder::key_by`] gives each key its own limit; at most
//!   [`DEFAULT_MAX_KEYS`] keys are tracked and idle keys are evicted without losing anything (see
//!   [`KeyedRateLimiter`]).
//! - **Shared by every clone.** All services made by a layer, and all their clones, share one state: axum cloning
//!   your service per connection cannot multiply the limit.
//! - **Reject or wait.** [`OnLimit::Reject`] refuses with [`RateLimited`] (into [`palisade_core::PaymentError`], or
//!   in HTTP mode a 429 problem+json with `Retry-After`, `RateLimit` and `RateLimit-Policy`); [`OnLimit::Wait`]
//!   holds requests up to a maximum wait, in order, and a cancelled waiter spends nothing.
//! - **Redis-wide** (feature `redis`): one Lua script and one round trip per decision, on Redis server time,
//!   with fail-closed / fail-open policy, shadow mode and a local cache of limited keys.
//! - **Testable time.** Local limiters read tokio's clock, so `tokio::time::pause()` drives them; the `quanta`
//!   feature offers a TSC clock (`ClockSource::Quanta`) for the hottest paths.
//! - **Observable.** Tracing events (target `palisade_rate_limit`, fields `limiter`, `decision`, `cost`,
//!   `retry_after_ms`; never the key) and, with the `metrics` feature, `palisade_rate_limit_decisions_total`.
//!
//! The guide is `docs/rate-limit.md`.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::PaymentError;
//! use palisade_rate_limit::RateLimitLayer;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Two charges per second per card.
//! let limit = RateLimitLayer::builder()
//!     .name("per-card")
//!     .rate(2, Duration::from_secs(1))
//!     .key_by(|card: &String| card.clone())
//!     .build()
//!     .unwrap();
//! let mut svc = ServiceBuilder::new()
//!     .layer(limit)
//!     .service_fn(|card: String| async move { Ok::<_, PaymentError>(format!("charged {card}")) });
//!
//! for _ in 0..2 {
//!     assert!(svc.ready().await.unwrap().call("tok_a".to_owned()).await.is_ok());
//! }
//! let refused = svc.ready().await.unwrap().call("tok_a".to_owned()).await.unwrap_err();
//! assert_eq!(refused, PaymentError::RateLimited { retry_after: Some(Duration::from_millis(500)) });
//! // Another card has its own limit.
//! assert!(svc.ready().await.unwrap().call("tok_b".to_owned()).await.is_ok());
//! # }
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod builder;
mod clock;
mod config;
pub mod defaults;
mod error;
pub mod future;
mod gcra;
pub mod http;
mod layer;
mod local;
#[cfg(feature = "redis")]
pub mod redis;
mod service;

pub use builder::RateLimitLayerBuilder;
pub use clock::ClockSource;
pub use config::{CostFn, Global, KeyFn, OnLimit, UnitCost};
pub use defaults::{DEFAULT_MAX_KEYS, DEFAULT_MAX_WAIT, DEFAULT_POLICY_NAME};
pub use error::{BuildError, RateLimitError, RateLimited};
pub use future::ResponseFuture;
pub use gcra::{Admitted, Quota, QuotaError};
pub use layer::RateLimitLayer;
pub use local::{KeyedRateLimiter, RateLimiter};
pub use palisade_core::mode::{Http, Rejection, Typed};
pub use service::RateLimit;
