//! In-process limiters: [`RateLimiter`] (one limit, one atomic word) and [`KeyedRateLimiter`] (one limit per key,
//! bounded memory).

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use crate::clock::{Clock, ClockSource};
use crate::defaults::DEFAULT_MAX_KEYS;
use crate::error::{RateLimitError, RateLimited};
use crate::gcra::{Admitted, Gcra, Quota, Verdict};

/// One atomic GCRA step on `tat`: load, decide, compare-and-swap; on contention, decide again with the value
/// that won. Lock-free: some caller always makes progress.
#[inline]
fn step(g: &Gcra, quota: &Quota, tat: &AtomicU64, now: u64, cost: u32) -> Result<Admitted, RateLimitError> {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        match g.decide(current, now, cost) {
            Verdict::Admit { new_tat, admitted } => {
                if new_tat == current {
                    return Ok(admitted); // cost 0: nothing to write
                }
                match tat.compare_exchange_weak(current, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(admitted),
                    Err(actual) => current = actual,
                }
            }
            Verdict::Limit { retry_after } => {
                return Err(RateLimited::new(Duration::from_nanos(retry_after), *quota).into());
            }
            Verdict::Never => return Err(RateLimitError::CostExceedsBurst { cost, burst: quota.burst() }),
        }
    }
}

/// One limit for everything that passes: the state is a single `AtomicU64` (the GCRA theoretical arrival
/// time), updated by compare-and-swap.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use palisade_rate_limit::{Quota, RateLimiter};
/// let limiter = RateLimiter::new(Quota::per_second(2).unwrap());
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let refused = limiter.check().unwrap_err();
/// assert_eq!(refused.retry_after(), Some(std::time::Duration::from_millis(500)));
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    quota: Quota,
    gcra: Gcra,
    clock: Clock,
    tat: AtomicU64,
}

impl RateLimiter {
    /// A limiter for `quota`, starting idle (a full burst available).
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::with_clock(quota, ClockSource::Tokio)
    }

    /// A limiter reading `clock`.
    #[must_use]
    pub fn with_clock(quota: Quota, clock: ClockSource) -> Self {
        RateLimiter { quota, gcra: quota.gcra(), clock: Clock::start(clock), tat: AtomicU64::new(0) }
    }

    /// The quota.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Admits one unit now, or says exactly how long to wait.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`] with the exact `retry_after`.
    #[inline]
    pub fn check(&self) -> Result<Admitted, RateLimitError> {
        self.check_n(1)
    }

    /// Admits `cost` units now, or says exactly how long to wait.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`], or [`RateLimitError::CostExceedsBurst`] when `cost` can never fit.
    #[inline]
    pub fn check_n(&self, cost: u32) -> Result<Admitted, RateLimitError> {
        step(&self.gcra, &self.quota, &self.tat, self.clock.nanos(), cost)
    }

    /// How long until `cost` units would be admitted, without spending anything (zero if now).
    #[must_use]
    pub fn time_until_available(&self, cost: u32) -> Duration {
        let now = self.clock.nanos();
        match self.gcra.decide(self.tat.load(Ordering::Acquire), now, cost) {
            Verdict::Admit { .. } => Duration::ZERO,
            Verdict::Limit { retry_after } => Duration::from_nanos(retry_after),
            Verdict::Never => Duration::MAX,
        }
    }
}

