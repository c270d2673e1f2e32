//! Idempotency-Key middleware for Tower: one execution per key under any concurrency, crash-safe leases.
//!
//! Put the layer outermost — around a gateway client ([`IdempotencyLayer`], typed mode) or on an axum router
//! ([`HttpIdempotencyLayer`], HTTP mode) — and a retried, refreshed or duplicated request never executes twice.
//!
//! # The protocol
//!
//! 1. The first request with a key **claims** it atomically in the store: IN_FLIGHT, with a **lease** and a
//!    **fencing token**. It executes, then is recorded by its [`Outcome`](palisade_core::Outcome):
//!    Success and Terminal (a decline) are stored and replayed — a replayed decline is the same typed decline;
//!    Retriable and Unknown release the claim, so the client can retry. That is safe because the key flows to the
//!    gateway: the request carries a gateway key derived from scope + key, and the gateway deduplicates.
//! 2. The same key and the same request while the lease is alive: refused ([`IdempotencyRejection::InFlight`],
//!    HTTP 409 with `Retry-After`), or, if configured, it waits for the result and replays it.
//! 3. While a request runs its lease is renewed (a heartbeat every third of it), so it keeps its key however long
//!    it takes. A holder that crashed stops renewing: within one lease the next request takes over with a greater
//!    fencing token, and the stale holder's late completion is refused by the token.
//! 4. The same key with a different request: [`IdempotencyRejection::Conflict`] (HTTP 422), in every state.
//! 5. A scope (tenant, account) from the request is part of the storage key: equal keys of two tenants never meet.
//! 6. The store cannot be reached: [`IdempotencyRejection::StoreUnavailable`] (HTTP 503), and the inner
//!    service is **not** called. It never fails open. A claim whose answer was lost is undone right after it, so
//!    the 503's `Retry-After` holds.
//! 7. A request refused before any effect (the router's 404/405, a handler's response marked [`NotExecuted`])
//!    leaves its key unused.
//!
//! # Typed mode
//!
//! ```
//! use palisade_core::*;
//! use palisade_idempotency::{IdempotencyLayer, MemoryStore};
//! use palisade_sim::GatewaySim;
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let sim = GatewaySim::new();
//! let mut gateway = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(sim.clone());
//! let charge = GatewayRequest::Charge(
//!     ChargeRequest::new(
//!         Money::parse("10.00", Currency::USD).unwrap(),
//!         PaymentToken::new("tok_visa").unwrap(),
//!         "order-1".parse().unwrap(),
//!     )
//!     .idempotency_key(IdempotencyKey::new("checkout-order-1").unwrap()),
//! );
//! let first = gateway.ready().await.unwrap().call(charge.clone()).await.unwrap();
//! let again = gateway.ready().await.unwrap().call(charge).await.unwrap(); // a replay
//! assert_eq!(first, again);
//! assert_eq!(sim.charges_for("order-1").len(), 1);
//! assert_eq!(sim.calls(), 1); // the duplicate never reached the gateway
//! # }
//! ```
//!
//! # HTTP mode
//!
//! [`HttpIdempotencyLayer`] reads `Idempotency-Key` (a bare token or an RFC 8941 sf-string), fingerprints
//! method, path, query, configured headers and the body (buffered up to a limit, 413 beyond, and handed on
//! unchanged), applies to POST and PATCH by default, stores status, an allow-list of headers and the body,
//! marks replays with `Idempotent-Replayed: true`, and answers its own refusals as `application/problem+json`.
//! The handler finds the gateway key to send in the request extensions as [`palisade_core::GatewayKey`].
//!
//! # Stores
//!
//! The layer keeps its records through the lease protocol of `palisade-store` ([`LeaseStore`]: claim with a
//! lease and a fencing token, renew, complete, release, forget, abandon). [`MemoryStore`] serves one process
//! and answers at once (the layer then runs without a boxed future and keeps results as values); `RedisStore`
//! (feature `redis`) serves many, with Lua scripts, hash-tagged keys and Redis server time.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod canonical;
mod config;
pub mod defaults;
mod engine;
mod error;
mod http;
mod layer;
mod service;
#[cfg(feature = "postgres")]
pub mod transaction;

pub use crate::http::{
    DEFAULT_STORED_HEADERS, FORBIDDEN_STORED_HEADERS, HttpIdempotencyLayer, HttpIdempotencyLayerBuilder,
    HttpIdempotencyService, HttpResponseFuture, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, NotExecuted,
};
pub use config::{
    DEFAULT_BODY_LIMIT, DEFAULT_IN_FLIGHT_RETRY_AFTER, DEFAULT_LEASE, DEFAULT_TTL, DEFAULT_WAIT, MissingKey,
};
pub use engine::{gateway_key_for, storage_key};
pub use error::IdempotencyRejection;
pub use layer::{Fingerprinted, IdempotencyLayer, IdempotencyLayerBuilder};
/// The store vocabulary, from `palisade-store`: what the layer keeps its records in.
pub use palisade_store::StoreError;
#[cfg(feature = "postgres")]
pub use palisade_store::lease::PostgresStore;
#[cfg(feature = "redis")]
pub use palisade_store::lease::RedisStore;
pub use palisade_store::lease::{
    Claim, FencingToken, Fingerprint, Hold, LeaseStore, MemoryStore, Payload, Record, StoreFuture,
};
pub use service::{IdempotencyService, ResponseFuture};
#[cfg(feature = "postgres")]
pub use transaction::TxCompletion;
