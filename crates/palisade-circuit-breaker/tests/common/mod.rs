//! What the shared-breaker tests on one Redis (tests/redis.rs) and on a Redis Cluster (tests/cluster.rs) share.

#![allow(dead_code)]

use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreakerLayer, RedisShared, State};
use palisade_core::PaymentError;
use palisade_store::redis::RedisConnection;
use tower::{Layer, Service, ServiceExt, service_fn};

pub type Res = Result<(), PaymentError>;

pub fn echo() -> impl Service<Res, Response = (), Error = PaymentError, Future = impl Future<Output = Res>> + Clone {
    service_fn(|r: Res| async move { r })
}

pub async fn call<S: Service<Res, Response = (), Error = PaymentError>>(s: &mut S, r: Res) -> Res {
    s.ready().await?.call(r).await
}

pub fn down() -> Res {
    Err(PaymentError::timeout("read timed out"))
}

/// Two instances of one service; the sync interval is long so only explicit `sync_now` calls sync.
pub fn shared(conn: impl Into<RedisConnection>, prefix: &str, id: &str) -> RedisShared {
    RedisShared::new(conn).prefix(prefix).instance_id(id).sync_interval(Duration::from_secs(3600))
}

pub fn builder() -> palisade_circuit_breaker::CircuitBreakerLayerBuilder {
    CircuitBreakerLayer::builder().name("psp").window_calls(20).minimum_calls(20).failure_rate(0.5)
}

/// Two instances, each below its own minimum of calls, open together on their aggregated failure rate: the
/// shared breaker trips at the second instance's sync and the first learns it at its next one.
pub async fn instances_open_together(sa: RedisShared, sb: RedisShared) {
    let (sta, stb) = (sa.status(), sb.status());
    let la = builder().shared(sa).build().unwrap();
    let lb = builder().shared(sb).build().unwrap();
    let (ha, hb) = (la.handle(), lb.handle());
    let (mut a, mut b) = (la.layer(echo()), lb.layer(echo()));
    // Each instance sees 12 calls, 6 failing: below its own minimum of 20 calls, so neither trips locally.
    for i in 0..12 {
        let res = if i % 2 == 0 { down() } else { Ok(()) };
        let _ = call(&mut a, res.clone()).await;
        let _ = call(&mut b, res).await;
    }
    assert_eq!((ha.state(), hb.state()), (State::Closed, State::Closed));
    sta.sync_now().await.unwrap();
    // Together: 24 calls, 12 failures = 50 % over the minimum → the shared breaker opens.
    let agg = stb.sync_now().await.unwrap();
    assert!(agg.open_for.is_some(), "{agg:?}");
    assert_eq!(hb.state(), State::Open);
    // Instance A learns it at its next sync and fails fast too.
    let agg = sta.sync_now().await.unwrap();
    assert!(agg.open_for.is_some());
    assert_eq!(ha.state(), State::Open);
    assert!(matches!(call(&mut a, Ok(())).await, Err(PaymentError::CircuitOpen { retry_after: Some(_) })));
    assert!(sta.available() && stb.available());
}
