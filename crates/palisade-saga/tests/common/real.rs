//! Scenarios for the logs that run on a real server (tests/redis.rs, tests/postgres.rs): the log's conformance,
//! and the orchestrator's scenarios that do not depend on paused time, with a real 300 ms lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::{Operation, PaymentError};
use palisade_saga::log::StoreFuture;
use palisade_saga::{Event, Orchestrator, Saga, SagaLog, SagaRecord, SagaState, SagaSummary, Step};
use palisade_sim::Fault;
use parking_lot::Mutex;

use super::*;

pub const LEASE: Duration = Duration::from_millis(300);

/// Lets a lease end on a real server: sleeps it, plus a margin for the server's millisecond rounding.
pub fn sleep_out() -> impl Fn(Duration) -> futures_util::future::BoxFuture<'static, ()> {
    |d| Box::pin(tokio::time::sleep(d + Duration::from_millis(60)))
}

/// A log that counts the operations called on it, to compare with what the server saw. It overrides only the
/// trait's required methods, as a log outside this crate may: `orphans_after` is the trait's default.
#[derive(Clone, Default)]
pub struct Counting<L> {
    inner: L,
    ops: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl<L> Counting<L> {
    fn new(inner: L) -> Self {
        Counting { inner, ops: Arc::default() }
    }
    fn bump(&self, op: &'static str) {
        *self.ops.lock().entry(op).or_default() += 1;
    }
    pub fn count(&self, op: &str) -> usize {
        self.ops.lock().get(op).copied().unwrap_or(0)
    }
    pub fn total(&self) -> usize {
        self.ops.lock().values().sum()
    }
}

impl<L: SagaLog> SagaLog for Counting<L> {
    fn create_shared<'a>(
        &'a self,
        id: &'a palisade_saga::Name,
        name: &'a str,
        context: std::sync::Arc<dyn palisade_saga::log::ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        self.bump("create");
        self.inner.create_shared(id, name, context, owner, lease)
    }
    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        self.bump("append");
        self.inner.append_owned(id, token, event, state)
    }
    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        self.bump("renew");
        self.inner.renew(id, token, lease)
    }
    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        self.bump("take_over");
        self.inner.take_over(id, owner, lease, state)
    }
    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        self.bump("orphans");
        self.inner.orphans(limit)
    }
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        self.bump("get");
        self.inner.get(id)
    }
    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        self.bump("list");
        self.inner.list(state, limit)
    }
}

