//! GCRA rate limiting middleware for Tower: lock-free local, keyed with bounded memory, and Redis-wide.
//!
//! Under construction in this session: see the issue tracker.
