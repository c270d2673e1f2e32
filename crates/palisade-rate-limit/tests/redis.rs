//! Redis-wide limits: shared keys across limiters, failure policy, shadow mode, local cache.
#![cfg(feature = "redis")]

use std::time::Duration;

use palisade_core::PaymentError;
use palisade_rate_limit::RateLimitLayer;
use palisade_rate_limit::redis::RedisStore;
use palisade_testkit::{LogCapture, TestGateway, redis, unreachable_redis_url};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_limiters_sharing_a_key_hold_the_global_limit() {
    let Some(r) = redis("rl_shared_key").await else { return };
    let gw = TestGateway::<String, ()>::ok(());
    // Three "instances", each with its own connection; 20 per hour per key, so nothing refills mid-test.
    let mut services = Vec::new();
    for _ in 0..3 {
        let conn = palisade_store::redis::connect(&r.url).await.unwrap();
        let layer = RateLimitLayer::builder()
            .rate(20, Duration::from_secs(3600))
            .key_by(|req: &String| req.clone())
            .redis(RedisStore::new(conn).prefix(r.prefix.clone()))
            .build()
            .unwrap();
        services.push(layer.layer(gw.clone()));
    }
    let mut tasks = Vec::new();
    for i in 0..90 {
        let mut svc = services[i % 3].clone();
        let key = if i % 10 == 0 { "merchant-b" } else { "merchant-a" };
        tasks.push(tokio::spawn(async move { (key, svc.ready().await.unwrap().call(key.to_owned()).await) }));
    }
    let (mut a, mut b, mut refused) = (0, 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            ("merchant-a", Ok(())) => a += 1,
            (_, Ok(())) => b += 1,
            (_, Err(e)) => refused.push(e),
        }
    }
    assert_eq!(a, 20, "merchant-a: exactly its quota across all instances");
    assert_eq!(b, 9, "merchant-b: its own key, under its quota");
    assert_eq!(gw.calls(), 29);
    assert_eq!(refused.len(), 61);
    for e in refused {
        let Some(after) = e.retry_after() else { panic!("{e:?}") };
        // One unit per 180 s; the refusal says when (server time, so within the test's few ms of 180 s).
        assert!(after <= Duration::from_secs(180) && after > Duration::from_secs(170), "{after:?}");
    }
    r.cleanup().await;
}

/// Two limiters on one Redis and prefix (a per-minute and a per-second limit on the same card) keep apart: the
/// per-second limiter's admission does not spend the per-minute one's single unit.
#[tokio::test]
async fn two_named_limiters_on_one_redis_keep_apart() {
    let Some(r) = redis("rl_two_names").await else { return };
    let gw = TestGateway::<String, ()>::ok(());
    let limiter = |name: &str, n: u32, per: Duration| {
        RateLimitLayer::builder()
            .name(name)
            .rate(n, per)
            .key_by(|req: &String| req.clone())
            .redis(RedisStore::from_url(&r.url).prefix(r.prefix.clone()))
            .build()
            .unwrap()
            .layer(gw.clone())
    };
    let mut per_minute = limiter("per-card-minute", 1, Duration::from_secs(60));
    let mut per_second = limiter("per-card-second", 10, Duration::from_secs(1));
    assert!(per_second.ready().await.unwrap().call("card".to_owned()).await.is_ok());
    assert!(per_minute.ready().await.unwrap().call("card".to_owned()).await.is_ok(), "its own unit, not spent");
    assert!(per_minute.ready().await.unwrap().call("card".to_owned()).await.is_err(), "and only one");
    r.cleanup().await;
}

