//! Instructions per saga, for before/after comparisons that hold on a busy machine: a 4-step saga (each step
//! returns 1, each with a compensation that does nothing) on the memory log or on a log that keeps nothing, `n`
//! sagas one after the other on a current-thread runtime, as `benches/saga.rs` runs them.
//!
//! ```text
//! cargo build --release -p palisade-saga --example instr
//! valgrind --tool=callgrind --toggle-collect='*CoreGuard::block_on*' --callgrind-out-file=/dev/null \
//!     target/release/examples/instr memory 10000        # and again with 20000
//! ```
//!
//! Instructions per saga: the difference of the two totals (`Collected`) divided by the difference of `n`, which
//! cancels start-up and the runtime's own set-up (`--toggle-collect` also leaves out making the ids and dropping
//! the log). Collect under tokio's `CoreGuard::block_on`: `Runtime::block_on` is inlined in some builds (then
//! callgrind collects nothing), `CoreGuard::block_on` has stayed a function. Another crate has an example named
//! `instr` too (same output path): build this one last, or copy the binary, before measuring. Modes: `memory`, `null` (the orchestrator alone), `compensated` (memory log, the 4th step declined,
//! 3 compensated). Allocations per saga: `tests/allocations.rs`, or memcheck's "total heap usage" the same way.

use palisade_saga::{MemoryLog, Orchestrator, SagaState};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{Ctx, NullLog, four_steps};

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
