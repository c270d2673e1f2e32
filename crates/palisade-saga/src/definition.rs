//! A saga as data: named steps, each an async action with an optional compensation, in order, or in groups that
//! run concurrently.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use palisade_core::backoff::Backoff;
use palisade_core::{IdempotencyKey, PaymentError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::defaults::{
    DEFAULT_COMPENSATION_ATTEMPTS, DEFAULT_COMPENSATION_BACKOFF, DEFAULT_STEP_ATTEMPTS, DEFAULT_STEP_BACKOFF,
    DEFAULT_STEP_DEADLINE,
};
use crate::error::DefinitionError;
use crate::model::{Name, Outputs, Slot, StepName, StepSlots};

/// What a saga's context must be: the orchestrator stores it in the log as JSON and hands it to every step.
pub trait Context: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> Context for T {}

/// The key a step passes to the gateway as its idempotency key: derived from the saga id and the step name, so
/// every attempt of the step, in any process, after any crash, sends the same key, and the gateway acts once.
/// This is the key of the saga's first run; a restarted saga's steps use [`step_key_of_run`].
#[must_use]
pub fn step_key(saga_id: &str, step: &str) -> IdempotencyKey {
    step_key_of_run(saga_id, step, 0)
}

/// The key a step's compensation passes to the gateway (a refund, a void): its own, so it never collides with the
/// step's. The first run's; see [`compensation_key_of_run`].
#[must_use]
pub fn compensation_key(saga_id: &str, step: &str) -> IdempotencyKey {
    compensation_key_of_run(saga_id, step, 0)
}

/// [`step_key`] in run `run` of the saga (0 for its first; each [`Orchestrator::restart`](crate::Orchestrator::restart)
/// begins the next): every run has keys of its own, so a gateway never answers a step of a restarted saga with what
/// it did for an earlier run (an authorization that was voided).
#[must_use]
pub fn step_key_of_run(saga_id: &str, step: &str, run: u32) -> IdempotencyKey {
    derived("step", saga_id, step, run)
}

/// [`compensation_key`] in run `run` of the saga.
#[must_use]
pub fn compensation_key_of_run(saga_id: &str, step: &str, run: u32) -> IdempotencyKey {
    derived("compensate", saga_id, step, run)
}

fn derived(role: &str, saga_id: &str, step: &str, run: u32) -> IdempotencyKey {
    let mut h = Sha256::new();
    // The first run's keys are what they were before restarts existed (sagas in flight keep theirs).
    let run = (run > 0).then(|| run.to_string());
    for part in [role, saga_id, step].into_iter().chain(run.as_deref()) {
        // Length-delimited, so no two (saga, step, run) tuples give the same input.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = hex::encode(&h.finalize()[..20]);
    // "sg-" and 40 hex digits: always a valid key.
    IdempotencyKey::new(format!("{}{digest}", IdempotencyKey::SAGA_PREFIX))
        .unwrap_or_else(|_| unreachable!("hex is a valid key"))
}

/// What every step of one run shares, behind one `Arc`: the saga's id, its steps' names and its context. The
/// log keeps it too, as the saga's context (it serializes as the context alone).
pub(crate) struct RunCx<C> {
    pub(crate) id: Name,
    /// Which run of the saga this is (0, or the last [`Event::Restarted`](crate::Event::Restarted)'s).
    pub(crate) run: u32,
    pub(crate) names: Arc<[StepName]>,
    pub(crate) context: C,
}

impl<C: Serialize> Serialize for RunCx<C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.context.serialize(s)
    }
}

/// Most steps whose slots a run keeps in its shared progress itself: a checkout's four (reserve, authorize,
/// capture, ship). A saga with more keeps them in a vector of their own (one allocation more). Room for eight made
/// every run write and copy twice the bytes (+313 instructions a saga, no faster).
const INLINE_SLOTS: usize = 4;

/// Each step's progress, by position: in place for up to [`INLINE_SLOTS`] steps.
#[derive(Clone)]
pub(crate) enum Slots {
    Inline(usize, [Slot; INLINE_SLOTS]),
    Heap(Vec<Slot>),
}

impl Slots {
    /// `n` empty slots.
    #[inline]
    pub(crate) fn new(n: usize) -> Self {
        if n <= INLINE_SLOTS {
            Slots::Inline(n, [Slot::EMPTY; INLINE_SLOTS])
        } else {
            Slots::Heap(vec![Slot::EMPTY; n])
        }
    }
}

