//! Heap allocations per saga on the memory log, counted by dhat's heap profiler (testing mode), so the cuts of
//! issue 20 stay made: a completed 4-step saga (10 log writes) makes 7 allocations (the saga id, and the run's
//! shared part (id, step names, context) behind one `Arc`, each shared by the run and the log's record; the run's
//! progress (its steps' slots), shared with the steps' contexts; one `Box` per step future; the log's record keeps
//! its first entries in place), a compensated one 16 (among them the declined step's error, boxed in its
//! `step_failed` event, and the record's vector for the entries past those in place). Each event costs none (step
//! names are kept by position), nor does the report (it shares the run's id, the definition's name and the
//! progress).
//! Runs as a plain `main` (`harness = false`), so no other thread allocates while it counts.

use palisade_saga::{MemoryLog, Orchestrator, SagaState};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{Ctx, four_steps};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Allocations per saga over `N` sagas, after `N` that grow the log's vector and index.
fn per_saga(fail_last: bool, want: SagaState) -> f64 {
    const N: usize = 2_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let orchestrator = Orchestrator::builder(MemoryLog::new()).owner("alloc-test").build();
    let saga = orchestrator.register(four_steps(fail_last));
    let ids: Vec<String> = (0..2 * N).map(|i| format!("saga-{i}")).collect();
    let run = |ids: &[String]| {
        rt.block_on(async {
            for (i, id) in ids.iter().enumerate() {
                let report = orchestrator.start(&saga, id, Ctx { i: i as u64 }).await.unwrap();
                assert_eq!(report.state, want);
            }
        })
    };
    run(&ids[..N]);
    let before = dhat::HeapStats::get().total_blocks;
    run(&ids[N..]);
    (dhat::HeapStats::get().total_blocks - before) as f64 / N as f64
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let completed = per_saga(false, SagaState::Completed);
    let compensated = per_saga(true, SagaState::Compensated);
    println!("allocations per saga on the memory log: completed {completed:.2}, compensated {compensated:.2}");
    // A growing vector or map adds a fraction of an allocation per saga; a new allocation per saga or per event
    // does not fit under these bounds.
    assert!(completed < 7.5, "a completed 4-step saga made {completed:.2} allocations (7 expected)");
    assert!(compensated < 16.5, "a compensated 4-step saga made {compensated:.2} allocations (16 expected)");
}
