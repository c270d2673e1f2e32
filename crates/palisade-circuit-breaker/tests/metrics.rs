//! With the `metrics` feature, transitions, rejections and slow calls reach the `metrics` facade with stable
//! names and labels.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::PaymentError;
use parking_lot::Mutex;
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Default)]
struct Cell(AtomicU64);
impl CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::SeqCst);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }
}

/// Counters by `name{label=value,...}`.
#[derive(Default)]
struct Capture(Mutex<BTreeMap<String, Arc<Cell>>>);

impl Capture {
    fn get(&self, key: &str) -> u64 {
        self.0.lock().get(key).map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Counter::from_arc(self.0.lock().entry(name).or_default().clone())
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn counters_for_transitions_rejections_and_slow_calls() {
    let capture = Capture::default();
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
    assert_eq!(capture.get("palisade_circuit_breaker_slow_calls_total{breaker=psp}"), 1);
    assert_eq!(
        capture.get("palisade_circuit_breaker_transitions_total{breaker=psp,from=closed,to=open,reason=failure_rate}"),
        1
    );
    assert_eq!(capture.get("palisade_circuit_breaker_rejections_total{breaker=psp,state=open}"), 1);
}
