//! Heap allocations per call through the layer on the memory store, counted by dhat's heap profiler (testing
//! mode) over many calls. One inner service answers a plain number, so every allocation counted is the layer's;
//! another answers a charge as a gateway would (a Stripe-length id, an order reference), which the layer keeps
//! and replays by cloning. Runs as a plain `main` (`harness = false`), so no other thread allocates while it
//! measures.

use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{GatewayRequest, PaymentError};
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use palisade_testkit::{InstantGateway, stripe_charge};
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

fn charge(key: &str) -> GatewayRequest {
    palisade_testkit::charge("o1").amount("12.34").key(key).build()
}

/// Allocations per call over `reqs` (built before counting starts); every call must answer `expected`.
fn per_call<S: Service<GatewayRequest>>(svc: &mut S, reqs: Vec<GatewayRequest>, expected: &S::Response) -> f64
where
    S::Response: PartialEq + std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    let n = reqs.len();
    let before = dhat::HeapStats::get().total_blocks;
    for r in reqs {
        // The result is dropped inside the count: a response that owns heap memory would show.
        assert_eq!(&palisade_testkit::call_spinning(svc, r).unwrap(), expected);
    }
    (dhat::HeapStats::get().total_blocks - before) as f64 / n as f64
}

/// Allocations per new request and per replay, after a warm-up that grows the store to hold every record
/// measured (the slab, its index and its expiry queue grow by doubling, which is not counted).
fn new_and_replay<S: Service<GatewayRequest>>(svc: &mut S, name: &str, expected: &S::Response) -> (f64, f64)
where
    S::Response: PartialEq + std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    const N: usize = 5_000;
    let warm: Vec<_> = (0..4 * N).map(|i| charge(&format!("{name}-warm-{i}"))).collect();
    per_call(svc, warm, expected);
    let fresh: Vec<_> = (0..N).map(|i| charge(&format!("{name}-new-{i}"))).collect();
    let new = per_call(svc, fresh, expected);
    let again: Vec<_> = (0..N).map(|i| charge(&format!("{name}-new-{i}"))).collect();
    let replay = per_call(svc, again, expected);
    println!("allocations per call ({name}): new request {new:.2}, replay {replay:.2}");
    (new, replay)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let layer =
        || IdempotencyLayer::builder().store(MemoryStore::with_shards(1)).ttl(Duration::from_secs(3600)).build();
    let mut plain = layer().layer(Gateway);
    let mut charging = layer().layer(InstantGateway::ok(stripe_charge()));
    let _profiler = dhat::Profiler::builder().testing().build();

    let (new, replay) = new_and_replay(&mut plain, "number", &201);
    // The profiler does count: the kept result is an allocation.
    assert!(new >= 1.0, "the profiler sees no allocations");
    // A new request: the kept result only (the future is not boxed, a short record key lives inline in its
    // record, and the record takes a slot the store already has).
    assert!(new <= 1.0, "a new request allocates {new:.2} times");
    // A replay: nothing (the future is not boxed, and this gateway's response owns no heap memory).
    assert_eq!(replay, 0.0, "a replay allocates {replay:.2} times");

    // A gateway response keeps its id and order reference inline, so keeping it is still the one box and
    // replaying it (a clone) allocates nothing.
    let (new, replay) = new_and_replay(&mut charging, "charge", &stripe_charge());
    assert!(new <= 1.0, "a new charge allocates {new:.2} times");
    assert_eq!(replay, 0.0, "a replayed charge allocates {replay:.2} times");
    println!("allocations_per_call ... ok");
}
