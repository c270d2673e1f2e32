//! The orchestrator: runs sagas forward, compensates them backward, writes every transition around its effect,
//! and takes over the sagas of owners that died.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use palisade_core::{Outcome, PaymentError};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::time::Instant;

use crate::defaults::{DEFAULT_LEASE, DEFAULT_RECOVERY_BATCH, DEFAULT_RECOVERY_LEFT_ALONE, DEFAULT_RECOVERY_PAGES};
use crate::definition::{BoxedError, Context, Node, Progress, RunCx, Saga, Slots, Step, StepCx};
use crate::error::SagaError;
use crate::log::{ContextJson, SagaLog, StoreFuture};
use crate::model::{Event, Name, Outputs, SagaRecord, SagaState, SagaSummary, Slot, StepName, Transition};

/// How a saga run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaReport {
    /// The saga's id.
    pub id: Name,
    /// The definition's name.
    pub name: Name,
    /// Where it ended: `Completed`, `Compensated` or `FailedCompensation`.
    pub state: SagaState,
    /// The outputs of the steps that completed, by step name (`report.outputs["ship"]`).
    pub outputs: Outputs,
    /// The failure that began compensation (`Compensated`), or the compensation that failed
    /// (`FailedCompensation`, as [`PaymentError::SagaCompensationFailed`]); `None` when `Completed`.
    pub error: Option<PaymentError>,
}

/// Runs sagas against a [`SagaLog`]. Cheap to clone; clones share the definitions.
///
/// Every orchestrator has an **owner** name (default: host, process id and a random suffix); each saga it runs is
/// leased to it ([`DEFAULT_LEASE`], renewed every third of it while the saga runs). When an owner dies, its sagas'
/// leases end and any orchestrator's [`recover`](Self::recover) takes them over with a new fencing token and
/// resumes them: a step that was started but not finished runs again under the same step key, and a compensation
/// in progress goes on.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").field("owner", &self.inner.owner).field("lease", &self.inner.lease).finish()
    }
}

pub(crate) struct Inner {
    log: Arc<dyn SagaLog>,
    /// This orchestrator's serial number in the process (a definition remembers the last one it was registered
    /// with).
    serial: u64,
    owner: Arc<str>,
    lease: Duration,
    definitions: RwLock<HashMap<String, Arc<dyn Runnable>>>,
    rng: Mutex<u64>,
    /// Where recovery goes on listing orphans: after the last id of its last full page (`None`: from the first).
    recovery_cursor: Mutex<Option<String>>,
    /// The sagas this orchestrator found it cannot run.
    left_alone: Mutex<LeftAlone>,
}

/// The sagas an orchestrator found it cannot run (a definition not registered here, a context or a history it
/// cannot read): [`Orchestrator::resume`] refused them before taking them over. A recovery pass does not read them
/// again, and each is logged once. At most [`DEFAULT_RECOVERY_LEFT_ALONE`], the oldest forgotten first (read and
/// logged again when next listed); forgotten all when a definition is registered, which may make them runnable.
#[derive(Default)]
struct LeftAlone {
    ids: HashSet<Box<str>>,
    order: VecDeque<Box<str>>,
}

impl LeftAlone {
    /// Remembers `id`; false when it was remembered already.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= DEFAULT_RECOVERY_LEFT_ALONE
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        let id: Box<str> = id.into();
        self.ids.insert(id.clone());
        self.order.push_back(id);
        true
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.order.clear();
    }
}

impl Inner {
    /// A number in [0, 1) for jitter (xorshift64*, seeded per orchestrator).
    fn unit(&self) -> f64 {
        let mut s = self.rng.lock();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Serial numbers of orchestrators (0: none, a definition never registered).
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Builds an [`Orchestrator`].
#[must_use]
pub struct OrchestratorBuilder {
    log: Arc<dyn SagaLog>,
    owner: Option<String>,
    lease: Duration,
}

impl OrchestratorBuilder {
    /// The owner name this orchestrator writes into the sagas it runs (default: `<host>-<pid>-<random>`). Two live
    /// orchestrators must not share one.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long a saga stays owned without renewal (default [`DEFAULT_LEASE`]): how long a dead owner's sagas
    /// wait before recovery can take them over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(3));
        self
    }

    /// The orchestrator.
    pub fn build(self) -> Orchestrator {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            std::hash::RandomState::new().build_hasher().finish() | 1
        };
        let owner = self.owner.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
            format!("{host}-{}-{:06x}", std::process::id(), seed & 0xff_ffff)
        });
        Orchestrator {
            inner: Arc::new(Inner {
                log: self.log,
                serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
                owner: owner.into(),
                lease: self.lease,
                definitions: RwLock::new(HashMap::new()),
                rng: Mutex::new(seed),
                recovery_cursor: Mutex::new(None),
                left_alone: Mutex::new(LeftAlone::default()),
            }),
        }
    }
}

impl Orchestrator {
    /// Starts building an orchestrator on `log`.
    pub fn builder(log: impl SagaLog) -> OrchestratorBuilder {
        OrchestratorBuilder { log: Arc::new(log), owner: None, lease: DEFAULT_LEASE }
    }

