//! Idempotency on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`: three masters with one replica each, started by
//! `.ci/redis-cluster`): the store-agnostic scenarios of tests/common (the 1000 concurrent duplicates among
//! them), records spread over every master, and a master failed over while requests run.
//!
//! The failover test holds the cluster exclusively (`redis_cluster_exclusive`): the other tests of this binary
//! wait for it, so none of them sees the store errors a failover may cause.

#![cfg(feature = "redis")]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use palisade_core::{GatewayKeyed, GatewayRequest, PaymentError};
use palisade_idempotency::{IdempotencyLayer, RedisStore};
use palisade_sim::GatewaySim;
use palisade_testkit::RedisClusterTest;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

fn store(t: &RedisClusterTest) -> RedisStore {
    RedisStore::new(t.conn.clone()).with_prefix(t.prefix.clone())
}

/// Two instances of the service, as two processes would run them: each connects to the cluster on its own.
async fn two_instances(t: &RedisClusterTest) -> [RedisStore; 2] {
    let instance = || async { RedisStore::connect(&t.url).await.unwrap().with_prefix(t.prefix.clone()) };
    [instance().await, instance().await]
}

#[tokio::test]
async fn store_contract_cluster() {
    let Some(t) = palisade_testkit::redis_cluster("idem_cluster_contract").await else { return };
    let (conn, s) = (t.conn.clone(), store(&t));
    let expire: Expire = Arc::new(move |key: String| {
        let (conn, rkey) = (conn.clone(), s.record_key(&key));
        Box::pin(async move { end_redis_lease(&mut conn.get().await.unwrap(), &rkey).await })
    });
    store_contract(store(&t), expire).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_same_key_refused_cluster() {
    let Some(t) = palisade_testkit::redis_cluster("idem_cluster_thousand").await else { return };
    thousand_concurrent_refused(store(&t)).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_same_key_two_instances_cluster() {
    let Some(t) = palisade_testkit::redis_cluster("idem_cluster_race_two").await else { return };
    same_key_race(two_instances(&t).await, Gateway::Open).await;
    t.cleanup().await;
}

/// 300 distinct idempotency keys through the layer: their records land on all three masters.
#[tokio::test]
async fn records_spread_over_every_master() {
    const N: usize = 300;
    let Some(t) = palisade_testkit::redis_cluster("idem_cluster_spread").await else { return };
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder().store(store(&t)).ttl(TTL).build().layer(sim.clone());
    for i in 0..N {
        svc.clone().oneshot(charge(&format!("order-{i}"), "1.00", "tok_visa", &format!("key-{i}"))).await.unwrap();
    }
    assert_eq!(sim.calls(), N as u64);
    let per_master = t.keys_per_master().await;
    eprintln!("records of {N} idempotency keys per master: {per_master:?}");
    assert_eq!(per_master.len(), 3, "three masters serve slots: {per_master:?}");
    assert_eq!(per_master.iter().map(|(_, n)| n).sum::<usize>(), N, "one record per key: {per_master:?}");
    assert!(per_master.iter().all(|(_, n)| *n > 0), "every master holds records: {per_master:?}");
    t.cleanup().await;
}

/// What happened to the requests of one phase of the failover test.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicUsize,
    store_unavailable: AtomicUsize,
    in_flight: AtomicUsize,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
            + self.store_unavailable.load(Ordering::SeqCst)
            + self.in_flight.load(Ordering::SeqCst)
    }
    fn count(&self, r: &Result<palisade_core::GatewayResponse, PaymentError>) {
        match r {
            Ok(_) => &self.ok,
            Err(PaymentError::StoreUnavailable { .. }) => &self.store_unavailable,
            Err(PaymentError::IdempotencyInFlight { .. }) => &self.in_flight,
            Err(e) => panic!("a request during a failover got {e:?}: only a typed store error is allowed"),
        }
        .fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests: {} ok, {} store unavailable (503), {} in flight (409)",
            self.total(),
            self.ok.load(Ordering::SeqCst),
            self.store_unavailable.load(Ordering::SeqCst),
            self.in_flight.load(Ordering::SeqCst)
        )
    }
}

/// A gateway that counts its executions per gateway key, in front of the simulator.
fn counting(sim: GatewaySim, executions: Arc<Mutex<HashMap<String, usize>>>) -> Gw {
    BoxCloneService::new(tower::service_fn(move |req: GatewayRequest| {
        let key = req.gateway_key().map(|k| k.as_str().to_owned()).unwrap_or_default();
        *executions.lock().unwrap().entry(key).or_default() += 1;
        let sim = sim.clone();
        async move { sim.handle(req).await }
    }))
}

/// How the master goes away in [`failover_mid_traffic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// `CLUSTER FAILOVER` on its replica at once: the master hands over within a few hundred milliseconds.
    Handover,
    /// The master first stops answering writes for longer than a request waits (`CLIENT PAUSE WRITE`, 2.5 s
    /// against the 2 s response timeout), so requests on its slots time out; then its replica takes over.
    StallThenHandover,
}

