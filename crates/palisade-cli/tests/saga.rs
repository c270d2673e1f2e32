//! `palisade saga list|show|retry-compensation`, run as a process against sagas in Redis and PostgreSQL: text
//! and JSON output, exit codes 0/1/2, and a failed compensation handed back to the application's recovery worker
//! and finished there.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::PaymentError;
use palisade_saga::log::{PostgresLog, RedisLog};
use palisade_saga::{Event, Orchestrator, Saga, SagaLog, SagaState, Step};
use serde_json::{Value, json};

fn palisade(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade")).args(args).output().expect("the palisade binary runs")
}

/// Runs `palisade saga <store args> <args>` off the runtime's threads.
async fn saga(store: &[String], args: &[&str]) -> Output {
    let mut all = vec!["saga".to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.extend(store.iter().cloned());
    tokio::task::spawn_blocking(move || palisade(&all)).await.expect("the command's task ends")
}

/// Runs `palisade saga <store args> <args>` with stdout a pipe whose reader has already gone (`… | head -c0`).
async fn saga_with_closed_stdout(store: &[String], args: &[&str]) -> Output {
    let mut all = vec!["saga".to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.extend(store.iter().cloned());
    tokio::task::spawn_blocking(move || {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(&all)
            .stdout(writer)
            .output()
            .expect("the palisade binary runs")
    })
    .await
    .expect("the command's task ends")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// charge (compensated by a refund that fails while `refund_fails` is set, one attempt) → ship (fails for good
/// when the context says so).
fn demo(refund_fails: &Arc<AtomicBool>) -> Saga<Value> {
    let fails = refund_fails.clone();
    let charge = Step::<Value>::new("charge", |_cx| async { Ok("ch_1") })
        .compensate(move |_cx, _charge| {
            let fails = fails.clone();
            async move {
                if fails.load(Ordering::SeqCst) {
                    Err(PaymentError::GatewayUnavailable { retry_after: None })
                } else {
                    Ok(())
                }
            }
        })
        .compensation_attempts(1);
    let ship = Step::<Value>::new("ship", |cx| async move {
        if cx.context()["ship_fails"] == true {
            Err(PaymentError::invalid_request("the carrier refused the address"))
        } else {
            Ok("sh_1")
        }
    });
    Saga::builder("demo").step(charge).step(ship).build().unwrap()
}

/// The whole command against one store: `store` are its `--redis …`/`--postgres …` arguments.
async fn scenario(log: Arc<dyn SagaLog>, store: Vec<String>) {
    let refund_fails = Arc::new(AtomicBool::new(false));
    let app = Orchestrator::builder(log.clone()).owner("test-app").lease(Duration::from_secs(30)).build();
    let demo = app.register(demo(&refund_fails));
    let done = app.start(&demo, "s-done", json!({ "ship_fails": false })).await.unwrap();
    assert_eq!(done.state, SagaState::Completed);
    refund_fails.store(true, Ordering::SeqCst);
    let failed = app.start(&demo, "s-failed", json!({ "ship_fails": true })).await.unwrap();
    assert_eq!(failed.state, SagaState::FailedCompensation);
    let ctx = json!({ "ship_fails": false });
    log.create("s-running", "demo", &ctx, "worker-a", Duration::from_secs(60)).await.unwrap().unwrap();

    // list: a table of all, or one state; JSON.
    let o = saga(&store, &["list"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert!(text.starts_with("ID "), "{text}");
    for line in ["s-done", "s-failed", "s-running"] {
        assert!(text.lines().any(|l| l.starts_with(line)), "{line} listed: {text}");
    }
    assert!(text.lines().any(|l| l.starts_with("s-running") && l.contains("running") && l.ends_with("worker-a")));
    let o = saga(&store, &["list", "--state", "failed_compensation", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(
        json_out(&o),
        json!([{ "id": "s-failed", "name": "demo", "state": "failed_compensation", "owner": null }])
    );
    let o = saga(&store, &["list", "--state", "compensating"]).await;
    assert_eq!((o.status.code(), stdout(&o).trim()), (Some(0), "no sagas in state compensating"));
    let o = saga(&store, &["list", "--limit", "1", "--json"]).await;
    assert_eq!(json_out(&o).as_array().map(Vec::len), Some(1));
    let o = saga(&store, &["list", "--state", "sleeping"]).await;
    assert_eq!(o.status.code(), Some(2), "an unknown state is a usage error: {o:?}");

    // A reader that went away (`palisade saga list | head -1`) is no failure and never a panic (before: exit 101).
    for args in [&["list"][..], &["list", "--json"], &["show", "s-failed"], &["show", "s-done", "--json"]] {
        let o = saga_with_closed_stdout(&store, args).await;
        assert_eq!(o.status.code(), Some(0), "{args:?} with a closed stdout: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "{args:?}: {}", stderr(&o));
    }

    // show: state, owner, lease, history.
    let o = saga(&store, &["show", "s-failed"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    for want in [
        "saga     s-failed (demo)",
        "state    failed_compensation",
        "step_done             charge",
        "compensation_failed   charge",
        "finished              failed_compensation",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    let o = saga(&store, &["show", "s-running", "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v = json_out(&o);
    assert_eq!(
        (v["state"].as_str(), v["owner"].as_str(), v["lease_ended"].as_bool()),
        (Some("running"), Some("worker-a"), Some(false))
    );
    assert!(v["lease_remaining_ms"].as_u64().unwrap() > 50_000, "{v}");
    assert_eq!(v["events"], json!([]));
    assert_eq!(v["context"], ctx);
    let o = saga(&store, &["show", "s-done", "--json"]).await;
    let v = json_out(&o);
    assert_eq!(v["events"][0], json!({ "event": "step_started", "step": "charge", "attempt": 1 }));
    assert_eq!(v["events"].as_array().unwrap().last().unwrap(), &json!({ "event": "finished", "state": "completed" }));
    let o = saga(&store, &["show", "s-nope"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("no saga with id s-nope"), "{}", stderr(&o));

    // retry-compensation: only a failed compensation.
    let o = saga(&store, &["retry-compensation", "s-done"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("s-done is completed, not failed_compensation"), "{}", stderr(&o));
    let o = saga(&store, &["retry-compensation", "s-running"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let o = saga(&store, &["retry-compensation", "s-nope"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let r = log.get("s-running").await.unwrap().unwrap();
    assert_eq!((r.state, r.owner.as_deref()), (SagaState::Running, Some("worker-a")), "refused: untouched");

    // The cause is fixed; the command hands the saga back: compensating, lease ended, an orphan.
    refund_fails.store(false, Ordering::SeqCst);
    let o = saga(&store, &["retry-compensation", "s-failed"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("recovery worker"), "{}", stdout(&o));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = log.get("s-failed").await.unwrap().unwrap();
    assert_eq!(r.state, SagaState::Compensating);
    assert_eq!(r.events.last(), Some(&Event::CompensationRetried));
    assert_eq!(r.lease_remaining, Duration::ZERO);
    assert_eq!(log.orphans(100).await.unwrap(), ["s-failed"]);
    let o = saga(&store, &["list", "--state", "compensating", "--json"]).await;
    assert_eq!(json_out(&o)[0]["id"], "s-failed");

    // The application's recovery worker (it has the definition) takes it over and finishes the compensation.
    let reports = app.recover().await.unwrap();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = reports.into_iter().next().unwrap().unwrap();
    assert_eq!((report.id.as_str(), report.state), ("s-failed", SagaState::Compensated));
    let o = saga(&store, &["show", "s-failed"]).await;
    assert!(stdout(&o).contains("state    compensated"), "{}", stdout(&o));
    assert!(stdout(&o).contains("compensation_retried"), "{}", stdout(&o));
    let o = saga(&store, &["retry-compensation", "s-failed"]).await;
    assert_eq!(o.status.code(), Some(1), "compensated now: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_commands_on_redis() {
    let Some(r) = palisade_testkit::redis("cli_saga").await else { return };
    let log = RedisLog::connect(&r.url).await.unwrap().with_prefix(&r.prefix);
    let store = vec!["--redis".to_owned(), r.url.clone(), "--redis-prefix".to_owned(), r.prefix.clone()];
    scenario(Arc::new(log), store).await;
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_commands_on_postgres() {
    let Some(pg) = palisade_testkit::postgres("cli_saga").await else { return };
    let log = PostgresLog::connect(&pg.url).await.unwrap().with_prefix(&pg.prefix()).unwrap();
    log.migrate().await.unwrap();
    let store = vec!["--postgres".to_owned(), pg.url.clone(), "--postgres-prefix".to_owned(), pg.prefix()];
    scenario(Arc::new(log), store).await;
    // A prefix with no tables: exit 2, saying where the tables come from.
    let wrong = format!("{}.nothing_", pg.schema);
    let o = saga(&["--postgres".to_owned(), pg.url.clone(), "--postgres-prefix".to_owned(), wrong], &["list"]).await;
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("PostgresLog::migrate"), "{}", stderr(&o));
    pg.cleanup().await;
}

#[test]
fn usage_errors_and_unreachable_stores_exit_2() {
    let run = |args: &[&str]| palisade(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    let o = run(&["saga", "list"]);
    assert_eq!(o.status.code(), Some(2), "no store: {o:?}");
    assert!(stderr(&o).contains("--redis URL or --postgres URL"), "{}", stderr(&o));
    let o = run(&["saga", "list", "--redis", "redis://127.0.0.1:1", "--postgres", "postgres://127.0.0.1:1/x"]);
    assert_eq!(o.status.code(), Some(2), "two stores: {o:?}");
    let o = run(&["saga", "show"]);
    assert_eq!(o.status.code(), Some(2), "no id: {o:?}");
    let unreachable = palisade_testkit::unreachable_redis_url();
    let o = run(&["saga", "list", "--redis", &unreachable]);
    assert_eq!(o.status.code(), Some(2), "Redis unreachable: {o:?}");
    assert!(stderr(&o).contains("cannot reach Redis"), "{}", stderr(&o));
    let o = run(&["saga", "show", "x", "--postgres", "postgres://postgres@127.0.0.1:1/postgres"]);
    assert_eq!(o.status.code(), Some(2), "PostgreSQL unreachable: {o:?}");
    assert!(stderr(&o).contains("cannot reach PostgreSQL"), "{}", stderr(&o));
}

#[test]
fn retry_compensation_help_says_the_recovery_worker_does_the_work() {
    let o = palisade(&["saga".into(), "retry-compensation".into(), "--help".into()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let help = stdout(&o);
    for want in ["recovery worker", "compensating", "lease ended", "failed_compensation"] {
        assert!(help.contains(want), "{want:?} in {help}");
    }
}
