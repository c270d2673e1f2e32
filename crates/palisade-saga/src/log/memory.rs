//! `MemoryLog`: saga records in chunks behind a mutex, found by id through a hash map. One process; time is
//! `tokio::time`.
//!
//! Every operation takes the lock once. A saga's writes come one after another, so the record written last is
//! checked before the hash map (the address of the id's text, which the run's writes pass, instead of hashing
//! it). Definition names, owners and step-name lists are shared between records (there are a handful of distinct
//! ones). The index keeps the run's own id and the record its context (shared, not copied; the context is
//! serialized when the record is read), so a new saga costs no allocation of the log's but its index's growth and
//! its chunk's; a transition is kept in place in the record (steps by position), the first six without an
//! allocation.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{ContextJson, SagaLog, StoreError, StoreFuture};
use palisade_core::{OutcomeClass, PaymentError};
use serde_json::Value;

use crate::model::{Event, Name, SagaRecord, SagaState, SagaSummary, StepName, Transition};

struct Record {
    /// Where its id's text is (the index's key holds the id, so no other string starts there with this length): the
    /// run's writes pass that same string, found by its address without a second reference count to keep.
    id_at: (usize, usize),
    name: Str,
    /// The run's context itself (serialized when the record is read).
    context: Arc<dyn ContextJson>,
    state: SagaState,
    /// Its history: the orchestrator's transitions as written, steps by position among `steps`.
    events: Events,
    /// The step names its transitions are written with (the definition's; set by the first write).
    steps: Steps,
    owner: Option<Str>,
    token: u64,
    /// When the owner's lease ends; `None` once the saga is terminal (its lease ended with it).
    lease_until: Option<Instant>,
}

/// An in-memory [`SagaLog`]. It survives a crashing step, not a crashing process: use the Redis or PostgreSQL
/// log where sagas must be recovered after a restart. Cheap to clone (clones share the records).
#[derive(Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLog").field("sagas", &self.inner.lock().records.len()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    /// Every saga ever created (a saga id is used once; records are never removed).
    records: Records,
    /// Where each saga's record is. Saga ids can come from clients (the checkout server uses the order id), so
    /// the index places them by std's randomly keyed SipHash (`hasher`), as the idempotency store does for its
    /// keys: a faster hasher without HashDoS resistance (foldhash) saved ≈ 400 instructions (6 %) of a saga on
    /// this log. Each id is hashed once, and its hash kept with it ([`Key`]): growing the index moves hashes
    /// instead of hashing every id again.
    index: HashMap<Key, usize, BuildHasherDefault<KeptHash>>,
    /// The index's keyed SipHash.
    hasher: RandomState,
    /// The record written last.
    last: usize,
    last_token: u64,
    /// Definition names and owners seen, shared by the records (which keep their places: no reference count to
    /// bump, or to drop when a saga ends).
    names: Vec<Box<str>>,
    /// Definitions' step names seen (the lists themselves, told apart by address), shared by the records as
    /// `names` are.
    step_lists: Vec<Arc<[StepName]>>,
}

/// Events as a record keeps them (40 bytes each: no name to share, no reference count): a transition, its step by
/// position among the record's step names; a step's start and its end in one entry when the end follows the start
/// (the usual step: half the memory to write), the same for a compensation; or an event whose step is not among
/// the record's step names (written by hand), boxed. Read back, they are the events as written, in order.
enum Kept {
    StepStarted {
        step: u32,
        attempt: u32,
    },
    StepDone {
        step: u32,
        output: Value,
    },
    /// `StepStarted { step, attempt }` then `StepDone { step, output }`.
    Ran {
        step: u16,
        attempt: u32,
        output: Value,
    },
    StepFailed {
        step: u32,
        error: Box<PaymentError>,
        outcome: OutcomeClass,
        last: bool,
    },
    CompensationBegun {
        reason: String,
    },
    CompensationStarted {
        step: u32,
        attempt: u32,
    },
    CompensationDone {
        step: u32,
    },
    /// `CompensationStarted { step, attempt }` then `CompensationDone { step }`.
    Undone {
        step: u16,
        attempt: u32,
    },
    CompensationFailed {
        step: u32,
        error: Box<PaymentError>,
        last: bool,
    },
    CompensationRetried,
    Restarted {
        run: u32,
    },
    Finished {
        state: SagaState,
    },
    Named(Box<Event>),
}

