//! The saga log: where every transition is written, so a crash at any instant leaves a history a new owner can
//! go on from.
//!
//! A saga has one **owner** at a time, holding a lease and a fencing token. Every write carries the token and is
//! refused when it is not the current one, so a slow owner that lost its lease (it stalled, it was thought dead)
//! cannot write after the owner that took over. Each operation is one atomic step of the backend (one round trip
//! on Redis and PostgreSQL).
//!
//! Backends: [`MemoryLog`] (one process: tests, and sagas that need not survive the process), and behind
//! features `RedisLog` (`redis`) and `PostgresLog` (`postgres`). A new backend implements [`SagaLog`] and runs
//! the conformance scenarios in `tests/common`.

use std::sync::Arc;
use std::time::Duration;

pub use palisade_store::StoreError;
pub use palisade_store::lease::StoreFuture;

use crate::model::{Event, Name, SagaRecord, SagaState, SagaSummary, StepName, Transition};

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

pub use memory::MemoryLog;
#[cfg(feature = "postgres")]
pub use postgres::{DEFAULT_POSTGRES_PREFIX, PostgresLog};
#[cfg(feature = "redis")]
pub use redis::{DEFAULT_REDIS_PREFIX, INDEX_GRACE, RedisLog, SCAN_CHUNK};

/// A saga's context as a log receives it: the run's own value, shared, serialized by the log when it needs the
/// JSON (Redis and PostgreSQL at once, to store it; the memory log only when a record is read). Every
/// `Serialize + Send + Sync` type is one.
pub trait ContextJson: Send + Sync + 'static {
    /// The context as JSON text.
    ///
    /// # Errors
    /// When it does not serialize.
    fn to_json(&self) -> Result<String, serde_json::Error>;
    /// The context as a JSON value.
    ///
    /// # Errors
    /// When it does not serialize.
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error>;
}

impl<T: serde::Serialize + Send + Sync + 'static> ContextJson for T {
    fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
    fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// Atomic operations on saga records. Object safe: the orchestrator holds an `Arc<dyn SagaLog>`.
pub trait SagaLog: Send + Sync + 'static {
    /// Creates saga `id` (state `Running`, no events) with `context`, owned by `owner` for `lease`, and returns
    /// the owner's fencing token; `None` when a saga with this id exists (a saga id is used once). The id and the
    /// context are the run's own, shared: a log that keeps them keeps them as they are, a log that stores JSON
    /// serializes the context ([`ContextJson::to_json`]); one that does not serialize is a [`StoreError`].
    fn create_shared<'a>(
        &'a self,
        id: &'a Name,
        name: &'a str,
        context: Arc<dyn ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>>;

    /// [`create_shared`](Self::create_shared) with the context as a JSON value.
    fn create<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        context: &'a serde_json::Value,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        let context: Arc<dyn ContextJson> = Arc::new(context.clone());
        StoreFuture::new(async move { self.create_shared(&Name::from(id), name, context, owner, lease).await })
    }

    /// Appends `event` and sets the state to `state`, if `token` is the saga's current token; returns whether
    /// it did (`false`: fenced, another owner took over). A terminal `state` also ends the lease. Takes the event
    /// (the orchestrator's writes): a log that keeps events moves it in.
    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool>;

    /// Appends `first` (with state `first_state`) and then `then` (with `state`), each as
    /// [`append_owned`](Self::append_owned) would, fenced by `token`; returns whether both were written (`false`:
    /// fenced). The orchestrator writes a step's end this way with the transition that follows it when nothing
    /// happens between the two (no effect, no wait): the next step's start, or the saga's end. The default writes
    /// them one after the other (two operations: one round trip each on Redis and PostgreSQL, which store exactly
    /// what two appends store); the memory log writes both in one critical section.
    fn append_two<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        first: Event,
        first_state: SagaState,
        then: Event,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        let written = self.append_owned(id, token, first, first_state);
        StoreFuture::new(async move {
            if !written.await? {
                return Ok(false);
            }
            self.append_owned(id, token, then, state).await
        })
    }

    /// [`append_owned`](Self::append_owned) of a [`Transition`], its step named by position among `steps` (the
    /// definition's step names): what the orchestrator writes, so a write bumps no reference count for a step's
    /// name. The default writes the event ([`Transition::into_event`]: the same history, one operation); the
    /// memory log keeps the position and names the step when the record is read.
    fn append_at<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        steps: &'a Arc<[StepName]>,
        transition: Transition,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        self.append_owned(id, token, transition.into_event(steps), state)
    }

    /// [`append_two`](Self::append_two) of two [`Transition`]s, named as in [`append_at`](Self::append_at). The
    /// default writes the two events with `append_two`.
    #[allow(clippy::too_many_arguments)] // append_two's, and the names
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
        self.append_two(id, token, first.into_event(steps), first_state, then.into_event(steps), state)
    }

    /// [`append_owned`](Self::append_owned) with a borrowed event.
    fn append<'a>(&'a self, id: &'a str, token: u64, event: &'a Event, state: SagaState) -> StoreFuture<'a, bool> {
        self.append_owned(id, token, event.clone(), state)
    }

    /// Extends the owner's lease to `lease` from now, if `token` is current and the saga is not terminal.
    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool>;

    /// Takes saga `id` over for `owner` with a new, greater token, if its lease has ended (its owner died or
    /// stalled) and it is not terminal; `None` otherwise. With `state`, only a saga in that state, whatever its
    /// lease (a hand retry of a failed compensation, which has no owner).
    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>>;

    /// Ids of sagas that are not terminal and whose lease has ended (the ones recovery should take over), at most
    /// `limit`. The three logs of this crate answer [`orphans_after`](Self::orphans_after)`(None, limit)`: the
    /// first by id.
    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>>;

    /// A page of [`orphans`](Self::orphans) in id order (byte order): those whose id is greater than `after`
    /// (from the first when `None`), at most `limit`. What recovery reads, a page at a time, going on from where
    /// its last pass stopped, so orphans it cannot run (another service's in a shared log, a retired definition)
    /// never hold every pass's batch. A short page is the last.
    ///
    /// The default lists every orphan (`orphans(usize::MAX)`) and takes the page from that: right for any log,
    /// but it reads them all on every call; a log that can read from an id on (all three of this crate's)
    /// overrides it.
    fn orphans_after<'a>(&'a self, after: Option<&'a str>, limit: usize) -> StoreFuture<'a, Vec<String>> {
        let all = self.orphans(usize::MAX);
        StoreFuture::new(async move { Ok(page_after(all.await?, after, limit)) })
    }

    /// A saga with its history.
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>>;

    /// Sagas, optionally only those in `state`, at most `limit`.
    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>>;
}

