//! The saga orchestrator on the memory log, under paused time: the happy path, retries, reverse-order
//! compensation, failed compensations and their retry, crashes at every boundary with recovery, fencing,
//! concurrent recovery, parallel groups and deadlines.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::real::Nothing;
use common::*;
use palisade_core::{Operation, PaymentError};
use palisade_saga::{Event, MemoryLog, Orchestrator, Saga, SagaLog, SagaState, Step, step_key};
use palisade_sim::Fault;

const LEASE: Duration = Duration::from_secs(10);

fn advance() -> impl Fn(Duration) -> futures_util::future::BoxFuture<'static, ()> {
    |d| Box::pin(tokio::time::advance(d))
}

#[tokio::test(start_paused = true)]
async fn a_checkout_completes_and_each_step_sees_the_ones_before() {
    let (log, world) = (MemoryLog::new(), World::new());
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-1", checkout("order-1")).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(report.error, None);
    assert_eq!(report.outputs["ship"], "ship-order-1");
    assert_eq!(world.ledger("order-1", Operation::Authorize), 1);
    assert_eq!(world.ledger("order-1", Operation::Capture), 1);
    // The gateway saw the step keys: the same for the same saga and step, wherever it runs.
    let keys: Vec<_> = world.sim.entries_for("order-1").into_iter().filter_map(|e| e.gateway_key).collect();
    assert_eq!(keys, [step_key("order-1", "authorize").to_string(), step_key("order-1", "capture").to_string()]);
    // Every start was logged before its end.
    let record = log.get("order-1").await.unwrap().unwrap();
    let mut open = None;
    for e in &record.events {
        match e {
            Event::StepStarted { step, .. } => assert!(open.replace(step.clone()).is_none(), "one step at a time"),
            Event::StepDone { step, .. } => assert_eq!(open.take().as_deref(), Some(step.as_str())),
            _ => {}
        }
    }
    assert_eq!(record.owner, None);
    assert!(matches!(
        o.start(&saga, "order-1", checkout("order-1")).await,
        Err(palisade_saga::SagaError::AlreadyExists(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn two_network_errors_are_retried_with_the_same_key_and_the_saga_completes() {
    let (log, world) = (MemoryLog::new(), World::new());
    world.sim.script(Operation::Authorize, [Fault::FailBeforeCommit, Fault::FailAfterCommit]);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-2", checkout("order-2")).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(world.calls_of("authorize"), 3, "two failures, then the answer");
    assert_eq!(world.ledger("order-2", Operation::Authorize), 1, "the lost answer's authorization is the one kept");
    let record = log.get("order-2").await.unwrap().unwrap();
    let failures = record.events.iter().filter(|e| matches!(e, Event::StepFailed { last: false, .. })).count();
    assert_eq!(failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_shipment_refunds_the_capture_and_releases_the_stock_in_reverse_order() {
    compensates_in_reverse_order(MemoryLog::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_declined_authorization_releases_the_stock_and_is_not_compensated_itself() {
    let (log, world) = (MemoryLog::new(), World::new());
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let mut ctx = checkout("order-3");
    ctx.token = "tok_chargeDeclined".into();
    let report = o.start(&saga, "order-3", ctx).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated, "a decline is never FailedCompensation");
    assert_eq!(world.calls_of("authorize"), 1, "a decline is not retried");
    let record = log.get("order-3").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events), ["reserve"]);
    assert_eq!(world.held("mug"), 0);
    assert_eq!(world.voids.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_capture_that_fails_for_good_voids_the_authorization() {
    let (log, world) = (MemoryLog::new(), World::new());
    world.sim.script(Operation::Capture, [Fault::FailBeforeCommit; 3]);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-4", checkout("order-4")).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(world.calls_of("capture"), 3, "retried up to its attempts");
    assert_eq!(world.voids.load(Ordering::SeqCst), 1, "an authorization is voided");
    assert_eq!(world.ledger("order-4", Operation::Void), 1);
    assert_eq!(world.ledger("order-4", Operation::Refund), 0);
}

#[tokio::test(start_paused = true)]
async fn a_step_whose_lost_answer_is_followed_by_retriable_failures_is_still_compensated() {
    // The first authorization commits and its answer is lost (Unknown); the retries are refused (Retriable). The
    // authorization exists, so it must be compensated (with null: its id was never seen), not left to lapse.
    let (log, world) = (MemoryLog::new(), World::new());
    let refused = Fault::Unavailable { retry_after: None };
    world.sim.script(Operation::Authorize, [Fault::FailAfterCommit, refused, refused]);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-lost", checkout("order-lost")).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(world.ledger("order-lost", Operation::Authorize), 1, "the lost answer's authorization happened");
    let record = log.get("order-lost").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events), ["authorize", "reserve"], "the authorization is compensated too");

    // The same after a crash: a step started before its owner died, then refused after the take-over.
    let world = World::new();
    *world.crash.lock() = Some(("authorize".to_owned(), Crash::AfterEffect));
    let first = Orchestrator::builder(log.clone()).owner("first").lease(LEASE).build();
    let saga = first.register(checkout_saga(&world));
    let running = tokio::spawn({
        let (first, saga) = (first.clone(), saga.clone());
        async move { first.start(&saga, "order-doubt", checkout("order-doubt")).await }
    });
    world.crashed.notified().await;
    running.abort();
    let _ = running.await;
    world.sim.script(Operation::Authorize, [refused; 3]);
    tokio::time::advance(LEASE).await;
    let second = Orchestrator::builder(log.clone()).owner("second").lease(LEASE).build();
    second.register(checkout_saga(&world));
    let report = second.resume("order-doubt").await.unwrap().expect("taken over");
    assert_eq!(report.state, SagaState::Compensated);
    let record = log.get("order-doubt").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events), ["authorize", "reserve"], "the step in doubt is compensated");
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_keeps_failing_ends_in_failed_compensation_and_can_be_retried() {
    let (log, world) = (MemoryLog::new(), World::new());
    world.ship_fails.store(true, Ordering::SeqCst);
    world.refunds_fail.store(usize::MAX, Ordering::SeqCst);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-5", checkout("order-5")).await.unwrap();
    assert_eq!(report.state, SagaState::FailedCompensation);
    assert!(matches!(report.error, Some(PaymentError::SagaCompensationFailed { .. })), "{:?}", report.error);
    assert_eq!(world.held("mug"), 1, "compensation stopped at the refund: earlier steps are not undone yet");
    let listed = o.list(Some(SagaState::FailedCompensation), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let record = log.get("order-5").await.unwrap().unwrap();
    let refund_tries = record
        .events
        .iter()
        .filter(|e| matches!(e, Event::CompensationStarted { step, .. } if step == "capture"))
        .count();
    assert_eq!(refund_tries, palisade_saga::defaults::DEFAULT_COMPENSATION_ATTEMPTS as usize);

    // Retrying before the cause is fixed fails again, and is allowed again.
    world.refunds_fail.store(0, Ordering::SeqCst);
    let retried = o.retry_compensation("order-5").await.unwrap();
    assert_eq!(retried.state, SagaState::Compensated);
    assert_eq!(world.ledger("order-5", Operation::Refund), 1);
    assert_eq!(world.held("mug"), 0);
    assert!(matches!(
        o.retry_compensation("order-5").await,
        Err(palisade_saga::SagaError::WrongState { state: SagaState::Compensated, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn steps_and_compensations_wait_as_long_as_the_failure_says() {
    use palisade_core::backoff::{Backoff, Jitter};
    use tokio::time::Instant;
    let tiny =
        Backoff { base: Duration::from_millis(1), max: Duration::from_millis(1), factor: 1.0, jitter: Jitter::None };
    let limited = |secs| PaymentError::RateLimited { retry_after: Some(Duration::from_secs(secs)) };
    let step_tries: Arc<parking_lot::Mutex<Vec<Instant>>> = Arc::default();
    let undo_tries: Arc<parking_lot::Mutex<Vec<Instant>>> = Arc::default();
    let (s, u) = (step_tries.clone(), undo_tries.clone());
    let first = Step::<()>::new("charge", move |_| {
        let s = s.clone();
        async move {
            let mut tries = s.lock();
            tries.push(Instant::now());
            if tries.len() == 1 { Err(limited(7)) } else { Ok(1) }
        }
    })
    .compensate(move |_, _| {
        let u = u.clone();
        async move {
            let mut tries = u.lock();
            tries.push(Instant::now());
            if tries.len() == 1 { Err(limited(9)) } else { Ok(()) }
        }
    })
    .backoff(tiny)
    .compensation_backoff(tiny);
    let second = Step::<()>::new("ship", |_| async { Err::<u8, _>(PaymentError::invalid_request("refused")) });
    let saga = Saga::builder("retry-after").step(first).step(second).build().unwrap();
    let o = Orchestrator::builder(MemoryLog::new()).build();
    let saga = o.register(saga);
    let report = o.start(&saga, "s-1", ()).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    let (steps, undos) = (step_tries.lock().clone(), undo_tries.lock().clone());
    assert_eq!((steps.len(), undos.len()), (2, 2));
    assert!(steps[1] - steps[0] >= Duration::from_secs(7), "the step was retried after {:?}", steps[1] - steps[0]);
    assert!(
        undos[1] - undos[0] >= Duration::from_secs(9),
        "the compensation was retried after {:?}",
        undos[1] - undos[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_boundary_is_recovered_with_each_effect_once() {
    crash_at_every_boundary(MemoryLog::new(), LEASE, advance()).await;
}

#[tokio::test(start_paused = true)]
async fn a_live_owner_keeps_its_saga_and_a_dead_owner_s_late_writes_are_refused() {
    let (log, world) = (MemoryLog::new(), World::new());
    *world.crash.lock() = Some(("capture".into(), Crash::BeforeEffect));
    let first = Orchestrator::builder(log.clone()).owner("first").lease(LEASE).build();
    let saga = first.register(checkout_saga(&world));
    let running = tokio::spawn({
        let (first, saga) = (first.clone(), saga.clone());
        async move { first.start(&saga, "order-6", checkout("order-6")).await }
    });
    world.crashed.notified().await;
    // Alive (stuck in a step, but renewing): nobody may take it over, for two and a half leases (within the
    // step's own 30 s deadline). Time moves a second at a time, so the heartbeat runs as it would.
    for _ in 0..25 {
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let second = Orchestrator::builder(log.clone()).owner("second").lease(LEASE).build();
    second.register(checkout_saga(&world));
    assert!(second.recover().await.unwrap().is_empty(), "a live owner's saga is not an orphan");
    running.abort();
    let _ = running.await;
    let stale = log.get("order-6").await.unwrap().unwrap().token;
    tokio::time::advance(LEASE).await;
    let report = second.resume("order-6").await.unwrap().unwrap();
    assert_eq!(report.state, SagaState::Completed);
    // The first owner's token no longer writes.
    let late = Event::StepDone { step: "capture".into(), output: serde_json::json!("late") };
    assert!(!log.append("order-6", stale, &late, SagaState::Running).await.unwrap());
    assert!(!log.renew("order-6", stale, LEASE).await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn concurrent_recovery_workers_resume_a_saga_once() {
    // The scenario every log runs (tests/common/real.rs), here under paused time.
    common::real::concurrent_recovery_resumes_once(MemoryLog::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_parallel_group_runs_together_and_is_compensated_together() {
    common::real::a_parallel_group_is_compensated_together(MemoryLog::new()).await;
}

#[tokio::test(start_paused = true)]
async fn a_step_past_its_deadline_is_retried_and_a_saga_past_its_deadline_compensates() {
    let log = MemoryLog::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let slow_once = Step::<Nothing>::new("slow_once", move |_cx| {
        let c = c.clone();
        async move {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(())
        }
    })
    .deadline(Duration::from_secs(1));
    let saga = Saga::builder("deadlines").step(slow_once).build().unwrap();
    let o = Orchestrator::builder(log.clone()).build();
    let report = o.start(&o.register(saga), "d-1", Nothing).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the attempt past its deadline counted as Unknown and was retried");

    let undone = Arc::new(AtomicUsize::new(0));
    let u = undone.clone();
    let slow = Step::<Nothing>::new("slow", |_cx| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    })
    .compensate(move |_cx, _| {
        let u = u.clone();
        async move {
            u.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let never = Step::<Nothing>::new("never", |_cx| async { Ok(()) });
    let saga = Saga::builder("saga_deadline").step(slow).step(never).deadline(Duration::from_secs(2)).build().unwrap();
    let report = o.start(&o.register(saga), "d-2", Nothing).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(undone.load(Ordering::SeqCst), 1);
    assert!(!report.outputs.contains_key("never"), "no step starts after the deadline");
}

#[test]
fn definitions_are_checked() {
    let s = || Step::<Nothing>::new("x", |_cx| async { Ok(()) });
    assert!(matches!(Saga::<Nothing>::builder("e").build(), Err(palisade_saga::DefinitionError::NoSteps)));
    assert!(matches!(
        Saga::builder("d").step(s()).step(s()).build(),
        Err(palisade_saga::DefinitionError::DuplicateStep(n)) if n == "x"
    ));
    assert!(matches!(
        Saga::<Nothing>::builder("g").parallel([]).build(),
        Err(palisade_saga::DefinitionError::EmptyGroup)
    ));
    assert_ne!(step_key("a", "bc"), step_key("ab", "c"), "keys are length-delimited");
    assert_eq!(step_key("a", "b"), step_key("a", "b"));
    assert_ne!(step_key("a", "b"), palisade_saga::compensation_key("a", "b"));
}

/// The memory log keeps the context itself and serializes it only when a record is read (docs/saga.md): a
/// context that does not serialize starts and runs, and reading its record fails (a log error, not a panic).
#[tokio::test(start_paused = true)]
async fn an_unserializable_context_runs_on_the_memory_log_and_its_record_does_not_read() {
    use common::real::Unserializable;
    let saga = Saga::<Unserializable>::builder("unserializable")
        .step(Step::new("one", |_cx| async { Ok::<_, PaymentError>(1) }))
        .build()
        .unwrap();
    let log = MemoryLog::new();
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(saga);
    let report = o.start(&saga, "bad-context", Unserializable::from([(vec![1], 1)])).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert!(matches!(o.get("bad-context").await, Err(palisade_saga::SagaError::Log(_))));
}

#[tokio::test(start_paused = true)]
async fn a_compensated_saga_restarts_with_keys_of_its_own() {
    common::real::a_compensated_saga_restarts_with_keys_of_its_own(MemoryLog::new()).await;
}

/// The log's conformance scenario (tests/common/real.rs, run on Redis and PostgreSQL too) on the memory log,
/// under paused time (its sleeps pass at once).
#[tokio::test(start_paused = true)]
async fn memory_log_conformance() {
    common::real::conformance(&MemoryLog::new()).await;
    common::real::orphans_are_paged_by_id(MemoryLog::new()).await;
}

/// A saga longer than the run keeps in place (its steps' progress in a vector of their own), whose steps each read
/// every output before theirs, one of which keeps its step context past its step (the run then writes a copy of
/// the outputs, and the kept context still reads what it saw); compensated in reverse with each output.
#[tokio::test(start_paused = true)]
async fn a_long_saga_s_steps_see_every_output_before_theirs_even_past_a_kept_context() {
    const STEPS: u64 = 7;
    let kept = Arc::new(parking_lot::Mutex::new(None));
    let undone = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut b = Saga::<u64>::builder("long");
    for k in 0..STEPS {
        let (kept, undone) = (kept.clone(), undone.clone());
        let step = Step::new(&format!("s{k}"), move |cx| {
            let kept = kept.clone();
            async move {
                let seen: Vec<u64> = (0..k).map(|j| cx.output::<u64>(&format!("s{j}")).unwrap()).collect();
                assert_eq!(seen, (0..k).map(|j| j * 10 + cx.context()).collect::<Vec<_>>(), "step s{k}");
                assert_eq!(cx.outputs().len(), k as usize);
                if k == STEPS - 1 {
                    return Err(PaymentError::declined("card_declined"));
                }
                if k == 2 {
                    *kept.lock() = Some(cx);
                }
                Ok(k * 10 + 1)
            }
        })
        .compensate(move |cx, out| {
            let undone = undone.clone();
            async move {
                undone.lock().push((cx.step().to_owned(), out));
                Ok(())
            }
        });
        b = b.step(step);
    }
    let orchestrator = Orchestrator::builder(MemoryLog::new()).lease(LEASE).build();
    let saga = orchestrator.register(b.build().unwrap());
    let report = orchestrator.start(&saga, "long-1", 1).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(report.outputs.len(), STEPS as usize - 1);
    assert_eq!(report.outputs["s5"], serde_json::json!(51));
    let undone = undone.lock().clone();
    let want: Vec<(String, serde_json::Value)> =
        (0..STEPS - 1).rev().map(|k| (format!("s{k}"), serde_json::json!(k * 10 + 1))).collect();
    assert_eq!(undone, want);
    // The kept context still reads what its step saw: s0 and s1, and not the outputs written after it.
    let kept = kept.lock().take().unwrap();
    assert_eq!((kept.step(), kept.output::<u64>("s1"), kept.output::<u64>("s2")), ("s2", Some(11), None));
}

#[tokio::test(start_paused = true)]
async fn text_with_a_nul_is_kept() {
    common::real::text_with_a_nul_is_kept(MemoryLog::new()).await;
}

/// Moves paused time on by `total`, `step` at a time, so the spawned tasks run in between.
async fn tick(total: Duration, step: Duration) {
    let mut t = Duration::ZERO;
    while t < total {
        tokio::time::advance(step).await;
        t += step;
    }
}

/// A one-step saga on `u32` contexts whose step, for context 1, does `slow_or_panic` on its first attempt.
fn one_step(slow_or_panic: bool) -> Saga<u32> {
    let tries = Arc::new(AtomicUsize::new(0));
    Saga::<u32>::builder("pay")
        .step(Step::<u32>::new("charge", move |cx| {
            let first = *cx.context() == 1 && tries.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first && slow_or_panic {
                    // The gateway's 429 asks for ten minutes, which the step honours.
                    return Err(PaymentError::RateLimited { retry_after: Some(Duration::from_secs(600)) });
                }
                assert!(!first, "a bug in one saga's step");
                Ok("ok")
            }
        }))
        .build()
        .unwrap()
}

/// The recovery worker runs each saga it takes over on a task of its own: a recovered saga waiting out a
/// gateway's `Retry-After`, or one whose step panics, does not keep the worker from the sagas orphaned after it.
/// Before, one pass ran its sagas to their end before the next, so a second dead instance's checkout stayed
/// `running` for the ten minutes; and a panic ended the worker for good.
#[tokio::test(start_paused = true)]
async fn one_recovered_saga_holds_up_no_other() {
    for waits in [true, false] {
        let log = MemoryLog::new();
        log.create("s1", "pay", &serde_json::json!(1), "dead", Duration::from_secs(1)).await.unwrap();
        let worker = Orchestrator::builder(log.clone()).owner("worker").build();
        worker.register(one_step(waits));
        let recovery = worker.spawn_recovery(Duration::from_secs(1));
        tick(Duration::from_secs(3), Duration::from_millis(100)).await;
        let s1 = log.get("s1").await.unwrap().unwrap();
        assert_eq!(s1.state, SagaState::Running);
        if waits {
            assert_eq!(s1.owner.as_deref(), Some("worker"), "s1 taken over and waiting");
        }
        // Another instance dies, leaving s2.
        log.create("s2", "pay", &serde_json::json!(2), "dead-2", Duration::from_secs(1)).await.unwrap();
        tick(Duration::from_secs(15), Duration::from_secs(1)).await;
        let s2 = log.get("s2").await.unwrap().unwrap();
        assert_eq!(s2.state, SagaState::Completed, "waits: {waits}: {:?} owned by {:?}", s2.state, s2.owner);
        assert!(!recovery.is_finished());
        if !waits {
            // The panicked run's lease ended; a later pass resumed s1, whose step now succeeds.
            assert_eq!(log.get("s1").await.unwrap().unwrap().state, SagaState::Completed);
        }
        recovery.abort();
    }
}

/// A graceful stop of the recovery worker (a process shutting down) takes nothing over any more, lets the sagas it
/// resumed reach their end within the deadline, and names and stops those that cannot: their lease ends and the
/// next worker resumes them. Before, the worker could only be aborted, which dropped every resumed saga mid-step.
#[tokio::test(start_paused = true)]
async fn a_recovery_shutdown_lets_resumed_sagas_finish_and_names_those_past_its_deadline() {
    let log = MemoryLog::new();
    // s1 waits out a ten-minute Retry-After on its first attempt; s2 runs through after a short wait.
    log.create("s1", "pay", &serde_json::json!(1), "dead", Duration::from_secs(1)).await.unwrap();
    let worker = Orchestrator::builder(log.clone()).owner("worker").build();
    worker.register(one_step(true));
    let recovery = worker.spawn_recovery(Duration::from_secs(1));
    tick(Duration::from_secs(3), Duration::from_millis(100)).await;
    assert_eq!(log.get("s1").await.unwrap().unwrap().owner.as_deref(), Some("worker"), "s1 taken over");
    let stopping = tokio::spawn(recovery.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)));
    // Orphaned after the stop began: not taken over by a worker that is shutting down.
    log.create("s3", "pay", &serde_json::json!(3), "dead-3", Duration::from_secs(1)).await.unwrap();
    tick(Duration::from_secs(6), Duration::from_millis(100)).await;
    let left = stopping.await.unwrap();
    assert_eq!(left, ["s1"], "s1 still waits out its Retry-After at the deadline");
    assert_eq!(log.get("s1").await.unwrap().unwrap().state, SagaState::Running, "s1 keeps its place in the log");
    assert_eq!(log.get("s3").await.unwrap().unwrap().owner.as_deref(), Some("dead-3"), "s3 not taken over");

    // A resumed saga mid-step when the stop begins, which can finish in time, does before shutdown returns.
    let log = MemoryLog::new();
    log.create("s2", "slow", &serde_json::json!(2), "dead", Duration::from_secs(1)).await.unwrap();
    let worker = Orchestrator::builder(log.clone()).owner("worker").build();
    worker.register(
        Saga::<u32>::builder("slow")
            .step(Step::<u32>::new("charge", |_cx| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Ok::<_, PaymentError>("ok")
            }))
            .build()
            .unwrap(),
    );
    let recovery = worker.spawn_recovery(Duration::from_secs(1));
    tick(Duration::from_millis(1500), Duration::from_millis(100)).await;
    assert_eq!(log.get("s2").await.unwrap().unwrap().owner.as_deref(), Some("worker"), "s2 taken over");
    let stopping = tokio::spawn(recovery.shutdown(tokio::time::Instant::now() + Duration::from_secs(5)));
    tick(Duration::from_secs(3), Duration::from_millis(100)).await;
    let left = stopping.await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(log.get("s2").await.unwrap().unwrap().state, SagaState::Completed);
}

/// A renewal refused because the run's own last write ended the saga is no take-over: the run reports the saga
/// it completed. Before, the heartbeat took any refusal for a take-over, and `start` returned `Fenced` for a saga
/// the log showed completed (the checkout server then answered 503).
#[tokio::test(start_paused = true)]
async fn a_saga_that_ends_while_its_lease_is_renewed_is_not_fenced() {
    let log = MemoryLog::new();
    let saga = Saga::<u32>::builder("pay")
        .step(Step::<u32>::new("charge", |_cx| async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            Ok("ch_1")
        }))
        .build()
        .unwrap();
    // A renewal every 10 ms: one falls while the last write's answer is on its way (it comes 50 ms after the write
    // took effect, as a PostgreSQL commit's reply can still be on its way while a renewal on another pooled
    // connection, which waited on the row, is answered).
    let o = Orchestrator::builder(common::Hooked::new(log.clone()).late_last_answer(Duration::from_millis(50)))
        .lease(Duration::from_millis(30))
        .build();
    let saga = o.register(saga);
    let report = o.start(&saga, "s1", 1).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(log.get("s1").await.unwrap().unwrap().state, SagaState::Completed);
}

/// A step whose action succeeded but whose output does not serialize has acted (its charge went through): the
/// saga cannot record what it did, so the step counts as Unknown and is compensated (with a `null` output, as a
/// lost answer is), and so is every step before it. Before, the failure was Terminal and the step's own
/// compensation was skipped, leaving its effect in place.
#[tokio::test(start_paused = true)]
async fn a_step_whose_output_does_not_serialize_is_compensated() {
    let undone = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (u1, u2) = (undone.clone(), undone.clone());
    let first =
        Step::<Nothing>::new("first", |_cx| async { Ok::<_, PaymentError>("held") }).compensate(move |_cx, out| {
            let u1 = u1.clone();
            async move {
                u1.lock().push(format!("first:{out}"));
                Ok(())
            }
        });
    let acted = Arc::new(AtomicUsize::new(0));
    let a = acted.clone();
    // A map with non-string keys: serde_json refuses it.
    let unrecordable = Step::<Nothing>::new("unrecordable", move |_cx| {
        let a = a.clone();
        async move {
            a.fetch_add(1, Ordering::SeqCst);
            Ok::<_, PaymentError>(std::collections::BTreeMap::from([((1u8, 2u8), "charged")]))
        }
    })
    .attempts(2)
    .compensate(move |_cx, out| {
        let u2 = u2.clone();
        async move {
            u2.lock().push(format!("unrecordable:{out}"));
            Ok(())
        }
    });
    let saga = Saga::builder("unrecordable_output").step(first).step(unrecordable).build().unwrap();
    let o = Orchestrator::builder(MemoryLog::new()).build();
    let report = o.start(&o.register(saga), "u-1", Nothing).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(acted.load(Ordering::SeqCst), 2, "retried under the same key, as any Unknown attempt");
    assert_eq!(*undone.lock(), ["unrecordable:null", "first:\"held\""]);
}
