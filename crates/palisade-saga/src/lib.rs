//! Sagas for payments: a checkout's steps (reserve stock, authorize, capture, ship) each paired with a
//! compensation that undoes it (release, void, refund), run by an orchestrator that writes every transition to a
//! durable log **around** its effect, so a crash at any instant leaves a history another process can go on from.
//!
//! - **Steps** are async actions over a serde context and the outputs of earlier steps ([`Step`], [`StepCx`]).
//!   Their errors are classified with [`palisade_core::Outcome`]: `Retriable` and `Unknown` are retried with
//!   backoff; `Terminal` (a decline) starts compensation. Every step has a **step key** ([`StepCx::key`], derived
//!   from saga id and step name) to pass to the gateway as its idempotency key, so running a step again, after a
//!   retry or a crash, cannot charge twice.
//! - **Compensations** run in reverse order (a parallel group's together), retried with backoff; one that still
//!   fails ends the saga in [`SagaState::FailedCompensation`], the page-the-on-call state, with an error log, a
//!   metric and [`Orchestrator::retry_compensation`].
//! - **The log** ([`SagaLog`]: [`MemoryLog`], `RedisLog`, `PostgresLog`) gets a step's start before the action
//!   runs and its end after; each write is fenced by the owner's token. **Recovery**
//!   ([`Orchestrator::recover`]) takes over sagas whose owner's lease ended and resumes them: an in-doubt step runs
//!   again under its step key, a compensation goes on.
//!
//! ```
//! use palisade_core::PaymentError;
//! use palisade_saga::{MemoryLog, Orchestrator, Saga, SagaState, Step};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { sku: String, cents: i64 }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let checkout = Saga::<Order>::builder("checkout")
//!     .step(Step::<Order>::new("reserve", |cx| async move { Ok(format!("hold-{}", cx.context().sku)) })
//!         .compensate(|_cx, _hold| async { Ok(()) }))
//!     .step(Step::<Order>::new("charge", |cx| async move {
//!         // Pass cx.key() to the gateway as the idempotency key.
//!         if cx.context().cents > 100_00 { Err(PaymentError::declined("insufficient_funds")) } else { Ok("ch_1") }
//!     }))
//!     .build()
//!     .unwrap();
//! let orchestrator = Orchestrator::builder(MemoryLog::new()).build();
//! let checkout = orchestrator.register(checkout);
//!
//! let ok = orchestrator.start(&checkout, "order-1", Order { sku: "mug".into(), cents: 12_00 }).await.unwrap();
//! assert_eq!(ok.state, SagaState::Completed);
//! let declined = orchestrator.start(&checkout, "order-2", Order { sku: "tv".into(), cents: 900_00 }).await.unwrap();
//! assert_eq!(declined.state, SagaState::Compensated); // the stock hold was released
//! # });
//! ```
//!
//! See `docs/saga.md`.

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod defaults;
mod definition;
mod error;
pub mod log;
mod model;
mod orchestrator;

pub use definition::{
    Context, Saga, SagaBuilder, Step, StepCx, compensation_key, compensation_key_of_run, step_key, step_key_of_run,
};
pub use error::{DefinitionError, SagaError};
#[cfg(feature = "postgres")]
pub use log::PostgresLog;
#[cfg(feature = "redis")]
pub use log::RedisLog;
pub use log::{MemoryLog, SagaLog};
pub use model::{Event, Name, Outputs, SagaRecord, SagaState, SagaSummary, StepName, Transition, UnknownEvent};
pub use orchestrator::{Orchestrator, OrchestratorBuilder, Recovery, SagaReport, latest_run};
