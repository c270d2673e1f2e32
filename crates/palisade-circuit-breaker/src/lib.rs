//! Circuit breaker middleware for Tower where a card decline is not an outage.
//!
//! Under construction in this session: see the issue tracker.
