//! The saga log on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): the log's conformance
//! (its index lives in a slot of its own and its pipelines cross slots), a checkout round trip, and recovery:
//! a crash at every step boundary taken over by another owner, a dead owner fenced, concurrent recovery workers
//! resuming a saga once. The scenarios are the ones tests/redis.rs runs on one server (tests/common).

mod common;

use common::real::*;
use common::*;
use palisade_saga::RedisLog;
use palisade_testkit::RedisClusterTest;

async fn cluster_log(name: &str) -> Option<(RedisClusterTest, RedisLog)> {
    let t = palisade_testkit::redis_cluster(name).await?;
    let log = RedisLog::new(t.conn.clone()).with_prefix(t.prefix.clone());
    Some((t, log))
}

#[tokio::test]
async fn cluster_log_conformance() {
    let Some((t, log)) = cluster_log("saga_cluster_conformance").await else { return };
    conformance(&log).await;
    t.cleanup().await;
}

#[tokio::test]
async fn cluster_a_checkout_completes_and_its_keys_spread_over_the_masters() {
    let Some((t, log)) = cluster_log("saga_cluster_round_trip").await else { return };
    checkout_completes(log.clone()).await;
    for i in 0..12 {
        one_checkout(log.clone(), &format!("spread-{i}")).await;
    }
    let per_master = t.keys_per_master().await;
    eprintln!("saga keys per master: {per_master:?}");
    assert!(per_master.iter().all(|(_, n)| *n > 0), "sagas live on every master: {per_master:?}");
    t.cleanup().await;
}

#[tokio::test]
async fn cluster_a_crash_at_any_boundary_is_taken_over_with_each_effect_once() {
    let Some((t, log)) = cluster_log("saga_cluster_crash").await else { return };
    crash_at_every_boundary(log, LEASE, sleep_out()).await;
    t.cleanup().await;
}

#[tokio::test]
async fn cluster_a_dead_owner_is_fenced_and_recovery_resumes_once() {
    let Some((t, log)) = cluster_log("saga_cluster_fenced").await else { return };
    a_live_owner_keeps_its_saga_and_a_dead_one_is_fenced(log.clone()).await;
    concurrent_recovery_resumes_once(log).await;
    t.cleanup().await;
}
