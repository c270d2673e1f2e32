//! With the `metrics` feature, retries and refusals to retry are counted with their outcome and reason.
//! (`cargo test -p palisade-retry --features metrics`.)
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade_core::*;
use palisade_retry::RetryLayer;
use tower::{Layer, Service, ServiceExt};

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Records counters as `name{label=value,...}` → total.
#[derive(Default)]
struct Capture(Counts);

struct One(String, Counts);
impl CounterFn for One {
    fn increment(&self, value: u64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        Counter::from_arc(Arc::new(One(format!("{}{{{}}}", key.name(), labels.join(",")), self.0.clone())))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retries_and_refusals_are_counted() {
    let capture = Capture::default();
    let counts = capture.0.clone();
    let _guard = metrics::set_default_local_recorder(&capture);

    let gw = tower::service_fn(|_req: GatewayRequest| async {
        Err::<(), _>(PaymentError::RateLimited { retry_after: Some(Duration::from_millis(10)) })
    });
    let mut svc = RetryLayer::builder().max_attempts(3).build().layer(gw);
    let req = GatewayRequest::Void(VoidRequest { authorization_id: "auth_1".into(), idempotency_key: None });
    assert!(svc.ready().await.unwrap().call(req).await.is_err());

    let counts = counts.lock().unwrap().clone();
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
