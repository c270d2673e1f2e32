//! The Generic Cell Rate Algorithm: the limit ([`Quota`]) and the one decision every backend makes.
//!
//! GCRA keeps one number per key, the *theoretical arrival time* (TAT): the instant at which the key's bucket
//! would be empty again if nothing else arrived. With `T` the emission interval (`period / rate`) and a capacity
//! of `burst · T`, a request of cost `c` arriving at `now` is admitted iff
//!
//! ```text
//! max(tat, now) + c·T − now ≤ burst·T          and then   tat ← max(tat, now) + c·T
//! ```
//!
//! and otherwise it may retry after exactly `max(tat, now) + c·T − burst·T − now`. The local limiters and the
//! Redis Lua script run this same rule.

use std::time::Duration;

/// A limit: `rate` units per `period`, in bursts of at most `burst` units (default: `rate`).
///
/// Each request spends its cost in units (1 unless a cost function says otherwise). Sustained throughput is
/// `rate / period`; from idle, up to `burst` units are admitted at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    rate: u32,
    period: Duration,
    burst: u32,
}

/// A quota that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// Rate, period or burst was zero.
    #[error("rate, period and burst must all be greater than zero; a zero quota would refuse everything")]
    Zero,
    /// The period divided by the rate is below one nanosecond, or burst × interval overflows.
    #[error("quota out of range: period/rate must be at least 1 ns and burst × period/rate must fit in 500 years")]
    OutOfRange,
}

impl Quota {
    /// `rate` units per `period`, burst equal to `rate` (a whole period's worth may arrive at once).
    ///
    /// # Errors
    /// [`QuotaError`] when a value is zero or out of range.
    pub fn new(rate: u32, period: Duration) -> Result<Self, QuotaError> {
        Quota { rate, period, burst: rate }.validated()
    }

    /// `rate` units per second, burst equal to `rate`.
    ///
    /// # Errors
    /// [`QuotaError::Zero`] when `rate` is zero.
    pub fn per_second(rate: u32) -> Result<Self, QuotaError> {
        Quota::new(rate, Duration::from_secs(1))
    }

    /// The same rate with bursts of at most `burst` units.
    ///
    /// # Errors
    /// [`QuotaError`] when `burst` is zero or burst × interval overflows.
    pub fn with_burst(self, burst: u32) -> Result<Self, QuotaError> {
        Quota { burst, ..self }.validated()
    }

    fn validated(self) -> Result<Self, QuotaError> {
        if self.rate == 0 || self.burst == 0 || self.period.is_zero() {
            return Err(QuotaError::Zero);
        }
        let g = Gcra::try_from_quota(&self).ok_or(QuotaError::OutOfRange)?;
        // 500 years of nanoseconds still leave u64 headroom for `now + capacity`.
        if g.capacity > 500 * 365 * 86_400 * 1_000_000_000 {
            return Err(QuotaError::OutOfRange);
        }
        Ok(self)
    }

    /// Units per period.
    #[must_use]
    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// The period.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }
    /// Largest number of units admitted at once.
    #[must_use]
    pub fn burst(&self) -> u32 {
        self.burst
    }
    /// Time one unit takes to replenish: `period / rate`, rounded up to the nanosecond so the limit is never
    /// exceeded (the error is under 1 ns per unit).
    #[must_use]
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.gcra().interval)
    }

    pub(crate) fn gcra(&self) -> Gcra {
        // Validated on construction: every `Quota` value passed `try_from_quota`.
        Gcra::try_from_quota(self).unwrap_or(Gcra { interval: 1, capacity: 1 })
    }
}

/// The admitted side of a decision: what is left, for `RateLimit` headers. Computed lazily, so a decision that
/// nobody reads the remainder of costs no division.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Unused capacity after this admission (ns, or units × interval).
    slack: u64,
    /// One unit (ns).
    interval: u64,
    /// Until the key is idle again (ns).
    reset: u64,
}

impl Admitted {
    pub(crate) const fn new(slack: u64, interval: u64, reset: u64) -> Self {
        Admitted { slack, interval, reset }
    }

    /// Admitted without a decision (fail-open): nothing known.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const UNKNOWN: Admitted = Admitted { slack: 0, interval: 1, reset: 0 };

    /// Units that could still be admitted right now.
    #[must_use]
    pub fn remaining(&self) -> u32 {
        (self.slack / self.interval.max(1)).min(u64::from(u32::MAX)) as u32
    }

    /// Time until the key is back to a full burst (idle).
    #[must_use]
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.reset)
    }
}

/// GCRA parameters in nanoseconds (or microseconds for Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval `T`.
    pub interval: u64,
    /// `burst · T`.
    pub capacity: u64,
}

/// One GCRA verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Admitted: store `new_tat`.
    Admit { new_tat: u64, admitted: Admitted },
    /// Not now; exactly this many nanoseconds until the same request would be admitted.
    Limit { retry_after: u64 },
    /// The cost exceeds the burst: never admissible.
    Never,
}

