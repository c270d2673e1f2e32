//! Retry middleware for Tower that decides from the payment Outcome, with jittered backoff, Retry-After and a budget.
//!
//! Under construction in this session: see the issue tracker.