impl From<Transition> for Kept {
    #[inline(always)]
    fn from(transition: Transition) -> Self {
        match transition {
            Transition::StepStarted { step, attempt } => Kept::StepStarted { step, attempt },
            Transition::StepDone { step, output } => Kept::StepDone { step, output },
            Transition::StepFailed { step, error, outcome, last } => Kept::StepFailed { step, error, outcome, last },
            Transition::CompensationBegun { reason } => Kept::CompensationBegun { reason },
            Transition::CompensationStarted { step, attempt } => Kept::CompensationStarted { step, attempt },
            Transition::CompensationDone { step } => Kept::CompensationDone { step },
            Transition::CompensationFailed { step, error, last } => Kept::CompensationFailed { step, error, last },
            Transition::CompensationRetried => Kept::CompensationRetried,
            Transition::Restarted { run } => Kept::Restarted { run },
            Transition::Finished { state } => Kept::Finished { state },
        }
    }
}

impl Kept {
    /// How many events it holds.
    fn len(&self) -> usize {
        match self {
            Kept::Ran { .. } | Kept::Undone { .. } => 2,
            _ => 1,
        }
    }

    /// Its events, named from `steps`.
    fn events(&self, steps: &[StepName], out: &mut Vec<Event>) {
        let transition = match self {
            Kept::StepStarted { step, attempt } => Transition::StepStarted { step: *step, attempt: *attempt },
            Kept::StepDone { step, output } => Transition::StepDone { step: *step, output: output.clone() },
            Kept::Ran { step, attempt, output } => {
                let step = u32::from(*step);
                out.push(Transition::StepStarted { step, attempt: *attempt }.into_event(steps));
                Transition::StepDone { step, output: output.clone() }
            }
            Kept::StepFailed { step, error, outcome, last } => {
                Transition::StepFailed { step: *step, error: error.clone(), outcome: *outcome, last: *last }
            }
            Kept::CompensationBegun { reason } => Transition::CompensationBegun { reason: reason.clone() },
            Kept::CompensationStarted { step, attempt } => {
                Transition::CompensationStarted { step: *step, attempt: *attempt }
            }
            Kept::CompensationDone { step } => Transition::CompensationDone { step: *step },
            Kept::Undone { step, attempt } => {
                let step = u32::from(*step);
                out.push(Transition::CompensationStarted { step, attempt: *attempt }.into_event(steps));
                Transition::CompensationDone { step }
            }
            Kept::CompensationFailed { step, error, last } => {
                Transition::CompensationFailed { step: *step, error: error.clone(), last: *last }
            }
            Kept::CompensationRetried => Transition::CompensationRetried,
            Kept::Restarted { run } => Transition::Restarted { run: *run },
            Kept::Finished { state } => Transition::Finished { state: *state },
            Kept::Named(event) => {
                out.push(Event::clone(event));
                return;
            }
        };
        out.push(transition.into_event(steps));
    }
}

/// A record's step names: none yet, a place among the log's shared lists, or its own past [`MAX_SHARED_NAMES`].
enum Steps {
    Unknown,
    At(usize),
    Own(Arc<[StepName]>),
}

impl Steps {
    fn names<'a>(&'a self, lists: &'a [Arc<[StepName]>]) -> &'a [StepName] {
        match self {
            Steps::Unknown => &[],
            Steps::At(at) => &lists[*at],
            Steps::Own(own) => own,
        }
    }

    /// `steps` as a record keeps them: by place among the shared lists (added when new, while there is room).
    fn shared(lists: &mut Vec<Arc<[StepName]>>, steps: &Arc<[StepName]>) -> Steps {
        if let Some(at) = lists.iter().position(|l| Arc::ptr_eq(l, steps)) {
            return Steps::At(at);
        }
        if lists.len() < MAX_SHARED_NAMES {
            lists.push(steps.clone());
            return Steps::At(lists.len() - 1);
        }
        Steps::Own(steps.clone())
    }
}

/// Records in chunks of [`CHUNK`], each allocated once at its full size: a new saga's record is written in place,
/// and a growing log never copies the records it holds (a vector doubling would copy them all, into fresh memory,
/// each time: 6 % of the time of a bench of 100 000 sagas).
#[derive(Default)]
struct Records {
    chunks: Vec<Vec<Record>>,
    len: usize,
}

