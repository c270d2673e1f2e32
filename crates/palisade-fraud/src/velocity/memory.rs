//! The in-process velocity store.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};

use compact_str::CompactString;
use hashbrown::HashTable;
use palisade_core::Currency;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Subject, VelocityCounts, VelocitySet, Window};
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

/// When the next item of a timeline leaves a window: no item leaves any window before this instant (`None`:
/// none is due to leave), so most calls of [`Timeline::advance`] return at once, without touching the items. It
/// lives in the series' first cache line, apart from the timeline, so that check reads no more.
type Due = Option<Instant>;

impl<T> Timeline<T> {
    /// Appends an item at `now` (the latest time so far).
    fn push(&mut self, due: &mut Due, item: T, now: Instant) {
        self.items.push_back(item);
        // The new item leaves the narrowest window first; an earlier due time only costs one more look.
        let leaves = now.checked_add(Window::TenMinutes.duration());
        *due = match (*due, leaves) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        };
    }

    /// Moves each window's start past the items older than its `from`, handing each to `leave(window, item)`.
    fn advance(&mut self, due: &mut Due, now: Instant, at: impl Fn(&T) -> Instant, mut leave: impl FnMut(usize, &T)) {
        if due.is_none_or(|d| now <= d) {
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
        *due = Window::ALL
            .iter()
            .enumerate()
            .filter_map(|(w, win)| {
                let item = usize::try_from(self.start[w] - self.popped).ok().and_then(|i| self.items.get(i))?;
                at(item).checked_add(win.duration())
            })
            .min();
    }
}

/// Per currency, the sums of the attempts' amounts inside each window. The first currency a series sees is kept
/// inline (most series only ever see one), so recording and reading it touch the slot alone, and a new series
/// allocates nothing for its sums; a series that sees more currencies keeps the others in a `Vec`.
#[derive(Default)]
struct Amounts {
    first: Option<(Currency, [i64; WINDOWS])>,
    more: Vec<(Currency, [i64; WINDOWS])>,
}

impl Amounts {
    fn sums_mut(&mut self, currency: Currency) -> Option<&mut [i64; WINDOWS]> {
        match &mut self.first {
            Some((c, sums)) if *c == currency => Some(sums),
            _ => self.more.iter_mut().find(|(c, _)| *c == currency).map(|(_, sums)| sums),
        }
    }

    /// Adds an attempt's amount to every window (an attempt enters all windows when recorded).
    fn add(&mut self, currency: Currency, amount: i64) {
        if let Some(sums) = self.sums_mut(currency) {
            for sum in sums {
                *sum = sum.saturating_add(amount);
            }
        } else if self.first.is_none() {
            self.first = Some((currency, [amount; WINDOWS]));
        } else {
            self.more.push((currency, [amount; WINDOWS]));
        }
    }

    /// Takes an attempt's amount out of window `w` (it left the window).
    fn sub(&mut self, w: usize, currency: Currency, amount: i64) {
        if let Some(sums) = self.sums_mut(currency) {
            sums[w] = sums[w].saturating_sub(amount);
        }
    }

    /// Out of line: only amount rules read it, and `read_into` stays small for the others.
    #[inline(never)]
    fn get(&self, w: usize, currency: Currency) -> i64 {
        match &self.first {
            Some((c, sums)) if *c == currency => sums[w],
            _ => self.more.iter().find(|(c, _)| *c == currency).map_or(0, |(_, sums)| sums[w]),
        }
    }
}

/// A (subject, value)'s history. `repr(C)`, what a retry reads first: the due times and the attempt counts, in
/// the slot's first cache line (see [`Slot`]).
#[derive(Default)]
#[repr(C)]
struct Series {
    attempts_due: Due,
    declines_due: Due,
    /// Per window: attempts inside it.
    count: [i64; WINDOWS],
    decline_count: [i64; WINDOWS],
    /// Per window: the attempts' amounts per currency.
    amount: Amounts,
    attempts: Timeline<Entry>,
    declines: Timeline<Instant>,
}

