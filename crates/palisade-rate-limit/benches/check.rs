//! Cost of one rate limit decision: palisade vs governor (direct and keyed) and vs `tower::limit::RateLimit`
//! (as a service), measured side by side in one run.
//!
//! Run:
//! `cargo bench -p palisade-rate-limit --features quanta --bench check -- --warm-up-time 1 --measurement-time 3`
//! (without `--features quanta` the `palisade_quanta_clock` rows are skipped)
//!
//! The `clock` group shows what dominates: palisade reads tokio's clock (so paused-time tests work); governor
//! reads quanta's TSC clock. Benches build with tokio's `test-util` (a dev-dependency), whose clock takes a mutex.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_rate_limit::{KeyedRateLimiter, Quota, RateLimitLayer, RateLimiter};
use palisade_testkit::InstantGateway;
use tower::{Layer, Service};

/// Large enough that every check is admitted: we measure the decision, not the refusal path.
const RATE: u32 = 1_000_000_000;
const KEYS: u64 = 1_000;

fn direct(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let mut g = c.benchmark_group("direct_check");
    let ours = RateLimiter::new(Quota::per_second(RATE).unwrap());
    g.bench_function("palisade", |b| b.iter(|| black_box(ours.check().is_ok())));
    #[cfg(feature = "quanta")]
    {
        let tsc = RateLimiter::with_clock(Quota::per_second(RATE).unwrap(), palisade_rate_limit::ClockSource::Quanta);
        g.bench_function("palisade_quanta_clock", |b| b.iter(|| black_box(tsc.check().is_ok())));
    }
    let gov = governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::new(RATE).unwrap()));
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check().is_ok())));
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let mut g = c.benchmark_group("keyed_check");
    let ours = KeyedRateLimiter::new(Quota::per_second(RATE).unwrap());
    let mut k = 0u64;
    g.bench_function("palisade", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(ours.check_key(&k).is_ok())
        })
    });
    #[cfg(feature = "quanta")]
    {
        let tsc = KeyedRateLimiter::with_options(
            Quota::per_second(RATE).unwrap(),
            palisade_rate_limit::DEFAULT_MAX_KEYS,
            palisade_rate_limit::ClockSource::Quanta,
        );
        let mut k = 0u64;
        g.bench_function("palisade_quanta_clock", |b| {
            b.iter(|| {
                k = (k + 1) % KEYS;
                black_box(tsc.check_key(&k).is_ok())
            })
        });
    }
    let gov = governor::RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::new(RATE).unwrap()));
    let mut k = 0u64;
    g.bench_function("governor", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(gov.check_key(&k).is_ok())
        })
    });
    g.finish();
}

/// poll_ready + call + poll the response once, with a no-op waker (every future here is ready at once).
fn drive<S: Service<u64>>(svc: &mut S, req: u64) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn service(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let inner = InstantGateway::ok(1u64);
    let mut g = c.benchmark_group("service_call");
    let mut ours = RateLimitLayer::builder().rate(RATE, Duration::from_secs(1)).build().unwrap().layer(inner);
    g.bench_function("palisade", |b| b.iter(|| black_box(drive(&mut ours, 1))));
    let mut tower_rl = tower::limit::RateLimitLayer::new(u64::from(RATE), Duration::from_secs(1)).layer(inner);
    g.bench_function("tower_rate_limit", |b| b.iter(|| black_box(drive(&mut tower_rl, 1))));
    g.bench_function("no_limit", |b| b.iter(|| black_box(drive(&mut { inner }, 1))));
    g.finish();
}

fn clocks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _enter = rt.enter();
    let mut g = c.benchmark_group("clock");
    g.bench_function("std", |b| b.iter(|| black_box(std::time::Instant::now())));
    g.bench_function("tokio", |b| b.iter(|| black_box(tokio::time::Instant::now())));
    g.finish();
}

criterion_group!(benches, clocks, direct, keyed, service);
criterion_main!(benches);