/// Records per chunk: 256 of ≈ 400 bytes (with their first entries in place), ≈ 100 KB, an allocation below
/// glibc's mmap threshold (128 KB), so the chunks of a log that was dropped are used again instead of mapping fresh
/// pages.
const CHUNK: usize = 256;

impl Records {
    fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn get(&self, at: usize) -> Option<&Record> {
        self.chunks.get(at / CHUNK)?.get(at % CHUNK)
    }

    #[inline(always)]
    fn get_mut(&mut self, at: usize) -> Option<&mut Record> {
        self.chunks.get_mut(at / CHUNK)?.get_mut(at % CHUNK)
    }

    fn push(&mut self, record: Record) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Record> {
        self.chunks.iter().flatten()
    }
}

/// A definition name or an owner as a record keeps it: its place among the log's shared names, or its own copy
/// past [`MAX_SHARED_NAMES`].
enum Str {
    At(usize),
    Own(Box<str>),
}

impl Str {
    fn get<'a>(&'a self, names: &'a [Box<str>]) -> &'a str {
        match self {
            Str::At(at) => &names[*at],
            Str::Own(s) => s,
        }
    }
}

/// A saga id in the index, with its hash by the log's keyed SipHash (computed once, when the saga is created or
/// looked up).
struct Key {
    hash: u64,
    id: Arc<str>,
}

/// What the index compares and hashes: a stored [`Key`], or a looked-up id with its hash.
trait IdHash {
    fn kept_hash(&self) -> u64;
    fn id(&self) -> &str;
}

impl IdHash for Key {
    fn kept_hash(&self) -> u64 {
        self.hash
    }
    fn id(&self) -> &str {
        &self.id
    }
}

impl IdHash for (u64, &str) {
    fn kept_hash(&self) -> u64 {
        self.0
    }
    fn id(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn IdHash + 'a> for Key {
    fn borrow(&self) -> &(dyn IdHash + 'a) {
        self
    }
}

// A key hashes as its kept hash, stored or looked up alike; keys are equal when their ids are.
impl Hash for dyn IdHash + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.kept_hash());
    }
}

impl PartialEq for dyn IdHash + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.kept_hash() == other.kept_hash() && self.id() == other.id()
    }
}

impl Eq for dyn IdHash + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn IdHash).hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        (self as &dyn IdHash) == (other as &dyn IdHash)
    }
}

impl Eq for Key {}

/// The index's hasher: a key's hash is the keyed SipHash kept with it ([`Key`]), passed on as it is.
#[derive(Default)]
struct KeptHash(u64);

impl Hasher for KeptHash {
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Keys write only their u64; anything else is folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Most distinct names and owners shared; past it each record holds its own copy.
const MAX_SHARED_NAMES: usize = 64;

/// Entries a record keeps in place: a saga of 4 steps that each ran once (each step's start and end in one entry,
/// and `finished`), and one more; further entries go to a vector of the record's own. 240 bytes, in the record (a
/// vector of its own for every saga was one allocation more, from memory apart from the record's).
const EVENTS_IN_PLACE: usize = 6;

/// A record's entries: the first [`EVENTS_IN_PLACE`] in place, the rest in a vector.
struct Events {
    len: usize,
    in_place: [Option<Kept>; EVENTS_IN_PLACE],
    more: Vec<Kept>,
}

impl Events {
    #[inline(always)]
    fn new() -> Self {
        Events { len: 0, in_place: [const { None }; EVENTS_IN_PLACE], more: Vec::new() }
    }

    #[inline(always)]
    fn push(&mut self, kept: Kept) {
        match self.in_place.get_mut(self.len) {
            Some(slot) => *slot = Some(kept),
            None => {
                if self.more.capacity() == 0 {
                    // Room for a compensated 4-step saga's other entries at once.
                    self.more.reserve_exact(EVENTS_IN_PLACE + 2);
                }
                self.more.push(kept);
            }
        }
        self.len += 1;
    }