impl Series {
    /// Moves the windows to `now`: at once when no entry is due to leave one (most calls).
    #[inline]
    fn advance(&mut self, now: Instant) {
        if self.attempts_due.is_none_or(|d| now <= d) && self.declines_due.is_none_or(|d| now <= d) {
            return;
        }
        self.advance_windows(now);
    }

    #[inline(never)]
    fn advance_windows(&mut self, now: Instant) {
        let (count, amount) = (&mut self.count, &mut self.amount);
        self.attempts.advance(
            &mut self.attempts_due,
            now,
            |e| e.at,
            |w, e| {
                count[w] -= 1;
                amount.sub(w, e.currency, e.amount);
            },
        );
        let declines = &mut self.decline_count;
        self.declines.advance(&mut self.declines_due, now, |at| *at, |w, _| declines[w] -= 1);
    }

    fn push_attempt(&mut self, e: Entry) {
        let now = e.at;
        for count in &mut self.count {
            *count += 1;
        }
        self.amount.add(e.currency, e.amount);
        self.attempts.push(&mut self.attempts_due, e, now);
    }

    fn push_decline(&mut self, at: Instant) {
        for w in 0..WINDOWS {
            self.decline_count[w] += 1;
        }
        self.declines.push(&mut self.declines_due, at, at);
    }

    fn amount_in(&self, w: usize, currency: Currency) -> i64 {
        self.amount.get(w, currency)
    }

    fn is_empty(&self) -> bool {
        self.attempts.items.is_empty() && self.declines.items.is_empty()
    }
}

/// Where a subject's series lives in the slab, as a [`Seen`] entry remembers it (so a retry reads its counters
/// without looking the subjects up again). The generation tells a slot reused since.
#[derive(Clone, Copy)]
struct Handle {
    slot: u32,
    generation: u32,
}

impl Handle {
    const NONE: Handle = Handle { slot: u32::MAX, generation: 0 };
}

/// One attempt seen: its key (the subjects' values, each self-delimiting ([`encode_subject`]), then the id: no
/// two different attempts encode alike) and where its subjects' series are.
///
/// 64 bytes, cache-line aligned: the table's buckets then each sit in one cache line (hashbrown aligns its bucket
/// array to the entry's alignment), so a lookup reads one line of them, not two.
#[repr(align(64))]
struct SeenEntry {
    key: Box<[u8]>,
    hash: u64,
    seq: u64,
    handles: [Handle; 4],
}

/// Attempts seen within the horizon, so a retry of the same request counts once: a table for the lookup and a
/// queue in time order for the expiry (O(1) amortized each). An attempt is its id and its subjects' values: the
/// same idempotency key with another card is another attempt. Its key is encoded into a buffer kept from call to
/// call (the subjects' values length-prefixed, then the id: no two different attempts encode alike), hashed once
/// and compared whole; only a new attempt allocates its key.
#[derive(Default)]
struct Seen {
    table: HashTable<SeenEntry>,
    /// (when it leaves the horizon, hash, sequence number) in time order (`None`: never, past `Instant`'s range).
    order: VecDeque<(Option<Instant>, u64, u64)>,
    next_seq: u64,
    buf: Vec<u8>,
}

/// The first byte of a subject with no value in a [`SeenEntry`] key.
const NO_VALUE: u8 = 254;
/// The first byte of a subject whose value is 254 bytes or longer: its length follows in eight bytes.
const LONG_VALUE: u8 = 255;

/// Appends a subject's value to a key, self-delimiting (so no two different attempts encode alike): its length
/// in one byte when below 254 (the common case), else [`LONG_VALUE`] and the length in eight bytes, then the
/// value; [`NO_VALUE`] alone for no value.
fn encode_subject(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        buf.push(NO_VALUE);
        return;
    };
    match u8::try_from(v.len()) {
        Ok(n) if n < NO_VALUE => buf.push(n),
        _ => {
            buf.push(LONG_VALUE);
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
        }
    }
    buf.extend_from_slice(v.as_bytes());
}

