//! State that outlives a request, and the connections to where it lives.
//!
//! - [`lease`]: the lease protocol (claim with a lease and a fencing token → renew → complete / release /
//!   forget, abandon for a lost claim) as one trait, [`lease::LeaseStore`], with a memory backend and (feature
//!   `redis`) a Redis one. Idempotency records and webhook deliveries both run on it.
//! - [`redis`] (feature `redis`): [`redis::RedisConnection`] (a reconnecting, optionally lazy connection to one
//!   server or a Redis Cluster, `redis+cluster://host:port,...`, that fails fast while Redis is down; its
//!   [`redis::RedisConn`] runs the same commands and scripts on both), [`redis::connect`], [`redis::redis_key`]
//!   (keys with one hash tag, so every key of an operation lives on one Redis Cluster slot, user values
//!   percent-escaped so the tag stays whole) and [`redis::redis_unavailable`]. Every Redis store uses it.
//! - `postgres` (feature `postgres`): pools, table prefixes, versioned migrations, error mapping, shared by the
//!   lease store and the saga log.
//! - [`index`]: a hash index in buckets of one cache line, from a hash to a slot of the caller's slab, for tables
//!   that outgrow the caches (the memory lease store's records, the fraud crate's velocity counters).
//! - [`StoreError`]: a store could not be asked or did not answer.
//!
//! Layer crates depend on `palisade-core` and this crate, never on each other; backends stay behind features.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod error;
pub mod index;
pub mod lease;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;

pub use error::StoreError;
pub use palisade_core::FailurePolicy;