    /// This orchestrator's owner name.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Arc<dyn SagaLog> {
        &self.inner.log
    }

    /// Registers a definition (replacing one of the same name), so that recovery can resume sagas of it, and
    /// returns it for [`start`](Self::start). Every orchestrator that may recover a saga must register its
    /// definition. Recovery reads again the sagas it left alone before (it may now run them).
    pub fn register<C: Context>(&self, saga: Saga<C>) -> Arc<Saga<C>> {
        let saga = Arc::new(saga);
        self.inner.definitions.write().insert(saga.name.to_string(), saga.clone());
        self.inner.left_alone.lock().clear();
        saga.registered_with.store(self.inner.serial, Ordering::Relaxed);
        saga
    }

    /// Starts saga `id` of `saga` with `context` and runs it to its end: `Completed`, or `Compensated` after a
    /// step failed for good, or `FailedCompensation`. The saga is written to the log before its first step runs.
    ///
    /// # Errors
    /// [`SagaError::AlreadyExists`] when the id was used; [`SagaError::Log`] when the log fails (the saga then
    /// stays where its log says, for recovery); [`SagaError::Fenced`] when another owner took it over;
    /// [`SagaError::Context`] when the context does not serialize and the log stores JSON (Redis, PostgreSQL:
    /// nothing is written). [`MemoryLog`](crate::MemoryLog) keeps the context itself and serializes it only when
    /// a record is read, so there such a saga starts and runs, and `get` and recovery of it fail.
    pub async fn start<C: Context>(&self, saga: &Arc<Saga<C>>, id: &str, context: C) -> Result<SagaReport, SagaError> {
        // Registered here already (the usual case): no lookup.
        if saga.registered_with.load(Ordering::Relaxed) != self.inner.serial {
            if !self.inner.definitions.read().contains_key(saga.name.as_str()) {
                self.inner.definitions.write().insert(saga.name.to_string(), saga.clone());
                self.inner.left_alone.lock().clear();
            }
            saga.registered_with.store(self.inner.serial, Ordering::Relaxed);
        }
        let inner = &self.inner;
        // One copy of the id and of the context, shared by the run, its report and the memory log's record (the
        // other logs serialize the context to store it).
        let context = Arc::new(RunCx { id: Name::from(id), run: 0, names: saga.names.clone(), context });
        let shared: Arc<dyn ContextJson> = context.clone();
        let id = &context.id;
        let created = inner.log.create_shared(id, &saga.name, shared, &inner.owner, inner.lease).await;
        let Some(token) = created.map_err(|e| start_error(&context.context, id, e))? else {
            return Err(SagaError::AlreadyExists(id.to_string()));
        };
        count_started(saga);
        let mut run = Run::new(saga, inner, token, &context, &[], SagaState::Running);
        run.drive().await?;
        Ok(run.report())
    }

    /// Takes saga `id` over if its owner's lease has ended (the owner died or stalled) and runs it on from where
    /// its log says. `None` when it is not free (alive elsewhere, terminal, or unknown).
    ///
    /// The saga is read first, and one this orchestrator cannot run is **not** taken over (so not held for a
    /// lease): an orchestrator that can run it resumes it. It is logged at WARN once (per orchestrator) and
    /// recovery passes do not read it again (until a definition is registered).
    ///
    /// # Errors
    /// As [`start`](Self::start), and, the saga left as it was: [`SagaError::UnknownDefinition`] when its
    /// definition is not registered here; [`SagaError::Context`] when its context does not read as the
    /// definition's type; [`SagaError::UnknownEvent`] when its history holds an event of a newer version;
    /// [`SagaError::Log`] when its record cannot be read (the error names the saga).
    pub async fn resume(&self, id: &str) -> Result<Option<SagaReport>, SagaError> {
        let inner = &self.inner;
        let Some(record) = inner.log.get(id).await? else { return Ok(None) };
        if record.state.is_terminal() || !record.lease_remaining.is_zero() {
            return Ok(None);
        }
        let def = self.runnable(&record)?;
        let Some(token) = inner.log.take_over(id, &inner.owner, inner.lease, None).await? else { return Ok(None) };
        tracing::info!(saga_id = id, owner = %inner.owner, token, "saga taken over; resuming from its log");
        count_event("taken_over");
        self.run_owned(&def, id, token).await.map(Some)
    }

    /// The definition that runs `record`'s saga, if this orchestrator can run it: its definition is registered,
    /// its context reads as the definition's type and its history holds no event of a newer version. Else the
    /// reason, the saga logged (once) and remembered as left alone.
    fn runnable(&self, record: &SagaRecord) -> Result<Arc<dyn Runnable>, SagaError> {
        let def = self.inner.definitions.read().get(&record.name).cloned();
        let refused = match def {
            None => SagaError::UnknownDefinition(record.name.clone()),
            Some(def) => match unknown_event(record).map_or_else(|| def.check(record), Err) {
                Ok(()) => return Ok(def),
                Err(e) => e,
            },
        };
        if self.inner.left_alone.lock().insert(&record.id) {
            tracing::warn!(
                saga_id = %record.id,
                saga = %record.name,
                owner = record.owner.as_deref().unwrap_or(""),
                error = %refused,
                "saga left alone: this orchestrator cannot run it, so it does not take it over; an orchestrator \
                 that can (with its definition registered, of the version that wrote it) resumes it"
            );
            count_event("left_alone");
        }
        Err(refused)
    }

    /// Tries again the compensation of a saga in `FailedCompensation` (after the cause was fixed): compensation
    /// goes on from the step that failed.
    ///
    /// # Errors
    /// [`SagaError::WrongState`] when the saga is not in `FailedCompensation`; as [`start`](Self::start).
    pub async fn retry_compensation(&self, id: &str) -> Result<SagaReport, SagaError> {
        let inner = &self.inner;
        let want = SagaState::FailedCompensation;
        // Read first, as `resume` does: a saga this orchestrator cannot run stays as it is.
        let record = inner.log.get(id).await?.ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        if record.state != want {
            return Err(SagaError::WrongState { id: id.to_owned(), state: record.state, wanted: want });
        }
        let def = self.runnable(&record)?;
        let Some(token) = inner.log.take_over(id, &inner.owner, inner.lease, Some(want)).await? else {
            return match inner.log.get(id).await? {
                None => Err(SagaError::NotFound(id.to_owned())),
                Some(r) => Err(SagaError::WrongState { id: id.to_owned(), state: r.state, wanted: want }),
            };
        };
        if !inner.log.append(id, token, &Event::CompensationRetried, SagaState::Compensating).await? {
            return Err(SagaError::Fenced(id.to_owned()));
        }
        tracing::warn!(saga_id = id, "compensation retried by hand");
        self.run_owned(&def, id, token).await
    }

    /// Runs a **compensated** saga again from its first step, as a new run with keys of its own
    /// ([`step_key_of_run`](crate::step_key_of_run)): for a saga that failed for a reason that has passed (the
    /// gateway was unavailable) and whose every effect was undone, so the same saga id (an order) can still
    /// complete. `run` is the run the caller judged (0 for a saga never restarted: [`latest_run`]); the new run is
    /// `run + 1`. Its context is the one it started with; its history is kept, the new run's after an
    /// [`Event::Restarted`]. Whether a restart makes sense is the caller's to decide (a decline would only be
    /// declined again).
    ///
    /// Restarts of one saga exclude each other: the run is checked again after the take-over, so a restart that
    /// lost a race to another (which ran meanwhile) does nothing and says so ([`SagaError::Superseded`]), or is
    /// fenced by the one that took the saga over after it ([`SagaError::Fenced`]).
    ///
    /// # Errors
    /// [`SagaError::NotFound`]; [`SagaError::WrongState`] when the saga is not `Compensated`;
    /// [`SagaError::Superseded`] when its latest run is not `run`; as [`resume`](Self::resume) for a saga this
    /// orchestrator cannot run; as [`start`](Self::start).
    pub async fn restart(&self, id: &str, run: u32) -> Result<SagaReport, SagaError> {
        let inner = &self.inner;
        let want = SagaState::Compensated;
        let current = |record: &SagaRecord| -> Result<(), SagaError> {
            if record.state != want {
                return Err(SagaError::WrongState { id: id.to_owned(), state: record.state, wanted: want });
            }
            match latest_run(record) {
                latest if latest == run => Ok(()),
                latest => Err(SagaError::Superseded { id: id.to_owned(), run: latest }),
            }
        };
        let record = inner.log.get(id).await?.ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        current(&record)?;
        let def = self.runnable(&record)?;
        let Some(token) = inner.log.take_over(id, &inner.owner, inner.lease, Some(want)).await? else {
            return match inner.log.get(id).await? {
                None => Err(SagaError::NotFound(id.to_owned())),
                Some(r) => Err(current(&r).err().unwrap_or(SagaError::Fenced(id.to_owned()))),
            };
        };
        // Read again now that it is owned: another restart may have run between the read above and the take-over
        // (a compensated saga is taken over whatever its lease). Left as it is when so: it is terminal.
        let record = inner.log.get(id).await?.ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        current(&record)?;
        let next = run + 1;
        if !inner.log.append(id, token, &Event::Restarted { run: next }, SagaState::Running).await? {
            return Err(SagaError::Fenced(id.to_owned()));
        }
        tracing::info!(saga_id = id, run = next, "compensated saga restarted");
        count_event("restarted");
        self.run_owned(&def, id, token).await
    }

    /// Runs saga `id`, taken over with `token`, with `def` (found runnable before the take-over).
    async fn run_owned(&self, def: &Arc<dyn Runnable>, id: &str, token: u64) -> Result<SagaReport, SagaError> {
        let inner = &self.inner;
        // Read again now that it is owned: the last owner may have written more before the take-over fenced it.
        let record = inner.log.get(id).await?.ok_or_else(|| SagaError::NotFound(id.to_owned()))?;
        if let Some(e) = unknown_event(&record) {
            return Err(e);
        }
        def.clone().run(inner.clone(), record, token).await
    }

    /// The orphans one recovery pass resumes: a page of them by id ([`SagaLog::orphans_after`]) from where the
    /// last pass stopped (from the first once a pass reached the last), without the sagas this orchestrator found
    /// it cannot run; while a page holds none but those, the next page, up to [`DEFAULT_RECOVERY_PAGES`]. So
    /// orphans this orchestrator cannot run, however many and wherever they sort, never keep a pass from the
    /// ones it can, and a pass reads at most that many pages.
    async fn orphans_to_resume(&self) -> Result<Vec<String>, SagaError> {
        let inner = &self.inner;
        let mut after = inner.recovery_cursor.lock().take();
        let mut wrapped = after.is_none();
        let mut ids = Vec::new();
        for _ in 0..DEFAULT_RECOVERY_PAGES {
            let page = match inner.log.orphans_after(after.as_deref(), DEFAULT_RECOVERY_BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    *inner.recovery_cursor.lock() = after;
                    return Err(e.into());
                }
            };
            let last = page.len() < DEFAULT_RECOVERY_BATCH;
            after = if last { None } else { page.last().cloned() };
            {
                let left_alone = inner.left_alone.lock();
                ids.extend(page.into_iter().filter(|id| !left_alone.contains(id)));
            }
            if !ids.is_empty() || (last && wrapped) {
                break;
            }
            // Past the last page with nothing to resume: once round to the first.
            wrapped |= last;
        }
        *inner.recovery_cursor.lock() = after;
        Ok(ids)
    }

    /// One recovery pass: takes over every orphaned saga (not terminal, lease ended; at most
    /// [`DEFAULT_RECOVERY_BATCH`]) and runs them concurrently to their end. Several orchestrators may recover at
    /// once: each saga is taken over by one (the take-over is atomic) and resumed once.
    ///
    /// Orphans are listed by id, a page per pass, each pass going on from where the last one stopped (when there
    /// are more than a batch of them). Sagas this orchestrator cannot run ([`resume`](Self::resume)) are not taken
    /// over, and later passes skip them (paging on, up to [`DEFAULT_RECOVERY_PAGES`] pages, past pages of nothing
    /// else): however many there are, they do not keep recovery from the sagas it can run.
    ///
    /// # Errors
    /// [`SagaError::Log`] when the orphans cannot be listed; each saga's own result is in the list (a saga left
    /// alone as an error, as [`resume`](Self::resume) says).
    pub async fn recover(&self) -> Result<Vec<Result<SagaReport, SagaError>>, SagaError> {
        let ids = self.orphans_to_resume().await?;
        let runs = ids.iter().map(|id| self.resume(id));
        Ok(join_all(runs).await.into_iter().filter_map(Result::transpose).collect())
    }

    /// Every `every`, takes over the orphaned sagas (as [`recover`](Self::recover) does) and runs each on a task of
    /// its own. A recovered saga that waits (a gateway's `Retry-After`, a compensation retried for minutes) or
    /// panics holds up no other: the next pass finds and resumes the sagas orphaned meanwhile. Failures and panics
    /// are logged with the saga's id.
    ///
    /// The worker runs until [`Recovery::shutdown`] (stop taking sagas over, let the resumed ones reach their end
    /// within a deadline) or [`Recovery::abort`] (stop at once). Either way a run stopped before its end keeps its
    /// place in the log: its lease ends and a worker elsewhere resumes it. Dropping the handle leaves the worker
    /// running, as dropping a `JoinHandle` does.
    pub fn spawn_recovery(&self, every: Duration) -> Recovery {
        let me = self.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(None::<Instant>);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut runs = Recovered::default();
            let mut handle_gone = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = stopped.changed(), if !handle_gone => {
                        if changed.is_ok() {
                            break;
                        }
                        handle_gone = true;
                        continue;
                    }
                }
                runs.reap();
                match me.orphans_to_resume().await {
                    Ok(ids) => {
                        for id in ids {
                            // A saga already resumed by an earlier pass is no orphan (its run renews its lease);
                            // were it listed twice, one take-over wins and the other run returns `None`.
                            runs.spawn(me.clone(), id);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "saga recovery could not list orphaned sagas"),
                }
            }
            let deadline = *stopped.borrow();
            runs.finish(deadline).await
        });
        Recovery { stop, task }
    }

    /// A saga and its history.
    ///
    /// # Errors
    /// [`SagaError::Log`].
    pub async fn get(&self, id: &str) -> Result<Option<SagaRecord>, SagaError> {
        Ok(self.inner.log.get(id).await?)
    }

    /// Sagas, optionally only in `state`.
    ///
    /// # Errors
    /// [`SagaError::Log`].
    pub async fn list(&self, state: Option<SagaState>, limit: usize) -> Result<Vec<SagaSummary>, SagaError> {
        Ok(self.inner.log.list(state, limit).await?)
    }
}