    #[inline(always)]
    fn last_mut(&mut self) -> Option<&mut Kept> {
        match self.len {
            0 => None,
            n if n <= EVENTS_IN_PLACE => self.in_place[n - 1].as_mut(),
            _ => self.more.last_mut(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Kept> {
        self.in_place.iter().flatten().chain(&self.more)
    }
}

impl Inner {
    fn shared(&mut self, s: &str) -> Str {
        if let Some(at) = self.names.iter().position(|n| **n == *s) {
            return Str::At(at);
        }
        if self.names.len() < MAX_SHARED_NAMES {
            self.names.push(s.into());
            return Str::At(self.names.len() - 1);
        }
        Str::Own(s.into())
    }

    // Inlined: every write calls it, and its usual answer (the record written last) takes a few instructions.
    #[inline(always)]
    fn find(&mut self, id: &str) -> Option<&mut Record> {
        let at = self.find_at(id)?;
        self.records.get_mut(at)
    }

    #[inline(always)]
    fn find_at(&mut self, id: &str) -> Option<usize> {
        match self.records.get(self.last) {
            // The run's writes pass the id the record shares: the same string, no comparison of bytes.
            Some(r) if r.id_at == (id.as_ptr().addr(), id.len()) => Some(self.last),
            _ => {
                let key = (self.hasher.hash_one(id), id);
                let at = *self.index.get(&key as &dyn IdHash)?;
                self.last = at;
                Some(at)
            }
        }
    }

    /// The record `id` if `token` is its owner's, and the shared step lists (to keep a transition with).
    #[inline(always)]
    fn owned(&mut self, id: &str, token: u64) -> Option<(&mut Record, &mut Vec<Arc<[StepName]>>)> {
        let at = self.find_at(id)?;
        let r = self.records.get_mut(at)?;
        if r.token != token {
            return None;
        }
        Some((r, &mut self.step_lists))
    }

    /// The records `keep` keeps, with their ids, in id order (as the other logs list them).
    fn sorted(&self, mut keep: impl FnMut(&Record) -> bool) -> Vec<(&str, &Record)> {
        let mut found: Vec<(&str, &Record)> = self
            .index
            .iter()
            .filter_map(|(key, &at)| Some((&*key.id, self.records.get(at)?)))
            .filter(|(_, r)| keep(r))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        found
    }
}

impl Record {
    /// An owner's write (its token checked) of `transition`, its step by position among `steps`: kept by position
    /// when `steps` are the record's step names (the first write sets them), with a step's end joining its start
    /// in one entry when it follows it (and a compensation's); else by name.
    #[inline(always)]
    fn write(
        &mut self,
        lists: &mut Vec<Arc<[StepName]>>,
        steps: &Arc<[StepName]>,
        transition: Transition,
        state: SagaState,
    ) {
        let same = match &self.steps {
            Steps::At(at) => Arc::ptr_eq(&lists[*at], steps),
            Steps::Own(own) => Arc::ptr_eq(own, steps),
            Steps::Unknown => {
                self.steps = Steps::shared(lists, steps);
                true
            }
        };
        if !same {
            return self.write_event(lists, transition.into_event(steps), state);
        }
        match transition {
            Transition::StepDone { step, output } => {
                if let Some(last) = self.events.last_mut()
                    && let Kept::StepStarted { step: started, attempt } = *last
                    && started == step
                    && let Ok(step) = u16::try_from(step)
                {
                    // A start owns nothing: there is nothing to drop.
                    std::mem::forget(std::mem::replace(last, Kept::Ran { step, attempt, output }));
                } else {
                    self.events.push(Kept::StepDone { step, output });
                }
            }
            Transition::CompensationDone { step } => {
                if let Some(last) = self.events.last_mut()
                    && let Kept::CompensationStarted { step: started, attempt } = *last
                    && started == step
                    && let Ok(step) = u16::try_from(step)
                {
                    std::mem::forget(std::mem::replace(last, Kept::Undone { step, attempt }));
                } else {
                    self.events.push(Kept::CompensationDone { step });
                }
            }
            transition => self.events.push(Kept::from(transition)),
        }
        self.set(state);
    }

    /// An owner's write of `event`: kept by position when its step is among the record's step names, else by
    /// name.
    fn write_event(&mut self, lists: &[Arc<[StepName]>], event: Event, state: SagaState) {
        let kept = match Transition::from_event(event, self.steps.names(lists)) {
            Ok(transition) => Kept::from(transition),
            Err(event) => Kept::Named(Box::new(event)),
        };
        self.events.push(kept);
        self.set(state);
    }

    #[inline(always)]
    fn set(&mut self, state: SagaState) {
        self.state = state;
        if state.is_terminal() {
            self.owner = None;
            self.lease_until = None;
        }
    }
}

/// True when `r`'s owner's lease has ended.
fn ended(r: &Record, now: Instant) -> bool {
    r.lease_until.is_none_or(|t| t <= now)
}

impl MemoryLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        MemoryLog::default()
    }

    /// Events appended so far across every saga (a test's count of writes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().records.iter().flat_map(|r| r.events.iter()).map(Kept::len).sum()
    }

