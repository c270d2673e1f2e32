//! The inner service's readiness, on the memory store: a request claimed while the inner service is not ready
//! waits for it (woken by it, not by polling), runs once and is recorded; a readiness error releases the claim,
//! so the same key executes when retried.

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use palisade_core::{GatewayRequest, PaymentError};
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use tower::{Layer, Service};

/// Ready when `open`; fails readiness once when `fail_once`; counts its calls.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<AtomicBool>,
    fail_once: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
    calls: Arc<AtomicUsize>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl Service<GatewayRequest> for Gate {
    type Response = u16;
    type Error = PaymentError;
    type Future = Ready<Result<u16, PaymentError>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        if self.fail_once.swap(false, Ordering::SeqCst) {
            return Poll::Ready(Err(PaymentError::network("not connected")));
        }
        if self.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
    fn call(&mut self, _: GatewayRequest) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(201))
    }
}

fn charge(key: &str) -> GatewayRequest {
    palisade_testkit::charge("o1").amount("12.34").key(key).build()
}

/// Counts the wakes of the task polling a future.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_request_claimed_while_the_inner_service_is_busy_waits_for_it_and_runs_once() {
    let gate = Gate::default();
    let mut svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(gate.clone());
    let mut fut = Box::pin(svc.call(charge("k1")));
    let wakes = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(fut.as_mut().poll(&mut cx).is_pending(), "the inner service is not ready");
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
    gate.open();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the inner service wakes the waiting request's task");
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(201)));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    // Recorded: the same request replays without calling the inner service.
    assert_eq!(svc.call(charge("k1")).await, Ok(201));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_readiness_error_releases_the_claim() {
    let gate = Gate::default();
    gate.open();
    gate.fail_once.store(true, Ordering::SeqCst);
    let mut svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(gate.clone());
    assert_eq!(svc.call(charge("k1")).await, Err(PaymentError::network("not connected")));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "nothing ran");
    // Not a 409 (in flight) nor a replay of the error: the key executes.
    assert_eq!(svc.call(charge("k1")).await, Ok(201));
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}
