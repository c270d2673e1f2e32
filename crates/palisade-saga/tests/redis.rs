//! The saga log on a real Redis: the log's conformance (every operation, fencing, take-over, orphans, listing),
//! the orchestrator's scenarios from tests/memory.rs that do not depend on paused time (crash at every boundary
//! with a real 300 ms lease, fencing of a dead owner, concurrent recovery, compensation, a failed compensation
//! retried by hand, a parallel group), and the count of commands per transition on a private `redis-server`.
//!
//! Needs Redis (`PALISADE_REDIS_URL`, or `redis-server` on `PATH`); with `PALISADE_REQUIRE_REDIS=1` a missing
//! Redis fails the tests instead of skipping them. Each test has its own key prefix and deletes its keys.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use palisade_core::{Operation, PaymentError};
use palisade_saga::log::StoreFuture;
use palisade_saga::{Event, Orchestrator, RedisLog, Saga, SagaLog, SagaRecord, SagaState, SagaSummary, Step};
use palisade_sim::Fault;
use palisade_testkit::RedisTest;
use parking_lot::Mutex;

async fn redis_log(name: &str) -> Option<(RedisTest, RedisLog)> {
    let r = palisade_testkit::redis(name).await?;
    let log = RedisLog::new(r.conn.clone()).with_prefix(r.prefix.clone());
    Some((r, log))
}

