//! Velocity on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): two instances, each on its
//! own cluster connection, count the same attempts; every namespace is one slot, and namespaces spread over the
//! masters.
#![cfg(feature = "redis")]

use palisade_core::{Currency, Money};
use palisade_fraud::{Attempt, Attributes, Measure, RedisVelocityStore, Subject, Velocity, VelocityStore, Window};
use palisade_store::redis::RedisConnection;
use palisade_testkit::redis_cluster;

const N: usize = 40;

fn card_attempts(counts: &palisade_fraud::VelocityCounts) -> i64 {
    counts.get(Velocity::new(Measure::Attempts, Subject::Card, Window::Hour))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_count_every_attempt_once_in_every_namespace() {
    let Some(t) = redis_cluster("fraud_cluster_velocity").await else { return };
    let other = RedisConnection::connect(&t.url).await.unwrap();
    for ns in ["eu", "us", "apac", "latam", "mena", "anz"] {
        let a = RedisVelocityStore::new(t.conn.clone()).prefix(t.prefix.clone()).namespace(ns);
        let b = RedisVelocityStore::new(other.clone()).prefix(t.prefix.clone()).namespace(ns);
        let attributes: Vec<Attributes> = (0..N)
            .map(|i| {
                Attributes::new(Money::from_minor(1_000, Currency::USD))
                    .card_fingerprint("fp_cluster")
                    .attempt_id(format!("{ns}-key-{i}"))
            })
            .collect();
        // N attempts at once, alternating between the instances: each sees the count the script gave it, so the
        // counts seen are exactly 1..=N when every attempt is counted once and atomically.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, attrs) in attributes.iter().cloned().enumerate() {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move {
                (i, card_attempts(&store.record_attempt(&Attempt::from_attributes(&attrs)).await.unwrap()))
            });
        }
        let mut by_attempt: Vec<(usize, i64)> = tasks.join_all().await;
        by_attempt.sort_unstable();
        let mut seen: Vec<i64> = by_attempt.iter().map(|(_, n)| *n).collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=N as i64).collect::<Vec<_>>(), "namespace {ns}");
        // A retry of an attempt (same idempotency key) on the other instance counts nothing more, and reads what
        // the attempt read the first time.
        let again = b.record_attempt(&Attempt::from_attributes(&attributes[0])).await.unwrap();
        assert_eq!(card_attempts(&again), by_attempt[0].1, "namespace {ns}");
        let next = Attributes::new(Money::from_minor(1_000, Currency::USD))
            .card_fingerprint("fp_cluster")
            .attempt_id(format!("{ns}-key-{N}"));
        let next = a.record_attempt(&Attempt::from_attributes(&next)).await.unwrap();
        assert_eq!(card_attempts(&next), N as i64 + 1, "namespace {ns}");
    }
    let per_master = t.keys_per_master().await;
    eprintln!("velocity keys per master (6 namespaces): {per_master:?}");
    assert!(per_master.iter().all(|(_, n)| *n > 0), "the namespaces live on every master: {per_master:?}");
    t.cleanup().await;
}
