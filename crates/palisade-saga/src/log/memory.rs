//! `MemoryLog`: saga records in a vector behind a mutex, found by id through a hash map. One process; time is
//! `tokio::time`.
//!
//! Every operation takes the lock once. A saga's writes come one after another, so the record written last is
//! checked before the hash map (a comparison of ids instead of hashing one). Definition names and owners are
//! shared between records (there are a handful of distinct ones). A record keeps the run's own id and context
//! (shared, not copied; the context is serialized when the record is read), so a new saga costs one vector of
//! events; an event costs no allocation (step names are shared with the definition) and is moved in.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{ContextJson, SagaLog, StoreError, StoreFuture};
use crate::model::{Event, Name, SagaRecord, SagaState, SagaSummary};

struct Record {
    id: Arc<str>,
    name: Str,
    /// The run's context itself (serialized when the record is read).
    context: Arc<dyn ContextJson>,
    state: SagaState,
    events: Vec<Event>,
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
    records: Vec<Record>,
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

/// Room for the events of a saga of 4 steps that each ran once (2 events per step, and `finished`) before the
/// vector grows.
const EVENTS_CAPACITY: usize = 10;

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
            Some(r) if std::ptr::eq(&*r.id, id) || *r.id == *id => Some(self.last),
            _ => {
                let key = (self.hasher.hash_one(id), id);
                let at = *self.index.get(&key as &dyn IdHash)?;
                self.last = at;
                Some(at)
            }
        }
    }

    fn sorted(&self, mut keep: impl FnMut(&Record) -> bool) -> Vec<&Record> {
        let mut found: Vec<&Record> = self.records.iter().filter(|r| keep(r)).collect();
        // In id order, as the other logs list them.
        found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        found
    }
}

impl Record {
    /// An owner's write (its token checked).
    #[inline(always)]
    fn append(&mut self, event: Event, state: SagaState) {
        self.events.push(event);
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
        self.inner.lock().records.iter().map(|r| r.events.len()).sum()
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
        match g.index.entry(Key { hash: g.hasher.hash_one(&*id), id: id.clone() }) {
            Slot::Occupied(_) => return StoreFuture::ready(Ok(None)),
            Slot::Vacant(slot) => {
                slot.insert(at);
            }
        }
        g.last_token += 1;
        let token = g.last_token;
        let (name, owner) = (g.shared(name), g.shared(owner));
        g.records.push(Record {
            id,
            name,
            context,
            state: SagaState::Running,
            events: Vec::with_capacity(EVENTS_CAPACITY),
            owner: Some(owner),
            token,
            lease_until: Some(Instant::now() + lease),
        });
        g.last = at;
        StoreFuture::ready(Ok(Some(token)))
    }

    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some(r) = g.find(id).filter(|r| r.token == token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.append(event, state);
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
        let Some(r) = g.find(id).filter(|r| r.token == token) else {
            return StoreFuture::ready(Ok(false));
        };
        r.append(first, first_state);
        // A terminal first state ended the lease; the token stays, and the second write is the owner's still.
        r.append(then, state);
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
        let g = self.inner.lock();
        let now = Instant::now();
        let found = g.sorted(|r| !r.state.is_terminal() && ended(r, now));
        StoreFuture::ready(Ok(found.into_iter().take(limit).map(|r| String::from(&*r.id)).collect()))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        let mut g = self.inner.lock();
        let now = Instant::now();
        let Some(at) = g.find_at(id) else { return StoreFuture::ready(Ok(None)) };
        let (r, names) = (&g.records[at], &g.names);
        let context = match r.context.to_value() {
            Ok(context) => context,
            Err(e) => return StoreFuture::ready(Err(StoreError::new(format!("saga {id}: its context: {e}")))),
        };
        StoreFuture::ready(Ok(Some(SagaRecord {
            id: id.to_owned(),
            name: r.name.get(names).to_owned(),
            context,
            state: r.state,
            events: r.events.clone(),
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
            .map(|r| SagaSummary {
                id: String::from(&*r.id),
                name: r.name.get(&g.names).to_owned(),
                state: r.state,
                owner: r.owner.as_ref().map(|o| o.get(&g.names).to_owned()),
            })
            .collect();
        StoreFuture::ready(Ok(out))
    }
}
