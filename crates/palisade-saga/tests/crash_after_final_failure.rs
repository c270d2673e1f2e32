//! A step that failed for good (its `step_failed` written with `last: true`) does not run again when its owner
//! dies before `compensation_begun` is written: recovery compensates. A Terminal error (a decline, a fraud block) is
//! never retried (DESIGN.md), and the log already says the step failed for good. Before, recovery sent the step
//! to the gateway once more.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Hooked;
use palisade_core::PaymentError;
use palisade_saga::{Event, MemoryLog, Orchestrator, Saga, SagaLog, SagaState, Step};

fn saga(charges: Arc<AtomicUsize>, released: Arc<AtomicUsize>) -> Saga<u32> {
    Saga::<u32>::builder("pay")
        .step(Step::<u32>::new("reserve", |_cx| async { Ok::<_, PaymentError>("hold") }).compensate(move |_cx, _| {
            let released = released.clone();
            async move {
                released.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .step(Step::<u32>::new("charge", move |_cx| {
            let charges = charges.clone();
            async move {
                charges.fetch_add(1, Ordering::SeqCst);
                Err::<&str, _>(PaymentError::FraudBlocked { rule: None })
            }
        }))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_step_that_failed_for_good_is_not_run_again_after_a_crash_before_compensation_begun() {
    let log = MemoryLog::new();
    let (charges, released) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let dying = Hooked::new(log.clone()).dies_at(|e| matches!(e, Event::CompensationBegun { .. }));
    let o1 = Orchestrator::builder(dying).owner("dies").build();
    let s1 = o1.register(saga(charges.clone(), released.clone()));
    assert!(o1.start(&s1, "o-1", 1).await.is_err(), "the owner dies before compensation_begun");
    assert_eq!(charges.load(Ordering::SeqCst), 1);
    let record = log.get("o-1").await.unwrap().unwrap();
    assert!(
        record.events.iter().any(|e| matches!(e, Event::StepFailed { last: true, .. })),
        "the log says the charge failed for good: {:?}",
        record.events
    );

    tokio::time::advance(Duration::from_secs(11)).await;
    let o2 = Orchestrator::builder(log.clone()).owner("recovers").build();
    o2.register(saga(charges.clone(), released.clone()));
    let reports = o2.recover().await.unwrap();
    assert_eq!(reports.len(), 1);
    let report = reports.into_iter().next().unwrap().unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(released.load(Ordering::SeqCst), 1);
    assert_eq!(charges.load(Ordering::SeqCst), 1, "a Terminal (fraud-blocked) charge was retried after recovery");
    assert_eq!(report.error, Some(PaymentError::FraudBlocked { rule: None }), "the failure the log recorded");
}

/// In a group: one step fails for good while the other's end is never written (the owner dies there). Recovery
/// compensates both: the failed one is not run again, and the one cut off, which may have acted, is undone.
#[tokio::test(start_paused = true)]
async fn a_group_step_cut_off_beside_a_final_failure_is_compensated_not_run_again() {
    let log = MemoryLog::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let undone = Arc::new(AtomicUsize::new(0));
    let group = |runs: Arc<AtomicUsize>, undone: Arc<AtomicUsize>| {
        let (r1, r2) = (runs.clone(), runs);
        Saga::<u32>::builder("pay")
            .parallel([
                Step::<u32>::new("charge", move |_cx| {
                    let r = r1.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        Err::<&str, _>(PaymentError::FraudBlocked { rule: None })
                    }
                }),
                Step::<u32>::new("ship", move |_cx| {
                    let r = r2.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, PaymentError>("shp")
                    }
                })
                .compensate(move |_cx, out| {
                    let undone = undone.clone();
                    async move {
                        assert!(out.is_null(), "its output was never written: {out}");
                        undone.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }),
            ])
            .build()
            .unwrap()
    };
    let dying = Hooked::new(log.clone()).dies_at(|e| matches!(e, Event::StepDone { step, .. } if step == "ship"));
    let o1 = Orchestrator::builder(dying).owner("dies").build();
    let s1 = o1.register(group(runs.clone(), undone.clone()));
    assert!(o1.start(&s1, "o-2", 1).await.is_err(), "the owner dies before ship's end is written");
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    tokio::time::advance(Duration::from_secs(11)).await;
    let o2 = Orchestrator::builder(log.clone()).owner("recovers").build();
    o2.register(group(runs.clone(), undone.clone()));
    let report = o2.recover().await.unwrap().into_iter().next().unwrap().unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(runs.load(Ordering::SeqCst), 2, "neither step ran again");
    assert_eq!(undone.load(Ordering::SeqCst), 1, "the step cut off was compensated");
}