/// Every operation of the log, called directly, against the memory log's semantics.
pub async fn conformance<L: SagaLog>(log: &L) {
    let ctx = serde_json::json!({"order": "o-1", "cents": 2500, "tags": ["a", "b"]});
    let started = Event::StepStarted { step: "reserve".into(), attempt: 1 };
    let done = Event::StepDone { step: "reserve".into(), output: serde_json::json!({"hold": "h-1"}) };

    // create: once per id.
    let t1 = log.create("s-1", "checkout", &ctx, "a", LEASE).await.unwrap().expect("created");
    assert_eq!(log.create("s-1", "checkout", &ctx, "b", LEASE).await.unwrap(), None, "an id is used once");
    let r = log.get("s-1").await.unwrap().unwrap();
    assert_eq!((r.id.as_str(), r.name.as_str(), &r.context), ("s-1", "checkout", &ctx));
    assert_eq!((r.state, r.owner.as_deref(), r.token), (SagaState::Running, Some("a"), t1));
    assert!(r.events.is_empty());
    assert!(r.lease_remaining > Duration::ZERO && r.lease_remaining <= LEASE, "{:?}", r.lease_remaining);

    // append: fenced by the token.
    assert!(log.append("s-1", t1, &started, SagaState::Running).await.unwrap());
    assert!(!log.append("s-1", t1 + 1_000_000_000, &done, SagaState::Running).await.unwrap(), "wrong token");
    assert!(log.renew("s-1", t1, LEASE).await.unwrap());
    assert!(!log.renew("s-1", t1 + 1_000_000_000, LEASE).await.unwrap());

    // A live lease: no take-over, not an orphan.
    assert_eq!(log.take_over("s-1", "b", LEASE, None).await.unwrap(), None);
    assert!(!log.orphans(10).await.unwrap().contains(&"s-1".to_owned()));

    // The lease ends: an orphan, taken over once, with a greater token; the old token is fenced.
    tokio::time::sleep(LEASE + Duration::from_millis(60)).await;
    assert_eq!(log.get("s-1").await.unwrap().unwrap().lease_remaining, Duration::ZERO);
    assert_eq!(log.orphans(10).await.unwrap(), ["s-1"]);
    let t2 = log.take_over("s-1", "b", LEASE, None).await.unwrap().expect("taken over");
    assert!(t2 > t1, "tokens only grow: {t1} then {t2}");
    assert_eq!(log.take_over("s-1", "c", LEASE, None).await.unwrap(), None, "once");
    assert!(log.orphans(10).await.unwrap().is_empty());
    assert!(!log.append("s-1", t1, &done, SagaState::Running).await.unwrap(), "the old owner is fenced");
    assert!(!log.renew("s-1", t1, LEASE).await.unwrap());
    assert!(log.append("s-1", t2, &done, SagaState::Running).await.unwrap());
    let r = log.get("s-1").await.unwrap().unwrap();
    assert_eq!((r.owner.as_deref(), r.token), (Some("b"), t2));
    assert_eq!(r.events, [started.clone(), done.clone()]);

    // Two events in one write: fenced as one (nothing written with the old token), then both, in order. A
    // terminal state ends the lease and the ownership; nothing renews or takes it over.
    let fin = Event::Finished { state: SagaState::Completed };
    let (again, running, completed) = (started.clone(), SagaState::Running, SagaState::Completed);
    assert!(!log.append_two("s-1", t1, again.clone(), running, fin.clone(), completed).await.unwrap(), "fenced");
    assert_eq!(log.get("s-1").await.unwrap().unwrap().events, [started.clone(), done.clone()]);
    assert!(log.append_two("s-1", t2, again.clone(), running, fin.clone(), completed).await.unwrap());
    let r = log.get("s-1").await.unwrap().unwrap();
    assert_eq!((r.state, r.owner.as_deref(), r.lease_remaining), (SagaState::Completed, None, Duration::ZERO));
    assert_eq!(r.events, [started.clone(), done, again, fin]);
    assert!(!log.renew("s-1", t2, LEASE).await.unwrap());
    assert_eq!(log.take_over("s-1", "c", LEASE, None).await.unwrap(), None);
    assert!(log.orphans(10).await.unwrap().is_empty());

    // A failed compensation: taken over by state (whatever its lease), live again, an orphan when it dies.
    let t3 = log.create("s-2", "checkout", &ctx, "a", LEASE).await.unwrap().unwrap();
    let failed = Event::Finished { state: SagaState::FailedCompensation };
    assert!(log.append("s-2", t3, &failed, SagaState::FailedCompensation).await.unwrap());
    assert_eq!(log.take_over("s-2", "d", LEASE, Some(SagaState::Compensated)).await.unwrap(), None, "wrong state");
    let t4 = log.take_over("s-2", "d", LEASE, Some(SagaState::FailedCompensation)).await.unwrap().unwrap();
    assert!(t4 > t3);
    assert!(log.append("s-2", t4, &Event::CompensationRetried, SagaState::Compensating).await.unwrap());
    assert_eq!(log.take_over("s-2", "e", LEASE, Some(SagaState::FailedCompensation)).await.unwrap(), None);
    let r = log.get("s-2").await.unwrap().unwrap();
    assert_eq!((r.state, r.owner.as_deref(), r.token), (SagaState::Compensating, Some("d"), t4));
    tokio::time::sleep(LEASE + Duration::from_millis(60)).await;
    assert_eq!(log.orphans(10).await.unwrap(), ["s-2"], "a hand retry that died is recovered");

    // Listing: by id, by state, limited.
    let t5 = log.create("s-0", "refund", &serde_json::json!(null), "a", LEASE).await.unwrap().unwrap();
    assert!(t5 > 0);
    let ids = |v: Vec<SagaSummary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(ids(log.list(None, 10).await.unwrap()), ["s-0", "s-1", "s-2"]);
    assert_eq!(ids(log.list(None, 2).await.unwrap()), ["s-0", "s-1"]);
    assert_eq!(ids(log.list(Some(SagaState::Completed), 10).await.unwrap()), ["s-1"]);
    assert_eq!(ids(log.list(Some(SagaState::Compensated), 10).await.unwrap()), Vec::<String>::new());
    let all = log.list(None, 10).await.unwrap();
    assert_eq!(
        all[0],
        SagaSummary { id: "s-0".into(), name: "refund".into(), state: SagaState::Running, owner: Some("a".into()) }
    );
    assert_eq!((all[2].state, all[2].owner.as_deref()), (SagaState::Compensating, Some("d")));
    assert_eq!(log.orphans(1).await.unwrap().len(), 1, "orphans honours its limit");

    // Unknown sagas.
    assert_eq!(log.get("nope").await.unwrap(), None);
    assert!(!log.append("nope", t1, &started, SagaState::Running).await.unwrap());
    assert!(!log.renew("nope", t1, LEASE).await.unwrap());
    assert_eq!(log.take_over("nope", "a", LEASE, None).await.unwrap(), None);
    assert_eq!(log.take_over("nope", "a", LEASE, Some(SagaState::FailedCompensation)).await.unwrap(), None);
}

