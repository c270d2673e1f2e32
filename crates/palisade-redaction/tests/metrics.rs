//! With the `metrics` feature, the audit layer records one duration per call, labelled by service and outcome.
#![cfg(feature = "metrics")]

use std::time::Duration;

use palisade_core::PaymentError;
use palisade_redaction::{AuditLayer, DURATION_HISTOGRAM};
use palisade_testkit::MetricsCapture;
use tower::{ServiceBuilder, ServiceExt};

#[test]
fn one_duration_per_call_by_service_and_outcome() {
    let recorder = MetricsCapture::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let svc = ServiceBuilder::new().layer(AuditLayer::builder().service_name("gw").build()).service_fn(
                |ok: bool| async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    if ok { Ok(()) } else { Err(PaymentError::timeout("lost")) }
                },
            );
            let _ = svc.clone().oneshot(true).await;
            let _ = svc.oneshot(false).await;
        });
    });
    let r = recorder.histograms();
    assert_eq!(r.len(), 2, "{r:?}");
    for (i, outcome) in ["success", "unknown"].into_iter().enumerate() {
        assert_eq!(r[i].0, DURATION_HISTOGRAM);
        assert!(r[i].1.contains(&("service".into(), "gw".into())), "{r:?}");
        assert!(r[i].1.contains(&("outcome".into(), outcome.into())), "{r:?}");
        assert!((r[i].2 - 0.040).abs() < 1e-9, "{r:?}");
    }
}
