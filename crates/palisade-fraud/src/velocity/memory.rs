//! The in-process velocity store.
//!
//! Every attempt recorded goes into one log in time order ([`Log`]), and each (subject, value) it names has a
//! slot in one slab ([`Slab`]) holding its counts and sums per window. A window's start is a cursor into the log:
//! when an attempt leaves a window, the cursor passes it and takes it off its slots' counts for that window. So a
//! new attempt appends one entry to the log and updates at most four slots in place: no per-subject history, no
//! allocation but the log's and tables' own growth. Declines have a log of their own. When an attempt leaves the
//! widest window it is dropped from the log, with its id; a slot whose counts all reach zero is freed then. An
//! attempt with an id keeps, beside its key, what its decision read (its snapshot), for its retries.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher, RandomState};

use compact_str::CompactString;
use palisade_core::Currency;
use palisade_store::index::Index;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Subject, VelocityCounts, VelocitySet, Window};
use crate::defaults::{MAX_VELOCITY_WINDOW, VELOCITY_WINDOWS};
use crate::error::VelocityError;

const WINDOWS: usize = Window::ALL.len();
/// The widest window, last in [`Window::ALL`]: an entry past its start has left every window.
const WIDEST: usize = WINDOWS - 1;

// Windows are nested, narrowest first, and attempt ids are remembered exactly as long as history is kept.
const _: () = assert!(VELOCITY_WINDOWS[0].as_nanos() < VELOCITY_WINDOWS[1].as_nanos());
const _: () = assert!(VELOCITY_WINDOWS[1].as_nanos() < VELOCITY_WINDOWS[WIDEST].as_nanos());
const _: () = assert!(VELOCITY_WINDOWS[WIDEST].as_nanos() == MAX_VELOCITY_WINDOW.as_nanos());

/// Per currency, the sums of the attempts' amounts inside each window, kept **exactly** (read saturating, at
/// `i64::MAX`): an attempt that leaves a window takes off exactly what it added, so once a sum has passed
/// `i64::MAX` the attempts still inside are all still counted when the huge one leaves.
///
/// The first currency a slot sees is kept inline in `i64` (most only ever see one, and no real sum comes near
/// `i64::MAX`), so recording and reading it touch the slot alone. The other currencies, and the first one once an
/// addition would overflow `i64` (it is then moved there), are kept in `i128` in a boxed `Vec`, allocated only
/// for a slot that sees a second currency or such an amount.
#[derive(Default)]
struct Amounts {
    first: Option<Sums>,
    // A thin pointer (8 bytes where a `Vec` takes 24) keeps the slot in two cache lines; a second currency on one
    // card or customer is rare, so its extra allocation is too.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<WideSums>>>,
}

/// A currency and its sums per window.
type Sums = (Currency, [i64; WINDOWS]);
/// A currency and its sums per window, wide enough for any number of `i64` amounts a day can hold.
type WideSums = (Currency, [i128; WINDOWS]);

impl Amounts {
    fn wide_mut(&mut self, currency: Currency) -> Option<&mut [i128; WINDOWS]> {
        self.more.as_mut()?.iter_mut().find(|(c, _)| *c == currency).map(|(_, sums)| sums)
    }

    /// Adds an attempt's amount (0 or more) to every window (an attempt enters all windows when recorded).
    fn add(&mut self, currency: Currency, amount: i64) {
        if let Some((c, sums)) = &mut self.first
            && *c == currency
        {
            let added = sums.map(|sum| sum.checked_add(amount));
            if let [Some(a), Some(b), Some(c)] = added {
                *sums = [a, b, c];
                return;
            }
            // Past `i64`: the currency's sums move to the wide ones, exact.
            let wide = sums.map(|sum| i128::from(sum) + i128::from(amount));
            self.first = None;
            self.more.get_or_insert_default().push((currency, wide));
        } else if let Some(sums) = self.wide_mut(currency) {
            for sum in sums {
                *sum = sum.saturating_add(i128::from(amount));
            }
        } else if self.first.is_none() {
            self.first = Some((currency, [amount; WINDOWS]));
        } else {
            self.more.get_or_insert_default().push((currency, [i128::from(amount); WINDOWS]));
        }
    }

