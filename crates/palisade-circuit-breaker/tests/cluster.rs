//! Shared breaker state on a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, see palisade-testkit): two instances,
//! each on its own cluster connection, open together on their aggregated failure rate, and breakers of several
//! names (hash tags on different masters) each keep their own shared state.
#![cfg(feature = "redis")]

mod common;

use palisade_circuit_breaker::{CircuitBreakerLayer, State};
use palisade_store::redis::RedisConnection;
use palisade_testkit::redis_cluster;
use tower::Layer;

use common::*;

#[tokio::test]
async fn instances_open_together_on_a_cluster() {
    let Some(t) = redis_cluster("cb_cluster_aggregate").await else { return };
    let b = RedisConnection::connect(&t.url).await.unwrap();
    instances_open_together(shared(t.conn.clone(), &t.prefix, "a"), shared(b, &t.prefix, "b")).await;
    t.cleanup().await;
}

#[tokio::test]
async fn breakers_of_every_master_share_their_own_state() {
    let Some(t) = redis_cluster("cb_cluster_names").await else { return };
    let names: Vec<String> = (0..9).map(|i| format!("psp-{i}")).collect();
    let mut layers = Vec::new();
    for name in &names {
        let (sa, sb) =
            (shared(t.conn.clone(), &t.prefix, "a"), shared(RedisConnection::open(&t.url).unwrap(), &t.prefix, "b"));
        let (sta, stb) = (sa.status(), sb.status());
        let build = |s| {
            CircuitBreakerLayer::builder()
                .name(name.clone())
                .window_calls(20)
                .minimum_calls(20)
                .failure_rate(0.5)
                .shared(s)
                .build()
                .unwrap()
        };
        let (la, lb) = (build(sa), build(sb));
        let (mut a, mut b) = (la.layer(echo()), lb.layer(echo()));
        // Only the odd names fail, half their calls on each instance.
        let failing = name.ends_with(['1', '3', '5', '7']);
        for i in 0..12 {
            let res = if failing && i % 2 == 0 { down() } else { Ok(()) };
            let _ = call(&mut a, res.clone()).await;
            let _ = call(&mut b, res).await;
        }
        sta.sync_now().await.unwrap();
        stb.sync_now().await.unwrap();
        sta.sync_now().await.unwrap();
        layers.push((failing, la.handle(), lb.handle()));
    }
    for (name, (failing, ha, hb)) in names.iter().zip(&layers) {
        let want = if *failing { State::Open } else { State::Closed };
        assert_eq!((ha.state(), hb.state()), (want, want), "{name}");
    }
    let per_master = t.keys_per_master().await;
    eprintln!("breaker keys per master: {per_master:?}");
    assert!(per_master.iter().all(|(_, n)| *n > 0), "the breakers' state lives on every master: {per_master:?}");
    t.cleanup().await;
}
