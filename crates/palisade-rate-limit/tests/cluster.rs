//! Redis-wide limits on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): limiters on three
//! instances, each with its own cluster connection, admit exactly each key's limit, whichever master the key
//! lives on.
#![cfg(feature = "redis")]

use std::time::Duration;

use palisade_rate_limit::RateLimitLayer;
use palisade_rate_limit::redis::RedisStore;
use palisade_testkit::{TestGateway, redis_cluster};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_a_cluster_admit_exactly_each_keys_limit() {
    const LIMIT: usize = 15;
    const KEYS: usize = 12;
    let Some(t) = redis_cluster("rl_cluster_limit").await else { return };
    let gw = TestGateway::<String, ()>::ok(());
    // Three instances: from the cluster URL (lazy), connected from the URL, and on the test's connection.
    let stores = [
        RedisStore::from_url(&t.url),
        RedisStore::new(palisade_store::redis::RedisConnection::connect(&t.url).await.unwrap()),
        RedisStore::new(t.conn.clone()),
    ];
    let services: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let layer = RateLimitLayer::builder()
                .rate(LIMIT as u32, Duration::from_secs(3600))
                .key_by(|req: &String| req.clone())
                .redis(store.prefix(t.prefix.clone()))
                .build()
                .unwrap();
            layer.layer(gw.clone())
        })
        .collect();
    let mut tasks = Vec::new();
    for i in 0..KEYS * LIMIT * 2 {
        let mut svc = services[i % 3].clone();
        let key = format!("merchant-{}", i % KEYS);
        tasks.push(tokio::spawn(async move { (i % KEYS, svc.ready().await.unwrap().call(key).await) }));
    }
    let mut admitted = [0usize; KEYS];
    for task in tasks {
        match task.await.unwrap() {
            (k, Ok(())) => admitted[k] += 1,
            (_, Err(e)) => assert!(e.retry_after().is_some(), "only rate-limit refusals: {e:?}"),
        }
    }
    assert_eq!(admitted, [LIMIT; KEYS], "every key admits exactly its limit across the instances");
    assert_eq!(gw.calls(), KEYS * LIMIT);
    let per_master = t.keys_per_master().await;
    eprintln!("rate-limit keys per master: {per_master:?}");
    assert!(per_master.iter().all(|(_, n)| *n > 0), "the keys live on every master: {per_master:?}");
    t.cleanup().await;
}
