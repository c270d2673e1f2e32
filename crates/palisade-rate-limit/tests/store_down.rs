//! Redis unreachable: fail closed by default, fail open when asked, shadow mode admits, and each decision recorded.
//! In a test binary of its own because it asserts on tracing output, and tracing's callsite interest is
//! process-global: another test hitting the same callsite without a subscriber at the same moment can hide events
//! from this one. Its two tests assert on different callsites (`store_unavailable` and `fail_open` in one,
//! `shadow_store_unavailable` in the other), and each installs its capture before its first call.
#![cfg(feature = "redis")]

use std::time::Duration;

use palisade_core::{FailurePolicy, PaymentError};
use palisade_rate_limit::RateLimitLayer;
use palisade_rate_limit::redis::RedisStore;
use palisade_testkit::{LogCapture, TestGateway, unreachable_redis_url};
use tower::{Layer, Service, ServiceExt};

#[tokio::test]
async fn unreachable_redis_fails_closed_by_default_and_open_when_asked() {
    let cap = LogCapture::new();
    let _guard = tracing::subscriber::set_default(cap.subscriber());

    let gw = TestGateway::<String, ()>::ok(());
    let layer = RateLimitLayer::builder()
        .rate(100, Duration::from_secs(1))
        .redis(RedisStore::from_url(&unreachable_redis_url()))
        .build()
        .unwrap();
    let mut svc = layer.layer(gw.clone());
    let e = svc.ready().await.unwrap().call("x".to_owned()).await.unwrap_err();
    assert!(matches!(e, PaymentError::StoreUnavailable { .. }), "{e:?}");
    assert_eq!(e.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(gw.calls(), 0, "fail-closed: the gateway was not called");
    assert_eq!(cap.contents().matches("decision=\"store_unavailable\"").count(), 1, "{}", cap.contents());

    let gw = TestGateway::<String, ()>::ok(());
    let layer = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .on_store_failure(FailurePolicy::FailOpen)
        .redis(RedisStore::from_url(&unreachable_redis_url()))
        .build()
        .unwrap();
    let mut svc = layer.layer(gw.clone());
    for _ in 0..3 {
        assert!(svc.ready().await.unwrap().call("x".to_owned()).await.is_ok());
    }
    assert_eq!(gw.calls(), 3, "fail-open: admitted although a 1/s limit could not be checked");
    assert_eq!(cap.contents().matches("decision=\"fail_open\"").count(), 3, "{}", cap.contents());
}

#[tokio::test]
async fn shadow_mode_admits_and_records_when_redis_is_unreachable() {
    let cap = LogCapture::new();
    let _guard = tracing::subscriber::set_default(cap.subscriber());

    // Default failure policy (fail-closed): outside shadow mode this limiter would answer 503 to every call.
    let gw = TestGateway::<String, ()>::ok(());
    let layer = RateLimitLayer::builder()
        .name("shadow-rollout")
        .rate(100, Duration::from_secs(1))
        .shadow(true)
        .redis(RedisStore::from_url(&unreachable_redis_url()))
        .build()
        .unwrap();
    let mut svc = layer.layer(gw.clone());
    for _ in 0..3 {
        let r = svc.ready().await.unwrap().call("x".to_owned()).await;
        assert!(r.is_ok(), "a shadow limiter refused a call: {r:?}");
    }
    assert_eq!(gw.calls(), 3, "shadow mode never refuses, whatever the backend's state");
    let logs = cap.contents();
    assert_eq!(logs.matches("decision=\"shadow_store_unavailable\"").count(), 3, "{logs}");
    assert_eq!(logs.matches("decision=\"store_unavailable\"").count(), 0, "not counted as a refusal: {logs}");
    assert!(logs.contains("limiter=\"shadow-rollout\""), "{logs}");
}