/// Orphans by id, a page at a time (`orphans_after`, what recovery reads): the same on every log, and through the
/// trait's default (a log that lists orphans with `orphans` only, here `Counting`'s).
pub async fn orphans_are_paged_by_id<L: SagaLog + Clone>(log: L) {
    let (ctx, tiny) = (serde_json::json!(1), Duration::from_millis(1));
    for id in ["p-3", "p-1", "p-4", "p-2"] {
        log.create(id, "checkout", &ctx, "a", tiny).await.unwrap().unwrap();
    }
    // Neither a live lease nor a terminal saga is an orphan.
    log.create("p-0", "checkout", &ctx, "a", Duration::from_secs(60)).await.unwrap().unwrap();
    let t = log.create("p-5", "checkout", &ctx, "a", tiny).await.unwrap().unwrap();
    let fin = Event::Finished { state: SagaState::Completed };
    assert!(log.append("p-5", t, &fin, SagaState::Completed).await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;

    let by_default = Counting::new(log.clone());
    let none = Vec::<String>::new();
    for (what, l) in [("the log's", &log as &dyn SagaLog), ("the default", &by_default)] {
        assert_eq!(l.orphans(10).await.unwrap(), ["p-1", "p-2", "p-3", "p-4"], "{what}: by id");
        assert_eq!(l.orphans(2).await.unwrap(), ["p-1", "p-2"], "{what}: the first by id");
        assert_eq!(l.orphans_after(None, 3).await.unwrap(), ["p-1", "p-2", "p-3"], "{what}");
        assert_eq!(l.orphans_after(Some("p-2"), 1).await.unwrap(), ["p-3"], "{what}");
        assert_eq!(l.orphans_after(Some("p-2"), 10).await.unwrap(), ["p-3", "p-4"], "{what}: a short page is the last");
        assert_eq!(l.orphans_after(Some("p-25"), 10).await.unwrap(), ["p-3", "p-4"], "{what}: after any id");
        assert_eq!(l.orphans_after(Some(""), 10).await.unwrap(), ["p-1", "p-2", "p-3", "p-4"], "{what}");
        assert_eq!(l.orphans_after(Some("p-4"), 10).await.unwrap(), none, "{what}: past the last");
    }
    assert_eq!(by_default.count("orphans"), 8, "the default pages what `orphans` lists");
}

pub async fn checkout_completes<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-1", checkout("order-1")).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(report.outputs["ship"], "ship-order-1");
    assert_eq!(world.ledger("order-1", Operation::Authorize), 1);
    assert_eq!(world.ledger("order-1", Operation::Capture), 1);
    let record = log.get("order-1").await.unwrap().unwrap();
    let started = steps_of(&record.events, |e| match e {
        Event::StepStarted { step, .. } => Some(step),
        _ => None,
    });
    assert_eq!(started, ["reserve", "authorize", "capture", "ship"]);
    assert_eq!(record.events.last(), Some(&Event::Finished { state: SagaState::Completed }));
    assert_eq!(record.owner, None);
    assert!(matches!(
        o.start(&saga, "order-1", checkout("order-1")).await,
        Err(palisade_saga::SagaError::AlreadyExists(_))
    ));
}

