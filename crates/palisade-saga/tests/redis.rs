//! The saga log on a real Redis: the log's conformance (every operation, fencing, take-over, orphans, listing),
//! the orchestrator's scenarios from tests/memory.rs that do not depend on paused time (crash at every boundary
//! with a real 300 ms lease, fencing of a dead owner, concurrent recovery, compensation, a failed compensation
//! retried by hand, a parallel group), and the count of commands per transition on a private `redis-server`.
//!
//! Needs Redis (`PALISADE_REDIS_URL`, or `redis-server` on `PATH`); with `PALISADE_REQUIRE_REDIS=1` a missing
//! Redis fails the tests instead of skipping them. Each test has its own key prefix and deletes its keys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::real::*;
use common::*;
use palisade_saga::{Event, RedisLog, SagaLog, SagaState};
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
    let keys = r.keys().await.unwrap();
    for id in ["s-0", "s-1", "s-2"] {
        assert!(keys.contains(&log.saga_key(id)) && log.saga_key(id).contains(&format!("{{{id}}}")), "{keys:?}");
    }
    assert!(keys.contains(&log.events_key("s-1")));
    r.cleanup().await;
}

#[tokio::test]
async fn redis_orphans_are_paged_by_id() {
    let Some((r, log)) = redis_log("saga_orphan_pages").await else { return };
    orphans_are_paged_by_id(log).await;
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
async fn redis_a_compensated_saga_restarts_with_keys_of_its_own() {
    let Some((r, log)) = redis_log("saga_restart").await else { return };
    a_compensated_saga_restarts_with_keys_of_its_own(log).await;
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

#[tokio::test]
async fn redis_an_unserializable_context_is_refused_at_start() {
    let Some((r, log)) = redis_log("saga_bad_context").await else { return };
    an_unserializable_context_is_refused_at_start(log).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_text_with_a_nul_is_kept() {
    let Some((r, log)) = redis_log("saga_nul").await else { return };
    text_with_a_nul_is_kept(log).await;
    r.cleanup().await;
}
