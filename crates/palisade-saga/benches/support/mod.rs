//! What the saga bench, `examples/instr.rs` and `tests/allocations.rs` run: the seed bench's 4-step saga, and a
//! log that keeps nothing. (`benches/saga.rs` has it as `mod support`, the others by `#[path]`.)

#![allow(dead_code)] // each user takes what it needs

use std::time::Duration;

use palisade_core::PaymentError;
use palisade_saga::log::StoreFuture;
use palisade_saga::{Event, Saga, SagaLog, SagaRecord, SagaState, SagaSummary, Step, Transition};
use serde::{Deserialize, Serialize};

/// The seed bench's context, `{"i": i}`.
#[derive(Serialize, Deserialize)]
pub struct Ctx {
    pub i: u64,
}

/// Four steps `s0`..`s3`, each returning 1 with a compensation that does nothing; with `fail_last`, `s3` is
/// declined (Terminal: not retried) and `s2`, `s1`, `s0` are compensated.
pub fn four_steps(fail_last: bool) -> Saga<Ctx> {
    let mut b = Saga::<Ctx>::builder(if fail_last { "bench-compensated" } else { "bench" });
    for k in 0..4 {
        let fail = fail_last && k == 3;
        let step = Step::new(&format!("s{k}"), move |_cx| async move {
            if fail { Err(PaymentError::declined("card_declined")) } else { Ok(1u32) }
        })
        .compensate(|_cx, _out| async { Ok(()) });
        b = b.step(step);
    }
    b.build().expect("a valid definition")
}

/// A log that keeps nothing (every write succeeds): what the orchestrator costs by itself, without the memory
/// log's records. Not a log anyone should run sagas on; it is the floor of the memory-log figure.
#[derive(Clone)]
pub struct NullLog;

impl SagaLog for NullLog {
    fn create_shared<'a>(
        &'a self,
        _id: &'a palisade_saga::Name,
        _name: &'a str,
        _context: std::sync::Arc<dyn palisade_saga::log::ContextJson>,
        _owner: &'a str,
        _lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::ready(Ok(Some(1)))
    }
    fn append_owned<'a>(
        &'a self,
        _id: &'a str,
        _token: u64,
        _event: Event,
        _state: SagaState,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn append_two<'a>(
        &'a self,
        _id: &'a str,
        _token: u64,
        _first: Event,
        _first_state: SagaState,
        _then: Event,
        _state: SagaState,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn append_at<'a>(
        &'a self,
        _id: &'a str,
        _token: u64,
        _steps: &'a std::sync::Arc<[palisade_saga::StepName]>,
        _transition: Transition,
        _state: SagaState,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn append_two_at<'a>(
        &'a self,
        _id: &'a str,
        _token: u64,
        _steps: &'a std::sync::Arc<[palisade_saga::StepName]>,
        _first: Transition,
        _first_state: SagaState,
        _then: Transition,
        _state: SagaState,
    ) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn renew<'a>(&'a self, _id: &'a str, _token: u64, _lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn take_over<'a>(
        &'a self,
        _id: &'a str,
        _owner: &'a str,
        _lease: Duration,
        _state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::ready(Ok(None))
    }
    fn orphans<'a>(&'a self, _limit: usize) -> StoreFuture<'a, Vec<String>> {
        StoreFuture::ready(Ok(Vec::new()))
    }
    fn get<'a>(&'a self, _id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        StoreFuture::ready(Ok(None))
    }
    fn list<'a>(&'a self, _state: Option<SagaState>, _limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        StoreFuture::ready(Ok(Vec::new()))
    }
}