    /// Takes an attempt's amount out of window `w` (it left the window): exactly what it added.
    fn sub(&mut self, w: usize, currency: Currency, amount: i64) {
        match &mut self.first {
            Some((c, sums)) if *c == currency => sums[w] = sums[w].saturating_sub(amount),
            _ => {
                if let Some(sums) = self.wide_mut(currency) {
                    sums[w] = sums[w].saturating_sub(i128::from(amount));
                }
            }
        }
    }

    /// The sum of window `w` in `currency`, saturated at `i64::MAX`. Out of line: only amount rules read it, and
    /// `read_into` stays small for the others.
    #[inline(never)]
    fn get(&self, w: usize, currency: Currency) -> i64 {
        match &self.first {
            Some((c, sums)) if *c == currency => sums[w],
            _ => self
                .more
                .iter()
                .flat_map(|m| m.iter())
                .find(|(c, _)| *c == currency)
                .map_or(0, |(_, sums)| i64::try_from(sums[w]).unwrap_or(i64::MAX)),
        }
    }
}

/// One (subject, value) and its counts. `repr(C)`, two cache lines: the first holds what a retry reads (the
/// counts), the second what a new attempt also touches (the value it is looked up by, the sums it adds to).
#[repr(C, align(64))]
struct Slot {
    subject: Subject,
    /// Per window: attempts inside it.
    count: [i64; WINDOWS],
    /// Per window: declines inside it.
    decline_count: [i64; WINDOWS],
    /// Per window: the attempts' amounts per currency.
    amount: Amounts,
    /// Inline when up to 24 bytes, so comparing it reads the slot, not another allocation.
    value: CompactString,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 128);
const _: () = assert!(std::mem::offset_of!(Slot, decline_count) + 8 * WINDOWS <= 64);

impl Slot {
    fn new(subject: Subject, value: &str) -> Self {
        Slot {
            subject,
            count: [0; WINDOWS],
            decline_count: [0; WINDOWS],
            amount: Amounts::default(),
            value: CompactString::from(value),
        }
    }

    /// Whether no attempt and no decline is left in any window (the widest holds them all).
    fn is_idle(&self) -> bool {
        self.count[WIDEST] == 0 && self.decline_count[WIDEST] == 0
    }
}

/// A slot index in an entry, or none (the attempt lacks that subject).
const NO_SLOT: u32 = u32::MAX;

/// Every tracked (subject, value), in one slab; `index` finds a slot by (subject, value): the low half of its
/// [`Slab::hash`], in buckets of one cache line, so a lookup reads the bucket and then the slot.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: Index,
    /// One keyed SipHash per subject (std's, flood resistant: clients choose the values), so a value is hashed
    /// alone, in one write, and the same value under two subjects still hashes apart.
    hashers: [RandomState; 4],
}

impl Slab {
    /// The hash of (`s`, `v`): `v` under `s`'s own key.
    #[inline]
    fn hash(&self, s: Subject, v: &str) -> u64 {
        let mut h = self.hashers[s.index()].build_hasher();
        h.write(v.as_bytes());
        h.finish()
    }

