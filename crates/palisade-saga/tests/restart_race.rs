//! Two restarts of one saga that interleave: one read the saga (run 0, compensated), then stalled before its
//! take-over while the other restarted it (run 1, compensated again). The stalled one checks the run again after
//! its take-over and does nothing (`Superseded`): a third run would have been decided on what the first run did,
//! and, numbered from the stale read, would have reused the second run's keys (a gateway answering it with what it
//! did for that run, a stock hold found already written and released).

mod common;

use std::sync::Arc;

use common::Hooked;
use palisade_core::PaymentError;
use palisade_saga::{Event, MemoryLog, Orchestrator, Saga, SagaLog, SagaState, Step};
use parking_lot::Mutex;

/// reserve (records its key) → charge (the gateway is down: Retriable, once).
fn saga(keys: Arc<Mutex<Vec<String>>>) -> Saga<u32> {
    Saga::<u32>::builder("pay")
        .step(
            Step::<u32>::new("reserve", move |cx| {
                let keys = keys.clone();
                async move {
                    keys.lock().push(cx.key().to_string());
                    Ok::<_, PaymentError>("hold")
                }
            })
            .compensate(|_cx, _| async { Ok(()) }),
        )
        .step(
            Step::<u32>::new("charge", |_cx| async {
                Err::<&str, _>(PaymentError::GatewayUnavailable { retry_after: None })
            })
            .attempts(1),
        )
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_restarts_that_interleave_get_runs_of_their_own() {
    let log = MemoryLog::new();
    let keys = Arc::new(Mutex::new(Vec::new()));
    let gated = Hooked::new(log.clone()).gate_take_over();
    let a = Orchestrator::builder(gated.clone()).owner("a").build();
    a.register(saga(keys.clone()));
    let b = Orchestrator::builder(log.clone()).owner("b").build();
    let sb = b.register(saga(keys.clone()));

    let first = b.start(&sb, "s", 1).await.unwrap();
    assert_eq!(first.state, SagaState::Compensated);

    // A reads the saga (compensated, run 0) and stops just before its take-over.
    let restart_a = tokio::spawn(async move { a.restart("s", 0).await });
    gated.reached.notified().await;
    // B restarts it meanwhile: run 1, compensated again.
    let second = b.restart("s", 0).await.unwrap();
    assert_eq!(second.state, SagaState::Compensated);
    // A goes on: its take-over succeeds (the saga is compensated), and it finds run 1, not the run 0 it judged.
    gated.gate.notify_one();
    let third = restart_a.await.unwrap();
    assert!(matches!(third, Err(palisade_saga::SagaError::Superseded { run: 1, .. })), "{third:?}");

    let record = log.get("s").await.unwrap().unwrap();
    let runs: Vec<u32> = record
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Restarted { run } => Some(*run),
            _ => None,
        })
        .collect();
    let keys = keys.lock().clone();
    assert_eq!(keys.len(), 2, "two runs reserved: {keys:?}");
    assert_ne!(keys[0], keys[1], "each run has keys of its own");
    assert_eq!(runs, [1], "the stalled restart began no run");
    assert_eq!(record.state, SagaState::Compensated);
}