/// The handle of [`Orchestrator::spawn_recovery`]'s worker.
#[derive(Debug)]
pub struct Recovery {
    stop: tokio::sync::watch::Sender<Option<Instant>>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Recovery {
    /// Stops the worker and every saga it resumed, at once (their leases end; a worker elsewhere resumes them).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// True when the worker has stopped.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// A graceful stop, for a process shutting down: takes no saga over from now on, waits until `deadline` for
    /// the sagas it resumed to reach their end, and returns the ids of those still running then, which it stops
    /// (their leases end; a worker elsewhere resumes them).
    pub async fn shutdown(self, deadline: Instant) -> Vec<String> {
        let _ = self.stop.send(Some(deadline));
        self.task.await.unwrap_or_default()
    }
}

/// The runs a recovery worker resumed, by task, so a run that panicked is still named.
#[derive(Default)]
struct Recovered {
    runs: tokio::task::JoinSet<Result<Option<SagaReport>, SagaError>>,
    ids: HashMap<tokio::task::Id, String>,
}

impl Recovered {
    fn spawn(&mut self, orchestrator: Orchestrator, id: String) {
        let run = self.runs.spawn({
            let id = id.clone();
            async move { orchestrator.resume(&id).await }
        });
        self.ids.insert(run.id(), id);
    }