    /// The slot of (`s`, `v`), whose [`Slab::hash`] is `hash`, if tracked.
    #[inline]
    fn find(&self, hash: u64, s: Subject, v: &str) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash as u32, |i| {
            let slot = &slots[i as usize];
            slot.subject == s && slot.value == v
        })
    }

    /// The slots of the attempt's subjects ([`NO_SLOT`] for a subject it lacks), each made if absent. Every value
    /// is hashed first, then every slot looked up, then the absent ones made: the lookups do not depend on one
    /// another, so their cache misses (the index, then the slot) overlap instead of following one another.
    fn slots_of(&mut self, attempt: &Attempt<'_>) -> [u32; 4] {
        let hashes = Subject::ALL.map(|s| attempt.subject(s).map(|v| self.hash(s, v)));
        let found = Subject::ALL.map(|s| match (attempt.subject(s), hashes[s.index()]) {
            (Some(v), Some(hash)) => self.find(hash, s, v).ok_or(hash),
            _ => Err(0),
        });
        Subject::ALL.map(|s| match (attempt.subject(s), found[s.index()]) {
            (None, _) => NO_SLOT,
            (Some(_), Ok(i)) => i,
            (Some(v), Err(hash)) => self.insert(hash, s, v),
        })
    }

    /// A new slot for (`s`, `v`), not tracked, whose [`Slab::hash`] is `hash`.
    fn insert(&mut self, hash: u64, s: Subject, v: &str) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Slot::new(s, v);
                i
            }
            None => {
                // 2^32 - 1 slots of 128 bytes would be 512 GiB: the allocation fails long before.
                #[allow(clippy::expect_used)]
                let i =
                    u32::try_from(self.slots.len()).ok().filter(|&i| i != NO_SLOT).expect("fewer than 2^32 - 1 keys");
                self.slots.push(Slot::new(s, v));
                i
            }
        };
        self.index.insert(hash as u32, i);
        i
    }

    /// Frees slot `i` (idle: nothing left in any window, so no logged entry names it any more).
    fn release(&mut self, i: u32) {
        let slot = &self.slots[i as usize];
        let hash = self.hash(slot.subject, &slot.value);
        let slot = &mut self.slots[i as usize];
        self.index.remove(hash as u32, i);
        slot.value = CompactString::default();
        slot.amount = Amounts::default();
        self.free.push(i);
    }

    /// An attempt left window `w`: off its slots' counts and sums (and a slot left idle is freed).
    fn attempt_left(&mut self, w: usize, e: &Logged) {
        for &i in &e.slots {
            if let Some(slot) = self.slots.get_mut(i as usize) {
                slot.count[w] -= 1;
                slot.amount.sub(w, e.currency, e.amount);
                if w == WIDEST && slot.is_idle() {
                    self.release(i);
                }
            }
        }
    }

    /// A decline left window `w`: off its slots' decline counts (and a slot left idle is freed).
    fn decline_left(&mut self, w: usize, e: &Logged) {
        for &i in &e.slots {
            if let Some(slot) = self.slots.get_mut(i as usize) {
                slot.decline_count[w] -= 1;
                if w == WIDEST && slot.is_idle() {
                    self.release(i);
                }
            }
        }
    }
}

/// One attempt (or decline) in a [`Log`].
struct Logged {
    at: Instant,
    /// Its subjects' slots, by [`Subject`] order ([`NO_SLOT`] where it lacks one).
    slots: [u32; 4],
    amount: i64,
    currency: Currency,
    /// Its key's length in the log's key buffer ([`NO_KEY`]: the attempt has no id, or a key too long to keep).
    key_len: u32,
    /// Where its key starts in the log's key buffer (an absolute offset).
    key_at: u64,
    /// Its key's hash (0 when it has none), to drop it from the table.
    hash: u64,
}

const _: () = assert!(std::mem::size_of::<Logged>() == 64);

const NO_KEY: u32 = u32::MAX;

/// Whether the `len` bytes at `start` of a ring buffer are `want`.
fn ring_eq(ring: &VecDeque<u8>, start: usize, want: &[u8]) -> bool {
    let (a, b) = ring.as_slices();
    let Some(end) = start.checked_add(want.len()) else { return false };
    if end <= a.len() {
        a[start..end] == *want
    } else if start >= a.len() {
        b.get(start - a.len()..end - a.len()) == Some(want)
    } else {
        let (head, tail) = want.split_at(a.len() - start);
        a[start..] == *head && b.get(..tail.len()) == Some(tail)
    }
}