impl Gcra {
    fn try_from_quota(q: &Quota) -> Option<Gcra> {
        let period = u64::try_from(q.period.as_nanos()).ok()?;
        let interval = period.div_ceil(u64::from(q.rate));
        let capacity = interval.checked_mul(u64::from(q.burst))?;
        (interval > 0).then_some(Gcra { interval, capacity })
    }

    /// The same parameters in microseconds (Redis `TIME` resolution), rounded up so the limit holds.
    #[cfg(feature = "redis")]
    pub(crate) fn micros(&self, burst: u32) -> Gcra {
        let interval = self.interval.div_ceil(1_000);
        Gcra { interval, capacity: interval.saturating_mul(u64::from(burst)) }
    }

    /// The GCRA rule (see the module docs). `tat` and `now` share one origin; a fresh key has `tat == 0`.
    #[inline]
    pub(crate) fn decide(&self, tat: u64, now: u64, cost: u32) -> Verdict {
        let inc = self.interval.saturating_mul(u64::from(cost));
        if inc > self.capacity {
            return Verdict::Never;
        }
        let new_tat = tat.max(now) + inc;
        let ahead = new_tat - now;
        if ahead > self.capacity {
            return Verdict::Limit { retry_after: ahead - self.capacity };
        }
        Verdict::Admit { new_tat, admitted: Admitted::new(self.capacity - ahead, self.interval, ahead) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_overflow_are_refused() {
        assert_eq!(Quota::per_second(0), Err(QuotaError::Zero));
        assert_eq!(Quota::per_second(5).and_then(|q| q.with_burst(0)), Err(QuotaError::Zero));
        assert_eq!(
            Quota::new(1, Duration::from_secs(3600 * 24 * 365 * 400)).and_then(|q| q.with_burst(3)),
            Err(QuotaError::OutOfRange)
        );
        assert_eq!(
            Quota::new(10, Duration::from_nanos(5)),
            Ok(Quota { rate: 10, period: Duration::from_nanos(5), burst: 10 })
        );
    }

    #[test]
    fn interval_rounds_up() {
        let q = Quota::per_second(3).unwrap();
        assert_eq!(q.emission_interval(), Duration::from_nanos(333_333_334));
    }

    #[test]
    fn rule_is_exact() {
        let g = Quota::per_second(10).unwrap().with_burst(2).unwrap().gcra();
        // 100 ms interval, 200 ms capacity.
        let Verdict::Admit { new_tat, admitted } = g.decide(0, 1_000, 1) else { panic!() };
        assert_eq!((new_tat, admitted.remaining()), (100_001_000, 1));
        let Verdict::Admit { new_tat, admitted } = g.decide(new_tat, 1_000, 1) else { panic!() };
        assert_eq!((new_tat, admitted.remaining()), (200_001_000, 0));
        assert_eq!(g.decide(new_tat, 1_000, 1), Verdict::Limit { retry_after: 100_000_000 });
        assert!(matches!(g.decide(new_tat, 100_001_000, 1), Verdict::Admit { .. }));
        assert_eq!(g.decide(new_tat, 100_000_999, 1), Verdict::Limit { retry_after: 1 });
        assert_eq!(g.decide(0, 0, 3), Verdict::Never);
    }

    proptest::proptest! {
        /// The virtual-scheduling rule (what the limiters run) against the other textbook form of GCRA, the
        /// continuous-state leaky bucket: a bucket holding `x` ns of work, draining 1 ns per ns, admitting a
        /// request of cost `c` iff the drained level plus `c·T` fits in `burst·T`. Same decisions, same
        /// retry_after, for any sequence of arrivals and costs.
        #[test]
        fn matches_the_leaky_bucket_form(
            interval in 1u64..1_000_000,
            burst in 1u32..20,
            steps in proptest::collection::vec((0u64..3_000_000, 0u32..25), 1..200),
        ) {
            let g = Gcra { interval, capacity: interval * u64::from(burst) };
            let (mut tat, mut now) = (0u64, 0u64);
            let (mut level, mut last) = (0u64, 0u64);
            for (gap, cost) in steps {
                now += gap;
                let drained = level.saturating_sub(now - last);
                let work = interval * u64::from(cost);
                let verdict = g.decide(tat, now, cost);
                if work > g.capacity {
                    proptest::prop_assert_eq!(verdict, Verdict::Never);
                } else if drained + work <= g.capacity {
                    let Verdict::Admit { new_tat, admitted } = verdict else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("refused {verdict:?}")));
                    };
                    level = drained + work;
                    last = now;
                    proptest::prop_assert_eq!(admitted.remaining(), ((g.capacity - level) / interval) as u32);
                    tat = new_tat;
                } else {
                    proptest::prop_assert_eq!(verdict, Verdict::Limit { retry_after: drained + work - g.capacity });
                }
            }
        }
    }
}