impl<T: SagaLog + ?Sized> SagaLog for Arc<T> {
    fn create_shared<'a>(
        &'a self,
        id: &'a Name,
        name: &'a str,
        context: Arc<dyn ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        (**self).create_shared(id, name, context, owner, lease)
    }
    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        (**self).append_owned(id, token, event, state)
    }
    fn append_two<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        first: Event,
        first_state: SagaState,
        then: Event,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        (**self).append_two(id, token, first, first_state, then, state)
    }
    fn create<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        context: &'a serde_json::Value,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        (**self).create(id, name, context, owner, lease)
    }
    fn append_at<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        steps: &'a Arc<[StepName]>,
        transition: Transition,
        state: SagaState,
    ) -> StoreFuture<'a, bool> {
        (**self).append_at(id, token, steps, transition, state)
    }
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
        (**self).append_two_at(id, token, steps, first, first_state, then, state)
    }
    fn append<'a>(&'a self, id: &'a str, token: u64, event: &'a Event, state: SagaState) -> StoreFuture<'a, bool> {
        (**self).append(id, token, event, state)
    }
    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        (**self).renew(id, token, lease)
    }
    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        (**self).take_over(id, owner, lease, state)
    }
    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        (**self).orphans(limit)
    }
    fn orphans_after<'a>(&'a self, after: Option<&'a str>, limit: usize) -> StoreFuture<'a, Vec<String>> {
        (**self).orphans_after(after, limit)
    }
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        (**self).get(id)
    }
    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        (**self).list(state, limit)
    }
}

/// The page of `ids` [`SagaLog::orphans_after`] answers: those greater than `after`, in id order, at most `limit`.
pub(crate) fn page_after(mut ids: Vec<String>, after: Option<&str>, limit: usize) -> Vec<String> {
    if let Some(after) = after {
        ids.retain(|id| id.as_str() > after);
    }
    ids.sort_unstable();
    ids.dedup();
    ids.truncate(limit);
    ids
}

/// A saga's record that does not read as this version writes it (a state or an event it does not know): the
/// error names the saga and the likely cause, a newer version's write during a rolling deploy.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn unreadable(backend: &str, id: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!(
        "{backend}: saga {id}: {what}: its record does not read as this version of palisade-saga writes it, so it \
         was most likely written by a newer version (read it with that version, or upgrade this one)"
    ))
}
