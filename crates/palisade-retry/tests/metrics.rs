//! With the `metrics` feature, retries and refusals to retry are counted with their outcome and reason.
//! (`cargo test -p palisade-retry --features metrics`.)
#![cfg(feature = "metrics")]

use std::time::Duration;

use palisade_core::*;
use palisade_retry::RetryLayer;
use palisade_testkit::{MetricsCapture, TestGateway};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retries_and_refusals_are_counted() {
    let capture = MetricsCapture::default();
    let _guard = metrics::set_default_local_recorder(&capture);

    let gw = TestGateway::<GatewayRequest, ()>::err(PaymentError::RateLimited {
        retry_after: Some(Duration::from_millis(10)),
    });
    let mut svc = RetryLayer::builder().max_attempts(3).build().layer(gw);
    let req = GatewayRequest::Void(VoidRequest { authorization_id: "auth_1".into(), idempotency_key: None });
    assert!(svc.ready().await.unwrap().call(req).await.is_err());

    let counts = capture.counters();
    assert_eq!(
        counts.get("palisade_retry_retries_total{outcome=retriable,reason=retry_after}"),
        Some(&2),
        "{counts:?}"
    );
    assert_eq!(
        counts.get("palisade_retry_gave_up_total{outcome=retriable,reason=max_attempts}"),
        Some(&1),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_after_that_is_not_waited_for_is_counted_with_its_reason() {
    let capture = MetricsCapture::default();
    let _guard = metrics::set_default_local_recorder(&capture);
    let void = || GatewayRequest::Void(VoidRequest { authorization_id: "auth_1".into(), idempotency_key: None });

    // Defaults (max delay 10 s, deadline 30 s). 60 s: past the deadline.
    let gw = TestGateway::<GatewayRequest, ()>::err(PaymentError::CircuitOpen {
        retry_after: Some(Duration::from_secs(60)),
    });
    let mut svc = RetryLayer::builder().build().layer(gw);
    assert!(svc.ready().await.unwrap().call(void()).await.is_err());
    // 15 s: within the deadline, but longer than the layer waits.
    let gw = TestGateway::<GatewayRequest, ()>::err(PaymentError::RateLimited {
        retry_after: Some(Duration::from_secs(15)),
    });
    let mut svc = RetryLayer::builder().build().layer(gw);
    assert!(svc.ready().await.unwrap().call(void()).await.is_err());

    let counts = capture.counters();
    assert_eq!(counts.get("palisade_retry_gave_up_total{outcome=retriable,reason=deadline}"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("palisade_retry_gave_up_total{outcome=retriable,reason=retry_after_over_max_delay}"),
        Some(&1),
        "{counts:?}"
    );
    assert!(!counts.keys().any(|k| k.starts_with("palisade_retry_retries_total")), "nothing retried: {counts:?}");
}
