//! Issue 23: a short chaos run (examples/chaos/scenario.rs) in `cargo test`, on Redis and on PostgreSQL: 300
//! checkouts through two instances of examples/server (debug build) against the faulty HTTP simulator, one
//! instance killed with SIGKILL and restarted; no duplicate charge, no lost charge, every saga ended,
//! reconciliation clean. Each run uses a key prefix or schema of its own, so it runs alongside the other tests.
//! Without Redis or PostgreSQL a test says SKIPPED loudly, or fails when `PALISADE_REQUIRE_REDIS=1`
//! (`PALISADE_REQUIRE_POSTGRES=1`).

#[allow(dead_code)] // the example uses the rest (other stores, cleanup)
#[path = "../examples/chaos/scenario.rs"]
mod scenario;
#[allow(dead_code)]
#[path = "support/server_process.rs"]
mod server_process;

use scenario::{Config, Report, Store};

/// The seed, from `CHAOS_SEED` when set (to replay a failure), else a fixed one.
fn seed(default: u64) -> u64 {
    std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

async fn short_run(seed: u64, store: Store) -> Report {
    let server = tokio::task::spawn_blocking(server_process::server_binary).await.unwrap();
    let mut config = Config::new(seed, 300, 2, store, server);
    config.kills = 1;
    let report = scenario::run(config).await.unwrap_or_else(|e| panic!("the chaos run could not happen: {e:#}"));
    println!("{report}");
    report
}

/// The run did what it claims (so a clean report means something), and found nothing wrong.
fn assert_clean(report: &Report) {
    assert_eq!(report.kills, 1, "one instance was killed and restarted:\n{report}");
    assert!(report.faults.iter().map(|f| f.1).sum::<u64>() > 0, "faults were injected:\n{report}");
    assert!(report.retries > 0, "clients retried:\n{report}");
    assert!(report.answers.get("201").copied().unwrap_or(0) > 0, "checkouts succeeded:\n{report}");
    assert!(report.reconciled > 0, "orders were reconciled:\n{report}");
    assert!(report.violations.is_empty(), "seed {}: {} violations:\n{report}", report.seed, report.violations.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_redis_charges_each_order_once() {
    let Some(redis) = palisade_testkit::redis("chaos").await else { return };
    let store = Store::Redis { url: redis.url.clone(), prefix: redis.prefix.clone() };
    let report = short_run(seed(23), store).await;
    redis.cleanup().await;
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_postgres_charges_each_order_once() {
    let Some(pg) = palisade_testkit::postgres("chaos").await else { return };
    let store = Store::Postgres { url: pg.url.clone(), prefix: pg.prefix() };
    let report = short_run(seed(23), store).await;
    pg.cleanup().await;
    assert_clean(&report);
}