    /// Logs the runs that have ended, without waiting.
    fn reap(&mut self) {
        while let Some(ended) = self.runs.try_join_next_with_id() {
            self.ended(ended);
        }
    }

    /// Waits for the runs until `deadline` (none: no wait), stops the rest and returns their ids.
    async fn finish(mut self, deadline: Option<Instant>) -> Vec<String> {
        if let Some(deadline) = deadline {
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(ended) = self.runs.join_next_with_id().await {
                    self.ended(ended);
                }
            })
            .await;
        }
        self.runs.abort_all();
        let mut left: Vec<String> = self.ids.into_values().collect();
        left.sort();
        left
    }

    /// Logs how a run ended, when it did not end well.
    fn ended(
        &mut self,
        ended: Result<(tokio::task::Id, Result<Option<SagaReport>, SagaError>), tokio::task::JoinError>,
    ) {
        let task = match &ended {
            Ok((task, _)) => *task,
            Err(e) => e.id(),
        };
        let id = self.ids.remove(&task).unwrap_or_default();
        match ended {
            // Left alone before its take-over: `resume` logged it, once.
            Ok((_, Err(SagaError::UnknownDefinition(_) | SagaError::UnknownEvent { .. } | SagaError::Context(_)))) => {}
            Ok((_, Err(e))) => tracing::warn!(saga_id = %id, error = %e, "a recovered saga stopped before its end"),
            Err(e) if e.is_panic() => tracing::error!(
                saga_id = %id,
                error = %e,
                "a recovered saga panicked; its lease will end and it will be resumed again"
            ),
            Ok(_) | Err(_) => {}
        }
    }
}

/// Renews a saga's lease every third of it, until a renewal is refused because another owner took the saga over
/// (a saga this run ended itself is not: the run then ends with its own answer): one boxed timer, reset after each
/// renewal, keeps the saga's future small.
async fn heartbeat(log: &Arc<dyn SagaLog>, id: &Name, token: u64, lease: Duration) -> SagaError {
    let every = palisade_store::lease::beat_every(lease);
    let mut timer = Box::pin(tokio::time::sleep(every));
    loop {
        timer.as_mut().await;
        timer.as_mut().reset(Instant::now() + every);
        match log.renew(id, token, lease).await {
            Ok(true) => {}
            Ok(false) => {
                // Refused: another owner took the saga over, or this run's own last write ended it (a renewal
                // answered before that write's answer, as on a pool of connections). Only the first is fenced.
                if matches!(log.get(id).await, Ok(Some(r)) if r.token == token && r.state.is_terminal()) {
                    return std::future::pending().await;
                }
                return SagaError::Fenced(id.to_string());
            }
            Err(e) => tracing::warn!(saga_id = %id, error = %e, "could not renew the saga's lease; trying again"),
        }
    }
}

/// Why a log refused to create a saga: [`SagaError::Context`] when its context does not serialize (Redis and
/// PostgreSQL serialize it to store it; checked only once the log has failed, so a saga that starts pays
/// nothing), [`SagaError::Log`] otherwise.
fn start_error<C: Context>(context: &C, id: &str, e: palisade_store::StoreError) -> SagaError {
    match serde_json::to_writer(std::io::sink(), context) {
        Err(ce) => SagaError::Context(format!("saga {id}: the context does not serialize: {ce}")),
        Ok(()) => SagaError::Log(e),
    }
}

/// An event of a newer version in `record`'s history, as the error that refuses to run it.
fn unknown_event(record: &SagaRecord) -> Option<SagaError> {
    record.events.iter().find_map(|e| match e {
        Event::Unknown(unknown) => {
            Some(SagaError::UnknownEvent { id: record.id.clone(), kind: unknown.kind().to_owned() })
        }
        _ => None,
    })
}

/// Saga `id`'s context does not read as its definition's type.
fn context_error(id: &str, e: &serde_json::Error) -> SagaError {
    SagaError::Context(format!("saga {id}: its context does not read as the definition's type: {e}"))
}

/// A definition with its context type erased, so the registry can resume a saga knowing only its name.
pub(crate) trait Runnable: Send + Sync {
    /// Whether `record`'s context reads as the definition's type (read before a take-over; not kept).
    fn check(&self, record: &SagaRecord) -> Result<(), SagaError>;
    fn run(
        self: Arc<Self>,
        inner: Arc<Inner>,
        record: SagaRecord,
        token: u64,
    ) -> BoxFuture<'static, Result<SagaReport, SagaError>>;
}

