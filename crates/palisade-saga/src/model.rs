//! What the log holds: a saga's state, the events of its history, and the record recovery reads.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{OutcomeClass, PaymentError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SagaState {
    /// Steps are running forward.
    Running,
    /// A step failed for good (or the saga's deadline passed): completed steps are being undone, in reverse.
    Compensating,
    /// Every step completed.
    Completed,
    /// Every completed step was undone.
    Compensated,
    /// A compensation still failed after its retries: money may be in an inconsistent state. Page the on-call;
    /// retry with `Orchestrator::retry_compensation` (or `palisade saga retry-compensation`) once the cause is fixed.
    FailedCompensation,
}

impl SagaState {
    /// Stable snake_case name (logs, metrics, the CLI, the stores).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaState::Running => "running",
            SagaState::Compensating => "compensating",
            SagaState::Completed => "completed",
            SagaState::Compensated => "compensated",
            SagaState::FailedCompensation => "failed_compensation",
        }
    }

    /// Parses [`as_str`](Self::as_str).
    #[must_use]
    pub fn parse(s: &str) -> Option<SagaState> {
        [
            SagaState::Running,
            SagaState::Compensating,
            SagaState::Completed,
            SagaState::Compensated,
            SagaState::FailedCompensation,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// True for the states nothing runs in any more (until a compensation is retried by hand).
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, SagaState::Completed | SagaState::Compensated | SagaState::FailedCompensation)
    }
}

impl std::fmt::Display for SagaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A shared string: a step's name as events, outputs and reports hold it (shared with the definition, so recording
/// that a step started or ended copies no string), and a saga's id and definition name in a [`SagaReport`](crate::SagaReport)
/// (shared with the run). Reads as a `&str` (`Deref`, `as_str`, `Borrow<str>`, comparisons with `str` and
/// `String`); serialized as a plain JSON string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<str>);

/// A step's name ([`Name`]).
pub type StepName = Name;

impl Name {
    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string itself.
    #[must_use]
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(s.into())
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Self {
        Name(s)
    }
}

impl From<Name> for String {
    fn from(s: Name) -> Self {
        s.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// One transition of a saga, as the log keeps it. A step's start is written **before** its action runs and its
/// end after, so a crash anywhere leaves either "started, no end" (in doubt: run it again under the same step
/// key) or a finished step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A step's action is about to run (attempt is 1-based).
    StepStarted {
        /// The step.
        step: StepName,
        /// Which attempt.
        attempt: u32,
    },
    /// A step's action succeeded, with its output.
    StepDone {
        /// The step.
        step: StepName,
        /// What the action returned.
        output: Value,
    },
    /// An attempt of a step failed. `final` when no attempt follows (the step failed for good).
    StepFailed {
        /// The step.
        step: StepName,
        /// The error (boxed: it is large and rare, and every event of a log is the size of the largest).
        error: Box<PaymentError>,
        /// How the error was classified.
        outcome: OutcomeClass,
        /// No further attempt.
        #[serde(rename = "final")]
        last: bool,
    },
    /// Compensation begins (a step failed for good, or the deadline passed).
    CompensationBegun {
        /// Why.
        reason: String,
    },
    /// A step's compensation is about to run.
    CompensationStarted {
        /// The step being undone.
        step: StepName,
        /// Which attempt (1-based).
        attempt: u32,
    },
    /// A step's compensation succeeded.
    CompensationDone {
        /// The step undone.
        step: StepName,
    },
    /// An attempt of a compensation failed; `final` when no attempt follows.
    CompensationFailed {
        /// The step.
        step: StepName,
        /// The error (boxed, as in `StepFailed`).
        error: Box<PaymentError>,
        /// No further attempt.
        #[serde(rename = "final")]
        last: bool,
    },
    /// A compensation that failed for good is tried again, by hand.
    CompensationRetried,
    /// A compensated saga runs again from its first step ([`Orchestrator::restart`](crate::Orchestrator::restart)):
    /// the history before it is done with, and its steps' keys are those of run `run` (1 for the first restart), so
    /// no gateway answers a step of this run with what it did for an earlier one.
    Restarted {
        /// Which run begins (the saga's first run is 0).
        run: u32,
    },
    /// The saga reached a terminal state.
    Finished {
        /// The state.
        state: SagaState,
    },
    /// An event this version cannot read, kept as written: one a newer version of this crate wrote during a
    /// rolling deploy (an event kind this version does not know, or a known kind holding what it does not know,
    /// such as a newer [`PaymentError`] kind). The record still reads (`get`, `palisade saga show`) and the event
    /// is written back as it was; an orchestrator does not resume a saga whose history holds one
    /// ([`SagaError::UnknownEvent`](crate::SagaError::UnknownEvent)): an instance of the newer version does.
    /// Never written by this version.
    #[serde(untagged)]
    Unknown(UnknownEvent),
}

/// An event this version cannot read ([`Event::Unknown`]): its kind (the `event` field) and the JSON as written.
/// Boxed, so an [`Event`] stays as small as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    kind: Box<str>,
    raw: Box<Value>,
}

