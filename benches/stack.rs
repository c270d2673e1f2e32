//! The six-layer `palisade::Stack` (Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit) on memory
//! stores around a gateway that answers at once, against that bare gateway: the stack's overhead per call
//! (issue 22 goal: ≤ 1 µs). A new key per call (the path that claims and completes an idempotency record) and a
//! replay (a duplicate answered from the store).
//!
//! `cargo bench --bench stack`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::fraud::FraudEngine;
use palisade::idempotency::IdempotencyLayer;
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade::{Stack, StackStores};
use palisade_testkit::{InstantGateway, stripe_charge};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let mut stack = Stack::new()
        .stores(StackStores::memory())
        .idempotency(IdempotencyLayer::builder().ttl(Duration::from_secs(60)))
        .fraud(FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap())
        .circuit_breaker(CircuitBreakerLayer::builder())
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(RateLimitLayer::builder().rate(1_000_000_000, Duration::from_secs(1)))
        .audit(AuditLayer::builder())
        .service(InstantGateway::ok(stripe_charge()))
        .unwrap();
    // The same stack without fraud screening, to see the fraud layer's share.
    let mut no_fraud = Stack::new()
        .stores(StackStores::memory())
        .idempotency(IdempotencyLayer::builder().ttl(Duration::from_secs(60)))
        .circuit_breaker(CircuitBreakerLayer::builder())
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(RateLimitLayer::builder().rate(1_000_000_000, Duration::from_secs(1)))
        .audit(AuditLayer::builder())
        .service(InstantGateway::ok(stripe_charge()))
        .unwrap();
    let mut bare = InstantGateway::ok(stripe_charge());
    let template = palisade_testkit::charge("o1").amount("12.34").key("k").build();

    let mut g = c.benchmark_group("stack");
    g.bench_function("bare", |b| {
        b.iter(|| palisade_testkit::call_spinning(&mut bare, black_box(template.clone())).unwrap())
    });
    let mut n = 0u64;
    g.bench_function("six_layers_new_key", |b| {
        b.iter(|| {
            n += 1;
            let req = palisade_testkit::charge("o1").amount("12.34").key(&format!("k{n}")).build();
            palisade_testkit::call_spinning(&mut stack, black_box(req)).unwrap()
        })
    });
    g.bench_function("five_layers_no_fraud_new_key", |b| {
        b.iter(|| {
            n += 1;
            let req = palisade_testkit::charge("o1").amount("12.34").key(&format!("k{n}")).build();
            palisade_testkit::call_spinning(&mut no_fraud, black_box(req)).unwrap()
        })
    });
    g.bench_function("request_construction", |b| {
        b.iter(|| {
            n += 1;
            black_box(palisade_testkit::charge("o1").amount("12.34").key(&format!("k{n}")).build())
        })
    });
    g.bench_function("six_layers_replay", |b| {
        b.iter(|| palisade_testkit::call_spinning(&mut stack, black_box(template.clone())).unwrap())
    });
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{bench, criterion_group};
    criterion_group!(benches, bench);
}
criterion_main!(group::benches);