impl Seen {
    /// Forgets the attempts recorded more than [`MAX_VELOCITY_WINDOW`] before `now` (one comparison when none is).
    #[inline]
    fn expire(&mut self, now: Instant) {
        if self.order.front().is_some_and(|&(leaves, _, _)| leaves.is_some_and(|l| l < now)) {
            self.expire_due(now);
        }
    }

    #[inline(never)]
    fn expire_due(&mut self, now: Instant) {
        while let Some(&(leaves, hash, seq)) = self.order.front() {
            if leaves.is_none_or(|l| l >= now) {
                break;
            }
            self.order.pop_front();
            if let Ok(e) = self.table.find_entry(hash, |e| e.seq == seq) {
                e.remove();
            }
        }
    }

    /// Encodes `attempt`'s key into the buffer and returns its hash and its entry, if seen within the horizon.
    fn find(&mut self, hasher: &RandomState, attempt: &Attempt<'_>, id: &str) -> (u64, Option<&SeenEntry>) {
        self.buf.clear();
        for v in &attempt.subjects {
            encode_subject(&mut self.buf, v.as_deref());
        }
        self.buf.extend_from_slice(id.as_bytes());
        let buf = self.buf.as_slice();
        // The key's bytes in one write of std's keyed SipHash (`hash_one` would hash the slice's length first
        // through the hasher's buffered short write; the encoding already tells attempts apart).
        let mut h = hasher.build_hasher();
        h.write(buf);
        let hash = h.finish();
        (hash, self.table.find(hash, |e| *e.key == *buf))
    }

    /// Records the attempt last looked up with [`Seen::find`] (not seen before) at `now`.
    fn insert(&mut self, hash: u64, now: Instant, handles: [Handle; 4]) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key: Box<[u8]> = self.buf.as_slice().into();
        self.table.insert_unique(hash, SeenEntry { key, hash, seq, handles }, |e| e.hash);
        self.order.push_back((now.checked_add(MAX_VELOCITY_WINDOW), hash, seq));
    }
}

/// One (subject, value) and its series. `repr(C)` and cache-line aligned, so what a retry reads (the handle's
/// check, then the series' due times and attempt counts) is one cache line: 8 bytes here, 56 of the series.
#[repr(C, align(64))]
struct Slot {
    /// Bumped when the slot is freed, so a [`Handle`] to the series it held no longer matches.
    generation: u32,
    live: bool,
    subject: Subject,
    series: Series,
    /// Inline when up to 24 bytes, so comparing it reads the slot, not another allocation.
    value: CompactString,
}

// The hot part of a slot is its first cache line.
const _: () = assert!(std::mem::offset_of!(Slot, series) + std::mem::offset_of!(Series, decline_count) <= 64);

struct State {
    /// std's keyed SipHash: the tables are keyed by what clients send (card, email, IP, customer, idempotency
    /// key), so a hasher with real hash-flooding resistance, as the idempotency store and the saga log use.
    hasher: RandomState,
    /// Every tracked (subject, value), in one slab; `index` finds a slot by (subject, value).
    slots: Vec<Slot>,
    free: Vec<usize>,
    index: HashTable<usize>,
    attempts_seen: Seen,
    declines_seen: Seen,
    ops_since_sweep: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            hasher: RandomState::new(),
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            attempts_seen: Seen::default(),
            declines_seen: Seen::default(),
            ops_since_sweep: 0,
        }
    }
}

fn subject_hash(hasher: &RandomState, s: Subject, v: &str) -> u64 {
    hasher.hash_one((s.index() as u8, v))
}

impl State {
    fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of (`s`, `v`), if tracked.
    fn find_slot(&self, s: Subject, v: &str) -> Option<usize> {
        self.find_hashed(subject_hash(&self.hasher, s, v), s, v)
    }