/// While two instances send requests (each key twice at once, as an impatient client does), one master goes away
/// as `loss` says and its replica takes over. Every request gets an answer, a typed store error (503), or an
/// in-flight refusal (409) — no other error; no key reaches the gateway twice; afterwards, without restarting or
/// reconnecting anything, every key can be sent again (it replays, or runs now if it never ran) and new keys all
/// succeed. Returns the tallies before, during and after.
async fn failover_mid_traffic(t: &RedisClusterTest, loss: Loss) -> Arc<[Tally; 3]> {
    const BEFORE: usize = 200;
    const AFTER: usize = 200;
    const WORKERS: usize = 8;
    let sim = GatewaySim::new();
    let executions = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let svcs: Vec<_> = two_instances(t)
        .await
        .into_iter()
        .map(|s| {
            IdempotencyLayer::builder()
                .store(s)
                .lease(LEASE)
                .ttl(TTL)
                .build()
                .layer(counting(sim.clone(), executions.clone()))
        })
        .collect();
    let tallies: Arc<[Tally; 3]> = Arc::default();
    let phase = Arc::new(AtomicU8::new(0));
    let (next_key, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let req = |i: usize| charge(&format!("order-{i}"), "7.00", "tok_visa", &format!("key-{i}"));

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (svcs, tallies, phase, next_key, stop) =
            (svcs.clone(), tallies.clone(), phase.clone(), next_key.clone(), stop.clone());
        workers.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let i = next_key.fetch_add(1, Ordering::SeqCst);
                let p = usize::from(phase.load(Ordering::SeqCst));
                let (a, b) = (svcs[w % 2].clone(), svcs[(w + 1) % 2].clone());
                let (ra, rb) = tokio::join!(a.oneshot(req(i)), b.oneshot(req(i)));
                tallies[p].count(&ra);
                tallies[p].count(&rb);
            }
        });
    }
    let until = |what: fn(&[Tally; 3]) -> bool| {
        let tallies = tallies.clone();
        async move {
            while !what(&tallies) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    until(|t| t[0].total() >= BEFORE).await;

    let victim = t.masters().await[0].clone();
    phase.store(1, Ordering::SeqCst);
    let started = std::time::Instant::now();
    if loss == Loss::StallThenHandover {
        t.pause_writes(&victim, 2_500).await;
        // Requests on the stalled master's slots run into the response timeout: typed store errors.
        until(|t| t[1].store_unavailable.load(Ordering::SeqCst) > 0).await;
    }
    let promoted = t.failover(&victim).await;
    t.unpause(&victim).await;
    let took = started.elapsed();
    phase.store(2, Ordering::SeqCst);
    until(|t| t[2].total() >= AFTER).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let keys = next_key.load(Ordering::SeqCst);
    let twice = |executions: &HashMap<String, usize>| executions.values().filter(|n| **n > 1).count();
    let executed = executions.lock().unwrap().len();
    eprintln!("{loss:?}: {} failed over to {promoted} in {took:?}", victim.addr);
    for (name, tally) in ["before", "during", "after"].iter().zip(tallies.iter()) {
        eprintln!("  {name}: {tally}");
    }
    eprintln!(
        "  {keys} keys, {executed} executed at the gateway, {} executed twice",
        twice(&executions.lock().unwrap())
    );
    assert_eq!(twice(&executions.lock().unwrap()), 0, "keys executed more than once: {:?}", executions.lock().unwrap());
    assert!(tallies[1].total() > 0, "no request ran while the master failed over");

    // Afterwards, on the same connections: every key sent again replays or (if it never ran) runs now...
    let (mut replayed, mut ran, mut held) = (0, 0, 0);
    for i in 0..keys {
        let before = executions.lock().unwrap().get(&format!("key-{i}")).copied().unwrap_or(0);
        match svcs[i % 2].clone().oneshot(req(i)).await {
            Ok(_) if before == 1 => replayed += 1,
            Ok(_) => ran += 1,
            // It ran, but its completion was lost to the failover: the key stays held until its lease ends.
            Err(PaymentError::IdempotencyInFlight { .. }) if before == 1 => held += 1,
            Err(e) => panic!("key-{i} after the failover: {e:?}"),
        }
    }
    // ...and new keys all succeed, on both instances.
    for i in keys..keys + 100 {
        svcs[i % 2].clone().oneshot(req(i)).await.unwrap_or_else(|e| panic!("a new key after the failover: {e:?}"));
    }
    let double_after = twice(&executions.lock().unwrap());
    eprintln!(
        "  afterwards: {replayed} replay, {ran} never ran and run now, {held} held (completion lost), 100 new keys \
         succeed, {double_after} executed twice"
    );
    assert_eq!(double_after, 0);
    assert!(replayed > 0);
    assert_eq!(replayed + ran + held, keys);
    tallies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_handing_over_mid_traffic_never_executes_twice() {
    let Some(t) = palisade_testkit::redis_cluster_exclusive("idem_cluster_handover").await else { return };
    let tallies = failover_mid_traffic(&t, Loss::Handover).await;
    assert_eq!(tallies[2].store_unavailable.load(Ordering::SeqCst), 0, "refusals after the failover completed");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_master_gives_typed_store_errors_then_its_replica_takes_over() {
    let Some(t) = palisade_testkit::redis_cluster_exclusive("idem_cluster_stall").await else { return };
    let tallies = failover_mid_traffic(&t, Loss::StallThenHandover).await;
    assert!(tallies[1].store_unavailable.load(Ordering::SeqCst) > 0);
    t.cleanup().await;
}