impl<C: Context> Runnable for Saga<C> {
    fn check(&self, record: &SagaRecord) -> Result<(), SagaError> {
        <C as serde::Deserialize>::deserialize(&record.context).map(drop).map_err(|e| context_error(&record.id, &e))
    }

    fn run(
        self: Arc<Self>,
        inner: Arc<Inner>,
        record: SagaRecord,
        token: u64,
    ) -> BoxFuture<'static, Result<SagaReport, SagaError>> {
        Box::pin(async move {
            let context: C =
                serde_json::from_value(record.context.clone()).map_err(|e| context_error(&record.id, &e))?;
            let run_no = latest_run(&record);
            let context =
                Arc::new(RunCx { id: Name::from(record.id), run: run_no, names: self.names.clone(), context });
            let mut run = Run::new(&self, &inner, token, &context, &record.events, record.state);
            run.drive().await?;
            Ok(run.report())
        })
    }
}

/// The saga's latest run: 0, or the run its last [`Event::Restarted`] began ([`Orchestrator::restart`]).
#[must_use]
pub fn latest_run(record: &SagaRecord) -> u32 {
    record
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Restarted { run } => Some(*run),
            _ => None,
        })
        .unwrap_or(0)
}

/// What a saga's history says has happened to each step (by position), and the failure that began compensation.
fn replay<C>(saga: &Saga<C>, slots: &mut [Slot], events: &[Event]) -> Option<PaymentError> {
    let mut failure = None;
    // A step of the history that the definition does not have is left out.
    let at = |step: &StepName| saga.names.iter().position(|n| n == step);
    for e in events {
        match e {
            Event::StepStarted { step, attempt } => {
                if let Some(s) = at(step).and_then(|i| slots.get_mut(i)) {
                    // Started again without an end: the attempt before was cut off by a crash.
                    s.attempted_unknown |= s.open;
                    s.open = true;
                    s.attempts = *attempt;
                }
            }
            Event::StepDone { step, output } => {
                if let Some(s) = at(step).and_then(|i| slots.get_mut(i)) {
                    s.open = false;
                    s.output = Some(output.clone());
                }
            }
            Event::StepFailed { step, error, outcome, last } => {
                if let Some(s) = at(step).and_then(|i| slots.get_mut(i)) {
                    s.open = false;
                    s.attempted_unknown |= *outcome == palisade_core::OutcomeClass::Unknown;
                    s.maybe_acted |= *last && s.attempted_unknown;
                }
                if *last {
                    failure.get_or_insert_with(|| PaymentError::clone(error));
                }
            }
            Event::CompensationStarted { step, attempt } => {
                if let Some(s) = at(step).and_then(|i| slots.get_mut(i)) {
                    s.compensation_attempts = *attempt;
                }
            }
            Event::CompensationDone { step } => {
                if let Some(s) = at(step).and_then(|i| slots.get_mut(i)) {
                    s.compensated = true;
                }
            }
            Event::CompensationRetried => slots.iter_mut().for_each(|s| s.compensation_attempts = 0),
            // A new run: what the runs before it did was compensated, and this run's steps have keys of their own.
            Event::Restarted { .. } => {
                slots.iter_mut().for_each(|s| *s = Slot::default());
                failure = None;
            }
            _ => {}
        }
    }
    // A start with no end: its owner died during it.
    for s in slots.iter_mut().filter(|s| s.open) {
        s.attempted_unknown = true;
        s.open = false;
    }
    failure
}

/// Writes a transition to the log, its step by position among the definition's names (`Run::written` says what
/// the answer means). A ready answer, as the memory log's, is taken at once, without a future of its own.
macro_rules! log_write {
    ($run:expr, $transition:expr, $state:expr) => {{
        let run = &$run;
        match run.inner.log.append_at(&run.id, run.token, &run.saga.names, $transition, $state).now() {
            Ok(answer) => run.written(answer),
            Err(pending) => run.written(pending.await),
        }?
    }};
}

/// Where a step's first attempt in place ([`Run::first_attempt`]) left off.
enum First<'a> {
    /// Not tried in place (a step of a group).
    NotStarted,
    /// Its start was written; the log's answer is awaited.
    Starting(StoreFuture<'a, bool>),
    /// Its action runs (it was not ready on its first poll; its deadline counts).
    Running(Within<BoxFuture<'static, Result<Value, BoxedError>>>),
    /// Its action ended without an output (an error, or its deadline passed).
    Ended(Result<Result<Value, BoxedError>, DeadlinePassed>),
    /// It succeeded; its end is not written yet: the run holds it ([`Run::held`]) and writes it with the
    /// transition that follows.
    Done(Value),
}

/// How a step ended for good without an output.
struct StepFailure {
    index: usize,
    error: PaymentError,
    maybe_acted: bool,
}

/// One owner's run of one saga. It borrows the definition, the orchestrator and the run's shared part (the id,
/// the steps' names, the context) from the caller (no reference counts to bump and drop per saga).
struct Run<'a, C> {
    saga: &'a Saga<C>,
    inner: &'a Inner,
    /// The saga's id (the shared part's).
    id: &'a Name,
    token: u64,
    /// The id, the steps' names and the context (shared with the memory log), and each step's progress, by
    /// position: shared with the steps' contexts (and their [`Outputs`]) while a node runs; written only between
    /// nodes, when the contexts are gone (so `Arc::make_mut` does not copy).
    progress: Arc<Progress<C>>,
    /// The failure that began compensation.
    failure: Option<PaymentError>,
    state: SagaState,
    /// A step's end (`step_done`) not written yet: a step done in place leaves it here, and the run writes it
    /// together with the transition that follows ([`SagaLog::append_two_at`]: the memory log takes its lock once for
    /// both), before anything else happens: no effect runs and nothing is awaited while an end is held. So the
    /// log is written after the step's effect and before the next one's, with the same history as two writes.
    held: Option<Transition>,
}

/// A step's position among its definition's steps, as transitions name it.
fn at<C>(step: &Step<C>) -> u32 {
    // A definition's steps are counted in memory: far fewer than u32::MAX.
    step.index as u32
}

impl<'a, C: Context> Run<'a, C> {
    fn new(
        saga: &'a Saga<C>,
        inner: &'a Inner,
        token: u64,
        context: &'a Arc<RunCx<C>>,
        events: &[Event],
        state: SagaState,
    ) -> Self {
        let mut slots = Slots::new(saga.names.len());
        let mut failure = None;
        // A new saga has no history to replay.
        if !events.is_empty() {
            failure = replay(saga, &mut slots, events);
        }
        let progress = Arc::new(Progress { run: context.clone(), slots });
        Run { saga, inner, id: &context.id, token, progress, failure, state, held: None }
    }