pub async fn network_errors_are_retried<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    world.sim.script(Operation::Authorize, [Fault::FailBeforeCommit, Fault::FailAfterCommit]);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-2", checkout("order-2")).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(world.calls_of("authorize"), 3);
    assert_eq!(world.ledger("order-2", Operation::Authorize), 1);
    let record = log.get("order-2").await.unwrap().unwrap();
    assert_eq!(record.events.iter().filter(|e| matches!(e, Event::StepFailed { last: false, .. })).count(), 2);
}

pub async fn declined_and_voided<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let mut ctx = checkout("order-3");
    ctx.token = "tok_chargeDeclined".into();
    let report = o.start(&saga, "order-3", ctx).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(compensated(&log.get("order-3").await.unwrap().unwrap().events), ["reserve"]);

    world.sim.script(Operation::Capture, [Fault::FailBeforeCommit; 3]);
    let report = o.start(&saga, "order-4", checkout("order-4")).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(world.ledger("order-4", Operation::Void), 1, "an authorization is voided");
    assert_eq!(world.ledger("order-4", Operation::Refund), 0);
    assert_eq!(world.held("mug"), 0);
}

pub async fn failed_compensation_is_retried<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    world.ship_fails.store(true, Ordering::SeqCst);
    world.refunds_fail.store(usize::MAX, Ordering::SeqCst);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-5", checkout("order-5")).await.unwrap();
    assert_eq!(report.state, SagaState::FailedCompensation);
    let listed = o.list(Some(SagaState::FailedCompensation), 10).await.unwrap();
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["order-5"]);
    assert!(log.orphans(10).await.unwrap().is_empty(), "FailedCompensation waits for a hand, not for recovery");
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

/// A saga compensated because the gateway was unavailable (every authorization attempt refused before it was
/// sent) is restarted: a new run from its first step, with keys of its own, that completes; one authorization and
/// one capture in all. A saga that is not compensated is not restarted.
pub async fn a_compensated_saga_restarts_with_keys_of_its_own<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    world.sim.script(Operation::Authorize, [Fault::FailBeforeCommit; 3]);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let first = o.start(&saga, "order-r", checkout("order-r")).await.unwrap();
    assert_eq!(first.state, SagaState::Compensated);
    assert!(
        matches!(first.error.as_ref().map(PaymentError::outcome), Some(palisade_core::Outcome::Retriable { .. })),
        "{first:?}"
    );
    assert_eq!(world.ledger("order-r", Operation::Authorize), 0);
    assert_eq!(world.held("mug"), 0, "the first run's hold was released");

    let again = o.restart("order-r", 0).await.unwrap();
    assert_eq!(again.state, SagaState::Completed, "{again:?}");
    assert_eq!(again.error, None);
    assert_eq!(world.ledger("order-r", Operation::Authorize), 1);
    assert_eq!(world.ledger("order-r", Operation::Capture), 1);
    assert_eq!(world.held("mug"), 1, "held once, by the second run");
    let keys: Vec<_> = world.sim.entries_for("order-r").into_iter().filter_map(|e| e.gateway_key).collect();
    assert_eq!(
        keys,
        [
            palisade_saga::step_key_of_run("order-r", "authorize", 1).to_string(),
            palisade_saga::step_key_of_run("order-r", "capture", 1).to_string()
        ]
    );
    assert_ne!(
        palisade_saga::step_key_of_run("order-r", "authorize", 1),
        palisade_saga::step_key("order-r", "authorize")
    );
    let record = log.get("order-r").await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Completed);
    assert!(record.events.contains(&Event::Restarted { run: 1 }), "{:?}", record.events);
    assert!(matches!(
        o.restart("order-r", 1).await,
        Err(palisade_saga::SagaError::WrongState { state: SagaState::Completed, .. })
    ));
    assert!(matches!(o.restart("no-such-order", 0).await, Err(palisade_saga::SagaError::NotFound(_))));
}

