//! Sagas a recovery worker cannot run: of a definition it does not have registered (a retired one, or another
//! service's sagas in a shared log), or whose record holds what a newer version of palisade-saga wrote during a
//! rolling deploy (a new event kind, a new `PaymentError` kind in a `step_failed`). Recovery reads a saga before it
//! takes it over and leaves such a saga alone for an instance that can run it: it is not held for a lease, and it
//! never keeps recovery from the sagas this orchestrator can run. The record still reads (`get`, `palisade saga
//! show`), the newer events kept as written; a record that does not read says which saga and why.
//!
//! On the memory log (paused time), Redis and PostgreSQL (skipped loudly without them, failed with
//! `PALISADE_REQUIRE_REDIS=1` / `PALISADE_REQUIRE_POSTGRES=1`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use palisade_core::PaymentError;
use palisade_saga::{Event, MemoryLog, Orchestrator, PostgresLog, RedisLog, Saga, SagaLog, SagaState, Step};
use serde_json::{Value, json};

/// The definition the recovering orchestrator has.
fn pay() -> Saga<u32> {
    Saga::<u32>::builder("pay")
        .step(Step::<u32>::new("charge", |_cx| async { Ok::<_, PaymentError>("ch_1") }))
        .build()
        .unwrap()
}

/// Orphans this orchestrator cannot run, ahead (by id and by age) of one it can.
const OLD: usize = 150;

/// `OLD` orphans of a definition the recovering orchestrator does not have, then a newer orphan it can run. Its
/// lease is as long as its passes are apart: before, every pass took the first `DEFAULT_RECOVERY_BATCH` orphans
/// over again (their leases had just ended), failed on each (`UnknownDefinition`), and never reached the newer
/// saga. Now the old ones are read, never taken over (their owner stays the dead one), logged once, and the newer
/// saga is resumed within a few passes.
async fn an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run<L: SagaLog + Clone>(log: L) {
    let tiny = Duration::from_millis(1);
    for i in 0..OLD {
        log.create(&format!("old-{i:04}"), "retired", &json!(1), "dead", tiny).await.unwrap().unwrap();
    }
    // One the recovering orchestrator cannot read the context of (a `u32` definition, a string context).
    log.create("old-text", "pay", &json!("not a number"), "dead", tiny).await.unwrap().unwrap();
    log.create("zz-new", "pay", &json!(1), "dead", tiny).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let every = Duration::from_millis(100);
    let o = Orchestrator::builder(log.clone()).owner("worker").lease(every / 2).build();
    o.register(pay());
    let recovery = o.spawn_recovery(every);
    let mut state = SagaState::Running;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = log.get("zz-new").await.unwrap().unwrap().state;
        if state == SagaState::Completed {
            break;
        }
    }
    recovery.abort();
    assert_eq!(state, SagaState::Completed, "the orphan this orchestrator can run was resumed");
    for id in (0..OLD).map(|i| format!("old-{i:04}")).chain(["old-text".to_owned()]) {
        let r = log.get(&id).await.unwrap().unwrap();
        assert_eq!((r.state, r.owner.as_deref()), (SagaState::Running, Some("dead")), "{id} was left alone");
    }
}

/// A `step_failed` written by a newer version, with an error kind this version does not know.
const NEWER_ERROR_KIND: &str = r#"{"event":"step_failed","step":"charge","error":{"kind":"gateway_maintenance","retry_after_ms":1000},"outcome":"retriable","final":false}"#;
/// An event kind this version does not know.
const NEWER_EVENT_KIND: &str = r#"{"event":"step_paused","step":"charge","until_ms":1700000000000}"#;

/// Writes a raw event (JSON as a newer version wrote it) to saga `id`, owned with `token`.
type Inject<'a> = &'a (dyn Fn(String, u64, &'static str) -> BoxFuture<'static, ()> + Sync);

/// A saga whose history holds an event a newer version wrote: its record reads (the event kept as written, as
/// `Event::Unknown`), and this version's `resume` and recovery refuse it without taking it over (its owner stays
/// the newer instance, whose lease ended: a newer instance's recovery resumes it). Before, the record did not
/// read at all (`get`, `palisade saga show`, recovery: a log error), and `resume` took the saga over first.
async fn a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone<L: SagaLog + Clone>(
    log: L,
    inject: Inject<'_>,
) {
    let lease = Duration::from_millis(100);
    let started = Event::StepStarted { step: "charge".into(), attempt: 1 };
    for (id, raw) in [("v-error", NEWER_ERROR_KIND), ("v-kind", NEWER_EVENT_KIND)] {
        let token = log.create(id, "pay", &json!(1), "new-version", lease).await.unwrap().unwrap();
        assert!(log.append(id, token, &started, SagaState::Running).await.unwrap());
        inject(id.to_owned(), token, raw).await;
    }
    // The newer instance dies; the leases end.
    tokio::time::sleep(lease + Duration::from_millis(60)).await;

    let o = Orchestrator::builder(log.clone()).owner("old-version").lease(Duration::from_secs(10)).build();
    o.register(pay());
    for (id, raw) in [("v-error", NEWER_ERROR_KIND), ("v-kind", NEWER_EVENT_KIND)] {
        let resumed = o.resume(id).await;
        let Err(e) = resumed else { panic!("{id}: this version cannot run it: {resumed:?}") };
        assert!(e.to_string().contains(id), "{id}: the error names the saga: {e}");
        let r = o.get(id).await.expect("a record holding a newer version's event still reads").unwrap();
        assert_eq!(r.owner.as_deref(), Some("new-version"), "{id}: not taken over by a version that cannot run it");
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[0], started);
        let kept = serde_json::to_value(&r.events[1]).unwrap();
        assert_eq!(kept, serde_json::from_str::<Value>(raw).unwrap(), "{id}: the newer event is kept as written");
    }
    // A recovery pass leaves them alone too.
    let _ = o.recover().await.unwrap();
    for id in ["v-error", "v-kind"] {
        assert_eq!(log.get(id).await.unwrap().unwrap().owner.as_deref(), Some("new-version"), "{id}");
    }
}

