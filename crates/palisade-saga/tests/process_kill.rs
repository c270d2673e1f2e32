//! A real process killed with SIGKILL mid-saga, and the saga finished by another process, on Redis and on
//! PostgreSQL (issue 20).
//!
//! `examples/saga_worker` runs the checkout saga (reserve → authorize → capture → ship) and records its effects in
//! the same store as the log, deduplicated by the step key as a gateway deduplicates by idempotency key. The first
//! process pauses inside a step right after its effect (the log says the step started, not that it ended) and is
//! killed there with SIGKILL; a second process, a recovery worker, takes the saga over once the dead owner's
//! 500 ms lease has ended, runs the in-doubt step again under its key and completes the saga. Each effect is then
//! recorded exactly once, though the in-doubt step ran twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use palisade_saga::log::{PostgresLog, RedisLog};
use palisade_saga::{Event, SagaLog, SagaState};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const LEASE_MS: &str = "500";

/// The worker, built once per test run (a no-op when `cargo test` built it already) and located through cargo's
/// JSON messages.
fn worker_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "palisade-saga", "--example", "saga_worker", "--features", "redis,postgres"])
            .arg("--message-format=json")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(out.status.success(), "cargo build --example saga_worker failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "saga_worker")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the saga_worker example's executable")
    })
    .clone()
}

async fn spawn_worker(store: &[String], saga_id: &str, extra: &[&str]) -> Child {
    let bin = tokio::task::spawn_blocking(worker_binary).await.expect("the build task ends");
    Command::new(bin)
        .args(store)
        .args(["--saga-id", saga_id, "--lease-ms", LEASE_MS])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the worker starts")
}

/// Where the worker's effects are: counts of effects and of calls, by operation, for one saga.
enum Effects {
    Redis(redis::aio::ConnectionManager, String),
    Postgres(sqlx::PgPool, String),
}

impl Effects {
    async fn effects(&self, saga: &str) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        match self {
            Effects::Redis(conn, prefix) => {
                let all: HashMap<String, String> = redis::cmd("HGETALL")
                    .arg(format!("{prefix}demo:effects:{saga}"))
                    .query_async(&mut conn.clone())
                    .await
                    .unwrap();
                for field in all.keys() {
                    *out.entry(field.split(':').next().unwrap().to_owned()).or_default() += 1;
                }
            }
            Effects::Postgres(pool, prefix) => {
                let sql = format!("SELECT op FROM {prefix}demo_effects WHERE saga_id = $1");
                // The worker creates the table; before that there is nothing.
                for op in sqlx::query_scalar::<_, String>(&sql).bind(saga).fetch_all(pool).await.unwrap_or_default() {
                    *out.entry(op).or_default() += 1;
                }
            }
        }
        out
    }

    async fn calls(&self, saga: &str) -> HashMap<String, usize> {
        let ops: Vec<String> = match self {
            Effects::Redis(conn, prefix) => redis::cmd("LRANGE")
                .arg(format!("{prefix}demo:calls:{saga}"))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn.clone())
                .await
                .unwrap(),
            Effects::Postgres(pool, prefix) => {
                let sql = format!("SELECT op FROM {prefix}demo_calls WHERE saga_id = $1");
                sqlx::query_scalar(&sql).bind(saga).fetch_all(pool).await.unwrap()
            }
        };
        let mut out = HashMap::new();
        for op in ops {
            *out.entry(op).or_default() += 1;
        }
        out
    }
}

fn started(events: &[Event], step: &str) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step: s, attempt } if s == step => Some(*attempt),
            _ => None,
        })
        .collect()
}

fn done(events: &[Event], step: &str) -> bool {
    events.iter().any(|e| matches!(e, Event::StepDone { step: s, .. } if s == step))
}

