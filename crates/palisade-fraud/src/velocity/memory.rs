//! The in-process velocity store.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::Currency;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Measure, Subject, Velocity, VelocityCounts, Window};
use crate::defaults::MAX_VELOCITY_WINDOW;
use crate::error::VelocityError;

#[derive(Default)]
struct Series {
    attempts: VecDeque<(Instant, String, Currency, i64)>,
    declines: VecDeque<(Instant, String)>,
}

impl Series {
    fn prune(&mut self, now: Instant) {
        let Some(horizon) = now.checked_sub(MAX_VELOCITY_WINDOW) else { return };
        while self.attempts.front().is_some_and(|a| a.0 < horizon) {
            self.attempts.pop_front();
        }
        while self.declines.front().is_some_and(|d| d.0 < horizon) {
            self.declines.pop_front();
        }
    }
    fn is_empty(&self) -> bool {
        self.attempts.is_empty() && self.declines.is_empty()
    }
}

/// Velocity history in this process (tokio's clock, so tests can pause time). One lock makes the record and
/// the read of every counter of a decision one atomic step. History older than a day is dropped when its key is
/// next touched, and idle keys are swept every 4096 operations, so memory stays bounded by the last day's
/// traffic.
pub struct MemoryVelocityStore {
    series: Mutex<HashMap<(Subject, String), Series>>,
    seq: AtomicU64,
}

impl Default for MemoryVelocityStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryVelocityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVelocityStore").field("keys", &self.series.lock().len()).finish()
    }
}

const SWEEP_EVERY: u64 = 4096;

impl MemoryVelocityStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryVelocityStore { series: Mutex::new(HashMap::new()), seq: AtomicU64::new(0) }
    }

    /// Keys (subject, value) currently tracked.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.series.lock().len()
    }

    fn id(&self, attempt: &Attempt, n: u64) -> String {
        attempt.id.clone().unwrap_or_else(|| format!("g:{n}"))
    }

    fn maybe_sweep(&self, n: u64, map: &mut HashMap<(Subject, String), Series>, now: Instant) {
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            map.retain(|_, s| {
                s.prune(now);
                !s.is_empty()
            });
        }
    }

    /// The synchronous form of [`VelocityStore::record_attempt`].
    pub fn record_attempt_now(&self, attempt: &Attempt) -> VelocityCounts {
        let now = Instant::now();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = self.id(attempt, n);
        let mut counts = VelocityCounts::default();
        let mut map = self.series.lock();
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = map.entry((s, value.clone())).or_default();
            series.prune(now);
            if !series.attempts.iter().any(|a| a.1 == id) {
                series.attempts.push_back((now, id.clone(), attempt.currency, attempt.amount_minor));
            }
            for w in Window::ALL {
                let Some(from) = now.checked_sub(w.duration()) else { continue };
                let mut n_att = 0i64;
                let mut amount = 0i64;
                for a in series.attempts.iter().rev().take_while(|a| a.0 >= from) {
                    n_att += 1;
                    if a.2 == attempt.currency {
                        amount = amount.saturating_add(a.3);
                    }
                }
                let n_dec = series.declines.iter().rev().take_while(|d| d.0 >= from).count() as i64;
                counts.set(Velocity::new(Measure::Attempts, s, w), n_att);
                counts.set(Velocity::new(Measure::Amount, s, w), amount);
                counts.set(Velocity::new(Measure::Declines, s, w), n_dec);
            }
        }
        self.maybe_sweep(n, &mut map, now);
        counts
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt) {
        let now = Instant::now();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = self.id(attempt, n);
        let mut map = self.series.lock();
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = map.entry((s, value.clone())).or_default();
            series.prune(now);
            if !series.declines.iter().any(|d| d.1 == id) {
                series.declines.push_back((now, id.clone()));
            }
        }
    }
}

impl VelocityStore for MemoryVelocityStore {
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        let counts = self.record_attempt_now(attempt);
        Box::pin(std::future::ready(Ok(counts)))
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<(), VelocityError>> {
        self.record_decline_now(attempt);
        Box::pin(std::future::ready(Ok(())))
    }
}