/// One limit per key (merchant, card token, IP...), with bounded memory.
///
/// Each key's state is one `AtomicU64` in a sharded map ([`dashmap`]); a decision holds the shard's read lock
/// while it compare-and-swaps, so decisions on existing keys never block one another.
///
/// **Bounded memory.** At most `max_keys` keys are tracked. A key whose theoretical arrival time is in the past
/// is *idle*, and an idle key's state is indistinguishable from a fresh key's: the rule only ever reads
/// `max(tat, now)`, which equals `now` for both, and `now` only moves forward. So dropping an idle key loses
/// nothing — eviction is exact, never a free reset. Idle keys are swept when a new key arrives and either the
/// map is full or the sweep interval (one burst window, at least a second) has passed; [`Self::retain_recent`]
/// sweeps on demand. When the map is full of keys that are all still active, a new key is refused (with the
/// time until the first key goes idle) rather than evicting active state, which would hand that key a fresh
/// burst: the limit never leaks, even under key churn.
#[derive(Debug)]
pub struct KeyedRateLimiter<K: Hash + Eq> {
    quota: Quota,
    gcra: Gcra,
    clock: Clock,
    map: DashMap<K, AtomicU64>,
    len: AtomicUsize,
    max_keys: usize,
    /// Earliest time a sweep can free something (nanos since origin): the smallest TAT left by the last sweep.
    earliest_idle: AtomicU64,
    /// Time of the next periodic sweep (nanos since origin).
    next_sweep: AtomicU64,
    sweep_interval: u64,
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    /// A keyed limiter for `quota` tracking at most [`DEFAULT_MAX_KEYS`] keys.
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::with_max_keys(quota, DEFAULT_MAX_KEYS)
    }

    /// A keyed limiter tracking at most `max_keys` keys (at least 1).
    #[must_use]
    pub fn with_max_keys(quota: Quota, max_keys: usize) -> Self {
        Self::with_options(quota, max_keys, ClockSource::Tokio)
    }

    /// A keyed limiter tracking at most `max_keys` keys (at least 1), reading `clock`.
    #[must_use]
    pub fn with_options(quota: Quota, max_keys: usize, clock: ClockSource) -> Self {
        let gcra = quota.gcra();
        KeyedRateLimiter {
            quota,
            gcra,
            clock: Clock::start(clock),
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            earliest_idle: AtomicU64::new(0),
            next_sweep: AtomicU64::new(0),
            sweep_interval: gcra.capacity.max(1_000_000_000),
        }
    }

    /// The quota each key gets.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Keys currently tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no key is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits one unit for `key`.
    ///
    /// # Errors
    /// See [`Self::check_key_n`].
    #[inline]
    pub fn check_key(&self, key: &K) -> Result<Admitted, RateLimitError> {
        self.check_key_n(key, 1)
    }

    /// Admits `cost` units for `key` now, or says exactly how long to wait.
    ///
    /// # Errors
    /// [`RateLimitError::Limited`] when the key is over its limit, or when the map is full of active keys (then
    /// `retry_after` is the time until one goes idle); [`RateLimitError::CostExceedsBurst`] when `cost` can never
    /// fit.
    pub fn check_key_n(&self, key: &K, cost: u32) -> Result<Admitted, RateLimitError> {
        let now = self.clock.nanos();
        if let Some(tat) = self.map.get(key) {
            // The shard's read lock is held across the CAS, so a sweep cannot remove the entry mid-decision.
            return step(&self.gcra, &self.quota, &tat, now, cost);
        }
        self.insert_and_check(key, now, cost)
    }

    #[cold]
    fn insert_and_check(&self, key: &K, now: u64, cost: u32) -> Result<Admitted, RateLimitError> {
        if let Verdict::Never = self.gcra.decide(0, now, cost) {
            return Err(RateLimitError::CostExceedsBurst { cost, burst: self.quota.burst() });
        }
        let full = self.len.load(Ordering::Relaxed) >= self.max_keys;
        if (full && now >= self.earliest_idle.load(Ordering::Relaxed)) || now >= self.next_sweep.load(Ordering::Relaxed)
        {
            self.sweep(now);
        }
        // Reserve a slot first so concurrent inserts cannot overshoot `max_keys`.
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.max_keys {
            self.len.fetch_sub(1, Ordering::AcqRel);
            let wait = self.earliest_idle.load(Ordering::Relaxed).saturating_sub(now).max(1);
            tracing::debug!(target: "palisade_rate_limit", max_keys = self.max_keys, "keyed limiter full of active keys");
            return Err(RateLimited::new(Duration::from_nanos(wait), self.quota).into());
        }
        // The new key's TAT will be at most `now + cost·T`: it may go idle that early.
        self.earliest_idle
            .fetch_min(now.saturating_add(self.gcra.interval.saturating_mul(u64::from(cost))), Ordering::Relaxed);
        let entry = self.map.entry(key.clone());
        let fresh = matches!(entry, dashmap::Entry::Vacant(_));
        let tat = entry.or_insert_with(|| AtomicU64::new(0));
        if !fresh {
            self.len.fetch_sub(1, Ordering::AcqRel); // another caller inserted it first
        }
        step(&self.gcra, &self.quota, &tat, now, cost)
    }

    /// Drops every idle key (its state equals a fresh key's, so nothing is lost) and returns how many were
    /// dropped.
    pub fn retain_recent(&self) -> usize {
        self.sweep(self.clock.nanos())
    }

    fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        let mut earliest_idle = u64::MAX;
        self.map.retain(|_, tat| {
            let t = *tat.get_mut();
            if t <= now {
                removed += 1;
                false
            } else {
                earliest_idle = earliest_idle.min(t);
                true
            }
        });
        self.len.fetch_sub(removed, Ordering::AcqRel);
        // When full, nothing can be freed before `earliest_idle`; otherwise sweep once per interval.
        self.earliest_idle.store(earliest_idle, Ordering::Relaxed);
        self.next_sweep.store(now.saturating_add(self.sweep_interval), Ordering::Relaxed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_contention_never_over_admits() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let l = std::sync::Arc::new(RateLimiter::new(Quota::new(100, Duration::from_secs(3600)).unwrap()));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let l = l.clone();
                    std::thread::spawn(move || (0..1000).filter(|_| l.check().is_ok()).count())
                })
                .collect();
            let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(admitted, 100);
        });
    }
}