impl UnknownEvent {
    /// The event's kind, as written (`step_failed` for a known kind with a field this version cannot read).
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The event as written.
    #[must_use]
    pub fn raw(&self) -> &Value {
        &self.raw
    }
}

impl Serialize for UnknownEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for UnknownEvent {
    /// Any JSON object with a string `event` field: what a later version may write. Anything else is not a saga
    /// event at all, and stays an error.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        let Some(kind) = raw.get("event").and_then(Value::as_str) else {
            return Err(serde::de::Error::custom("not a saga event (a JSON object with an `event` field)"));
        };
        Ok(UnknownEvent { kind: kind.into(), raw: Box::new(raw) })
    }
}

/// One transition of a saga as the orchestrator writes it ([`SagaLog::append_at`](crate::SagaLog::append_at)): an
/// [`Event`] whose step is named by its position among the definition's steps (`steps[step]`, the names written
/// with it), so writing one bumps no reference count. A log that stores names gets the event
/// ([`into_event`](Self::into_event)); the memory log keeps the position and names the step when it is read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Transition {
    /// [`Event::StepStarted`].
    StepStarted {
        /// The step's position.
        step: u32,
        /// Which attempt (1-based).
        attempt: u32,
    },
    /// [`Event::StepDone`].
    StepDone {
        /// The step's position.
        step: u32,
        /// What the action returned.
        output: Value,
    },
    /// [`Event::StepFailed`].
    StepFailed {
        /// The step's position.
        step: u32,
        /// The error.
        error: Box<PaymentError>,
        /// How the error was classified.
        outcome: OutcomeClass,
        /// No further attempt.
        last: bool,
    },
    /// [`Event::CompensationBegun`].
    CompensationBegun {
        /// Why.
        reason: String,
    },
    /// [`Event::CompensationStarted`].
    CompensationStarted {
        /// The step's position.
        step: u32,
        /// Which attempt (1-based).
        attempt: u32,
    },
    /// [`Event::CompensationDone`].
    CompensationDone {
        /// The step's position.
        step: u32,
    },
    /// [`Event::CompensationFailed`].
    CompensationFailed {
        /// The step's position.
        step: u32,
        /// The error.
        error: Box<PaymentError>,
        /// No further attempt.
        last: bool,
    },
    /// [`Event::CompensationRetried`].
    CompensationRetried,
    /// [`Event::Restarted`].
    Restarted {
        /// Which run begins.
        run: u32,
    },
    /// [`Event::Finished`].
    Finished {
        /// The state.
        state: SagaState,
    },
}

/// The name of the step at `at` among `steps` (`#<at>` for a position out of range, which the orchestrator never
/// writes).
fn step_at(steps: &[StepName], at: u32) -> StepName {
    match steps.get(at as usize) {
        Some(name) => name.clone(),
        None => Name::from(format!("#{at}")),
    }
}