    fn slot(&self, step: &Step<C>) -> &Slot {
        // Every step's index is a position in `saga.names`, and `slots` has one slot per name.
        &self.progress.slots[step.index]
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> &mut Slot {
        // As `slot`. No step context is left (the node ran), so this does not copy.
        &mut Arc::make_mut(&mut self.progress).slots[index]
    }

    /// Runs the saga to a terminal state while renewing its lease; stops at once when fenced.
    async fn drive(&mut self) -> Result<(), SagaError> {
        let (inner, id, token) = (self.inner, self.id, self.token);
        // Polled only once the saga waits for something (a ready saga never polls it), after the saga each time.
        let mut beat = std::pin::pin!(heartbeat(&inner.log, id, token, inner.lease));
        let mut advance = std::pin::pin!(self.advance());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = advance.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            beat.as_mut().poll(cx).map(|fenced| {
                tracing::warn!(saga_id = %id, "saga taken over by another owner; this one stops");
                Err(fenced)
            })
        })
        .await
    }

    /// What a write's answer means: `Fenced` when the log refused the token.
    fn written(&self, answer: Result<bool, palisade_store::StoreError>) -> Result<(), SagaError> {
        if answer? { Ok(()) } else { Err(SagaError::Fenced(self.id.to_string())) }
    }

    fn cx(&self, step: &Step<C>, attempt: u32, progress: &Arc<Progress<C>>) -> StepCx<C> {
        StepCx { progress: progress.clone(), index: step.index, attempt }
    }

    async fn advance(&mut self) -> Result<(), SagaError> {
        // The clock is read only for a saga with a deadline.
        let started = self.saga.deadline.map(|_| Instant::now());
        if self.state == SagaState::Running && self.failure.is_some() {
            // The log says a step failed for good, and its owner died before compensation began: compensate now.
            // Running the step again would retry what is never retried (a decline, a fraud block), and could carry
            // the saga forward past a failure its log has already recorded. A step of the failed step's group cut
            // off by the crash (started, no end) may have acted: it is compensated as one.
            for i in 0..self.progress.slots.len() {
                let slot = &self.progress.slots[i];
                if slot.attempted_unknown && slot.output.is_none() && !slot.maybe_acted {
                    self.slot_mut(i).maybe_acted = true;
                }
            }
            self.begin_compensation("a step failed for good").await?;
        }
        if self.state == SagaState::Running {
            let saga = self.saga;
            for node in &saga.nodes {
                let steps = node.steps();
                let slots = &self.progress.slots;
                let pending = |s: &&Step<C>| slots[s.index].output.is_none();
                if !steps.iter().any(|s| pending(&s)) {
                    continue;
                }
                if let (Some(started), Some(deadline)) = (started, saga.deadline)
                    && started.elapsed() >= deadline
                {
                    let e = PaymentError::GatewayTimeout { message: "the saga's deadline passed".into() };
                    self.failure.get_or_insert(e);
                    self.begin_compensation("the saga's deadline passed").await?;
                    break;
                }
                // The end of the step before, if it is held, is written with this node's first write (a single step's
                // start) or before the node (a group's steps start concurrently).
                let mut held = self.held.take();
                if let Node::Group(_) = node
                    && let Some(done) = held.take()
                {
                    log_write!(self, done, SagaState::Running);
                }
                // The steps' contexts share the slots while the node runs; they are gone when it has run.
                let outputs = &self.progress;
                let failed = match node {
                    // One step: no vector of futures, no vector of results.
                    Node::Step(step) => {
                        // The first attempt in place: the usual step is done before this await returns.
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(self.first_attempt(step, outputs, held.take(), cx)));
                        match first.await? {
                            First::Done(out) => {
                                // Written with the next transition, before anything else happens.
                                let output = self.slot_mut(step.index).output.insert(out).clone();
                                self.held = Some(Transition::StepDone { step: at(step), output });
                                false
                            }
                            first => {
                                let result = self.run_step(step, outputs, first).await;
                                self.settle(result?)
                            }
                        }
                    }
                    Node::Group(group) => {
                        let runs = group.iter().filter(pending).map(|s| self.run_step(s, outputs, First::NotStarted));
                        let results = join_all(runs).await;
                        let mut failed = false;
                        for r in results {
                            failed |= self.settle(r?);
                        }
                        failed
                    }
                };
                if failed {
                    self.begin_compensation("a step failed for good").await?;
                    break;
                }
            }
            if self.state == SagaState::Running {
                return self.finish(SagaState::Completed).await;
            }
        }
        if self.state == SagaState::Compensating {
            return self.compensate_all().await;
        }
        // Terminal already (a resumed saga that had finished): the report says what the log says.
        Ok(())
    }

    /// Records how a step ended; true when it failed for good.
    fn settle(&mut self, result: Result<(usize, Value), StepFailure>) -> bool {
        match result {
            Ok((index, out)) => {
                self.slot_mut(index).output = Some(out);
                false
            }
            Err(f) => {
                if f.maybe_acted {
                    self.slot_mut(f.index).maybe_acted = true;
                }
                let step = &self.saga.names[f.index];
                tracing::warn!(saga_id = %self.id, step = %step, error = %f.error, "saga step failed for good; compensating");
                self.failure.get_or_insert(f.error);
                true
            }
        }
    }

    async fn begin_compensation(&mut self, reason: &str) -> Result<(), SagaError> {
        self.write_held().await?;
        log_write!(self, Transition::CompensationBegun { reason: reason.to_owned() }, SagaState::Compensating);
        self.state = SagaState::Compensating;
        Ok(())
    }

    /// Runs a step's attempts until one succeeds or the step fails for good; every attempt's start is written
    /// before it runs, its end after.
    async fn run_step(
        &self,
        step: &Step<C>,
        outputs: &Arc<Progress<C>>,
        first: First<'a>,
    ) -> Result<Result<(usize, Value), StepFailure>, SagaError> {
        // Attempts count on from the log: a step resumed after a crash runs at least once more, then retries only
        // while its budget lasts.
        let mut attempt = self.slot(step).attempts;
        // An attempt that may have acted (in this run or before a crash) makes the step maybe-acted even when a
        // later attempt fails Retriable or Terminal: a lost answer's authorization exists all the same.
        let mut maybe_acted = self.slot(step).attempted_unknown;
        let mut previous = None;
        let mut first = first;
        loop {
            // Where the first attempt in place left off, if it did.
            let ended = match std::mem::replace(&mut first, First::NotStarted) {
                First::NotStarted => {
                    attempt += 1;
                    log_write!(self, Transition::StepStarted { step: at(step), attempt }, SagaState::Running);
                    within(step.deadline, (step.action)(self.cx(step, attempt, outputs))).await
                }
                First::Starting(pending) => {
                    attempt += 1;
                    self.written(pending.await)?;
                    within(step.deadline, (step.action)(self.cx(step, attempt, outputs))).await
                }
                First::Running(running) => {
                    attempt += 1;
                    running.await
                }
                First::Ended(ended) => {
                    attempt += 1;
                    ended
                }
                First::Done(out) => {
                    log_write!(self, Transition::StepDone { step: at(step), output: out.clone() }, SagaState::Running);
                    return Ok(Ok((step.index, out)));
                }
            };
            let result = match ended {
                Ok(r) => r,
                Err(DeadlinePassed) => {
                    Err(Box::new(PaymentError::GatewayTimeout { message: "the step's deadline passed".into() }))
                }
            };
            let error = match result {
                Ok(out) => {
                    log_write!(self, Transition::StepDone { step: at(step), output: out.clone() }, SagaState::Running);
                    return Ok(Ok((step.index, out)));
                }
                Err(e) => e,
            };
            let outcome = error.outcome();
            maybe_acted |= outcome == Outcome::Unknown;
            let retry = !matches!(outcome, Outcome::Success | Outcome::Terminal) && attempt < step.attempts;
            let last = !retry;
            // The event keeps the boxed error; the failure that ends the step keeps a copy.
            let (hint, kept) = (error.retry_after(), last.then(|| PaymentError::clone(&error)));
            let failed = Transition::StepFailed { step: at(step), error, outcome: outcome.class(), last };
            log_write!(self, failed, SagaState::Running);
            if let Some(error) = kept {
                return Ok(Err(StepFailure { index: step.index, error, maybe_acted }));
            }
            let wait = retry_wait(&step.backoff, attempt - 1, previous, self.inner.unit(), hint);
            previous = Some(wait);
            // Boxed: a timer held across this await would grow every saga's future.
            Box::pin(tokio::time::sleep(wait)).await;
        }
    }

    /// A single step's first attempt, in place (no future of its own): its start written (after `held`, the
    /// previous step's end, if any: both in one write), its action polled once. Done when the log answered at
    /// once and the action was ready with an output (the usual in-memory step): its end is then left for the
    /// caller to hold and write with the next transition. Otherwise where it stopped, for
    /// [`run_step`](Self::run_step) to go on from.
    fn first_attempt(
        &self,
        step: &Step<C>,
        outputs: &Arc<Progress<C>>,
        held: Option<Transition>,
        cx: &mut std::task::Context<'_>,
    ) -> Result<First<'a>, SagaError> {
        let attempt = self.slot(step).attempts + 1;
        let log = &self.inner.log;
        let (steps, started) = (&self.saga.names, Transition::StepStarted { step: at(step), attempt });
        let written = match held {
            None => log.append_at(self.id, self.token, steps, started, SagaState::Running),
            Some(done) => {
                log.append_two_at(self.id, self.token, steps, done, SagaState::Running, started, SagaState::Running)
            }
        };
        match written.now() {
            Ok(answer) => self.written(answer)?,
            Err(pending) => return Ok(First::Starting(pending)),
        }
        // Polled as `within` polls it: the deadline counts from the first time the action is not ready.
        let mut action = (step.action)(self.cx(step, attempt, outputs));
        let out = match action.as_mut().poll(cx) {
            Poll::Ready(Ok(out)) => out,
            Poll::Ready(Err(e)) => return Ok(First::Ended(Ok(Err(e)))),
            Poll::Pending => {
                return Ok(match Within::not_ready(action, step.deadline, cx) {
                    Ok(running) => First::Running(running),
                    Err(passed) => First::Ended(Err(passed)),
                });
            }
        };
        Ok(First::Done(out))
    }

    /// Compensates every completed step (and every step that may have acted), last first; the steps of a group
    /// together.
    async fn compensate_all(&mut self) -> Result<(), SagaError> {
        let saga = self.saga;
        for node in saga.nodes.iter().rev() {
            let outputs = self.progress.clone();
            let slots = &self.progress.slots;
            // What a step's compensation gets, if it is to run: the step's output, or `null` when it may have acted.
            let todo = |s: &Step<C>| -> Option<Value> {
                let slot = &slots[s.index];
                if s.compensation.is_none() || slot.compensated {
                    return None;
                }
                match &slot.output {
                    Some(out) => Some(out.clone()),
                    None => slot.maybe_acted.then_some(Value::Null),
                }
            };
            let failure = match node {
                // One step: no vector of futures, no vector of results.
                Node::Step(step) => match todo(step) {
                    Some(out) => {
                        let result = self.compensate_step(step, out, &outputs).await;
                        drop(outputs);
                        self.undone(result?)
                    }
                    None => None,
                },
                Node::Group(group) => {
                    let runs: Vec<(&Step<C>, Value)> =
                        group.iter().filter_map(|s| todo(s).map(|out| (s, out))).collect();
                    let results =
                        join_all(runs.into_iter().map(|(s, out)| self.compensate_step(s, out, &outputs))).await;
                    drop(outputs);
                    let mut failure = None;
                    for r in results {
                        if let Some(f) = self.undone(r?) {
                            failure.get_or_insert(f);
                        }
                    }
                    failure
                }
            };
            if let Some((step, e)) = failure {
                let error =
                    PaymentError::SagaCompensationFailed { step: step.as_str().into(), message: e.to_string().into() };
                tracing::error!(
                    saga_id = %self.id,
                    saga = %saga.name,
                    step = %step,
                    error = %e,
                    "saga compensation failed after its retries: money may be in an inconsistent state; fix the cause, then retry the compensation (Orchestrator::retry_compensation, `palisade saga retry-compensation`)"
                );
                // What the report says (in place of the failure that began compensation).
                self.failure = Some(error);
                return self.finish(SagaState::FailedCompensation).await;
            }
        }
        self.finish(SagaState::Compensated).await
    }

    /// Records how a compensation ended; the step and its error when it failed for good.
    fn undone(&mut self, result: Result<usize, (StepName, PaymentError)>) -> Option<(StepName, PaymentError)> {
        match result {
            Ok(index) => {
                self.slot_mut(index).compensated = true;
                None
            }
            Err(failed) => Some(failed),
        }
    }

    async fn compensate_step(
        &self,
        step: &Step<C>,
        output: Value,
        outputs: &Arc<Progress<C>>,
    ) -> Result<Result<usize, (StepName, PaymentError)>, SagaError> {
        let name = &step.name;
        let Some(compensation) = &step.compensation else { return Ok(Ok(step.index)) };
        let mut attempt = self.slot(step).compensation_attempts;
        let first = attempt;
        let mut previous = None;
        loop {
            attempt += 1;
            log_write!(self, Transition::CompensationStarted { step: at(step), attempt }, SagaState::Compensating);
            let run = compensation(self.cx(step, attempt, outputs), output.clone());
            let result = match within(step.deadline, run).await {
                Ok(r) => r,
                Err(DeadlinePassed) => {
                    Err(Box::new(PaymentError::GatewayTimeout { message: "the compensation's deadline passed".into() }))
                }
            };
            let error = match result {
                Ok(()) => {
                    log_write!(self, Transition::CompensationDone { step: at(step) }, SagaState::Compensating);
                    return Ok(Ok(step.index));
                }
                Err(e) => e,
            };
            let last = attempt - first >= step.compensation_attempts;
            // The event keeps the boxed error; the failure that ends the compensation keeps a copy.
            let (hint, kept) = (error.retry_after(), last.then(|| PaymentError::clone(&error)));
            let failed = Transition::CompensationFailed { step: at(step), error, last };
            log_write!(self, failed, SagaState::Compensating);
            if let Some(error) = kept {
                return Ok(Err((name.clone(), error)));
            }
            let wait = retry_wait(&step.compensation_backoff, attempt - first - 1, previous, self.inner.unit(), hint);
            previous = Some(wait);
            // Boxed: a timer held across this await would grow every saga's future.
            Box::pin(tokio::time::sleep(wait)).await;
        }
    }

    /// Writes a held step end ([`Run::held`]) by itself: before a wait or an effect that is not one write.
    async fn write_held(&mut self) -> Result<(), SagaError> {
        if let Some(done) = self.held.take() {
            log_write!(self, done, SagaState::Running);
        }
        Ok(())
    }

    /// Writes the terminal `state` (after a held step end, in one write); the run's [`report`](Self::report)
    /// follows.
    async fn finish(&mut self, state: SagaState) -> Result<(), SagaError> {
        let finished = Transition::Finished { state };
        match self.held.take() {
            None => log_write!(self, finished, state),
            Some(done) => {
                let (log, steps) = (&self.inner.log, &self.saga.names);
                match log.append_two_at(self.id, self.token, steps, done, SagaState::Running, finished, state).now() {
                    Ok(answer) => self.written(answer),
                    Err(pending) => self.written(pending.await),
                }?;
            }
        }
        self.state = state;
        count_finished(self.saga, state);
        tracing::info!(saga_id = %self.id, saga = %self.saga.name, state = state.as_str(), "saga finished");
        Ok(())
    }

    /// The report, once the run has ended; the run ends with it (its outputs and failure move into it). The
    /// report's error is the failure unless `Completed`.
    fn report(self) -> SagaReport {
        debug_assert!(self.held.is_none(), "a step's end was held and never written");
        SagaReport {
            id: self.id.clone(),
            name: self.saga.name.clone(),
            state: self.state,
            outputs: Outputs::new(self.progress),
            error: if self.state == SagaState::Completed { None } else { self.failure },
        }
    }
}

