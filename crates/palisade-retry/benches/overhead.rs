//! Overhead per call when nothing fails: palisade's `RetryLayer` against `tower::retry::Retry` with an equivalent
//! policy (3 attempts, exponential backoff, a `TpsBudget` deposited on success) and tower-resilience's retry
//! (3 attempts, exponential backoff, token-bucket budget), all around the same instant gateway, in one group.
//!
//! `cargo bench -p palisade-retry --bench overhead -- --warm-up-time 1 --measurement-time 3`

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use palisade_core::*;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

/// A gateway that answers at once.
#[derive(Clone)]
struct Instant200;

impl Service<GatewayRequest> for Instant200 {
    type Response = u16;
    type Error = PaymentError;
    type Future = Ready<Result<u16, PaymentError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), PaymentError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: GatewayRequest) -> Self::Future {
        ready(Ok(200))
    }
}

/// tower's policy made equivalent: attempts, exponential backoff, a budget deposited on every success.
#[derive(Clone)]
struct TowerPolicy {
    left: u32,
    budget: Arc<TpsBudget>,
}

impl tower::retry::Policy<GatewayRequest, u16, PaymentError> for TowerPolicy {
    type Future = tokio::time::Sleep;
    fn retry(&mut self, _: &mut GatewayRequest, result: &mut Result<u16, PaymentError>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(e) if e.outcome().is_failure() && self.left > 1 && self.budget.withdraw() => {
                self.left -= 1;
                Some(tokio::time::sleep(Duration::from_millis(100 << (3 - self.left))))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &GatewayRequest) -> Option<GatewayRequest> {
        Some(req.clone())
    }
}

/// Polls a future that is ready at once (every service here answers immediately).
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("benchmarked services answer at once"),
    }
}

fn call<S: Service<GatewayRequest>>(svc: &mut S, req: &GatewayRequest) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("benchmarked services are always ready"),
    }
    now(svc.call(req.clone()))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let req = GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("49.99", Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "order-1001",
        )
        .idempotency_key(IdempotencyKey::new("order-1001-charge").unwrap()),
    );

    let mut g = c.benchmark_group("retry_overhead_success");

    let mut bare = Instant200;
    g.bench_function("no retry layer (baseline)", |b| b.iter(|| black_box(call(&mut bare, &req))));

    let mut tower_retry = tower::retry::RetryLayer::new(TowerPolicy {
        left: 3,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    })
    .layer(Instant200);
    g.bench_function("tower::retry::Retry (3 attempts, TpsBudget)", |b| {
        b.iter(|| black_box(call(&mut tower_retry, &req)))
    });

    let tr_budget = tower_resilience::retry::RetryBudgetBuilder::new()
        .token_bucket()
        .tokens_per_second(10.0)
        .max_tokens(100)
        .build()
        .unwrap();
    let mut resilience = tower_resilience::retry::RetryLayer::<GatewayRequest, u16, PaymentError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .retry_on(|e: &PaymentError| e.outcome().is_failure())
        .budget(tr_budget)
        .build()
        .layer(Instant200);
    g.bench_function("tower-resilience retry (3 attempts, token bucket)", |b| {
        b.iter(|| black_box(call(&mut resilience, &req)))
    });

    // Equivalent to tower's: attempts, backoff, budget; no deadline.
    let mut palisade = palisade_retry::RetryLayer::builder().max_attempts(3).no_deadline().build().layer(Instant200);
    g.bench_function("palisade RetryLayer (3 attempts, RetryBudget)", |b| {
        b.iter(|| black_box(call(&mut palisade, &req)))
    });

    // The defaults: budget, 30 s deadline, key assignment.
    let mut defaults = palisade_retry::RetryLayer::builder().build().layer(Instant200);
    g.bench_function("palisade RetryLayer (defaults)", |b| b.iter(|| black_box(call(&mut defaults, &req))));

    g.finish();
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