impl Transition {
    /// The event, with its step named from `steps` (the definition's step names, by position).
    #[must_use]
    pub fn into_event(self, steps: &[StepName]) -> Event {
        match self {
            Transition::StepStarted { step, attempt } => Event::StepStarted { step: step_at(steps, step), attempt },
            Transition::StepDone { step, output } => Event::StepDone { step: step_at(steps, step), output },
            Transition::StepFailed { step, error, outcome, last } => {
                Event::StepFailed { step: step_at(steps, step), error, outcome, last }
            }
            Transition::CompensationBegun { reason } => Event::CompensationBegun { reason },
            Transition::CompensationStarted { step, attempt } => {
                Event::CompensationStarted { step: step_at(steps, step), attempt }
            }
            Transition::CompensationDone { step } => Event::CompensationDone { step: step_at(steps, step) },
            Transition::CompensationFailed { step, error, last } => {
                Event::CompensationFailed { step: step_at(steps, step), error, last }
            }
            Transition::CompensationRetried => Event::CompensationRetried,
            Transition::Restarted { run } => Event::Restarted { run },
            Transition::Finished { state } => Event::Finished { state },
        }
    }

    /// The transition of `event`, its step found by name among `steps`; the event back when its step is not
    /// among them.
    pub(crate) fn from_event(event: Event, steps: &[StepName]) -> Result<Transition, Event> {
        let at = |step: &StepName| steps.iter().position(|n| n == step).and_then(|at| u32::try_from(at).ok());
        let step = match &event {
            Event::StepStarted { step, .. }
            | Event::StepDone { step, .. }
            | Event::StepFailed { step, .. }
            | Event::CompensationStarted { step, .. }
            | Event::CompensationDone { step }
            | Event::CompensationFailed { step, .. } => match at(step) {
                Some(at) => at,
                None => return Err(event),
            },
            Event::CompensationBegun { .. }
            | Event::CompensationRetried
            | Event::Restarted { .. }
            | Event::Finished { .. } => 0,
            Event::Unknown(_) => return Err(event),
        };
        Ok(match event {
            Event::StepStarted { attempt, .. } => Transition::StepStarted { step, attempt },
            Event::StepDone { output, .. } => Transition::StepDone { step, output },
            Event::StepFailed { error, outcome, last, .. } => Transition::StepFailed { step, error, outcome, last },
            Event::CompensationBegun { reason } => Transition::CompensationBegun { reason },
            Event::CompensationStarted { attempt, .. } => Transition::CompensationStarted { step, attempt },
            Event::CompensationDone { .. } => Transition::CompensationDone { step },
            Event::CompensationFailed { error, last, .. } => Transition::CompensationFailed { step, error, last },
            Event::CompensationRetried => Transition::CompensationRetried,
            Event::Restarted { run } => Transition::Restarted { run },
            Event::Finished { state } => Transition::Finished { state },
            Event::Unknown(unknown) => return Err(Event::Unknown(unknown)),
        })
    }
}

/// A saga as its log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// The saga's id.
    pub id: String,
    /// The definition's name (recovery finds the definition by it).
    pub name: String,
    /// The context it started with.
    pub context: Value,
    /// Its state.
    pub state: SagaState,
    /// Its history, oldest first.
    pub events: Vec<Event>,
    /// Who runs it now (none once terminal).
    pub owner: Option<String>,
    /// The current owner's fencing token.
    pub token: u64,
    /// Time left on the owner's lease (zero: ended, recovery may take it over).
    pub lease_remaining: Duration,
}

/// A saga in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaSummary {
    /// The saga's id.
    pub id: String,
    /// The definition's name.
    pub name: String,
    /// Its state.
    pub state: SagaState,
    /// Who runs it now.
    pub owner: Option<String>,
}