fn count_started<C>(saga: &Saga<C>) {
    #[cfg(feature = "metrics")]
    bump(&saga.metric_keys.started);
    #[cfg(not(feature = "metrics"))]
    let _ = saga;
}

fn count_finished<C>(saga: &Saga<C>, state: SagaState) {
    #[cfg(feature = "metrics")]
    match state {
        SagaState::Completed => bump(&saga.metric_keys.completed),
        SagaState::Compensated => bump(&saga.metric_keys.compensated),
        SagaState::FailedCompensation => bump(&saga.metric_keys.failed_compensation),
        _ => {}
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (saga, state);
}

/// `counter!(key).increment(1)` with a key made once per definition (the macro builds its key, labels and all,
/// on every call). The recorder is looked up on every call, as the macro does.
#[cfg(feature = "metrics")]
fn bump(key: &metrics::Key) {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
}

fn count_event(what: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("palisade_saga_events_total", "event" => what).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = what;
}

/// Runs `fut` under `deadline` (`Err` when it passed). The first poll goes without a timer: a step that is ready at
/// once (most of an in-memory saga's) creates none; the deadline counts from the first time it is not ready, and
/// its timer is boxed then (a timer in place would grow every saga's future).
fn within<F: Future + Unpin>(deadline: Duration, fut: F) -> Within<F> {
    Within { fut, deadline, timer: None }
}

/// A step's deadline passed.
struct DeadlinePassed;

struct Within<F> {
    fut: F,
    deadline: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F: Future + Unpin> Within<F> {
    /// `fut` under `deadline`, after a first poll that was not ready: its timer starts now (as `poll` starts it).
    fn not_ready(fut: F, deadline: Duration, cx: &mut std::task::Context<'_>) -> Result<Self, DeadlinePassed> {
        let mut timer = Box::pin(tokio::time::sleep(deadline));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(DeadlinePassed),
            Poll::Pending => Ok(Within { fut, deadline, timer: Some(timer) }),
        }
    }
}

impl<F: Future + Unpin> Future for Within<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(out) = Pin::new(&mut this.fut).poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let deadline = this.deadline;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        timer.as_mut().poll(cx).map(|()| Err(DeadlinePassed))
    }
}

/// How long to wait before attempt `retry + 2` of a step or a compensation: the backoff's delay, or longer when
/// the failure said when to come back (`hint`, the error's `retry_after`: `Retry-After` of a 429 or 503, an open breaker's remaining time). The same
/// for steps and compensations: a refund refused with "retry after 30 s" is not tried again at once.
fn retry_wait(
    backoff: &palisade_core::backoff::Backoff,
    retry: u32,
    previous: Option<Duration>,
    unit: f64,
    hint: Option<Duration>,
) -> Duration {
    let wait = backoff.delay(retry, previous, unit);
    hint.map_or(wait, |hint| wait.max(hint))
}
