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

/// A step's name as events and reports hold it: shared with the definition, so recording that a step started
/// or ended copies no string. Reads as a `&str` (`Deref`, `as_str`, `Borrow<str>`, comparisons with `str`);
/// serialized as a plain JSON string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepName(Arc<str>);

impl StepName {
    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for StepName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StepName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StepName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for StepName {
    fn from(s: &str) -> Self {
        StepName(s.into())
    }
}

impl From<String> for StepName {
    fn from(s: String) -> Self {
        StepName(s.into())
    }
}

impl From<Arc<str>> for StepName {
    fn from(s: Arc<str>) -> Self {
        StepName(s)
    }
}

impl From<StepName> for String {
    fn from(s: StepName) -> Self {
        s.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for StepName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for StepName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for StepName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for StepName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StepName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(StepName::from)
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
        /// The error.
        error: PaymentError,
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
        /// The error.
        error: PaymentError,
        /// No further attempt.
        #[serde(rename = "final")]
        last: bool,
    },
    /// A compensation that failed for good is tried again, by hand.
    CompensationRetried,
    /// The saga reached a terminal state.
    Finished {
        /// The state.
        state: SagaState,
    },
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
