//! Instructions per saga, for before/after comparisons that hold on a busy machine: a
//! 4-step saga (each step returns 1, each with a compensation that does nothing) on the memory log or on a log
//! that keeps nothing, `n` sagas one after the other on a current-thread runtime, as `benches/saga.rs` runs them.
//!
//! ```text
//! cargo build --release -p palisade-saga --example instr
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instr memory 20000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/instr memory 40000
//! ```
//!
//! Instructions per saga: the difference of the two totals (`Collected`) divided by the difference of `n`, which
//! cancels start-up and the runtime's own set-up. Modes: `memory`, `null` (the orchestrator alone),
//! `compensated` (memory log, the 4th step declined, 3 compensated). Allocations per saga: `tests/allocations.rs`.

use std::time::Duration;

use palisade_core::PaymentError;
use palisade_saga::log::StoreFuture;
use palisade_saga::{Event, MemoryLog, Orchestrator, Saga, SagaLog, SagaRecord, SagaState, SagaSummary, Step};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ctx {
    i: u64,
}

fn four_steps(fail_last: bool) -> Saga<Ctx> {
    let mut b = Saga::<Ctx>::builder("bench");
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

struct NullLog;

impl SagaLog for NullLog {
    fn create<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a serde_json::Value,
        _: &'a str,
        _: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::ready(Ok(Some(1)))
    }
    fn append<'a>(&'a self, _: &'a str, _: u64, _: &'a Event, _: SagaState) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn renew<'a>(&'a self, _: &'a str, _: u64, _: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Ok(true))
    }
    fn take_over<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Duration,
        _: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::ready(Ok(None))
    }
    fn orphans<'a>(&'a self, _: usize) -> StoreFuture<'a, Vec<String>> {
        StoreFuture::ready(Ok(Vec::new()))
    }
    fn get<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        StoreFuture::ready(Ok(None))
    }
    fn list<'a>(&'a self, _: Option<SagaState>, _: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        StoreFuture::ready(Ok(Vec::new()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("memory", String::as_str);
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let orchestrator = match mode {
        "null" => Orchestrator::builder(NullLog),
        _ => Orchestrator::builder(MemoryLog::new()),
    }
    .owner("bench")
    .build();
    let (saga, want) = match mode {
        "compensated" => (orchestrator.register(four_steps(true)), SagaState::Compensated),
        _ => (orchestrator.register(four_steps(false)), SagaState::Completed),
    };
    // The ids are made before counting: the caller's, not the saga's.
    let ids: Vec<String> = (0..n).map(|i| format!("saga-{i}")).collect();
    rt.block_on(async {
        for (i, id) in ids.iter().enumerate() {
            let report = orchestrator.start(&saga, id, Ctx { i: i as u64 }).await.expect("the log answers");
            assert_eq!(report.state, want);
        }
    });
}
