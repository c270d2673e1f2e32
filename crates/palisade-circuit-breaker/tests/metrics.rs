//! With the `metrics` feature, transitions, rejections and slow calls reach the `metrics` facade with stable
//! names and labels.
#![cfg(feature = "metrics")]

use std::time::Duration;

use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::PaymentError;
use palisade_testkit::MetricsCapture;
use tower::{Layer, Service, ServiceExt, service_fn};

#[test]
fn counters_for_transitions_rejections_and_slow_calls() {
    let capture = MetricsCapture::default();
    metrics::with_local_recorder(&capture, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let layer = CircuitBreakerLayer::builder()
                .name("psp")
                .window_calls(4)
                .minimum_calls(4)
                .slow_calls(Duration::from_secs(1), 1.0)
                .open_duration(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut svc = layer.layer(service_fn(|(d, fail): (u64, bool)| async move {
                tokio::time::sleep(Duration::from_secs(d)).await;
                if fail { Err(PaymentError::timeout("t")) } else { Ok(()) }
            }));
            svc.ready().await.unwrap().call((2, false)).await.unwrap(); // slow
            for _ in 0..3 {
                let _ = svc.ready().await.unwrap().call((0, true)).await;
            }
            let _ = svc.ready().await.unwrap().call((0, false)).await; // rejected
        });
    });
    assert_eq!(capture.counter("palisade_circuit_breaker_slow_calls_total{breaker=psp}"), 1);
    assert_eq!(
        capture
            .counter("palisade_circuit_breaker_transitions_total{breaker=psp,from=closed,to=open,reason=failure_rate}"),
        1
    );
    assert_eq!(capture.counter("palisade_circuit_breaker_rejections_total{breaker=psp,state=open}"), 1);
}