pub async fn a_live_owner_keeps_its_saga_and_a_dead_one_is_fenced<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    *world.crash.lock() = Some(("capture".into(), Crash::BeforeEffect));
    let first = Orchestrator::builder(log.clone()).owner("first").lease(LEASE).build();
    let saga = first.register(checkout_saga(&world));
    let running = tokio::spawn({
        let (first, saga) = (first.clone(), saga.clone());
        async move { first.start(&saga, "order-6", checkout("order-6")).await }
    });
    world.crashed.notified().await;
    // Alive (stuck in a step, renewing every third of its lease) for two and a half leases.
    tokio::time::sleep(LEASE * 5 / 2).await;
    let second = Orchestrator::builder(log.clone()).owner("second").lease(LEASE).build();
    second.register(checkout_saga(&world));
    assert!(second.recover().await.unwrap().is_empty(), "a live owner's saga is not an orphan");
    running.abort();
    let _ = running.await;
    let stale = log.get("order-6").await.unwrap().unwrap().token;
    sleep_out()(LEASE).await;
    let report = second.resume("order-6").await.unwrap().unwrap();
    assert_eq!(report.state, SagaState::Completed);
    let late = Event::StepDone { step: "capture".into(), output: serde_json::json!("late") };
    assert!(!log.append("order-6", stale, &late, SagaState::Running).await.unwrap());
    assert!(!log.renew("order-6", stale, LEASE).await.unwrap());
    assert_eq!(world.ledger("order-6", Operation::Capture), 1);
}

pub async fn concurrent_recovery_resumes_once<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    *world.crash.lock() = Some(("authorize".into(), Crash::AfterEffect));
    let first = Orchestrator::builder(log.clone()).owner("first").lease(LEASE).build();
    let saga = first.register(checkout_saga(&world));
    let running = tokio::spawn(async move { first.start(&saga, "order-7", checkout("order-7")).await });
    world.crashed.notified().await;
    running.abort();
    let _ = running.await;
    sleep_out()(LEASE).await;
    let workers: Vec<Orchestrator> = (0..4)
        .map(|i| {
            let o = Orchestrator::builder(log.clone()).owner(format!("worker-{i}")).lease(LEASE).build();
            o.register(checkout_saga(&world));
            o
        })
        .collect();
    let passes = futures_util::future::join_all(workers.iter().map(Orchestrator::recover)).await;
    let resumed: usize = passes.into_iter().map(|p| p.unwrap().len()).sum();
    assert_eq!(resumed, 1, "exactly one worker took it over");
    assert_eq!(world.calls_of("capture"), 1);
    assert_eq!(world.ledger("order-7", Operation::Authorize), 1);
    assert_eq!(log.get("order-7").await.unwrap().unwrap().state, SagaState::Completed);
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Nothing;