// ---- memory (paused time: the sleeps pass at once) ----

#[tokio::test(start_paused = true)]
async fn memory_an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run() {
    an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run(MemoryLog::new()).await;
}

#[tokio::test(start_paused = true)]
async fn memory_a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone() {
    let log = MemoryLog::new();
    let writer = log.clone();
    let inject = move |id: String, token: u64, raw: &'static str| -> BoxFuture<'static, ()> {
        let log = writer.clone();
        Box::pin(async move {
            // What a newer version's orchestrator on this log would have appended, as this version reads it.
            let event: Event = serde_json::from_str(raw).expect("an event of a newer version reads");
            assert!(log.append(&id, token, &event, SagaState::Running).await.unwrap());
        })
    };
    a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone(log, &inject).await;
}

// ---- Redis ----

async fn redis_log(name: &str) -> Option<(palisade_testkit::RedisTest, RedisLog)> {
    let r = palisade_testkit::redis(name).await?;
    let log = RedisLog::new(r.conn.clone()).with_prefix(r.prefix.clone());
    Some((r, log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run() {
    let Some((r, log)) = redis_log("saga_unrunnable_starve").await else { return };
    an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone() {
    let Some((r, log)) = redis_log("saga_unrunnable_versions").await else { return };
    let (conn, keys) = (r.conn.clone(), log.clone());
    let inject = move |id: String, _token: u64, raw: &'static str| -> BoxFuture<'static, ()> {
        let (mut conn, key) = (conn.clone(), keys.events_key(&id));
        Box::pin(async move {
            let _: i64 = redis::cmd("RPUSH").arg(key).arg(raw).query_async(&mut conn).await.unwrap();
        })
    };
    a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone(log, &inject).await;
    r.cleanup().await;
}

/// A saga in a state this version does not know (a newer version's): `get` and `list` fail, naming the saga and
/// saying a newer version wrote it. Before: `redis: unknown saga state "paused"`, with no saga named.
#[tokio::test]
async fn redis_a_record_in_a_newer_version_s_state_is_named_when_it_does_not_read() {
    let Some((r, log)) = redis_log("saga_unrunnable_state").await else { return };
    log.create("v-state", "pay", &json!(1), "new-version", Duration::from_millis(100)).await.unwrap().unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(log.saga_key("v-state"))
        .arg("state")
        .arg("paused")
        .query_async(&mut r.conn.clone())
        .await
        .unwrap();
    let got = log.get("v-state").await.map(|_| ()).unwrap_err().to_string();
    let listed = log.list(None, 10).await.map(|_| ()).unwrap_err().to_string();
    r.cleanup().await;
    for e in [got, listed] {
        assert!(e.contains("v-state") && e.contains("newer version"), "{e}");
    }
}

// ---- PostgreSQL ----

async fn pg_log(name: &str) -> Option<(palisade_testkit::PostgresTest, PostgresLog)> {
    let pg = palisade_testkit::postgres(name).await?;
    let log = PostgresLog::new(pg.pool.clone()).with_prefix(&pg.prefix()).unwrap();
    log.migrate().await.unwrap();
    Some((pg, log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run() {
    let Some((pg, log)) = pg_log("saga_unrunnable_starve").await else { return };
    an_orphan_is_not_starved_by_orphans_this_orchestrator_cannot_run(log).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone() {
    let Some((pg, log)) = pg_log("saga_unrunnable_versions").await else { return };
    let (pool, prefix) = (pg.pool.clone(), pg.prefix());
    let inject = move |id: String, _token: u64, raw: &'static str| -> BoxFuture<'static, ()> {
        let (pool, prefix) = (pool.clone(), prefix.clone());
        Box::pin(async move {
            let sql = format!(
                "WITH s AS (UPDATE {prefix}sagas SET seq = seq + 1 WHERE id = $1 RETURNING seq)
                 INSERT INTO {prefix}saga_events (saga_id, seq, event, at) SELECT $1, s.seq, $2::json, now() FROM s"
            );
            let done = sqlx::query(&sql).bind(&id).bind(raw).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1);
        })
    };
    a_saga_with_a_newer_version_s_events_still_reads_and_is_left_alone(log, &inject).await;
    pg.cleanup().await;
}

/// As on Redis: a state this version does not know is named, with the saga, when its record does not read.
#[tokio::test]
async fn postgres_a_record_in_a_newer_version_s_state_is_named_when_it_does_not_read() {
    let Some((pg, log)) = pg_log("saga_unrunnable_state").await else { return };
    log.create("v-state", "pay", &json!(1), "new-version", Duration::from_millis(100)).await.unwrap().unwrap();
    let sql = format!("UPDATE {}sagas SET state = 'paused' WHERE id = 'v-state'", pg.prefix());
    sqlx::query(&sql).execute(&pg.pool).await.unwrap();
    let got = log.get("v-state").await.map(|_| ()).unwrap_err().to_string();
    let listed = log.list(None, 10).await.map(|_| ()).unwrap_err().to_string();
    pg.cleanup().await;
    for e in [got, listed] {
        assert!(e.contains("v-state") && e.contains("newer version"), "{e}");
    }
}
