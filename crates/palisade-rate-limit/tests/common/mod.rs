//! Helpers shared by this crate's integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_core::PaymentError;
use tower::Service;

/// An inner service that counts its calls, so a test can tell how many requests got through the limiter.
pub fn counting()
-> (Arc<AtomicUsize>, impl Service<String, Response = (), Error = PaymentError, Future: Send> + Clone + Send) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = tower::service_fn(move |_: String| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, PaymentError>(()) }
    });
    (calls, svc)
}
