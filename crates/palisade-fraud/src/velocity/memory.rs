//! The in-process velocity store.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashMap;
use palisade_core::Currency;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Measure, Subject, Velocity, VelocityCounts, Window};
use crate::defaults::MAX_VELOCITY_WINDOW;
use crate::error::VelocityError;

/// One entry: when, the attempt id's hash (compared first), the id, currency and amount.
struct Entry {
    at: Instant,
    hash: u64,
    id: std::sync::Arc<str>,
    currency: Currency,
    amount: i64,
}

#[derive(Default)]
struct Series {
    attempts: VecDeque<Entry>,
    declines: VecDeque<(Instant, u64, std::sync::Arc<str>)>,
}

impl Series {
    fn prune(&mut self, horizon: Option<Instant>) {
        let Some(horizon) = horizon else { return };
        while self.attempts.front().is_some_and(|a| a.at < horizon) {
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

#[derive(Default)]
struct State {
    maps: [HashMap<String, Series>; 4],
    ops_since_sweep: usize,
    seq: u64,
    hasher: hashbrown::DefaultHashBuilder,
}

impl State {
    fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }
    /// Drops idle keys once the operations since the last sweep reach the number of keys (at least
    /// [`SWEEP_EVERY`]): the sweep costs O(1) per operation amortized, and memory stays bounded by the last
    /// day's traffic.
    fn maybe_sweep(&mut self, horizon: Option<Instant>) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < SWEEP_EVERY.max(self.len()) {
            return;
        }
        self.ops_since_sweep = 0;
        for map in &mut self.maps {
            map.retain(|_, s| {
                s.prune(horizon);
                !s.is_empty()
            });
        }
    }
    fn id(&mut self, attempt: &Attempt) -> (u64, std::sync::Arc<str>) {
        self.seq += 1;
        let id: std::sync::Arc<str> = match &attempt.id {
            Some(id) => id.as_str().into(),
            None => format!("g:{}", self.seq).into(),
        };
        (self.hasher.hash_one(&id), id)
    }
}

/// Velocity history in this process (tokio's clock, so tests can pause time). One lock makes the record and
/// the read of every counter of a decision one atomic step. History older than a day is dropped when its key is
/// next touched, and idle keys are swept (amortized O(1) per operation), so memory stays bounded by the last
/// day's traffic.
#[derive(Default)]
pub struct MemoryVelocityStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryVelocityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVelocityStore").field("keys", &self.tracked_keys()).finish()
    }
}

const SWEEP_EVERY: usize = 4096;

impl MemoryVelocityStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryVelocityStore::default()
    }

    /// Keys (subject, value) currently tracked.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.state.lock().len()
    }

    /// The synchronous form of [`VelocityStore::record_attempt`].
    pub fn record_attempt_now(&self, attempt: &Attempt) -> VelocityCounts {
        let now = Instant::now();
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let froms = Window::ALL.map(|w| now.checked_sub(w.duration()));
        let mut counts = VelocityCounts::default();
        let mut st = self.state.lock();
        let (hash, id) = st.id(attempt);
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_str()).or_default();
            series.prune(horizon);
            if !series.attempts.iter().any(|a| a.hash == hash && a.id == id) {
                series.attempts.push_back(Entry {
                    at: now,
                    hash,
                    id: id.clone(),
                    currency: attempt.currency,
                    amount: attempt.amount_minor,
                });
            }
            for (w, from) in Window::ALL.into_iter().zip(froms) {
                let Some(from) = from else { continue };
                let mut n_att = 0i64;
                let mut amount = 0i64;
                for a in series.attempts.iter().rev().take_while(|a| a.at >= from) {
                    n_att += 1;
                    if a.currency == attempt.currency {
                        amount = amount.saturating_add(a.amount);
                    }
                }
                let n_dec = series.declines.iter().rev().take_while(|d| d.0 >= from).count() as i64;
                counts.set(Velocity::new(Measure::Attempts, s, w), n_att);
                counts.set(Velocity::new(Measure::Amount, s, w), amount);
                counts.set(Velocity::new(Measure::Declines, s, w), n_dec);
            }
        }
        st.maybe_sweep(horizon);
        counts
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt) {
        let now = Instant::now();
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let mut st = self.state.lock();
        let (hash, id) = st.id(attempt);
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_str()).or_default();
            series.prune(horizon);
            if !series.declines.iter().any(|d| d.1 == hash && d.2 == id) {
                series.declines.push_back((now, hash, id.clone()));
            }
        }
        st.maybe_sweep(horizon);
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
