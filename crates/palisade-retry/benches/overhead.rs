//! Overhead per call when nothing fails: palisade's `RetryLayer` against `tower::retry::Retry` with an equivalent
//! policy (3 attempts, exponential backoff, a `TpsBudget` deposited on success) and tower-resilience's retry
//! (3 attempts, exponential backoff, token-bucket budget), all around the same instant gateway, in one group.
//!
//! `cargo bench -p palisade-retry --bench overhead -- --warm-up-time 1 --measurement-time 3`
//!
//! After criterion's group, an interleaved pass prints medians and ratios measured under the same load.

use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::Criterion;
use palisade_core::*;
use palisade_testkit::InstantGateway;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service};

/// A gateway that answers 200 at once and keeps no state.
const INSTANT_200: InstantGateway<u16> = InstantGateway::ok(200);

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

fn call<S: Service<GatewayRequest>>(svc: &mut S, req: &GatewayRequest) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("benchmarked services are always ready"),
    }
    palisade_testkit::spin(svc.call(req.clone()))
}

fn charge() -> GatewayRequest {
    palisade_testkit::charge("order-1001").amount("49.99").key("order-1001-charge").build()
}

type Variant = (&'static str, Box<dyn FnMut(&GatewayRequest) -> bool>);

/// The contenders, each a closure making one call (same request, same instant gateway).
fn variants() -> Vec<Variant> {
    let mut bare = INSTANT_200;
    let mut tower_retry = tower::retry::RetryLayer::new(TowerPolicy {
        left: 3,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    })
    .layer(INSTANT_200);
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
        .layer(INSTANT_200);
    // Equivalent to tower's: attempts, backoff, budget; no deadline.
    let mut palisade = palisade_retry::RetryLayer::builder().max_attempts(3).no_deadline().build().layer(INSTANT_200);
    // The defaults: budget, 30 s deadline, key assignment.
    let mut defaults = palisade_retry::RetryLayer::builder().build().layer(INSTANT_200);
    // No budget and no deadline: the layer without a clock read (what the clock and the budget cost).
    let mut bare_policy =
        palisade_retry::RetryLayer::builder().max_attempts(3).no_deadline().no_budget().build().layer(INSTANT_200);
    vec![
        ("no retry layer (baseline)", Box::new(move |r| call(&mut bare, r).is_ok())),
        ("tower::retry::Retry (3 attempts, TpsBudget)", Box::new(move |r| call(&mut tower_retry, r).is_ok())),
        ("tower-resilience retry (3 attempts, token bucket)", Box::new(move |r| call(&mut resilience, r).is_ok())),
        ("palisade RetryLayer (3 attempts, RetryBudget)", Box::new(move |r| call(&mut palisade, r).is_ok())),
        ("palisade RetryLayer (defaults)", Box::new(move |r| call(&mut defaults, r).is_ok())),
        ("palisade RetryLayer (no budget, no deadline)", Box::new(move |r| call(&mut bare_policy, r).is_ok())),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let req = charge();
    let mut g = c.benchmark_group("retry_overhead_success");
    for (name, mut f) in variants() {
        g.bench_function(name, |b| b.iter(|| black_box(f(&req))));
    }
    g.finish();
}

/// On a shared machine the load changes between criterion's benchmarks, which run one after the other. This
/// pass alternates short batches of every contender and reports medians, so each ratio compares calls made
/// under the same load.
fn interleaved() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let req = charge();
    let mut vs = variants();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); vs.len()];
    const BATCH: u32 = 2_000;
    for round in 0..300 {
        for (i, (_, f)) in vs.iter_mut().enumerate() {
            let t = std::time::Instant::now();
            for _ in 0..BATCH {
                black_box(f(black_box(&req)));
            }
            if round >= 20 {
                samples[i].push(t.elapsed().as_nanos() as f64 / f64::from(BATCH));
            }
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = samples.iter_mut().map(median).collect();
    let (base, tower) = (medians[0], medians[1]);
    println!("\ninterleaved medians (ns per call; overhead = minus baseline; ratio = overhead / tower's overhead):");
    for ((name, _), m) in vs.iter().zip(&medians) {
        let over = m - base;
        println!("  {name:<52} {m:>7.1} ns  overhead {over:>6.1} ns  ratio {:.2}", over / (tower - base));
    }
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}

fn main() {
    group::benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench` (which passes `--bench`), not when `cargo test --all-targets` smoke-runs benches.
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--list") {
        interleaved();
    }
}
