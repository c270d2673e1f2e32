//! Idempotency-Key middleware for Tower: one execution per key under any concurrency, crash-safe leases.
//!
//! Under construction in this session: see the issue tracker.