/// Copies the `out.len()` bytes at `start` of a ring buffer into `out`; false when the ring is shorter.
fn ring_read(ring: &VecDeque<u8>, start: usize, out: &mut [u8]) -> bool {
    let Some(end) = start.checked_add(out.len()).filter(|&end| end <= ring.len()) else { return false };
    let (a, b) = ring.as_slices();
    if end <= a.len() {
        out.copy_from_slice(&a[start..end]);
    } else if start >= a.len() {
        out.copy_from_slice(&b[start - a.len()..end - a.len()]);
    } else {
        let (head, tail) = out.split_at_mut(a.len() - start);
        head.copy_from_slice(&a[start..]);
        tail.copy_from_slice(&b[..tail.len()]);
    }
    true
}

/// The eight bytes at `start` of a ring buffer, little-endian; `None` when the ring is shorter.
#[inline]
fn ring_word(ring: &VecDeque<u8>, start: usize) -> Option<u64> {
    let end = start.checked_add(8)?;
    let mut word = [0u8; 8];
    match ring.as_slices().0.get(start..end) {
        Some(w) => word.copy_from_slice(w),
        None => {
            if !ring_read(ring, start, &mut word) {
                return None;
            }
        }
    }
    Some(u64::from_le_bytes(word))
}

/// The entry at absolute position `pos` of a log whose first `popped` entries are gone (a free function, so it
/// can be called while another field of the log is borrowed).
fn entry_at(entries: &VecDeque<Logged>, popped: u64, pos: u64) -> Option<&Logged> {
    usize::try_from(pos.checked_sub(popped)?).ok().and_then(|i| entries.get(i))
}

/// What the retry table files a position under: the position modulo `u32::MAX`, which is never the index's
/// empty mark. A log holds far fewer than `u32::MAX` entries (each is 64 bytes), so [`position_of`] recovers the
/// position from it exactly.
fn filed(pos: u64) -> u32 {
    (pos % u64::from(u32::MAX)) as u32
}

/// The absolute position that [`filed`] gave `at`, in a log whose first live entry is at `popped`.
fn position_of(at: u32, popped: u64) -> u64 {
    let m = u64::from(u32::MAX);
    popped + (u64::from(at) + m - popped % m) % m
}

/// Attempts (or declines) recorded within the widest window, in time order, with per window the position of
/// the first one inside it; and the ids of those that have one, so a retry of the same request counts once.
///
/// An attempt is its id, its subjects' values, its amount and its currency: the same idempotency key with another
/// card, amount or currency is another attempt. Its key is encoded into a buffer kept from call to call
/// ([`Attempt::encode_key`]: the subjects' values and the currency length-prefixed, the amount in eight bytes,
/// then the id: no two different attempts encode alike), hashed once, and kept in one ring buffer of keys in the
/// log's order, so
/// recording it allocates nothing of its own; the table maps the key's hash to the entry's position.
///
/// Right after an attempt's key, the ring keeps its **snapshot**: the velocity set its decision read (eight
/// bytes) and those attributes' values, in index order, as they were when it was recorded. A retry of the attempt
/// reads them back ([`Log::read_snapshot`]), so it is decided on the velocity its first decision saw.
#[derive(Default)]
struct Log {
    entries: VecDeque<Logged>,
    /// Entries ever dropped from the front: an entry's absolute position is `popped + index`.
    popped: u64,
    /// Per window, the absolute position of its first entry.
    start: [u64; WINDOWS],
    /// When the next entry leaves a window (`None`: none is due to), so most calls of [`Log::advance`] return
    /// after one comparison.
    due: Option<Instant>,
    /// The keys of the entries, in their order; `keys_base` is the absolute offset of its first byte.
    keys: VecDeque<u8>,
    keys_base: u64,
    /// Positions of the entries with a key ([`filed`]), by the low half of the key's hash: a new attempt's lookup
    /// and insert touch one line of it.
    seen: Index,
    /// The key being looked up.
    buf: Vec<u8>,
}

