//! The Redis plumbing on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): the lease store's
//! scripts on every master, their reload after the script cache is flushed on every node, and pipelines across
//! slots.

#![cfg(feature = "redis")]

use std::time::Duration;

use palisade_store::lease::{Claim, Fingerprint, LeaseStore, Payload, Record, RedisStore};
use palisade_store::redis::{RedisConn, RedisConnection};

const LEASE: Duration = Duration::from_secs(30);

fn fp(b: u8) -> Fingerprint {
    Fingerprint([b; 32])
}

/// Claims, completes and reads one record per key on `store`; every key answers as on a single server.
async fn round_trip(store: &RedisStore, keys: &[String]) {
    for key in keys {
        let Claim::Acquired { hold, took_over: false } = store.claim(key, &fp(1), LEASE, LEASE).await.unwrap() else {
            panic!("a fresh key is acquired: {key}")
        };
        assert!(matches!(store.claim(key, &fp(1), LEASE, LEASE).await.unwrap(), Claim::Held { .. }));
        assert!(matches!(store.claim(key, &fp(2), LEASE, LEASE).await.unwrap(), Claim::Mismatch));
        assert!(store.complete(&hold, Payload::Bytes(format!("done {key}").into()), LEASE).await.unwrap());
        match store.get(key).await.unwrap() {
            Some(Record::Done { response, .. }) => assert_eq!(response.to_bytes(), format!("done {key}").as_bytes()),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn lease_scripts_run_on_every_master_and_reload_after_a_flush() {
    let Some(t) = palisade_testkit::redis_cluster("store_cluster_scripts").await else { return };
    let store = RedisStore::new(t.conn.clone()).with_prefix(t.prefix.clone());
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    round_trip(&store, &keys[..30]).await;
    let per_master = t.keys_per_master().await;
    eprintln!("lease records per master: {per_master:?}");
    assert!(per_master.len() == 3 && per_master.iter().all(|(_, n)| *n > 0), "{per_master:?}");

    // Every node forgets every script: the next EVALSHA answers NOSCRIPT, the script is loaded on every node
    // (SCRIPT LOAD goes to all of them through the cluster client) and sent again.
    let mut conn = t.conn().await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    round_trip(&store, &keys[30..]).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_pipeline_across_slots_runs_in_order() {
    let Some(t) = palisade_testkit::redis_cluster("store_cluster_pipeline").await else { return };
    let mut conn: RedisConn = t.conn().await;
    let keys: Vec<String> =
        (0..8).map(|i| palisade_store::redis::redis_key(&t.prefix, &format!("t{i}"), "v")).collect();
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        pipe.cmd("SET").arg(k).arg(i).ignore();
    }
    for k in &keys {
        pipe.cmd("INCR").arg(k);
    }
    let got: Vec<i64> = pipe.query_async(&mut conn).await.unwrap();
    assert_eq!(got, (1..=8).collect::<Vec<i64>>());
    // A transaction cannot span slots: the cluster refuses it, nothing is split or sent.
    let mut tx = redis::pipe();
    tx.atomic().cmd("INCR").arg(&keys[0]).cmd("INCR").arg(&keys[1]);
    let refused = tx.query_async::<Vec<i64>>(&mut conn).await.unwrap_err();
    assert_eq!(refused.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot), "{refused}");
    let first: i64 = redis::cmd("GET").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert_eq!(first, 1);
    t.cleanup().await;
}

#[tokio::test]
async fn the_cluster_url_connects_every_store_constructor() {
    let Some(t) = palisade_testkit::redis_cluster("store_cluster_url").await else { return };
    let connected = RedisStore::connect(&t.url).await.unwrap().with_prefix(t.prefix.clone());
    let lazy = RedisStore::open(&t.url).unwrap().with_prefix(t.prefix.clone());
    let seeds = RedisStore::new(RedisConnection::cluster(&t.seeds[..1]).unwrap()).with_prefix(t.prefix.clone());
    round_trip(&connected, &["a".to_owned()]).await;
    round_trip(&lazy, &["b".to_owned()]).await;
    round_trip(&seeds, &["c".to_owned()]).await;
    assert!(matches!(seeds.get("a").await.unwrap(), Some(Record::Done { .. })), "one cluster, whatever the seed");
    t.cleanup().await;
}