#[tokio::test]
async fn redis_and_local_agree_on_burst_and_cost() {
    let Some(r) = redis("rl_cost").await else { return };
    let gw = TestGateway::<String, ()>::ok(());
    let layer = RateLimitLayer::builder()
        .rate(5, Duration::from_secs(3600))
        .cost_by(|req: &String| req.len() as u32)
        .redis(RedisStore::new(r.conn.clone()).prefix(r.prefix.clone()))
        .build()
        .unwrap();
    let mut svc = layer.layer(gw.clone());
    assert!(svc.ready().await.unwrap().call("xxx".to_owned()).await.is_ok()); // 3 of 5
    let e = svc.ready().await.unwrap().call("xxx".to_owned()).await.unwrap_err(); // needs 1 more unit
    let after = e.retry_after().unwrap();
    assert!(after <= Duration::from_secs(720) && after > Duration::from_secs(710), "{after:?}");
    assert!(svc.ready().await.unwrap().call("xx".to_owned()).await.is_ok()); // exactly the last 2
    let e = svc.ready().await.unwrap().call("xxxxxx".to_owned()).await.unwrap_err();
    assert!(matches!(e, PaymentError::InvalidRequest { .. }), "{e:?}");
    // The key is hash-tagged and expires when idle.
    let mut conn = r.conn.clone();
    let key = format!("{}{{global}}:default:tat", r.prefix);
    let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_001, "{key} ttl {ttl}");
    r.cleanup().await;
}

#[tokio::test]
async fn shadow_mode_never_rejects_but_records() {
    let Some(r) = redis("rl_shadow").await else { return };
    let gw = TestGateway::<String, ()>::ok(());
    let layer = RateLimitLayer::builder()
        .name("new-limit")
        .rate(2, Duration::from_secs(3600))
        .shadow(true)
        .redis(RedisStore::new(r.conn.clone()).prefix(r.prefix.clone()).local_cache(true))
        .build()
        .unwrap();
    let mut svc = layer.layer(gw.clone());
    let cap = LogCapture::new();
    let _guard = tracing::subscriber::set_default(cap.subscriber());
    for _ in 0..5 {
        assert!(svc.ready().await.unwrap().call("x".to_owned()).await.is_ok());
    }
    assert_eq!(gw.calls(), 5, "shadow mode never refuses");
    let logs = cap.contents();
    assert_eq!(logs.matches("decision=\"shadow_rejected\"").count(), 3, "{logs}");
    assert!(logs.contains("limiter=\"new-limit\""), "{logs}");
    r.cleanup().await;
}

#[tokio::test]
async fn local_cache_refuses_known_limited_keys_without_asking_redis() {
    let Some(r) = redis("rl_cache").await else { return };
    let build = |cache: bool| {
        RateLimitLayer::builder()
            .rate(1, Duration::from_secs(3600))
            .key_by(|req: &String| req.clone())
            .redis(RedisStore::new(r.conn.clone()).prefix(r.prefix.clone()).local_cache(cache))
            .build()
            .unwrap()
    };
    let gw = TestGateway::<String, ()>::ok(());
    let mut cached = build(true).layer(gw.clone());
    let mut uncached = build(false).layer(gw);
    assert!(cached.ready().await.unwrap().call("card".to_owned()).await.is_ok());
    assert!(cached.ready().await.unwrap().call("card".to_owned()).await.is_err()); // Redis refuses; cached
    // Reset the key behind both limiters' backs: only a limiter that asks Redis can notice.
    let mut conn = r.conn.clone();
    let _: () =
        ::redis::cmd("DEL").arg(format!("{}{{card}}:default:tat", r.prefix)).query_async(&mut conn).await.unwrap();
    let e = cached.ready().await.unwrap().call("card".to_owned()).await.unwrap_err();
    let after = e.retry_after().unwrap();
    assert!(after > Duration::from_secs(3590), "refused from the cache with the remaining time: {after:?}");
    assert!(uncached.ready().await.unwrap().call("card".to_owned()).await.is_ok(), "Redis itself was reset");
    r.cleanup().await;
}

#[test]
fn redis_before_key_by_is_a_build_error_not_a_silent_local_limit() {
    let e = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .redis(RedisStore::from_url("redis://127.0.0.1:1"))
        .key_by(|r: &String| r.clone())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("after .key_by"), "{e}");
}

#[tokio::test]
async fn http_mode_answers_503_problem_when_redis_is_down() {
    let layer = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .redis(RedisStore::from_url(&unreachable_redis_url()))
        .http()
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(b"charged".to_vec()))
    }));
    let res = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
    assert_eq!(body["type"], "urn:palisade:problem:store_unavailable");
    assert!(!String::from_utf8_lossy(res.body()).contains("charged"), "the inner service was not called");
}
