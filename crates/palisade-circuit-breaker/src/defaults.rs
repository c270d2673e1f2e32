//! Every default of `palisade-circuit-breaker` in one place, each with the reason for its value. They are also
//! re-exported at the crate root, where they were always found.

use std::time::Duration;

/// Most per-key breakers kept at once: ten thousand merchants or hosts at a few hundred bytes each (plus the
/// window: one byte per call) is a few megabytes, a bound a payment service can always afford.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// A per-key breaker not used for this long is dropped, unless it is refusing calls (open with time left,
/// half-open) or set by an operator: those are kept however long they idle. Ten minutes keeps the window of a key
/// used every few minutes and outlives the default open duration's ceiling (five minutes).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Calls in the count-based sliding window: enough calls for a failure rate to mean something, few enough that a
/// busy checkout (tens of calls a second) reacts within seconds. Resilience4j uses the same number.
pub const DEFAULT_WINDOW_CALLS: u32 = 100;

/// Calls the window must hold before the failure-rate and slow-call rules may trip. Twenty calls at a 50 % rate
/// is not chance on a healthy gateway, and a quiet service still trips within a handful of seconds of an outage.
pub const DEFAULT_MINIMUM_CALLS: u32 = 20;

/// Failure rate that trips the breaker: half of the recent calls failing means the gateway is not answering, not
/// that a few customers are unlucky (declines never count, see [`crate`]).
pub const DEFAULT_FAILURE_RATE: f64 = 0.5;

/// First open duration: long enough for a gateway's automatic failover (tens of seconds at the big processors),
/// short enough that a blip costs at most half a minute of fast-failed checkouts.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(30);

/// Ceiling of the open duration when it grows with repeated trips: a gateway that stays down is probed at least
/// every five minutes.
pub const DEFAULT_MAX_OPEN_DURATION: Duration = Duration::from_secs(300);

/// Growth of the open duration per consecutive trip (each failed half-open probe doubles the wait).
pub const DEFAULT_OPEN_GROWTH: f64 = 2.0;

/// Probe calls admitted in half-open: three calls tell a recovered gateway from one lucky answer, while at most
/// three customers wait on a gateway that is still down.
pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;

/// Slow-call threshold used when only a slow-call rate is given: card networks answer in well under two seconds
/// when healthy; five is a gateway in trouble.
pub const DEFAULT_SLOW_CALL_THRESHOLD: Duration = Duration::from_secs(5);

/// Buckets of a time-based window: ten buckets keep the window's edge error at a tenth of its length.
pub const DEFAULT_TIME_BUCKETS: u32 = 10;

#[cfg(feature = "redis")]
/// How often an instance reports and reads the shared state: a second bounds how long one instance keeps
/// calling a gateway that all others already see failing, and costs one small script per second per instance.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(feature = "redis")]
/// Default key prefix: keys are `palisade:cb:{name}:inst` and `palisade:cb:{name}:state`. Every Palisade layer
/// keeps its keys under `palisade:` and a prefix of its own (`rl`, `idem`, `webhook`), so the layers can share one
/// Redis with each other and with the application.
pub const DEFAULT_PREFIX: &str = "palisade:cb:";
