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