impl Log {
    fn get(&self, pos: u64) -> Option<&Logged> {
        entry_at(&self.entries, self.popped, pos)
    }

    /// The snapshot kept after a key (at `key_at`, `key_len` bytes long): writes into `counts` the attributes of
    /// `want` it holds, and returns the set it holds.
    fn read_snapshot(&self, key_at: u64, key_len: u32, want: VelocitySet, counts: &mut VelocityCounts) -> VelocitySet {
        let Some(at) = usize::try_from(key_at - self.keys_base).ok().and_then(|at| at.checked_add(key_len as usize))
        else {
            return VelocitySet::EMPTY;
        };
        let Some(held) = ring_word(&self.keys, at) else { return VelocitySet::EMPTY };
        let held = held & VelocitySet::ALL.bits();
        let mut bits = held & want.bits();
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            // The values are in index order: attribute i is after the held ones below it.
            let rank = (held & ((1u64 << i) - 1)).count_ones() as usize;
            if let Some(v) = ring_word(&self.keys, at + 8 + 8 * rank) {
                counts.0[i] = v as i64;
            }
        }
        VelocitySet::from_bits(held)
    }

    /// Moves each window's start past the entries older than it at `now`, handing each to `left(window,
    /// entry)`, and drops the entries the widest window has passed (with their keys). One comparison when none is
    /// due to leave.
    #[inline]
    fn advance(&mut self, now: Instant, left: impl FnMut(usize, &Logged)) {
        if self.due.is_some_and(|d| now > d) {
            self.advance_due(now, left);
        }
    }

    #[inline(never)]
    fn advance_due(&mut self, now: Instant, mut left: impl FnMut(usize, &Logged)) {
        for (w, window) in Window::ALL.iter().enumerate() {
            // `None` while the clock is younger than the window: nothing has left it.
            let Some(from) = now.checked_sub(window.duration()) else { continue };
            while let Some(e) = entry_at(&self.entries, self.popped, self.start[w]) {
                if e.at >= from {
                    break;
                }
                left(w, e);
                self.start[w] += 1;
            }
        }
        let keep_from = self.start.iter().copied().min().unwrap_or(self.popped);
        while self.popped < keep_from {
            let Some(e) = self.entries.pop_front() else { break };
            if e.key_len != NO_KEY {
                self.seen.remove(e.hash as u32, filed(self.popped));
            }
            self.popped += 1;
        }
        // The keys before the first entry's are no entry's any more.
        let live_from = self.entries.front().map_or(self.keys_base + self.keys.len() as u64, |e| e.key_at);
        let dead = usize::try_from(live_from - self.keys_base).unwrap_or(usize::MAX).min(self.keys.len());
        self.keys.drain(..dead);
        self.keys_base += dead as u64;
        // The next entry to leave: per window, the first entry in it, at its time plus the window.
        self.due = Window::ALL
            .iter()
            .zip(self.start)
            .filter_map(|(window, start)| self.get(start)?.at.checked_add(window.duration()))
            .min();
    }

    /// Encodes `attempt`'s key into the buffer and returns its hash and its entry, if seen within the horizon.
    fn find(&mut self, hasher: &RandomState, attempt: &Attempt<'_>, id: &str) -> (u64, Option<&Logged>) {
        self.buf.clear();
        attempt.encode_key(id, &mut self.buf);
        // The key's bytes in one write of std's keyed SipHash (`hash_one` would hash the slice's length first
        // through the hasher's buffered short write; the encoding already tells attempts apart).
        let mut h = hasher.build_hasher();
        h.write(&self.buf);
        let hash = h.finish();
        let (entries, popped, keys, keys_base, buf) =
            (&self.entries, self.popped, &self.keys, self.keys_base, &self.buf);
        let at = |filed: u32| entry_at(entries, popped, position_of(filed, popped));
        let found = self.seen.find(hash as u32, |filed| {
            at(filed).is_some_and(|e| {
                e.hash == hash
                    && e.key_len as usize == buf.len()
                    && ring_eq(keys, usize::try_from(e.key_at - keys_base).unwrap_or(usize::MAX), buf)
            })
        });
        (hash, found.and_then(at))
    }

    /// Appends an attempt at `now` (the latest time so far), with the key last encoded by [`Log::find`] when
    /// `hash` is given, followed by `snapshot` (the attributes in the set, from the counts) if there is one.
    fn push(
        &mut self,
        now: Instant,
        slots: [u32; 4],
        currency: Currency,
        amount: i64,
        hash: Option<u64>,
        snapshot: Option<(VelocitySet, &VelocityCounts)>,
    ) {
        let pos = self.popped + self.entries.len() as u64;
        let key_at = self.keys_base + self.keys.len() as u64;
        // A key of 4 GiB cannot come from a bounded request; were it to, the attempt would count as new on a retry.
        let key_len = hash.and_then(|_| u32::try_from(self.buf.len()).ok()).filter(|&n| n != NO_KEY);
        let hash = key_len.and(hash);
        if key_len.is_some() {
            // The snapshot goes after the key in the buffer, and both into the ring at once.
            if let Some((set, counts)) = snapshot {
                self.buf.extend_from_slice(&set.bits().to_le_bytes());
                let mut bits = set.bits();
                while bits != 0 {
                    let i = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    self.buf.extend_from_slice(&counts.0[i].to_le_bytes());
                }
            }
            self.keys.extend(&self.buf);
        }
        self.entries.push_back(Logged {
            at: now,
            slots,
            amount,
            currency,
            key_len: key_len.unwrap_or(NO_KEY),
            key_at,
            hash: hash.unwrap_or(0),
        });
        if let Some(hash) = hash {
            self.seen.insert(hash as u32, filed(pos));
        }
        // The new entry leaves the narrowest window first; an earlier due time only costs one more look.
        let leaves = now.checked_add(Window::ALL[0].duration());
        self.due = match (self.due, leaves) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        };
    }
}