impl std::ops::Deref for Slots {
    type Target = [Slot];
    #[inline]
    fn deref(&self) -> &[Slot] {
        match self {
            Slots::Inline(n, slots) => &slots[..*n],
            Slots::Heap(slots) => slots,
        }
    }
}

impl std::ops::DerefMut for Slots {
    #[inline]
    fn deref_mut(&mut self) -> &mut [Slot] {
        match self {
            Slots::Inline(n, slots) => &mut slots[..*n],
            Slots::Heap(slots) => slots,
        }
    }
}

/// What a run shares with its steps' contexts, behind the one `Arc` each context holds: the run's shared part
/// and each step's progress (its output once it completed). The run writes the slots only between nodes, when no
/// step context is left (so `Arc::make_mut` does not copy); a report keeps them as its [`Outputs`].
pub(crate) struct Progress<C> {
    pub(crate) run: Arc<RunCx<C>>,
    pub(crate) slots: Slots,
}

impl<C> Clone for Progress<C> {
    fn clone(&self) -> Self {
        Progress { run: self.run.clone(), slots: self.slots.clone() }
    }
}

impl<C: Send + Sync> StepSlots for Progress<C> {
    fn names(&self) -> &[StepName] {
        &self.run.names
    }
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// What a step's action and compensation see. One reference count (the run's progress), so handing a context to
/// a step is cheap.
pub struct StepCx<C> {
    pub(crate) progress: Arc<Progress<C>>,
    pub(crate) index: usize,
    pub(crate) attempt: u32,
}

impl<C: Send + Sync + 'static> StepCx<C> {
    /// The outputs of the steps completed so far.
    #[must_use]
    pub fn outputs(&self) -> Outputs {
        Outputs::new(self.progress.clone())
    }
}

impl<C> StepCx<C> {
    /// The saga's id.
    #[must_use]
    pub fn saga_id(&self) -> &str {
        &self.progress.run.id
    }
    /// This step's name.
    #[must_use]
    pub fn step(&self) -> &str {
        // `index` is this step's position among the definition's names.
        &self.progress.run.names[self.index]
    }
    /// Which attempt this is (1-based; counting continues across a crash).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The saga's context.
    #[must_use]
    pub fn context(&self) -> &C {
        &self.progress.run.context
    }
    /// The output of an earlier step, read as `T`; `None` if it has not completed or is not a `T`.
    #[must_use]
    pub fn output<T: DeserializeOwned>(&self, step: &str) -> Option<T> {
        let at = self.progress.run.names.iter().position(|n| *n == *step)?;
        self.progress.slots.get(at)?.output.as_ref().and_then(|v| T::deserialize(v).ok())
    }
    /// Which run of the saga this is: 0, or how many times it was restarted ([`step_key_of_run`]).
    #[must_use]
    pub fn run(&self) -> u32 {
        self.progress.run.run
    }
    /// This step's gateway idempotency key ([`step_key_of_run`] in this run).
    #[must_use]
    pub fn key(&self) -> IdempotencyKey {
        self.key_of(self.step())
    }
    /// This step's compensation's gateway idempotency key ([`compensation_key_of_run`] in this run).
    #[must_use]
    pub fn compensation_key(&self) -> IdempotencyKey {
        self.compensation_key_of(self.step())
    }
    /// The gateway idempotency key of another step of this saga, in this run (a compensation that asks the gateway
    /// what that step did sends the step's own request under it).
    #[must_use]
    pub fn key_of(&self, step: &str) -> IdempotencyKey {
        step_key_of_run(self.saga_id(), step, self.run())
    }
    /// The compensation key of another step of this saga, in this run (two compensations that may both have to give
    /// the same money back send the same refund under it, so the gateway makes them one).
    #[must_use]
    pub fn compensation_key_of(&self, step: &str) -> IdempotencyKey {
        compensation_key_of_run(self.saga_id(), step, self.run())
    }
}

/// A step's or a compensation's error as the orchestrator gets it: boxed, so the results it moves are small (an
/// error is rare, and the box is the one its `step_failed` or `compensation_failed` event keeps).
pub(crate) type BoxedError = Box<PaymentError>;
pub(crate) type ActionFn<C> = Arc<dyn Fn(StepCx<C>) -> BoxFuture<'static, Result<Value, BoxedError>> + Send + Sync>;
pub(crate) type CompensateFn<C> =
    Arc<dyn Fn(StepCx<C>, Value) -> BoxFuture<'static, Result<(), BoxedError>> + Send + Sync>;

