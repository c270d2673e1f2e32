//! Errors.

use palisade_store::StoreError;

/// A definition that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A saga needs at least one step.
    #[error("a saga needs at least one step")]
    NoSteps,
    /// A parallel group needs at least one step.
    #[error("a parallel group needs at least one step")]
    EmptyGroup,
    /// Step names identify steps in the log and in step keys, so they are unique.
    #[error("two steps are named {0:?}; step names must be unique within a saga")]
    DuplicateStep(String),
}

/// Why the orchestrator could not run (or go on running) a saga. A saga that failed and was compensated is not an
/// error: it is a [`SagaReport`](crate::SagaReport) in state `Compensated`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The log could not be written or read. The saga stays where its log says; recovery resumes it once the log
    /// answers and its lease ends.
    #[error("saga log unavailable: {0}")]
    Log(#[from] StoreError),
    /// Another owner took the saga over (this one's lease ended): this one stopped without acting further.
    #[error("saga {0} was taken over by another owner; this one stopped")]
    Fenced(String),
    /// A saga with this id exists already.
    #[error("a saga with id {0} exists already")]
    AlreadyExists(String),
    /// No saga with this id.
    #[error("no saga with id {0}")]
    NotFound(String),
    /// No definition with this name is registered with the orchestrator.
    #[error("no saga definition named {0} is registered")]
    UnknownDefinition(String),
    /// The saga's history holds an event this version cannot read ([`Event::Unknown`](crate::Event::Unknown)):
    /// a newer version of this crate wrote it. The saga was not taken over; an instance of that version resumes
    /// it.
    #[error(
        "saga {id} holds a {kind:?} event this version cannot read: it was written by a newer version of \
         palisade-saga; left for an instance of that version to resume (upgrade this one)"
    )]
    UnknownEvent {
        /// The saga.
        id: String,
        /// The event's kind, as written.
        kind: String,
    },
    /// The saga's context could not be stored or read back as the definition's type.
    #[error("saga context: {0}")]
    Context(String),
    /// [`Orchestrator::restart`](crate::Orchestrator::restart) was asked to restart a run of the saga that is no
    /// longer its latest: another restart ran meanwhile. Nothing was done; read the saga again to decide.
    #[error("saga {id} was restarted meanwhile: its latest run is {run}")]
    Superseded {
        /// The saga.
        id: String,
        /// Its latest run.
        run: u32,
    },
    /// The saga is not in a state that allows this (for example a retry of a compensation that did not fail).
    #[error("saga {id} is {state}, not {wanted}")]
    WrongState {
        /// The saga.
        id: String,
        /// Where it is.
        state: crate::SagaState,
        /// Where it had to be.
        wanted: crate::SagaState,
    },
}
