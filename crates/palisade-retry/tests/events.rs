//! The retry layer's tracing events. This is the only test in its binary, on purpose.
//!
//! It installs a scoped capture subscriber. tracing caches each callsite's interest globally: when tests on other
//! threads of the same binary reach the layer's event callsites while no subscriber of theirs is interested, the
//! cache can settle on "never" in a race with this test's `set_default`, and the event is lost. In a binary of its
//! own, nothing else reaches those callsites.

use std::time::Duration;

use palisade_core::*;
use palisade_retry::RetryLayer;
use palisade_sim::{Fault, GatewaySim};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn each_retry_emits_an_event_with_stable_fields() {
    let capture = palisade_testkit::LogCapture::new();
    let _guard = tracing::subscriber::set_default(capture.subscriber());
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::RateLimited { retry_after: Duration::from_millis(1500) }, Fault::Timeout]);
    let mut svc = RetryLayer::builder().max_attempts(2).build().layer(sim.clone());
    let req = palisade_testkit::charge("o1").build();
    assert!(svc.ready().await.unwrap().call(req).await.is_err());
    assert_eq!(sim.calls(), 2);
    let logs = capture.contents();
    let retry = logs.lines().find(|l| l.contains(" INFO ") && l.contains("retrying gateway call")).expect(&logs);
    for field in ["attempt=1", "delay_ms=1500", "outcome=\"retriable\"", "reason=\"retry_after\""] {
        assert!(retry.contains(field), "missing {field} in {retry}");
    }
    let gave_up = logs.lines().find(|l| l.contains("not retrying")).expect(&logs);
    for field in ["attempt=2", "outcome=\"unknown\"", "reason=\"max_attempts\""] {
        assert!(gave_up.contains(field), "missing {field} in {gave_up}");
    }
}