/// One step: an action, an optional compensation that undoes it, and how both are retried.
pub struct Step<C> {
    pub(crate) name: StepName,
    /// Its position among the saga's steps (set by [`SagaBuilder::build`]).
    pub(crate) index: usize,
    pub(crate) action: ActionFn<C>,
    pub(crate) compensation: Option<CompensateFn<C>>,
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) deadline: Duration,
    pub(crate) compensation_attempts: u32,
    pub(crate) compensation_backoff: Backoff,
}

impl<C: Context> Step<C> {
    /// A step named `name` running `action`. The action's output is stored in the log (as JSON) and handed to
    /// later steps ([`StepCx::output`]) and to this step's compensation; an output that does not serialize is a
    /// bug, but the action has acted, so the attempt counts as `Unknown` (retried, then compensated with `null`). Its error is classified by
    /// [`PaymentError::outcome`]: `Retriable` and `Unknown` are retried (with the same step key), `Terminal`
    /// starts compensation.
    ///
    /// Defaults: [`DEFAULT_STEP_ATTEMPTS`] attempts, [`DEFAULT_STEP_BACKOFF`], [`DEFAULT_STEP_DEADLINE`] per
    /// attempt, compensation [`DEFAULT_COMPENSATION_ATTEMPTS`] attempts with [`DEFAULT_COMPENSATION_BACKOFF`].
    #[must_use]
    pub fn new<F, Fut, T>(name: &str, action: F) -> Self
    where
        F: Fn(StepCx<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, PaymentError>> + Send + 'static,
        T: Serialize,
    {
        let action: ActionFn<C> = Arc::new(move |cx| {
            let fut = action(cx);
            Box::pin(async move {
                let out = fut.await.map_err(Box::new)?;
                // The action succeeded: it acted. An output the log cannot record is therefore Unknown (as a lost
                // answer is), retried under the same step key and, if it stays so, compensated with `null`.
                serde_json::to_value(out).map_err(|e| {
                    Box::new(PaymentError::GatewayTimeout {
                        message: format!("the step acted but its output is not JSON ({e}): it cannot be recorded")
                            .into(),
                    })
                })
            })
        });
        Step {
            name: name.into(),
            index: 0,
            action,
            compensation: None,
            attempts: DEFAULT_STEP_ATTEMPTS,
            backoff: DEFAULT_STEP_BACKOFF,
            deadline: DEFAULT_STEP_DEADLINE,
            compensation_attempts: DEFAULT_COMPENSATION_ATTEMPTS,
            compensation_backoff: DEFAULT_COMPENSATION_BACKOFF,
        }
    }

    /// What undoes the step: called with the step's output (`null` when the step's last attempt ended Unknown:
    /// it may have acted, and the compensation must find out, for example by the step key). A compensation must
    /// be idempotent: after a crash it may run again.
    #[must_use]
    pub fn compensate<F, Fut>(mut self, compensation: F) -> Self
    where
        F: Fn(StepCx<C>, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), PaymentError>> + Send + 'static,
    {
        self.compensation = Some(Arc::new(move |cx, out| {
            let fut = compensation(cx, out);
            Box::pin(async move { fut.await.map_err(Box::new) })
        }));
        self
    }

    /// Attempts of the action before it fails for good (at least 1).
    #[must_use]
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// The waits between attempts (a `Retry-After` from the error is honoured when longer).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one attempt (of the action or of the compensation) may take. An attempt past it is abandoned and
    /// counts as Unknown (it may have acted): retried under the same key.
    #[must_use]
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Attempts of the compensation before the saga ends in `FailedCompensation` (at least 1).
    #[must_use]
    pub fn compensation_attempts(mut self, n: u32) -> Self {
        self.compensation_attempts = n.max(1);
        self
    }

    /// The waits between compensation attempts.
    #[must_use]
    pub fn compensation_backoff(mut self, backoff: Backoff) -> Self {
        self.compensation_backoff = backoff;
        self
    }
}

/// An element of a saga: one step, or steps that run concurrently and are compensated together.
pub(crate) enum Node<C> {
    Step(Step<C>),
    Group(Vec<Step<C>>),
}

impl<C> Node<C> {
    pub(crate) fn steps(&self) -> &[Step<C>] {
        match self {
            Node::Step(s) => std::slice::from_ref(s),
            Node::Group(g) => g,
        }
    }
}

/// A saga definition: steps in order (and groups of concurrent steps), a name the log and recovery find it by,
/// and a deadline for the whole saga.
pub struct Saga<C> {
    pub(crate) name: Name,
    pub(crate) nodes: Vec<Node<C>>,
    /// The steps' names by position (groups flattened in order).
    pub(crate) names: Arc<[StepName]>,
    /// The last orchestrator this definition was registered with ([`crate::Orchestrator`]'s serial number), so
    /// `start` finds it registered without a lookup.
    pub(crate) registered_with: std::sync::atomic::AtomicU64,
    pub(crate) deadline: Option<Duration>,
    #[cfg(feature = "metrics")]
    pub(crate) metric_keys: MetricKeys,
}

/// The counters' keys of one definition, made once (with its name as the `saga` label).
#[cfg(feature = "metrics")]
pub(crate) struct MetricKeys {
    pub(crate) started: metrics::Key,
    pub(crate) completed: metrics::Key,
    pub(crate) compensated: metrics::Key,
    pub(crate) failed_compensation: metrics::Key,
}

#[cfg(feature = "metrics")]
impl MetricKeys {
    fn new(name: &str) -> Self {
        use metrics::{Key, Label};
        let saga = || Label::new("saga", name.to_owned());
        let finished = |state: crate::SagaState| {
            Key::from_parts("palisade_saga_finished_total", vec![saga(), Label::new("state", state.as_str())])
        };
        MetricKeys {
            started: Key::from_parts("palisade_saga_started_total", vec![saga()]),
            completed: finished(crate::SagaState::Completed),
            compensated: finished(crate::SagaState::Compensated),
            failed_compensation: finished(crate::SagaState::FailedCompensation),
        }
    }
}

impl<C: Context> Saga<C> {
    /// Starts a definition named `name` (unique among the sagas an orchestrator runs).
    pub fn builder(name: &str) -> SagaBuilder<C> {
        SagaBuilder { name: name.into(), nodes: Vec::new(), deadline: None }
    }
}

impl<C> Saga<C> {
    /// The definition's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`Saga`].
#[must_use]
pub struct SagaBuilder<C> {
    name: Name,
    nodes: Vec<Node<C>>,
    deadline: Option<Duration>,
}

impl<C: Context> SagaBuilder<C> {
    /// Adds a step, run after the ones before it.
    pub fn step(mut self, step: Step<C>) -> Self {
        self.nodes.push(Node::Step(step));
        self
    }