/// What the run knows of one step, kept by the step's position in the definition. The outputs a step reads
/// ([`StepCx::output`](crate::StepCx::output)) and a report holds ([`Outputs`]) are these, shared.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Slot {
    /// The step's output once it completed.
    pub(crate) output: Option<Value>,
    /// The last attempt started.
    pub(crate) attempts: u32,
    /// The last attempt of its compensation started.
    pub(crate) compensation_attempts: u32,
    /// An attempt may have acted: one ended Unknown, or the log shows one started and never ended (its owner died
    /// during it). Whatever the last attempt's outcome, the step may have taken effect.
    pub(crate) attempted_unknown: bool,
    /// It failed for good after an attempt that may have acted: it is compensated (with `null`).
    pub(crate) maybe_acted: bool,
    /// Its compensation succeeded.
    pub(crate) compensated: bool,
    /// Replaying a history: its last start has no end yet.
    pub(crate) open: bool,
}

impl Slot {
    /// A step nothing is known of yet.
    pub(crate) const EMPTY: Slot = Slot {
        output: None,
        attempts: 0,
        compensation_attempts: 0,
        attempted_unknown: false,
        maybe_acted: false,
        compensated: false,
        open: false,
    };
}

/// Where [`Outputs`] read the steps' names and slots: a run's shared progress (a report, a step's context), or
/// pairs listed by hand (a report rebuilt from a log's history).
pub(crate) trait StepSlots: Send + Sync {
    /// The steps' names, by position.
    fn names(&self) -> &[StepName];
    /// What the run knows of each step, by the same position.
    fn slots(&self) -> &[Slot];
}

/// Names and slots listed by hand.
struct Listed {
    names: Vec<StepName>,
    slots: Vec<Slot>,
}

impl StepSlots for Listed {
    fn names(&self) -> &[StepName] {
        &self.names
    }
    fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// The outputs of a saga's completed steps, by step name, in the definition's order (`report.outputs["ship"]`,
/// [`get`](Self::get), [`iter`](Self::iter)). Shared with the run that made them (one reference count): cloning
/// one copies no output.
#[derive(Clone)]
pub struct Outputs {
    steps: Arc<dyn StepSlots>,
}

impl Outputs {
    pub(crate) fn new(steps: Arc<dyn StepSlots>) -> Self {
        Outputs { steps }
    }

    /// The output of `step`; `None` if it did not complete.
    #[must_use]
    pub fn get(&self, step: &str) -> Option<&Value> {
        let at = self.steps.names().iter().position(|n| *n == *step)?;
        self.steps.slots().get(at)?.output.as_ref()
    }

    /// True when `step` completed.
    #[must_use]
    pub fn contains_key(&self, step: &str) -> bool {
        self.get(step).is_some()
    }

    /// The completed steps and their outputs, in the definition's order.
    pub fn iter(&self) -> impl Iterator<Item = (&StepName, &Value)> {
        let (names, slots) = (self.steps.names(), self.steps.slots());
        names.iter().zip(slots.iter()).filter_map(|(n, s)| s.output.as_ref().map(|o| (n, o)))
    }

    /// How many steps completed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.steps.slots().iter().filter(|s| s.output.is_some()).count()
    }

    /// True when no step completed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs { steps: Arc::new(Listed { names: Vec::new(), slots: Vec::new() }) }
    }
}

impl std::ops::Index<&str> for Outputs {
    type Output = Value;
    /// # Panics
    /// When `step` did not complete (as a map's index does).
    fn index(&self, step: &str) -> &Value {
        match self.get(step) {
            Some(v) => v,
            None => panic!("no output for step {step:?}: it did not complete"),
        }
    }
}

impl FromIterator<(StepName, Value)> for Outputs {
    /// Outputs from (step, output) pairs, in their order (a report rebuilt from a log's history).
    fn from_iter<I: IntoIterator<Item = (StepName, Value)>>(iter: I) -> Self {
        let (names, slots): (Vec<StepName>, Vec<Slot>) =
            iter.into_iter().map(|(n, v)| (n, Slot { output: Some(v), ..Slot::default() })).unzip();
        Outputs { steps: Arc::new(Listed { names, slots }) }
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Outputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Outputs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}
