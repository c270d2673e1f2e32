//! Circuit breaker middleware for Tower where a card decline is not an outage.
//!
//! A breaker watches a gateway's answers and, when the gateway is failing, refuses calls at once instead of
//! letting every checkout wait for a timeout. What Palisade's breaker adds to the usual one:
//!
//! - **Only outages count.** A call is a failure when its [`Outcome`](palisade_core::Outcome) is `Retriable` or
//!   `Unknown`. A decline (`Terminal`) proves the gateway answered: a thousand declines never trip it. Refusals
//!   by inner Palisade layers (rate limited, idempotency in flight) are ignored by default
//!   ([`LayerRejections`]): typed errors, and in HTTP mode their problem+json responses (marked with
//!   [`LayerRefusal`](palisade_core::problem::LayerRefusal)).
//! - **Trip rules**: failure rate over a count- or time-based sliding window with a minimum number of calls,
//!   consecutive failures, slow-call rate.
//! - **Open** rejects at once with `retry_after` = the remaining open time ([`CircuitOpen`], which converts into
//!   `PaymentError::CircuitOpen`; HTTP mode answers 503 problem+json with `Retry-After`). The open duration is
//!   fixed or grows with repeated trips, with jitter ([`palisade_core::backoff::Backoff`]).
//! - **Half-open** admits a bounded number of probes with one compare-and-swap: never more, under any
//!   concurrency. A dropped probe (cancelled call) gives its slot back.
//! - **Lock-free when closed**: admitting and recording a call are atomic operations on the breaker, no lock, no
//!   allocation (the response future is a named `pin_project` future).
//! - **Per-key** breakers (per gateway, merchant, host) with a bound on their number and idle eviction that never
//!   forgets a breaker still refusing calls or set by an operator
//!   ([`CircuitBreakerLayerBuilder::build_keyed`]).
//! - **Shared through Redis** (feature `redis`): instances open together on the failure rate of all instances,
//!   so one bad instance cannot open the breaker for everyone; unreachable Redis falls back to local decisions.
//! - A [`CircuitBreakerHandle`] to read the state, force it open or closed, disable or reset it; events as
//!   `tracing`, `metrics` (feature `metrics`) and an optional callback.
//!
//! ```
//! use std::time::Duration;
//! use palisade_circuit_breaker::{CircuitBreakerLayer, State};
//! use palisade_core::PaymentError;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .window_calls(10)
//!     .minimum_calls(4)
//!     .failure_rate(0.5)
//!     .open_duration(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! let handle = layer.handle();
//!
//! // A gateway that declines every card: the breaker stays closed, a decline is not an outage.
//! let mut declines = layer.layer(service_fn(|_: ()| async { Err::<(), _>(PaymentError::declined("do_not_honor")) }));
//! for _ in 0..100 {
//!     let _ = declines.ready().await.unwrap().call(()).await;
//! }
//! assert_eq!(handle.state(), State::Closed);
//!
//! // A gateway that times out: five timeouts in the last ten calls is the 50 % threshold, the breaker opens ...
//! let mut down = layer.layer(service_fn(|_: ()| async { Err::<(), _>(PaymentError::timeout("read timed out")) }));
//! for _ in 0..5 {
//!     let _ = down.ready().await.unwrap().call(()).await;
//! }
//! assert_eq!(handle.state(), State::Open);
//! // ... and the next call fails fast, telling the caller when to come back.
//! let err = down.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(matches!(err, PaymentError::CircuitOpen { retry_after: Some(_) }));
//! # }
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod breaker;
mod builder;
mod classify;
mod config;
pub mod defaults;
mod error;
mod events;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod window;

pub use builder::CircuitBreakerLayerBuilder;
pub use classify::{DetectRejection, ModeRejections, NoRejections, PaymentRejections};
pub use config::{ConfigError, HALF_OPEN_RETRY_HINT, LayerRejections, Window};
pub use defaults::{
    DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_PROBES, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_KEYS, DEFAULT_MAX_OPEN_DURATION,
    DEFAULT_MINIMUM_CALLS, DEFAULT_OPEN_DURATION, DEFAULT_OPEN_GROWTH, DEFAULT_SLOW_CALL_THRESHOLD,
    DEFAULT_TIME_BUCKETS, DEFAULT_WINDOW_CALLS,
};
#[cfg(feature = "redis")]
pub use defaults::{DEFAULT_PREFIX, DEFAULT_SYNC_INTERVAL};
pub use error::CircuitOpen;
pub use events::{Event, Listener, Reason, State};
pub use future::ResponseFuture;
pub use handle::CircuitBreakerHandle;
pub use keyed::{Keyed, KeyedHandle, Partition, Single};
pub use layer::CircuitBreakerLayer;
pub use palisade_core::mode::{Http, Rejection, Typed};
pub use service::CircuitBreaker;
#[cfg(feature = "redis")]
pub use shared::{Aggregate, RedisShared, SharedStatus};
pub use window::Snapshot;