/// A group of three steps runs concurrently (all three are inside at once), and when a later step fails the
/// group is undone together, before the step before it; every compensation is in the log.
pub async fn a_parallel_group_is_compensated_together<L: SagaLog + Clone>(log: L) {
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let undone = Arc::new(Mutex::new(Vec::new()));
    // The group's steps wait inside until all three are in (at most 5 s: run one after another, they would not
    // be), so the check does not depend on how long the log takes to write each step's start.
    let together = Arc::new(tokio::sync::Barrier::new(3));
    let step = |name: &'static str, grouped: bool| {
        let (running, most, undone, together) = (running.clone(), most.clone(), undone.clone(), together.clone());
        Step::<Nothing>::new(name, move |_cx| {
            let (running, most, together) = (running.clone(), most.clone(), together.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                if grouped {
                    let _ = tokio::time::timeout(Duration::from_secs(5), together.wait()).await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(name)
            }
        })
        .compensate(move |cx, _| {
            let undone = undone.clone();
            async move {
                undone.lock().push(cx.step().to_owned());
                Ok(())
            }
        })
    };
    let fail = Step::<Nothing>::new("fail", |_cx| async { Err::<(), _>(PaymentError::declined("do_not_honor")) });
    let saga = Saga::builder("group")
        .step(step("first", false))
        .parallel([step("a", true), step("b", true), step("c", true)])
        .step(fail)
        .build()
        .unwrap();
    let o = Orchestrator::builder(log.clone()).build();
    let report = o.start(&o.register(saga), "group-1", Nothing).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert_eq!(most.load(Ordering::SeqCst), 3, "the group's steps ran at the same time");
    let undone = undone.lock().clone();
    assert_eq!(undone.len(), 4);
    assert_eq!(undone[3], "first", "the group is undone before the step before it");
    let mut group: Vec<_> = undone[..3].to_vec();
    group.sort();
    assert_eq!(group, ["a", "b", "c"]);
    let record = log.get("group-1").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events).len(), 4, "every compensation is in the log");
}

/// Runs one checkout on `log` (through a counting wrapper) and returns the wrapper, for the round-trip tests.
pub async fn one_checkout<L: SagaLog + Clone>(log: L, id: &str) -> Counting<L> {
    let counted = Counting::new(log);
    let world = World::new();
    // A lease far longer than the saga: no renewal runs while it is measured.
    let o = Orchestrator::builder(counted.clone()).lease(Duration::from_secs(60)).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, id, checkout(id)).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    counted
}

/// A context that does not serialize (JSON map keys must be strings).
pub type Unserializable = HashMap<Vec<u8>, u8>;

/// A context that does not serialize: a log that stores JSON refuses the saga with `SagaError::Context` at
/// `start`, writes nothing, and no step runs.
pub async fn an_unserializable_context_is_refused_at_start<L: SagaLog + Clone>(log: L) {
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = ran.clone();
    let saga = Saga::<Unserializable>::builder("unserializable")
        .step(Step::new("one", move |_cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, PaymentError>(1) }
        }))
        .build()
        .unwrap();
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(saga);
    let context: Unserializable = HashMap::from([(vec![1], 1)]);
    let started = o.start(&saga, "bad-context", context).await;
    assert!(matches!(started, Err(palisade_saga::SagaError::Context(_))), "{started:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(log.get("bad-context").await.unwrap().is_none());
}

/// Text with a NUL character (a carrier label, a gateway message): JSON writes it as `\u0000`. Every log keeps
/// it as the memory log does, in the context and in a step's output; PostgreSQL's `jsonb` refused it, and the
/// saga then ran its step again on every resume without ever ending.
pub async fn text_with_a_nul_is_kept<L: SagaLog + Clone>(log: L) {
    let saga = Saga::<String>::builder("nul")
        .step(Step::new("label", |cx| {
            let label = format!("{}\u{0}42", cx.context());
            async move { Ok::<_, PaymentError>(label) }
        }))
        .build()
        .unwrap();
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(saga);
    let report = o.start(&saga, "nul-1", "LBL\u{0}".to_owned()).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    assert_eq!(report.outputs["label"], "LBL\u{0}\u{0}42");
    let record = log.get("nul-1").await.unwrap().unwrap();
    assert_eq!(record.context, "LBL\u{0}");
    assert!(record.events.iter().any(|e| matches!(e, Event::StepDone { output, .. } if output == "LBL\u{0}\u{0}42")));
}