    /// The slot of (`s`, `v`), whose [`subject_hash`] is `hash`, if tracked.
    #[inline]
    fn find_hashed(&self, hash: u64, s: Subject, v: &str) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let slot = &slots[i];
                slot.subject == s && slot.value == v
            })
            .copied()
    }

    /// The slots of the attempt's subjects (`None` for a subject it lacks), each made if absent. Every value is
    /// hashed first, then every slot looked up, then the absent ones made: the lookups do not depend on one
    /// another, so their cache misses (the index, then the slot) overlap instead of following one another. Out of
    /// line: a retry's path through `record_into` stays as small as it was.
    #[inline(never)]
    fn slots_of(&mut self, attempt: &Attempt<'_>) -> [Option<usize>; 4] {
        let hasher = &self.hasher;
        let hashes = Subject::ALL.map(|s| attempt.subject(s).map(|v| subject_hash(hasher, s, v)));
        let found = Subject::ALL.map(|s| match (attempt.subject(s), hashes[s.index()]) {
            (Some(v), Some(hash)) => self.find_hashed(hash, s, v).ok_or(hash),
            _ => Err(0),
        });
        Subject::ALL.map(|s| {
            let v = attempt.subject(s)?;
            Some(match found[s.index()] {
                Ok(i) => i,
                Err(hash) => self.insert_slot(hash, s, v),
            })
        })
    }

    /// A new slot for (`s`, `v`), not tracked, whose [`subject_hash`] is `hash`.
    fn insert_slot(&mut self, hash: u64, s: Subject, v: &str) -> usize {
        let i = match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i];
                slot.subject = s;
                slot.value = CompactString::from(v);
                slot.live = true;
                i
            }
            None => {
                self.slots.push(Slot {
                    subject: s,
                    value: CompactString::from(v),
                    generation: 0,
                    live: true,
                    series: Series::default(),
                });
                self.slots.len() - 1
            }
        };
        let (hasher, slots) = (&self.hasher, &self.slots);
        self.index.insert_unique(hash, i, |&j| {
            let slot = &slots[j];
            subject_hash(hasher, slot.subject, &slot.value)
        });
        i
    }

    /// The slot a handle names, if it still holds that series; else the slot of (`s`, `v`) if tracked.
    fn resolve(&self, h: Handle, s: Subject, v: &str) -> Option<usize> {
        let i = h.slot as usize;
        match self.slots.get(i) {
            Some(slot) if slot.live && slot.generation == h.generation => Some(i),
            _ => self.find_slot(s, v),
        }
    }

    fn handle(&self, i: usize) -> Handle {
        // A slot past `u32::MAX` gets no handle (`NONE` resolves by lookup).
        match u32::try_from(i) {
            Ok(slot) => Handle { slot, generation: self.slots[i].generation },
            Err(_) => Handle::NONE,
        }
    }

    /// The series in slot `i` (of subject `s`) advanced to `now`, its handle noted in `handles`: where an attempt
    /// or a decline is recorded.
    fn series_to_record(&mut self, i: usize, s: Subject, now: Instant, handles: &mut [Handle; 4]) -> &mut Series {
        handles[s.index()] = self.handle(i);
        let series = &mut self.slots[i].series;
        series.advance(now);
        series
    }

    /// Drops idle keys once the operations since the last sweep reach the number of keys (at least
    /// [`SWEEP_EVERY`]): the sweep costs O(1) per operation amortized, and memory stays bounded by the last
    /// day's traffic.
    #[inline]
    fn maybe_sweep(&mut self, now: Instant) {
        self.ops_since_sweep += 1;
        if self.ops_since_sweep >= SWEEP_EVERY.max(self.len()) {
            self.sweep(now);
        }
    }

    #[inline(never)]
    fn sweep(&mut self, now: Instant) {
        self.ops_since_sweep = 0;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.live {
                continue;
            }
            slot.series.advance(now);
            if !slot.series.is_empty() {
                continue;
            }
            let hash = subject_hash(&self.hasher, slot.subject, &slot.value);
            if let Ok(e) = self.index.find_entry(hash, |&j| j == i) {
                e.remove();
            }
            slot.live = false;
            slot.generation = slot.generation.wrapping_add(1);
            slot.value = CompactString::default();
            slot.series = Series::default();
            self.free.push(i);
        }
    }
}

