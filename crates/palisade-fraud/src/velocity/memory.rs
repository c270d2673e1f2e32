//! The in-process velocity store.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;
use palisade_core::Currency;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Measure, Subject, Velocity, VelocityCounts, Window};
use crate::defaults::MAX_VELOCITY_WINDOW;
use crate::error::VelocityError;

/// One attempt in a series.
struct Entry {
    at: Instant,
    currency: Currency,
    amount: i64,
}

const WINDOWS: usize = Window::ALL.len();

/// Items in time order with, per window, where the window starts and running sums over what is inside it.
/// Recording and reading are O(1) amortized, whatever the history's length: a window's start only moves forward
/// (time does), and each item is added once and subtracted once per window.
struct Timeline<T> {
    items: VecDeque<T>,
    /// Items ever removed from the front: an item's absolute position is `popped + index`.
    popped: u64,
    /// Per window, the absolute position of its first item.
    start: [u64; WINDOWS],
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline { items: VecDeque::new(), popped: 0, start: [0; WINDOWS] }
    }
}

impl<T> Timeline<T> {
    /// Moves each window's start past the items older than its `from`, handing each to `leave(window, item)`.
    fn advance(
        &mut self,
        froms: &[Option<Instant>; WINDOWS],
        at: impl Fn(&T) -> Instant,
        mut leave: impl FnMut(usize, &T),
    ) {
        for (w, from) in froms.iter().enumerate() {
            let Some(from) = *from else { continue };
            while let Some(item) = usize::try_from(self.start[w] - self.popped).ok().and_then(|i| self.items.get(i)) {
                if at(item) >= from {
                    break;
                }
                leave(w, item);
                self.start[w] += 1;
            }
        }
        // Items no window holds any more are dropped (the widest window is the horizon).
        let keep_from = self.start.iter().copied().min().unwrap_or(self.popped);
        while self.popped < keep_from {
            self.items.pop_front();
            self.popped += 1;
        }
    }
}

#[derive(Default)]
struct Series {
    attempts: Timeline<Entry>,
    /// Per window: attempts inside it, and their amounts per currency.
    count: [i64; WINDOWS],
    amount: [Vec<(Currency, i64)>; WINDOWS],
    declines: Timeline<Instant>,
    decline_count: [i64; WINDOWS],
}

impl Series {
    fn advance(&mut self, froms: &[Option<Instant>; WINDOWS]) {
        let (count, amount) = (&mut self.count, &mut self.amount);
        self.attempts.advance(
            froms,
            |e| e.at,
            |w, e| {
                count[w] -= 1;
                if let Some(sum) = amount[w].iter_mut().find(|(c, _)| *c == e.currency) {
                    sum.1 = sum.1.saturating_sub(e.amount);
                }
            },
        );
        let declines = &mut self.decline_count;
        self.declines.advance(froms, |at| *at, |w, _| declines[w] -= 1);
    }

    fn push_attempt(&mut self, e: Entry) {
        for w in 0..WINDOWS {
            self.count[w] += 1;
            match self.amount[w].iter_mut().find(|(c, _)| *c == e.currency) {
                Some(sum) => sum.1 = sum.1.saturating_add(e.amount),
                None => self.amount[w].push((e.currency, e.amount)),
            }
        }
        self.attempts.items.push_back(e);
    }

    fn push_decline(&mut self, at: Instant) {
        for w in 0..WINDOWS {
            self.decline_count[w] += 1;
        }
        self.declines.items.push_back(at);
    }

    fn amount_in(&self, w: usize, currency: Currency) -> i64 {
        self.amount[w].iter().find(|(c, _)| *c == currency).map_or(0, |(_, a)| *a)
    }

    fn is_empty(&self) -> bool {
        self.attempts.items.is_empty() && self.declines.items.is_empty()
    }
}

/// Attempts seen within the horizon, so a retry of the same request counts once: a map for the lookup and a
/// queue in time order for the expiry (O(1) amortized each). An attempt is its id and its subjects' values: the
/// same idempotency key with another card is another attempt.
#[derive(Default)]
struct Seen {
    ids: HashMap<Arc<str>, Instant>,
    order: VecDeque<(Instant, Arc<str>)>,
}

impl Seen {
    /// True when the attempt was seen within the horizon; records it otherwise.
    fn check_and_insert(&mut self, attempt: &Attempt, now: Instant, horizon: Option<Instant>) -> bool {
        let Some(id) = &attempt.id else { return false };
        if let Some(horizon) = horizon {
            while self.order.front().is_some_and(|(at, _)| *at < horizon) {
                if let Some((at, old)) = self.order.pop_front()
                    && self.ids.get(&old) == Some(&at)
                {
                    self.ids.remove(&old);
                }
            }
        }
        let mut key = String::with_capacity(id.len() + 64);
        for v in &attempt.subjects {
            key.push_str(v.as_deref().unwrap_or(""));
            key.push('\u{0}');
        }
        key.push_str(id);
        if self.ids.contains_key(key.as_str()) {
            return true;
        }
        let id: Arc<str> = key.into();
        self.ids.insert(id.clone(), now);
        self.order.push_back((now, id));
        false
    }
}

#[derive(Default)]
struct State {
    maps: [HashMap<String, Series>; 4],
    attempts_seen: Seen,
    declines_seen: Seen,
    ops_since_sweep: usize,
}

impl State {
    fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }
    /// Drops idle keys once the operations since the last sweep reach the number of keys (at least
    /// [`SWEEP_EVERY`]): the sweep costs O(1) per operation amortized, and memory stays bounded by the last
    /// day's traffic.
    fn maybe_sweep(&mut self, froms: &[Option<Instant>; WINDOWS]) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < SWEEP_EVERY.max(self.len()) {
            return;
        }
        self.ops_since_sweep = 0;
        for map in &mut self.maps {
            map.retain(|_, s| {
                s.advance(froms);
                !s.is_empty()
            });
        }
    }
}

/// The start of each window (`None` while the process is younger than the window: everything counts).
fn window_starts(now: Instant) -> [Option<Instant>; WINDOWS] {
    Window::ALL.map(|w| now.checked_sub(w.duration()))
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
        let froms = window_starts(now);
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let mut counts = VelocityCounts::default();
        let mut st = self.state.lock();
        // An attempt without an id is its own; one with an id counts once however often it is retried.
        let repeat = st.attempts_seen.check_and_insert(attempt, now, horizon);
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_str()).or_default();
            series.advance(&froms);
            if !repeat {
                series.push_attempt(Entry { at: now, currency: attempt.currency, amount: attempt.amount_minor });
            }
            for (i, w) in Window::ALL.into_iter().enumerate() {
                counts.set(Velocity::new(Measure::Attempts, s, w), series.count[i]);
                counts.set(Velocity::new(Measure::Amount, s, w), series.amount_in(i, attempt.currency));
                counts.set(Velocity::new(Measure::Declines, s, w), series.decline_count[i]);
            }
        }
        st.maybe_sweep(&froms);
        counts
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt) {
        let now = Instant::now();
        let froms = window_starts(now);
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let mut st = self.state.lock();
        if st.declines_seen.check_and_insert(attempt, now, horizon) {
            return;
        }
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_str()).or_default();
            series.advance(&froms);
            series.push_decline(now);
        }
        st.maybe_sweep(&froms);
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
