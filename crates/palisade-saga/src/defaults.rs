//! Defaults, each with its reason.

use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};

/// How long an orchestrator's ownership of a saga lasts without renewal: 10 s. The owner renews it every third
/// of it while the saga runs, so the lease only bounds how long a crashed owner's sagas wait for recovery.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Attempts of a step's action: 3 (the first and two retries), as the retry layer's default: enough to ride out a
/// network blip, few enough that a customer is not kept waiting.
pub const DEFAULT_STEP_ATTEMPTS: u32 = 3;

/// Waits between a step's attempts: 100 ms doubling to at most 2 s, full jitter.
pub const DEFAULT_STEP_BACKOFF: Backoff =
    Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2), factor: 2.0, jitter: Jitter::Full };

/// How long one attempt may take: 30 s, longer than any payment gateway's own timeout, so the gateway's answer
/// (not this deadline) normally ends an attempt.
pub const DEFAULT_STEP_DEADLINE: Duration = Duration::from_secs(30);

/// Attempts of a compensation: 5. Compensations try harder than steps: the alternative is money in an
/// inconsistent state and a page.
pub const DEFAULT_COMPENSATION_ATTEMPTS: u32 = 5;

/// Waits between compensation attempts: 200 ms doubling to at most 10 s, full jitter. With
/// [`DEFAULT_COMPENSATION_ATTEMPTS`] that is four waits of at most 0.2, 0.4, 0.8 and 1.6 s: a compensation gives up
/// within about 3 s, shorter than a circuit breaker's open period (30 s by default). Behind a breaker, give
/// compensations more attempts and a longer backoff ([`Step::compensation_attempts`](crate::Step::compensation_attempts) / [`compensation_backoff`](crate::Step::compensation_backoff));
/// `examples/server` uses 12 attempts from 500 ms doubling to 20 s.
pub const DEFAULT_COMPENSATION_BACKOFF: Backoff =
    Backoff { base: Duration::from_millis(200), max: Duration::from_secs(10), factor: 2.0, jitter: Jitter::Full };

/// Most orphaned sagas one recovery pass takes over: 100.
pub const DEFAULT_RECOVERY_BATCH: usize = 100;

/// Pages of orphans (of [`DEFAULT_RECOVERY_BATCH`] each) one recovery pass reads at most while every page holds
/// only sagas the orchestrator already found it cannot run (another service's in a shared log, a retired
/// definition, a newer version's): 10. Recovery goes on from where its last pass stopped, so such sagas, however
/// many, delay a runnable orphan by about one pass per 1 000 of them, and a pass lists at most 1 000 ids.
pub const DEFAULT_RECOVERY_PAGES: usize = 10;

/// Sagas an orchestrator remembers it cannot run, so that it reads and logs each once, not on every pass: 10 000
/// (well under 1 MB). Past that the oldest is forgotten: it is read (one `get`) and logged once more when next
/// listed.
pub const DEFAULT_RECOVERY_LEFT_ALONE: usize = 10_000;