#[derive(Default)]
struct State {
    /// The attempt keys' hasher (the slab has its own per subject). std's keyed SipHash: the tables are keyed by
    /// what clients send (card, email, IP, customer, idempotency key), so a hasher with real hash-flooding
    /// resistance, as the idempotency store and the saga log use.
    hasher: RandomState,
    slab: Slab,
    attempts: Log,
    declines: Log,
    /// The latest time seen: the logs are in time order even when a caller read the clock before another that
    /// took the lock first.
    latest: Option<Instant>,
}

impl State {
    /// The time of this operation (never before an earlier one's), with both logs moved to it.
    #[inline]
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.latest.map_or(now, |l| l.max(now));
        self.latest = Some(now);
        let State { slab, attempts, declines, .. } = self;
        attempts.advance(now, |w, e| slab.attempt_left(w, e));
        declines.advance(now, |w, e| slab.decline_left(w, e));
        now
    }
}

/// Puts the attributes of `read` that are about `s` from `slot` into `counts`.
#[inline]
fn read_into(counts: &mut VelocityCounts, slot: &Slot, s: Subject, read: VelocitySet, currency: Currency) {
    let mut bits = read.subject_bits(s);
    while bits != 0 {
        // Bit k is measure k / 3 (attempts, amount, declines), window k % 3.
        let k = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let w = k % 3;
        counts.0[s.index() * 9 + k] = match k / 3 {
            0 => slot.count[w],
            1 => slot.amount.get(w, currency),
            _ => slot.decline_count[w],
        };
    }
}

