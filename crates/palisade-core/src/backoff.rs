//! Exponential backoff with jitter, shared by the retry layer (delays between attempts) and the circuit breaker
//! (open durations that grow with repeated trips).
//!
//! Randomness comes in as a number in `[0, 1)` from the caller, so this is pure and property-testable, and each
//! layer picks its own RNG (seeded in tests).

use std::time::Duration;

/// The longest wait any layer schedules: a year. A longer setting (`Duration::MAX` for "as long as it takes") or
/// `Retry-After` is taken as this, so adding it to the clock can never overflow (which panics).
pub const LONGEST_WAIT: Duration = Duration::from_secs(365 * 86_400);

/// How random numbers spread a delay (see the AWS Architecture Blog, "Exponential Backoff And Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness: `min(max, base * factor^n)`.
    None,
    /// Uniform in `[0, min(max, base * factor^n)]`. Spreads clients best; the default.
    #[default]
    Full,
    /// Uniform in `[d/2, d]` with `d = min(max, base * factor^n)`: never shorter than half.
    Equal,
    /// Uniform in `[base, min(max, previous * 3)]`: each delay depends on the last.
    Decorrelated,
}

/// Exponential backoff: `base * factor^attempt`, capped at `max`, spread by [`Jitter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay (attempt 0), and the floor of decorrelated jitter.
    pub base: Duration,
    /// Cap on any delay.
    pub max: Duration,
    /// Growth per attempt (2.0 doubles).
    pub factor: f64,
    /// Spread.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10), factor: 2.0, jitter: Jitter::Full }
    }
}

impl Backoff {
    /// The un-jittered ceiling for `attempt` (0-based): `min(max, base * factor^attempt)`.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self.factor.max(1.0).powi(i32::try_from(attempt).unwrap_or(i32::MAX));
        let secs = self.base.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() { self.max } else { Duration::from_secs_f64(secs) }
    }

    /// The delay before retry number `attempt` (0-based). `previous` is the last delay (for decorrelated jitter;
    /// `None` on the first), `unit` a random number in `[0, 1)`. Always within `[0, max]`.
    #[must_use]
    pub fn delay(&self, attempt: u32, previous: Option<Duration>, unit: f64) -> Duration {
        let u = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        let d = match self.jitter {
            Jitter::None => self.ceiling(attempt),
            Jitter::Full => self.ceiling(attempt).mul_f64(u),
            Jitter::Equal => {
                let c = self.ceiling(attempt);
                c / 2 + (c / 2).mul_f64(u)
            }
            Jitter::Decorrelated => {
                let lo = self.base.min(self.max);
                let hi = previous.unwrap_or(self.base).saturating_mul(3).min(self.max).max(lo);
                lo + (hi - lo).mul_f64(u)
            }
        };
        d.min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ceiling_grows_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter: Jitter::None,
        };
        assert_eq!(b.delay(0, None, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(1, None, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, None, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(4, None, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX, None, 0.5), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(attempt in 0u32..64, unit in 0.0f64..1.0, prev_ms in 0u64..20_000,
                                      base_ms in 1u64..1000, max_ms in 1u64..30_000, j in 0usize..4) {
            let jitter = [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated][j];
            let b = Backoff { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), factor: 2.0, jitter };
            let d = b.delay(attempt, Some(Duration::from_millis(prev_ms)), unit);
            prop_assert!(d <= b.max);
            let c = b.ceiling(attempt);
            match jitter {
                Jitter::None => prop_assert_eq!(d, c),
                Jitter::Full => prop_assert!(d <= c),
                Jitter::Equal => prop_assert!(d >= c / 2 && d <= c),
                Jitter::Decorrelated => prop_assert!(d >= b.base.min(b.max)),
            }
        }
    }
}
