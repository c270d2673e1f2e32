//! Heap allocations per call through the layer on the memory store, counted by dhat's heap profiler (testing
//! mode) over many calls. The inner service answers a plain number, so every allocation counted is the layer's:
//! a new request may allocate its boxed future, its record's key and its kept result; a replay allocates only
//! the boxed future. Runs as a plain `main` (`harness = false`), so no other thread allocates while it measures.

use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{ChargeRequest, Currency, GatewayRequest, IdempotencyKey, Money, PaymentError, PaymentToken};
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Answers 201 at once, without allocating.
#[derive(Clone)]
struct Gateway;

impl Service<GatewayRequest> for Gateway {
    type Response = u16;
    type Error = PaymentError;
    type Future = Ready<Result<u16, PaymentError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: GatewayRequest) -> Self::Future {
        ready(Ok(201))
    }
}

fn once<S: Service<GatewayRequest>>(svc: &mut S, req: GatewayRequest) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    while svc.poll_ready(&mut cx).is_pending() {}
    let mut fut = pin!(svc.call(req));
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn charge(key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(Money::parse("12.34", Currency::USD).unwrap(), PaymentToken::new("tok_visa").unwrap(), "o1")
            .idempotency_key(IdempotencyKey::new(key).unwrap()),
    )
}

/// Allocations per call over `reqs` (built before counting starts).
fn per_call<S: Service<GatewayRequest, Response = u16>>(svc: &mut S, reqs: Vec<GatewayRequest>) -> f64
where
    S::Error: std::fmt::Debug,
{
    let n = reqs.len();
    let before = dhat::HeapStats::get().total_blocks;
    for r in reqs {
        assert_eq!(once(svc, r).unwrap(), 201);
    }
    (dhat::HeapStats::get().total_blocks - before) as f64 / n as f64
}

fn main() {
    const N: usize = 5_000;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let mut svc = IdempotencyLayer::builder()
        .store(MemoryStore::with_shards(1))
        .ttl(Duration::from_secs(3600))
        .build()
        .layer(Gateway);
    let _profiler = dhat::Profiler::builder().testing().build();

    // Warm-up: the slab, its index and its expiry queue grow (by doubling) to hold every record measured below,
    // so growth is not counted.
    let warm: Vec<_> = (0..4 * N).map(|i| charge(&format!("warm-{i}"))).collect();
    per_call(&mut svc, warm);
    let fresh: Vec<_> = (0..N).map(|i| charge(&format!("new-{i}"))).collect();
    let new = per_call(&mut svc, fresh);
    let again: Vec<_> = (0..N).map(|i| charge(&format!("new-{i}"))).collect();
    let replay = per_call(&mut svc, again);
    println!("allocations per call: new request {new:.2}, replay {replay:.2}");
    // The profiler does count: the kept result is an allocation.
    assert!(new >= 1.0, "the profiler sees no allocations");
    // A new request: the kept result only (the future is not boxed, a short record key lives inline in its
    // record, and the record takes a slot the store already has).
    assert!(new <= 1.0, "a new request allocates {new:.2} times");
    // A replay: nothing (the future is not boxed, and this gateway's response owns no heap memory).
    assert_eq!(replay, 0.0, "a replay allocates {replay:.2} times");
    println!("allocations_per_call ... ok");
}