    /// True when nothing was logged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SagaLog for MemoryLog {
    fn create_shared<'a>(
        &'a self,
        id: &'a Name,
        name: &'a str,
        context: Arc<dyn ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        let mut g = self.inner.lock();
        let g = &mut *g;
        let at = g.records.len();
        let id = id.shared();
        let id_at = (id.as_ptr().addr(), id.len());
        match g.index.entry(Key { hash: g.hasher.hash_one(&*id), id }) {
            Slot::Occupied(_) => return StoreFuture::ready(Ok(None)),
            Slot::Vacant(slot) => {
                slot.insert(at);
            }
        }
        g.last_token += 1;
        let token = g.last_token;
        let (name, owner) = (g.shared(name), g.shared(owner));
        g.records.push(Record {
            id_at,
            name,
            context,
            state: SagaState::Running,
            events: Events::new(),
            steps: Steps::Unknown,
            owner: Some(owner),
            token,
            lease_until: Some(Instant::now() + lease),
        });
        g.last = at;
        StoreFuture::ready(Ok(Some(token)))
    }

    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some((r, lists)) = g.owned(id, token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.write_event(lists, event, state);
        StoreFuture::ready(Ok(true))
    }

    fn append_at<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        steps: &'a Arc<[StepName]>,
        transition: Transition,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some((r, lists)) = g.owned(id, token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.write(lists, steps, transition, state);
        StoreFuture::ready(Ok(true))
    }

    /// Both under one lock, as `append_two`.
    fn append_two_at<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        steps: &'a Arc<[StepName]>,
        first: Transition,
        first_state: SagaState,
        then: Transition,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some((r, lists)) = g.owned(id, token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.write(lists, steps, first, first_state);
        // A terminal first state ended the lease; the token stays, and the second write is the owner's still.
        r.write(lists, steps, then, state);
        StoreFuture::ready(Ok(true))
    }