/// Puts the attributes of `read` that are about `s` from `series` into `counts`.
#[inline]
fn read_into(counts: &mut VelocityCounts, series: &Series, s: Subject, read: VelocitySet, currency: Currency) {
    let mut bits = read.subject_bits(s);
    while bits != 0 {
        // Bit k is measure k / 3 (attempts, amount, declines), window k % 3.
        let k = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let w = k % 3;
        counts.0[s.index() * 9 + k] = match k / 3 {
            0 => series.count[w],
            1 => series.amount_in(w, currency),
            _ => series.decline_count[w],
        };
    }
}

/// The start of each window (`None` while the process is younger than the window: everything counts).
fn window_starts(now: Instant) -> [Option<Instant>; WINDOWS] {
    Window::ALL.map(|w| now.checked_sub(w.duration()))
}

/// Velocity history in this process (tokio's clock, so tests can pause time). One lock makes the record and
/// the read of every counter of a decision one atomic step. History older than a day is dropped when its key is
/// next touched, and idle keys are swept (amortized O(1) per operation), so memory stays bounded by the last
/// day's traffic. Every (subject, value) series is in one slab found through one hash table; an attempt seen
/// before (a retry) is found by its key hashed in place, and its entry remembers its series' slots.
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
        let mut counts = VelocityCounts::default();
        self.record_into(attempt, read, &mut counts);
        counts
    }

    /// [`MemoryVelocityStore::record_reading`] into `counts` (the attributes not in `read` are left as they are).
    pub(crate) fn record_into(&self, attempt: &Attempt<'_>, read: VelocitySet, counts: &mut VelocityCounts) {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.attempts_seen.expire(now);
        // An attempt without an id is its own; one with an id counts once however often it is retried.
        let seen = attempt.id.map(|id| st.attempts_seen.find(&st.hasher, attempt, id));
        let hash = seen.map(|(hash, _)| hash);
        if let Some((_, Some(entry))) = seen {
            // A retry: nothing to record; only the subjects the rules read are looked at.
            let handles = entry.handles;
            for s in Subject::ALL {
                let Some(value) = attempt.subject(s) else { continue };
                if !read.reads_subject(s) {
                    continue;
                }
                if let Some(i) = st.resolve(handles[s.index()], s, value) {
                    let series = &mut st.slots[i].series;
                    series.advance(now);
                    read_into(counts, series, s, read, attempt.currency);
                }
            }
        } else {
            let mut handles = [Handle::NONE; 4];
            let slots = st.slots_of(attempt);
            for s in Subject::ALL {
                let Some(i) = slots[s.index()] else { continue };
                let series = st.series_to_record(i, s, now, &mut handles);
                series.push_attempt(Entry { at: now, currency: attempt.currency, amount: attempt.amount_minor });
                if read.reads_subject(s) {
                    read_into(counts, series, s, read, attempt.currency);
                }
            }
            if let Some(hash) = hash {
                st.attempts_seen.insert(hash, now, handles);
            }
        }
        st.maybe_sweep(now);
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt<'_>) {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.declines_seen.expire(now);
        let seen = attempt.id.map(|id| st.declines_seen.find(&st.hasher, attempt, id));
        if let Some((_, Some(_))) = seen {
            return;
        }
        let hash = seen.map(|(hash, _)| hash);
        let mut handles = [Handle::NONE; 4];
        let slots = st.slots_of(attempt);
        for s in Subject::ALL {
            let Some(i) = slots[s.index()] else { continue };
            st.series_to_record(i, s, now, &mut handles).push_decline(now);
        }
        if let Some(hash) = hash {
            st.declines_seen.insert(hash, now, handles);
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
    fn try_record_attempt_into(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
        counts: &mut VelocityCounts,
    ) -> Option<Result<(), VelocityError>> {
        self.record_into(attempt, read, counts);
        Some(Ok(()))
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>> {
        self.record_decline_now(attempt);
        Box::pin(std::future::ready(Ok(())))
    }
}

const _: () = assert!(std::mem::size_of::<SeenEntry>() == 64);

#[cfg(test)]
mod tests {
    use palisade_core::Currency;

    use super::{Amounts, LONG_VALUE, NO_VALUE, WINDOWS, encode_subject};

    /// Each currency is summed apart, the first (inline) as the others (in the `Vec`), per window; an amount
    /// leaves only its own currency's sum in its own window; a currency never seen reads 0.
    #[test]
    fn amounts_are_summed_per_currency_and_window() {
        let mut a = Amounts::default();
        a.add(Currency::USD, 100);
        a.add(Currency::EUR, 7);
        a.add(Currency::USD, 50);
        a.add(Currency::JPY, 3);
        a.add(Currency::EUR, 1);
        for w in 0..WINDOWS {
            assert_eq!((a.get(w, Currency::USD), a.get(w, Currency::EUR), a.get(w, Currency::JPY)), (150, 8, 3));
            assert_eq!(a.get(w, Currency::GBP), 0);
        }
        a.sub(0, Currency::USD, 100);
        a.sub(1, Currency::EUR, 7);
        a.sub(2, Currency::GBP, 5);
        assert_eq!([0, 1, 2].map(|w| a.get(w, Currency::USD)), [50, 150, 150]);
        assert_eq!([0, 1, 2].map(|w| a.get(w, Currency::EUR)), [8, 1, 8]);
        assert_eq!([0, 1, 2].map(|w| a.get(w, Currency::JPY)), [3, 3, 3]);
        a.add(Currency::USD, i64::MAX);
        assert_eq!(a.get(1, Currency::USD), i64::MAX);
    }

    fn key(subjects: &[Option<&str>], id: &str) -> Vec<u8> {
        let mut buf = Vec::new();
        for v in subjects {
            encode_subject(&mut buf, *v);
        }
        buf.extend_from_slice(id.as_bytes());
        buf
    }

    /// Attempts that differ anywhere (a value moved from one subject to the next, an absent value against an
    /// empty one, a long value, the id) encode differently.
    #[test]
    fn keys_of_different_attempts_differ() {
        let long = "x".repeat(300);
        let first = "y".repeat(253);
        let attempts: Vec<(Vec<Option<&str>>, &str)> = vec![
            (vec![Some("ab"), Some("c"), None, None], "k"),
            (vec![Some("a"), Some("bc"), None, None], "k"),
            (vec![Some("abc"), None, None, None], "k"),
            (vec![Some("ab"), Some("c"), Some(""), None], "k"),
            (vec![Some("ab"), Some("c"), None, Some("")], "k"),
            (vec![Some("ab"), Some("c"), None, None], "k2"),
            (vec![Some("ab"), Some("ck"), None, None], ""),
            (vec![Some(&long), None, None, None], "k"),
            (vec![Some(&long[..299]), None, None, None], "xk"),
            (vec![Some(&first), None, None, None], "k"),
            (vec![Some(&long[..254]), None, None, None], "k"),
            (vec![None, None, None, None], ""),
            (vec![Some(""), None, None, None], ""),
        ];
        let keys: Vec<Vec<u8>> = attempts.iter().map(|(s, id)| key(s, id)).collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                assert_eq!(i == j, a == b, "{:?} vs {:?}", attempts[i], attempts[j]);
            }
        }
        assert_eq!(key(&[None], "")[0], NO_VALUE);
        assert_eq!(key(&[Some(&long)], "")[0], LONG_VALUE);
    }
}
