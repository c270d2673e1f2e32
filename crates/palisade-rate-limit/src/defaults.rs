//! Every default of `palisade-rate-limit` in one place, each with the reason for its value. They are also
//! re-exported where they were always found: the crate root, and the `redis` module for the Redis ones.

use std::time::Duration;

/// Default cap on the number of keys a [`KeyedRateLimiter`](crate::KeyedRateLimiter) tracks: 100,000 keys is
/// about 6 MB of state, enough for the distinct cards or IPs a busy API sees within one burst window, and small
/// enough that a key-churning attacker cannot exhaust memory.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[cfg(feature = "redis")]
/// Default key prefix: `palisade:rl:`. Every Palisade layer keeps its keys under `palisade:` and a prefix of its own
/// (`cb`, `idem`, `webhook`), so the layers can share one Redis with each other and with the application.
pub const DEFAULT_PREFIX: &str = "palisade:rl:";

#[cfg(feature = "redis")]
/// While Redis cannot be reached, a new connection attempt is made at most once per this interval (1 s); the
/// decisions in between follow the failure policy at once. Short enough to notice Redis coming back quickly, long
/// enough that a blackholed host (2 s connect timeout) does not make every request wait.
pub const DEFAULT_RECONNECT_INTERVAL: Duration = palisade_store::redis::RECONNECT_INTERVAL;

/// Default name of a limit, as it appears in `RateLimit-Policy`, tracing fields and metric labels.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// Default longest wait in [`OnLimit::Wait`](crate::OnLimit::Wait): 1 second. Long enough to smooth a burst at a
/// gateway's TPS cap, short enough that a caller's own timeout (typically a few seconds for a charge) still has
/// room.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
