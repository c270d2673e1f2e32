//! The in-process velocity store.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;
use palisade_core::Currency;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Measure, Subject, Velocity, VelocityCounts, VelocitySet, Window};
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
    /// No item leaves any window before this instant (`None`: none is due to leave), so most calls of
    /// [`Timeline::advance`] return at once, without touching the items.
    due: Option<Instant>,
}

impl<T> Default for Timeline<T> {
    fn default() -> Self {
        Timeline { items: VecDeque::new(), popped: 0, start: [0; WINDOWS], due: None }
    }
}

impl<T> Timeline<T> {
    /// Appends an item at `now` (the latest time so far).
    fn push(&mut self, item: T, now: Instant) {
        self.items.push_back(item);
        // The new item leaves the narrowest window first; an earlier due time only costs one more look.
        let leaves = now.checked_add(Window::TenMinutes.duration());
        self.due = match (self.due, leaves) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        };
    }

    /// Moves each window's start past the items older than its `from`, handing each to `leave(window, item)`.
    fn advance(&mut self, now: Instant, at: impl Fn(&T) -> Instant, mut leave: impl FnMut(usize, &T)) {
        if self.due.is_none_or(|d| now <= d) {
            return;
        }
        let froms = window_starts(now);
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
        // The next item to leave: per window, the first item in it, at its time plus the window.
        self.due = Window::ALL
            .iter()
            .enumerate()
            .filter_map(|(w, win)| {
                let item = usize::try_from(self.start[w] - self.popped).ok().and_then(|i| self.items.get(i))?;
                at(item).checked_add(win.duration())
            })
            .min();
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
    fn advance(&mut self, now: Instant) {
        let (count, amount) = (&mut self.count, &mut self.amount);
        self.attempts.advance(
            now,
            |e| e.at,
            |w, e| {
                count[w] -= 1;
                if let Some(sum) = amount[w].iter_mut().find(|(c, _)| *c == e.currency) {
                    sum.1 = sum.1.saturating_sub(e.amount);
                }
            },
        );
        let declines = &mut self.decline_count;
        self.declines.advance(now, |at| *at, |w, _| declines[w] -= 1);
    }

    fn push_attempt(&mut self, e: Entry) {
        let now = e.at;
        for w in 0..WINDOWS {
            self.count[w] += 1;
            match self.amount[w].iter_mut().find(|(c, _)| *c == e.currency) {
                Some(sum) => sum.1 = sum.1.saturating_add(e.amount),
                None => self.amount[w].push((e.currency, e.amount)),
            }
        }
        self.attempts.push(e, now);
    }

    fn push_decline(&mut self, at: Instant) {
        for w in 0..WINDOWS {
            self.decline_count[w] += 1;
        }
        self.declines.push(at, at);
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
///
/// The key is encoded into a buffer kept from call to call (length-prefixed values, then the id), so a lookup
/// allocates nothing; only a new attempt allocates its key, shared by the map and the queue.
#[derive(Default)]
struct Seen {
    ids: HashMap<Arc<[u8]>, Instant>,
    order: VecDeque<(Instant, Arc<[u8]>)>,
    buf: Vec<u8>,
}

impl Seen {
    /// True when the attempt was seen within the horizon; records it otherwise.
    fn check_and_insert(&mut self, attempt: &Attempt<'_>, now: Instant, horizon: Option<Instant>) -> bool {
        let Some(id) = attempt.id else { return false };
        if let Some(horizon) = horizon {
            while self.order.front().is_some_and(|(at, _)| *at < horizon) {
                if let Some((at, old)) = self.order.pop_front()
                    && self.ids.get(&old) == Some(&at)
                {
                    self.ids.remove(&old);
                }
            }
        }
        self.buf.clear();
        for v in &attempt.subjects {
            // Length-prefixed, so no two different lists of values encode alike.
            let v = v.as_deref().map(str::as_bytes);
            let len = v.map_or(u32::MAX, |v| u32::try_from(v.len()).unwrap_or(u32::MAX - 1));
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(v.unwrap_or_default());
        }
        self.buf.extend_from_slice(id.as_bytes());
        if self.ids.contains_key(self.buf.as_slice()) {
            return true;
        }
        let key: Arc<[u8]> = Arc::from(self.buf.as_slice());
        self.ids.insert(key.clone(), now);
        self.order.push_back((now, key));
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
    fn maybe_sweep(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep < SWEEP_EVERY.max(self.len()) {
            return;
        }
        self.ops_since_sweep = 0;
        for map in &mut self.maps {
            map.retain(|_, s| {
                s.advance(now);
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
    pub fn record_attempt_now(&self, attempt: &Attempt<'_>) -> VelocityCounts {
        self.record_reading(attempt, VelocitySet::ALL)
    }

    /// Records the attempt and reads the attributes in `read` (the others stay 0).
    fn record_reading(&self, attempt: &Attempt<'_>, read: VelocitySet) -> VelocityCounts {
        let now = Instant::now();
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let mut counts = VelocityCounts::default();
        let mut st = self.state.lock();
        // An attempt without an id is its own; one with an id counts once however often it is retried.
        let repeat = st.attempts_seen.check_and_insert(attempt, now, horizon);
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_ref()).or_default();
            series.advance(now);
            if !repeat {
                series.push_attempt(Entry { at: now, currency: attempt.currency, amount: attempt.amount_minor });
            }
            for m in Measure::ALL {
                for (i, w) in Window::ALL.into_iter().enumerate() {
                    let v = Velocity::new(m, s, w);
                    if read.contains(v) {
                        let value = match m {
                            Measure::Attempts => series.count[i],
                            Measure::Amount => series.amount_in(i, attempt.currency),
                            Measure::Declines => series.decline_count[i],
                        };
                        counts.set(v, value);
                    }
                }
            }
        }
        st.maybe_sweep(now);
        counts
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt<'_>) {
        let now = Instant::now();
        let horizon = now.checked_sub(MAX_VELOCITY_WINDOW);
        let mut st = self.state.lock();
        if st.declines_seen.check_and_insert(attempt, now, horizon) {
            return;
        }
        for s in Subject::ALL {
            let Some(value) = &attempt.subjects[s.index()] else { continue };
            let series = st.maps[s.index()].entry_ref(value.as_ref()).or_default();
            series.advance(now);
            series.push_decline(now);
        }
        st.maybe_sweep(now);
    }
}

impl VelocityStore for MemoryVelocityStore {
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        let counts = self.record_attempt_now(attempt);
        Box::pin(std::future::ready(Ok(counts)))
    }
    fn record_attempt_reading<'a>(
        &'a self,
        attempt: &'a Attempt<'a>,
        read: VelocitySet,
    ) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        let counts = self.record_reading(attempt, read);
        Box::pin(std::future::ready(Ok(counts)))
    }
    fn try_record_attempt(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
    ) -> Option<Result<VelocityCounts, VelocityError>> {
        Some(Ok(self.record_reading(attempt, read)))
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>> {
        self.record_decline_now(attempt);
        Box::pin(std::future::ready(Ok(())))
    }
}