    /// Both events under one lock: no reader sees the first without the second.
    fn append_two<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        first: Event,
        first_state: SagaState,
        then: Event,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some((r, lists)) = g.owned(id, token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.write_event(lists, first, first_state);
        // A terminal first state ended the lease; the token stays, and the second write is the owner's still.
        r.write_event(lists, then, state);
        StoreFuture::ready(Ok(true))
    }

    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let renewed = match g.find(id) {
            Some(r) if r.token == token && !r.state.is_terminal() => {
                r.lease_until = Some(Instant::now() + lease);
                true
            }
            _ => false,
        };
        StoreFuture::ready(Ok(renewed))
    }

    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let free = match g.find(id) {
            Some(r) => match state {
                Some(want) => r.state == want,
                None => !r.state.is_terminal() && ended(r, now),
            },
            None => false,
        };
        if !free {
            return StoreFuture::ready(Ok(None));
        }
        g.last_token += 1;
        let token = g.last_token;
        let owner = g.shared(owner);
        if let Some(r) = g.find(id) {
            r.token = token;
            r.owner = Some(owner);
            r.lease_until = Some(now + lease);
        }
        StoreFuture::ready(Ok(Some(token)))
    }

    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        self.orphans_after(None, limit)
    }

    fn orphans_after<'a>(&'a self, after: Option<&'a str>, limit: usize) -> StoreFuture<'a, Vec<String>> {
        let g = self.inner.lock();
        let now = Instant::now();
        let found = g.sorted(|r| !r.state.is_terminal() && ended(r, now));
        let from = after.map_or(0, |after| found.partition_point(|(id, _)| *id <= after));
        StoreFuture::ready(Ok(found.iter().skip(from).take(limit).map(|(id, _)| (*id).to_owned()).collect()))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let Some(at) = g.find_at(id) else { return StoreFuture::ready(Ok(None)) };
        let Some(r) = g.records.get(at) else { return StoreFuture::ready(Ok(None)) };
        let names = &g.names;
        let steps = r.steps.names(&g.step_lists);
        let context = match r.context.to_value() {
            Ok(context) => context,
            Err(e) => return StoreFuture::ready(Err(StoreError::new(format!("saga {id}: its context: {e}")))),
        };
        StoreFuture::ready(Ok(Some(SagaRecord {
            id: id.to_owned(),
            name: r.name.get(names).to_owned(),
            context,
            state: r.state,
            events: {
                let mut events = Vec::with_capacity(r.events.iter().map(Kept::len).sum());
                r.events.iter().for_each(|kept| kept.events(steps, &mut events));
                events
            },
            owner: r.owner.as_ref().map(|o| o.get(names).to_owned()),
            token: r.token,
            lease_remaining: r.lease_until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
        })))
    }

    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        let g = self.inner.lock();
        let found = g.sorted(|r| state.is_none_or(|s| r.state == s));
        let out = found
            .into_iter()
            .take(limit)
            .map(|(id, r)| SagaSummary {
                id: id.to_owned(),
                name: r.name.get(&g.names).to_owned(),
                state: r.state,
                owner: r.owner.as_ref().map(|o| o.get(&g.names).to_owned()),
            })
            .collect();
        StoreFuture::ready(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_event_is_40_bytes() {
        assert_eq!(std::mem::size_of::<Kept>(), 40);
    }

    /// Transitions written by position (joined where an end follows its start) and events written by name read
    /// back as the events written, in order; a step the definition does not have keeps its name.
    #[tokio::test]
    async fn a_history_reads_back_as_written() {
        let log = MemoryLog::new();
        let steps: Arc<[StepName]> = vec![StepName::from("reserve"), StepName::from("charge")].into();
        let ctx = serde_json::json!({"order": 1});
        let token = log.create("s", "checkout", &ctx, "me", Duration::from_secs(10)).await.unwrap().unwrap();
        let (run, comp) = (SagaState::Running, SagaState::Compensating);
        let error = Box::new(palisade_core::PaymentError::declined("card_declined"));
        let writes = [
            (Transition::StepStarted { step: 0, attempt: 1 }, run),
            (Transition::StepDone { step: 0, output: serde_json::json!("hold-1") }, run),
            (Transition::StepStarted { step: 1, attempt: 1 }, run),
            (
                Transition::StepFailed { step: 1, error, outcome: palisade_core::OutcomeClass::Terminal, last: true },
                run,
            ),
            (Transition::CompensationBegun { reason: "a step failed for good".into() }, comp),
            (Transition::CompensationStarted { step: 0, attempt: 1 }, comp),
            (Transition::CompensationDone { step: 0 }, comp),
        ];
        let mut want: Vec<Event> = writes.iter().map(|(t, _)| t.clone().into_event(&steps)).collect();
        let mut writes = writes.into_iter();
        let (first, first_state) = writes.next().unwrap();
        assert!(log.append_at("s", token, &steps, first, first_state).await.unwrap());
        while let Some((t, state)) = writes.next() {
            match writes.next() {
                Some((then, then_state)) => {
                    assert!(log.append_two_at("s", token, &steps, t, state, then, then_state).await.unwrap());
                }
                None => assert!(log.append_at("s", token, &steps, t, state).await.unwrap()),
            }
        }
        // By name: a step of the definition, and one it does not have.
        let by_name = [
            Event::CompensationStarted { step: "charge".into(), attempt: 1 },
            Event::CompensationDone { step: "charge".into() },
            Event::StepStarted { step: "elsewhere".into(), attempt: 2 },
            Event::Finished { state: SagaState::Compensated },
        ];
        for e in &by_name {
            assert!(log.append("s", token, e, comp).await.unwrap());
        }
        want.extend(by_name);
        assert!(!log.append_at("s", token + 1, &steps, Transition::CompensationRetried, comp).await.unwrap(), "fenced");
        assert_eq!(log.get("s").await.unwrap().unwrap().events, want);
        assert_eq!(log.len(), want.len());
    }
}
