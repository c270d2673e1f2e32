//! Heap allocations per call through the whole six-layer stack (`palisade::Stack` on memory stores) around a
//! gateway that answers at once, counted by dhat's heap profiler (testing mode): the bare gateway, each layer
//! alone over it, idempotency alone, the stack without fraud screening and the whole stack. The goal (issue 22):
//! nothing beyond the idempotency record, the one allocation a new request needs. Met by every layer, fraud
//! screening included (it allocates nothing per call since that crate's own cuts). Runs as a plain `main`
//! (`harness = false`), so no other thread allocates while it measures; no tracing subscriber is installed, as in
//! a service that does not record audit events (with one, the audit layer renders each request and result).

use std::time::Duration;

use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::{GatewayRequest, GatewayResponse, PaymentError};
use palisade::fraud::FraudEngine;
use palisade::idempotency::{IdempotencyLayer, MemoryStore};
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade::{Stack, StackStores};
use palisade_testkit::{InstantGateway, stripe_charge};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn charge(key: &str) -> GatewayRequest {
    palisade_testkit::charge("o1").amount("12.34").key(key).build()
}

/// Allocations per call over `reqs` (built before counting starts).
fn per_call<S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>>(
    svc: &mut S,
    reqs: Vec<GatewayRequest>,
) -> f64 {
    let n = reqs.len();
    // Made before counting: building the expected answer parses (and scans) an order reference.
    let expected = stripe_charge();
    let before = dhat::HeapStats::get().total_blocks;
    for r in reqs {
        assert_eq!(palisade_testkit::call_spinning(svc, r).unwrap(), expected);
    }
    (dhat::HeapStats::get().total_blocks - before) as f64 / n as f64
}

/// Allocations per new request and per replay, after a warm-up that grows the stores.
fn new_and_replay<S>(svc: &mut S, name: &str) -> (f64, f64)
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
{
    const N: usize = 5_000;
    let warm: Vec<_> = (0..4 * N).map(|i| charge(&format!("{name}-warm-{i}"))).collect();
    per_call(svc, warm);
    let fresh: Vec<_> = (0..N).map(|i| charge(&format!("{name}-new-{i}"))).collect();
    let new = per_call(svc, fresh);
    let again: Vec<_> = (0..N).map(|i| charge(&format!("{name}-new-{i}"))).collect();
    let replay = per_call(svc, again);
    println!("allocations per call ({name}): new request {new:.2}, replay {replay:.2}");
    (new, replay)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let idempotency = || IdempotencyLayer::builder().ttl(Duration::from_secs(3600));
    let stores = || StackStores::memory_with(MemoryStore::with_shards(1));
    let fraud = || FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap();
    let rate = || RateLimitLayer::builder().rate(1_000_000_000, Duration::from_secs(1));
    let gw = || InstantGateway::ok(stripe_charge());
    let mut bare = gw();
    let mut alone = idempotency().store(MemoryStore::with_shards(1)).build().layer(gw());
    let mut fraud_alone = Stack::new().stores(stores()).fraud(fraud()).service(gw()).unwrap();
    let mut breaker_alone = Stack::new().circuit_breaker(CircuitBreakerLayer::builder()).service(gw()).unwrap();
    let mut retry_alone = Stack::new().retry(RetryLayer::builder().max_attempts(3)).service(gw()).unwrap();
    let mut rate_alone = Stack::new().rate_limit(rate()).service(gw()).unwrap();
    let mut audit_alone = Stack::new().audit(AuditLayer::builder()).service(gw()).unwrap();
    let mut stack = Stack::new()
        .stores(stores())
        .idempotency(idempotency())
        .fraud(fraud())
        .circuit_breaker(CircuitBreakerLayer::builder())
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(rate())
        .audit(AuditLayer::builder())
        .service(gw())
        .unwrap();
    let mut no_fraud = Stack::new()
        .stores(stores())
        .idempotency(idempotency())
        .circuit_breaker(CircuitBreakerLayer::builder())
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(rate())
        .audit(AuditLayer::builder())
        .service(gw())
        .unwrap();
    let _profiler = dhat::Profiler::builder().testing().build();

    let (bare_new, _) = new_and_replay(&mut bare, "bare");
    let layers = [
        ("circuit breaker", new_and_replay(&mut breaker_alone, "breaker-alone").0 - bare_new),
        ("retry", new_and_replay(&mut retry_alone, "retry-alone").0 - bare_new),
        ("rate limit", new_and_replay(&mut rate_alone, "rate-limit-alone").0 - bare_new),
        ("audit", new_and_replay(&mut audit_alone, "audit-alone").0 - bare_new),
    ];
    let fraud_alone = new_and_replay(&mut fraud_alone, "fraud-alone").0 - bare_new;
    let (alone_new, alone_replay) = new_and_replay(&mut alone, "idempotency-alone");
    let (no_fraud_new, no_fraud_replay) = new_and_replay(&mut no_fraud, "stack-without-fraud");
    let (new, replay) = new_and_replay(&mut stack, "six-layer-stack");
    println!("each layer alone, beyond the bare gateway (new request):");
    for (name, n) in &layers {
        println!("  {name:<16} {n:.2}");
    }
    println!("  fraud            {fraud_alone:.2}");
    println!("  idempotency      {:.2}", alone_new - bare_new);
    println!("the fraud layer's share in the stack: {:.2} per new request", new - no_fraud_new);
    println!("beyond idempotency: new request {:.2}, replay {:.2}", new - alone_new, replay - alone_replay);

    assert!(alone_new >= 1.0, "the profiler sees no allocations");
    assert_eq!(bare_new, 0.0, "the instant gateway answers without allocating");
    assert_eq!(alone_new, 1.0, "idempotency allocates its record per new request, nothing else");
    assert_eq!(alone_replay, 0.0, "a replay clones the kept answer without the heap");
    for (name, n) in layers {
        assert_eq!(n, 0.0, "the {name} layer allocates {n:.2} times per call");
    }
    assert_eq!(no_fraud_new, alone_new, "without fraud screening, the stack allocates only the record");
    assert_eq!(no_fraud_replay, alone_replay);
    assert_eq!(replay, alone_replay, "a replay allocates only what idempotency alone does");
    assert!(new - no_fraud_new <= FRAUD_SCREENING, "fraud screening allocates {:.2} times", new - no_fraud_new);
    println!("stack_allocations ... ok");
}

/// What fraud screening (`palisade-fraud`: the layer and the engine's work) allocates per new request, at most:
/// nothing, the goal, met since that crate's own cuts (18 per request at first, then 4; docs/BENCHMARKS.md, "The
/// stack", gives the history). Any allocation that comes back fails this test.
const FRAUD_SCREENING: f64 = 0.0;
