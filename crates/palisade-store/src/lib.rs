//! State that outlives a process, and the connections to where it lives.
//!
//! Today this crate holds the shared Redis plumbing (behind the `redis` feature): [`redis::RedisConnection`] (a
//! reconnecting, optionally lazy connection that fails fast while Redis is down), [`redis::connect`],
//! [`redis::redis_key`] (keys with one hash tag, so every key of an operation lives on one Redis Cluster slot,
//! user values percent-escaped so the tag stays whole) and [`redis::redis_unavailable`]. Layer crates depend on it
//! for their Redis stores, so `palisade-core` stays a vocabulary without a Redis dependency.
//!
//! The lease protocol that idempotency records and webhook deliveries both run (claim with a lease and a fencing
//! token, renew, complete, release, forget, abandon) moves here next.

#![warn(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "redis")]
pub mod redis;

pub use palisade_core::FailurePolicy;
