//! `MemoryLog`: saga records in a map behind a mutex. One process; time is `tokio::time`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{SagaLog, StoreFuture};
use crate::model::{Event, SagaRecord, SagaState, SagaSummary};

#[derive(Debug)]
struct Entry {
    name: String,
    context: serde_json::Value,
    state: SagaState,
    events: Vec<Event>,
    owner: Option<String>,
    token: u64,
    lease_until: Instant,
}

/// An in-memory [`SagaLog`]. It survives a crashing step, not a crashing process: use the Redis or PostgreSQL
/// log where sagas must be recovered after a restart. Cheap to clone (clones share the records).
#[derive(Debug, Clone, Default)]
pub struct MemoryLog {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    sagas: BTreeMap<String, Entry>,
    last_token: u64,
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
        self.inner.lock().sagas.values().map(|e| e.events.len()).sum()
    }

    /// True when nothing was logged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SagaLog for MemoryLog {
    fn create<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        context: &'a serde_json::Value,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        let mut g = self.inner.lock();
        if g.sagas.contains_key(id) {
            return StoreFuture::ready(Ok(None));
        }
        g.last_token += 1;
        let token = g.last_token;
        g.sagas.insert(
            id.to_owned(),
            Entry {
                name: name.to_owned(),
                context: context.clone(),
                state: SagaState::Running,
                events: Vec::new(),
                owner: Some(owner.to_owned()),
                token,
                lease_until: Instant::now() + lease,
            },
        );
        StoreFuture::ready(Ok(Some(token)))
    }

    fn append<'a>(&'a self, id: &'a str, token: u64, event: &'a Event, state: SagaState) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let Some(e) = g.sagas.get_mut(id).filter(|e| e.token == token) else {
            return StoreFuture::ready(Ok(false));
        };
        e.events.push(event.clone());
        e.state = state;
        if state.is_terminal() {
            e.owner = None;
            e.lease_until = Instant::now();
        }
        StoreFuture::ready(Ok(true))
    }

    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        let mut g = self.inner.lock();
        let renewed = match g.sagas.get_mut(id) {
            Some(e) if e.token == token && !e.state.is_terminal() => {
                e.lease_until = Instant::now() + lease;
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
        let free = match g.sagas.get(id) {
            Some(e) => match state {
                Some(want) => e.state == want,
                None => !e.state.is_terminal() && e.lease_until <= now,
            },
            None => false,
        };
        if !free {
            return StoreFuture::ready(Ok(None));
        }
        g.last_token += 1;
        let token = g.last_token;
        if let Some(e) = g.sagas.get_mut(id) {
            e.token = token;
            e.owner = Some(owner.to_owned());
            e.lease_until = now + lease;
        }
        StoreFuture::ready(Ok(Some(token)))
    }

    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        let g = self.inner.lock();
        let now = Instant::now();
        let ids = g
            .sagas
            .iter()
            .filter(|(_, e)| !e.state.is_terminal() && e.lease_until <= now)
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        StoreFuture::ready(Ok(ids))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        let g = self.inner.lock();
        let now = Instant::now();
        let rec = g.sagas.get(id).map(|e| SagaRecord {
            id: id.to_owned(),
            name: e.name.clone(),
            context: e.context.clone(),
            state: e.state,
            events: e.events.clone(),
            owner: e.owner.clone(),
            token: e.token,
            lease_remaining: e.lease_until.saturating_duration_since(now),
        });
        StoreFuture::ready(Ok(rec))
    }

    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        let g = self.inner.lock();
        let out = g
            .sagas
            .iter()
            .filter(|(_, e)| state.is_none_or(|s| e.state == s))
            .take(limit)
            .map(|(id, e)| SagaSummary { id: id.clone(), name: e.name.clone(), state: e.state, owner: e.owner.clone() })
            .collect();
        StoreFuture::ready(Ok(out))
    }
}