/// Velocity history in this process (tokio's clock, so tests can pause time). One lock makes the record and
/// the read of every counter of a decision one atomic step. Recording is O(1): one entry appended to a log in
/// time order and at most four counters updated in place; each window's start moves along the log as time
/// passes (O(1) amortized per attempt and window). History older than a day is dropped as time passes, with the
/// attempt ids it held and the (subject, value) keys left with nothing in any window, so memory is bounded by
/// the last day's traffic.
#[derive(Default)]
pub struct MemoryVelocityStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryVelocityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryVelocityStore").field("keys", &self.tracked_keys()).finish()
    }
}

impl MemoryVelocityStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryVelocityStore::default()
    }

    /// Keys (subject, value) currently tracked: those with an attempt or a decline in the last day, as of the
    /// last operation.
    #[must_use]
    pub fn tracked_keys(&self) -> usize {
        self.state.lock().slab.index.len()
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
        let now = st.advance(now);
        // An attempt without an id is its own; one with an id counts once however often it is retried.
        let seen = attempt.id.map(|id| st.attempts.find(&st.hasher, attempt, id));
        if let Some((_, Some(entry))) = seen {
            // A retry: nothing to record. It reads what its first decision read, as it was then (its snapshot),
            // and only what that did not read from the slots now. Its slots are live: a slot is freed only once
            // every entry naming it has left the log.
            let (slots, key_at, key_len) = (entry.slots, entry.key_at, entry.key_len);
            let held = st.attempts.read_snapshot(key_at, key_len, read, counts);
            let now_read = read.without(held);
            for s in Subject::ALL {
                let i = slots[s.index()];
                if i != NO_SLOT && now_read.reads_subject(s) {
                    read_into(counts, &st.slab.slots[i as usize], s, now_read, attempt.currency);
                }
            }
            return;
        }
        let hash = seen.map(|(hash, _)| hash);
        let slots = st.slab.slots_of(attempt);
        for s in Subject::ALL {
            let i = slots[s.index()];
            if i == NO_SLOT {
                continue;
            }
            let slot = &mut st.slab.slots[i as usize];
            for count in &mut slot.count {
                *count += 1;
            }
            slot.amount.add(attempt.currency, attempt.counted_amount());
            if read.reads_subject(s) {
                read_into(counts, slot, s, read, attempt.currency);
            }
        }
        st.attempts.push(now, slots, attempt.currency, attempt.counted_amount(), hash, Some((read, &*counts)));
    }

    /// The synchronous form of [`VelocityStore::record_decline`].
    pub fn record_decline_now(&self, attempt: &Attempt<'_>) {
        let now = Instant::now();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let now = st.advance(now);
        let seen = attempt.id.map(|id| st.declines.find(&st.hasher, attempt, id));
        if let Some((_, Some(_))) = seen {
            return;
        }
        let hash = seen.map(|(hash, _)| hash);
        let slots = st.slab.slots_of(attempt);
        for &i in &slots {
            if let Some(slot) = st.slab.slots.get_mut(i as usize) {
                for count in &mut slot.decline_count {
                    *count += 1;
                }
            }
        }
        st.declines.push(now, slots, attempt.currency, 0, hash, None);
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

#[cfg(test)]
mod tests {
    use palisade_core::Currency;

    use std::collections::VecDeque;

    use super::{Amounts, WINDOWS, filed, position_of, ring_eq};
    use crate::velocity::{LONG_VALUE, NO_VALUE, encode_subject};

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

    /// A sum past `i64::MAX` reads `i64::MAX` and stays exact: taking the huge amounts out again leaves exactly
    /// the others, in the first (inline) currency as in the others.
    #[test]
    fn sums_past_i64_stay_exact() {
        let mut a = Amounts::default();
        for c in [Currency::USD, Currency::EUR] {
            a.add(c, 1_000);
            a.add(c, i64::MAX);
            a.add(c, i64::MAX);
            a.add(c, 7);
            assert_eq!(a.get(0, c), i64::MAX);
            a.sub(0, c, i64::MAX);
            assert_eq!(a.get(0, c), i64::MAX, "still past it");
            a.sub(0, c, i64::MAX);
            assert_eq!([0, 1, 2].map(|w| a.get(w, c)), [1_007, i64::MAX, i64::MAX]);
        }
        // A currency seen after the first moved to the wide sums takes the inline place.
        a.add(Currency::JPY, 5);
        assert_eq!((a.get(2, Currency::JPY), a.get(0, Currency::USD)), (5, 1_007));
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

    /// A key is found wherever it lies in the ring buffer: before its wrap, after it, or across it; a key that
    /// differs in one byte, or runs past the end, is not.
    #[test]
    fn ring_eq_compares_across_the_wrap() {
        for rotate in [0, 3, 7, 12, 15] {
            let mut ring: VecDeque<u8> = VecDeque::with_capacity(16);
            ring.extend(std::iter::repeat_n(0xEE, rotate));
            ring.extend(0..16 - rotate as u8);
            ring.drain(..rotate);
            ring.extend(16 - rotate as u8..16);
            assert_eq!(ring.as_slices().1.is_empty(), rotate == 0, "the ring wraps after rotating");
            let flat: Vec<u8> = ring.iter().copied().collect();
            for start in 0..16 {
                for len in 0..=16 - start {
                    let want = &flat[start..start + len];
                    assert!(ring_eq(&ring, start, want), "rotate {rotate}, start {start}, len {len}");
                    if len > 0 {
                        let mut other = want.to_vec();
                        other[len - 1] ^= 1;
                        assert!(!ring_eq(&ring, start, &other), "rotate {rotate}, start {start}, len {len}");
                    }
                }
                assert!(!ring_eq(&ring, start, &vec![0; 17 - start]), "past the end");
            }
            assert!(!ring_eq(&ring, usize::MAX, &[0]));
        }
    }

    /// A position filed in the retry table is never the index's empty mark, and comes back exactly from any
    /// log start at or before it (within `u32::MAX` entries), across the wrap of the modulus too.
    #[test]
    fn filed_positions_come_back_exactly() {
        let m = u64::from(u32::MAX);
        for popped in [0, 1, m - 2, m - 1, m, m + 1, 3 * m - 5, u64::MAX / 2] {
            for ahead in [0, 1, 2, 1000, m - 2, m - 1] {
                let pos = popped + ahead;
                assert_ne!(filed(pos), u32::MAX, "position {pos}");
                assert_eq!(position_of(filed(pos), popped), pos, "popped {popped}, ahead {ahead}");
            }
        }
    }

    /// The retry table holds the keys of the last day's attempts only: the ones the log drops leave it (else it
    /// would grow without bound, the lookups still right), and a retry of an attempt still kept counts once.
    #[tokio::test(start_paused = true)]
    async fn the_retry_table_forgets_what_the_log_drops() {
        use std::borrow::Cow;

        use crate::velocity::Attempt;

        fn attempt(id: &str) -> Attempt<'_> {
            Attempt {
                id: Some(id),
                subjects: [Some(Cow::Borrowed("tok_1")), None, None, None],
                currency: Currency::USD,
                amount_minor: 100,
            }
        }
        let store = super::MemoryVelocityStore::new();
        for i in 0..100 {
            store.record_attempt_now(&attempt(&format!("a{i}")));
            tokio::time::advance(std::time::Duration::from_secs(1)).await;
        }
        assert_eq!(store.state.lock().attempts.seen.len(), 100);
        tokio::time::advance(std::time::Duration::from_secs(86_400)).await;
        let first = store.record_attempt_now(&attempt("last"));
        assert_eq!(store.state.lock().attempts.seen.len(), 1, "only the newest attempt's key is kept");
        let retried = store.record_attempt_now(&attempt("last"));
        assert_eq!(first, retried, "a retry counts once");
        assert_eq!(store.state.lock().attempts.seen.len(), 1);
    }
}