#[tokio::test]
async fn redis_log_conformance() {
    let Some((r, log)) = redis_log("saga_conformance").await else { return };
    conformance(&log).await;
    // Every key of a saga carries its id as the hash tag (one Cluster slot per saga).
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{}*", r.prefix)).query_async(&mut r.conn.clone()).await.unwrap();
    for id in ["s-0", "s-1", "s-2"] {
        assert!(keys.contains(&log.saga_key(id)) && log.saga_key(id).contains(&format!("{{{id}}}")), "{keys:?}");
    }
    assert!(keys.contains(&log.events_key("s-1")));
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_checkout_completes() {
    let Some((r, log)) = redis_log("saga_completes").await else { return };
    checkout_completes(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_network_errors_are_retried_and_the_saga_completes() {
    let Some((r, log)) = redis_log("saga_retried").await else { return };
    network_errors_are_retried(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_failed_shipment_is_compensated_in_reverse_order() {
    let Some((r, log)) = redis_log("saga_reverse").await else { return };
    compensates_in_reverse_order(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_decline_releases_the_stock_and_a_failed_capture_voids() {
    let Some((r, log)) = redis_log("saga_declined").await else { return };
    declined_and_voided(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_failed_compensation_is_retried_by_hand() {
    let Some((r, log)) = redis_log("saga_failed_comp").await else { return };
    failed_compensation_is_retried(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_crash_at_any_boundary_is_recovered_with_each_effect_once() {
    let Some((r, log)) = redis_log("saga_crash").await else { return };
    crash_at_every_boundary(log, LEASE, sleep_out()).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_live_owner_keeps_its_saga_and_a_dead_owner_is_fenced() {
    let Some((r, log)) = redis_log("saga_fenced").await else { return };
    a_live_owner_keeps_its_saga_and_a_dead_one_is_fenced(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_concurrent_recovery_workers_resume_a_saga_once() {
    let Some((r, log)) = redis_log("saga_concurrent").await else { return };
    concurrent_recovery_resumes_once(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_parallel_group_is_compensated_together() {
    let Some((r, log)) = redis_log("saga_group").await else { return };
    a_parallel_group_is_compensated_together(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_ids_with_braces_stay_in_one_slot_and_apart() {
    let Some((r, log)) = redis_log("saga_braces").await else { return };
    let ctx = serde_json::json!({});
    let a = log.create("a{b}", "n", &ctx, "o", LEASE).await.unwrap().unwrap();
    let b = log.create("a(b)", "n", &ctx, "o", LEASE).await.unwrap().unwrap();
    assert!(log.append("a{b}", a, &Event::CompensationRetried, SagaState::Running).await.unwrap());
    assert_eq!(log.get("a{b}").await.unwrap().unwrap().events.len(), 1);
    assert!(log.get("a(b)").await.unwrap().unwrap().events.is_empty());
    assert!(b > 0);
    r.cleanup().await;
}

/// A private `redis-server` for this test alone, so its command statistics count only this test's commands.
struct PrivateRedis {
    url: String,
    _child: tokio::process::Child,
}

async fn private_redis() -> Option<PrivateRedis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if palisade_testkit::redis_required() => panic!("PALISADE_REQUIRE_REDIS=1 but redis-server: {e}"),
        Err(e) => {
            eprintln!("\n!!!!! SKIPPED redis round-trip count: cannot start redis-server ({e}) !!!!!\n");
            return None;
        }
    };
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).ok()?;
    for _ in 0..50 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
        {
            return Some(PrivateRedis { url, _child: child });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("redis-server on port {port} did not answer");
}

/// Every command clients send to the server, as `MONITOR` shows them (commands run by scripts, shown as coming
/// from `lua`, left out), from now until [`Monitor::stop`].
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(url: &str) -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("redis://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"MONITOR\r\n").await.unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).await.unwrap();
        assert_eq!(ok.trim_end(), "+OK");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let task = tokio::spawn(async move {
            let mut line = String::new();
            while reader.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                sink.lock().push(std::mem::take(&mut line));
            }
        });
        Monitor { lines, url: url.to_owned(), task }
    }

    /// The commands seen, by name (lowercase), after a marker sent last has come through.
    async fn stop(self) -> Vec<String> {
        let mut c = redis::Client::open(self.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: String = redis::cmd("ECHO").arg("monitor-end").query_async(&mut c).await.unwrap();
        for _ in 0..100 {
            if self.lines.lock().iter().any(|l| l.contains("\"monitor-end\"")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let lines = self.lines.lock().clone();
        lines
            .iter()
            .filter(|l| !l.contains(" lua]") && !l.contains("\"monitor-end\""))
            .filter_map(|l| l.split('"').nth(1).map(str::to_lowercase))
            .collect()
    }
}

/// One round trip per transition: on a server of its own, a whole checkout sends the server exactly one
/// command per append (an EVALSHA), and two for the create (the index script and the create script, sent as
/// one pipeline: one round trip). Nothing else reaches the server. `MONITOR` shows exactly what clients send
/// (commands run inside scripts are marked `lua` and left out).
#[tokio::test]
async fn redis_one_command_per_transition() {
    let Some(server) = private_redis().await else { return };
    let log = RedisLog::connect(&server.url).await.unwrap();
    // A first saga loads the scripts (EVALSHA answers NOSCRIPT, the pipeline is sent again): not measured.
    one_checkout(log.clone(), "warm-up").await;
    let monitor = Monitor::start(&server.url).await;
    let counted = one_checkout(log.clone(), "order-rt").await;
    let sent = monitor.stop().await;
    let (creates, appends) = (counted.count("create"), counted.count("append"));
    assert_eq!((creates, counted.total()), (1, 1 + appends), "the orchestrator only created and appended");
    let events = log.get("order-rt").await.unwrap().unwrap().events.len();
    assert_eq!(appends, events);
    assert!(appends >= 9, "four steps started and done, and the end: {appends}");
    assert_eq!(sent.len(), 2 * creates + appends, "{sent:?}");
    assert!(sent.iter().all(|c| c == "evalsha"), "{sent:?}");
}

// ---- Scenarios shared by tests/redis.rs and tests/postgres.rs (kept identical in both files). ----

const LEASE: Duration = Duration::from_millis(300);

/// Lets a lease end on a real server: sleeps it, plus a margin for the server's millisecond rounding.
fn sleep_out() -> impl Fn(Duration) -> futures_util::future::BoxFuture<'static, ()> {
    |d| Box::pin(tokio::time::sleep(d + Duration::from_millis(60)))
}

/// A log that counts the operations called on it, to compare with what the server saw.
#[derive(Clone, Default)]
struct Counting<L> {
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
    fn count(&self, op: &str) -> usize {
        self.ops.lock().get(op).copied().unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.ops.lock().values().sum()
    }
}

impl<L: SagaLog> SagaLog for Counting<L> {
    fn create<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        context: &'a serde_json::Value,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        self.bump("create");
        self.inner.create(id, name, context, owner, lease)
    }
    fn append<'a>(&'a self, id: &'a str, token: u64, event: &'a Event, state: SagaState) -> StoreFuture<'a, bool> {
        self.bump("append");
        self.inner.append(id, token, event, state)
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
async fn conformance<L: SagaLog>(log: &L) {
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

    // A terminal state ends the lease and the ownership; nothing renews or takes it over.
    let fin = Event::Finished { state: SagaState::Completed };
    assert!(log.append("s-1", t2, &fin, SagaState::Completed).await.unwrap());
    let r = log.get("s-1").await.unwrap().unwrap();
    assert_eq!((r.state, r.owner.as_deref(), r.lease_remaining), (SagaState::Completed, None, Duration::ZERO));
    assert_eq!(r.events, [started.clone(), done, fin]);
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

async fn checkout_completes<L: SagaLog + Clone>(log: L) {
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

async fn network_errors_are_retried<L: SagaLog + Clone>(log: L) {
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

async fn declined_and_voided<L: SagaLog + Clone>(log: L) {
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

async fn failed_compensation_is_retried<L: SagaLog + Clone>(log: L) {
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

async fn a_live_owner_keeps_its_saga_and_a_dead_one_is_fenced<L: SagaLog + Clone>(log: L) {
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

async fn concurrent_recovery_resumes_once<L: SagaLog + Clone>(log: L) {
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
struct Nothing;

async fn a_parallel_group_is_compensated_together<L: SagaLog + Clone>(log: L) {
    let undone = Arc::new(Mutex::new(Vec::new()));
    let step = |name: &'static str| {
        let undone = undone.clone();
        Step::<Nothing>::new(name, move |_cx| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(name)
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
        .step(step("first"))
        .parallel([step("a"), step("b"), step("c")])
        .step(fail)
        .build()
        .unwrap();
    let o = Orchestrator::builder(log.clone()).build();
    let report = o.start(&o.register(saga), "group-1", Nothing).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    let undone = undone.lock().clone();
    assert_eq!(undone.len(), 4);
    assert_eq!(undone[3], "first");
    let record = log.get("group-1").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events).len(), 4, "every compensation is in the log");
}

/// Runs one checkout on `log` (through a counting wrapper) and returns the wrapper, for the round-trip tests.
async fn one_checkout<L: SagaLog + Clone>(log: L, id: &str) -> Counting<L> {
    let counted = Counting::new(log);
    let world = World::new();
    // A lease far longer than the saga: no renewal runs while it is measured.
    let o = Orchestrator::builder(counted.clone()).lease(Duration::from_secs(60)).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, id, checkout(id)).await.unwrap();
    assert_eq!(report.state, SagaState::Completed);
    counted
}
