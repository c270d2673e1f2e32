//! With the `metrics` feature, the audit layer records one duration per call, labelled by service and outcome.
#![cfg(feature = "metrics")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use palisade_core::PaymentError;
use palisade_redaction::{DURATION_HISTOGRAM, RedactionLayer};
use tower::{ServiceBuilder, ServiceExt};

type Records = Arc<Mutex<Vec<(String, Vec<(String, String)>, f64)>>>;

struct Capture(Records);
struct One(Key, Records);

impl HistogramFn for One {
    fn record(&self, value: f64) {
        let labels = self.0.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
        if let Ok(mut r) = self.1.lock() {
            r.push((self.0.name().to_owned(), labels, value));
        }
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(One(key.clone(), self.0.clone())))
    }
}

#[test]
fn one_duration_per_call_by_service_and_outcome() {
    let records: Records = Arc::default();
    let recorder = Capture(records.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let svc = ServiceBuilder::new().layer(RedactionLayer::builder().service_name("gw").build()).service_fn(
                |ok: bool| async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    if ok { Ok(()) } else { Err(PaymentError::timeout("lost")) }
                },
            );
            let _ = svc.clone().oneshot(true).await;
            let _ = svc.oneshot(false).await;
        });
    });
    let r = records.lock().unwrap();
    assert_eq!(r.len(), 2, "{r:?}");
    for (i, outcome) in ["success", "unknown"].into_iter().enumerate() {
        assert_eq!(r[i].0, DURATION_HISTOGRAM);
        assert!(r[i].1.contains(&("service".into(), "gw".into())), "{r:?}");
        assert!(r[i].1.contains(&("outcome".into(), outcome.into())), "{r:?}");
        assert!((r[i].2 - 0.040).abs() < 1e-9, "{r:?}");
    }
}
