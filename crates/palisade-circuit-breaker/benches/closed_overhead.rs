//! Closed-state overhead per call: Palisade's breaker against tower-resilience's circuit breaker and failsafe, in
//! one criterion group. Every service answers at once, so each future completes on its first poll (polled with a
//! no-op waker; no executor in the measurement) and the figures are the breakers' own cost.
//!
//! `cargo bench -p palisade-circuit-breaker --bench closed_overhead -- --warm-up-time 1 --measurement-time 3`

use std::future::ready;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_circuit_breaker::CircuitBreakerLayer;
use palisade_core::PaymentError;
use palisade_testkit::InstantGateway;
use tower::{Layer, Service};

fn once<S: Service<u32>>(svc: &mut S) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    palisade_testkit::spin(svc.call(black_box(7)))
}

/// A gateway that answers at once and keeps no state.
fn gateway() -> InstantGateway<u32> {
    InstantGateway::ok(8)
}

fn closed_overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _enter = rt.enter();
    let mut g = c.benchmark_group("circuit_breaker_closed");

    let mut bare = gateway();
    g.bench_function("no_breaker", |b| b.iter(|| once(&mut bare).unwrap()));

    let mut ours = CircuitBreakerLayer::builder().build().unwrap().layer(gateway());
    g.bench_function("palisade", |b| b.iter(|| once(&mut ours).unwrap()));

    let mut ours_slow = CircuitBreakerLayer::builder()
        .window_time(Duration::from_secs(60))
        .slow_calls(Duration::from_secs(5), 0.5)
        .build()
        .unwrap()
        .layer(gateway());
    g.bench_function("palisade_time_window_slow_calls", |b| b.iter(|| once(&mut ours_slow).unwrap()));

    let mut keyed = CircuitBreakerLayer::builder().build_keyed(|x: &u32| x % 4).unwrap().layer(gateway());
    g.bench_function("palisade_keyed", |b| b.iter(|| once(&mut keyed).unwrap()));

    let mut tr = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .build()
        .unwrap()
        .layer(gateway());
    g.bench_function("tower_resilience", |b| b.iter(|| once(&mut tr).unwrap()));

    let fs = failsafe::Config::new().build();
    g.bench_function("failsafe", |b| {
        b.iter(|| {
            use failsafe::futures::CircuitBreaker as _;
            palisade_testkit::spin(fs.call(ready(Ok::<u32, PaymentError>(black_box(7) + 1)))).unwrap()
        })
    });
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{closed_overhead, criterion_group};
    criterion_group!(benches, closed_overhead);
}
criterion_main!(group::benches);