    /// Adds steps that run concurrently (after the ones before, before the ones after). If one fails for good,
    /// the others finish, and every completed step of the group is compensated, concurrently.
    pub fn parallel(mut self, steps: impl IntoIterator<Item = Step<C>>) -> Self {
        self.nodes.push(Node::Group(steps.into_iter().collect()));
        self
    }

    /// A deadline for the whole saga, counted from when an orchestrator starts (or resumes) running it: when it
    /// passes before the steps are done, no further step starts and compensation begins. Default: none (each
    /// step has its own deadline per attempt).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The definition.
    ///
    /// # Errors
    /// [`DefinitionError`] for a saga without steps, an empty group, or two steps with one name.
    pub fn build(mut self) -> Result<Saga<C>, DefinitionError> {
        if self.nodes.is_empty() {
            return Err(DefinitionError::NoSteps);
        }
        let mut seen = HashSet::new();
        let mut names = Vec::new();
        for node in &mut self.nodes {
            let steps: &mut [Step<C>] = match node {
                Node::Step(s) => std::slice::from_mut(s),
                Node::Group(g) => g,
            };
            if steps.is_empty() {
                return Err(DefinitionError::EmptyGroup);
            }
            for s in steps {
                if !seen.insert(s.name.clone()) {
                    return Err(DefinitionError::DuplicateStep(s.name.to_string()));
                }
                s.index = names.len();
                names.push(s.name.clone());
            }
        }
        Ok(Saga {
            #[cfg(feature = "metrics")]
            metric_keys: MetricKeys::new(&self.name),
            name: self.name,
            nodes: self.nodes,
            names: names.into(),
            registered_with: std::sync::atomic::AtomicU64::new(0),
            deadline: self.deadline,
        })
    }
}