/// Starts the saga in one process paused in `step` after its effect, kills it with SIGKILL, recovers it in another
/// process, and checks that every effect happened once.
async fn killed_in(step: &str, store: &[String], log: &Arc<dyn SagaLog>, effects: &Effects) {
    let saga = format!("order-killed-in-{step}");
    let mut first = spawn_worker(store, &saga, &["--mode", "start", "--pause-in", step]).await;

    // Wait (at most 10 s) until the log says the step started and its effect is recorded: the worker is paused
    // between the effect and the log's "done".
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = log.get(&saga).await.unwrap();
        let effect = effects.effects(&saga).await.get(step).copied().unwrap_or(0);
        if record.is_some_and(|r| !started(&r.events, step).is_empty()) && effect == 1 {
            break;
        }
        if let Ok(Some(status)) = first.try_wait() {
            panic!("{step}: the first worker exited ({status}) before pausing");
        }
        assert!(Instant::now() < deadline, "{step}: the first worker did not reach its pause within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGKILL: no unwinding, no last write.
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let record = log.get(&saga).await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Running, "{step}: the dead owner left the saga running");
    assert_eq!(started(&record.events, step), [1], "{step}: started once");
    assert!(!done(&record.events, step), "{step}: in doubt (its effect happened, the log does not say so)");
    let dead_owner = record.owner.clone();
    assert!(dead_owner.is_some());

    // A second process: a recovery worker. It takes the saga over once the lease has ended.
    let second = spawn_worker(store, &saga, &["--mode", "recover"]).await;
    let out = tokio::time::timeout(Duration::from_secs(15), second.wait_with_output())
        .await
        .expect("the recovery worker finishes within 15 s")
        .unwrap();
    assert!(out.status.success(), "{step}: recovery worker failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "finished completed");

    let record = log.get(&saga).await.unwrap().unwrap();
    assert_eq!(record.state, SagaState::Completed, "{step}");
    assert_eq!(record.owner, None, "{step}: finished, nobody owns it");
    assert_eq!(started(&record.events, step), [1, 2], "{step}: the in-doubt step ran again, as attempt 2");
    let effects_now = effects.effects(&saga).await;
    for op in ["reserve", "authorize", "capture", "ship"] {
        assert_eq!(effects_now.get(op), Some(&1), "{step}: {op} happened exactly once: {effects_now:?}");
    }
    for op in ["release", "void", "refund"] {
        assert_eq!(effects_now.get(op), None, "{step}: nothing was compensated: {effects_now:?}");
    }
    let calls = effects.calls(&saga).await;
    assert_eq!(calls.get(step), Some(&2), "{step}: called twice (killed, then recovered), acted once: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_with_sigkill_is_finished_by_another_process_on_redis() {
    let Some(r) = palisade_testkit::redis("saga_process_kill").await else { return };
    let log: Arc<dyn SagaLog> = Arc::new(RedisLog::connect(&r.url).await.unwrap().with_prefix(&r.prefix));
    let store = vec!["--redis".to_owned(), r.url.clone(), "--prefix".to_owned(), r.prefix.clone()];
    let effects = Effects::Redis(r.conn.clone(), r.prefix.clone());
    for step in ["authorize", "capture"] {
        killed_in(step, &store, &log, &effects).await;
    }
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_with_sigkill_is_finished_by_another_process_on_postgres() {
    let Some(pg) = palisade_testkit::postgres("saga_process_kill").await else { return };
    let prefix = pg.prefix();
    let log = PostgresLog::connect(&pg.url).await.unwrap().with_prefix(&prefix).unwrap();
    log.migrate().await.unwrap();
    let log: Arc<dyn SagaLog> = Arc::new(log);
    let store = vec!["--postgres".to_owned(), pg.url.clone(), "--prefix".to_owned(), prefix.clone()];
    let effects = Effects::Postgres(pg.pool.clone(), prefix);
    for step in ["authorize", "capture"] {
        killed_in(step, &store, &log, &effects).await;
    }
    pg.cleanup().await;
}
