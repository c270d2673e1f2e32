//! Accuracy under load, in real time: 8 tasks hammer one limit for a few seconds; the admitted rate must be
//! within ±1% of the configured rate (after subtracting the initial burst).
//!
//! ```text
//! cargo run --release -p palisade-rate-limit --example accuracy
//! PALISADE_REDIS_URL=redis://127.0.0.1:6379 cargo run --release -p palisade-rate-limit --features redis --example accuracy
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::{Layer, Service, ServiceExt};

const RATE: u32 = 2_000;
/// A burst of 100 ms worth: a load generator stalled for up to that long (a busy 2-core machine) loses nothing.
const BURST: u32 = 200;
const RUN: Duration = Duration::from_secs(3);
const TASKS: usize = 8;

async fn run<S>(label: &str, svc: S, rate: u32) -> bool
where
    S: Service<u64, Response = (), Error = tower::BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let admitted = Arc::new(AtomicU64::new(0));
    // Nanoseconds from the start to the latest admission: the window the count covers (the sleep below may
    // overshoot on a loaded machine; the limiter's window does not).
    let last = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (mut svc, admitted, last, stop) = (svc.clone(), admitted.clone(), last.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = svc.ready().await
                        && s.call(1).await.is_ok()
                    {
                        admitted.fetch_add(1, Ordering::Relaxed);
                        last.fetch_max(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = admitted.load(Ordering::Relaxed);
    let elapsed = Duration::from_nanos(last.load(Ordering::Relaxed));
    let measured = (n.saturating_sub(u64::from(BURST))) as f64 / elapsed.as_secs_f64();
    let error = (measured - f64::from(rate)) / f64::from(rate) * 100.0;
    // GCRA's hard bound: never more than burst + rate × t (+1 for the unit at t itself).
    let bound = f64::from(BURST) + f64::from(rate) * elapsed.as_secs_f64() + 1.0;
    let ok = error.abs() <= 1.0 && (n as f64) <= bound;
    println!(
        "{label}: {n} admitted in {elapsed:.3?} (bound {bound:.0}) -> {measured:.1}/s after the burst of {BURST}, limit {rate}/s, error {error:+.3}% {}",
        if ok { "(within ±1%)" } else { "(OUTSIDE ±1%)" }
    );
    ok
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), tower::BoxError> {
    let inner = tower::service_fn(|_: u64| async { Ok::<_, tower::BoxError>(()) });
    let local = palisade_rate_limit::RateLimitLayer::builder()
        .rate(RATE, Duration::from_secs(1))
        .burst(BURST)
        .build()?
        .layer(inner);
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut all_ok = run("local", local, RATE).await;

    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("PALISADE_REDIS_URL") {
        let conn = palisade_store::redis::connect(&url).await?;
        let prefix = format!("palisade-accuracy:{}:", std::process::id());
        let redis = palisade_rate_limit::RateLimitLayer::builder()
            .rate(RATE / 4, Duration::from_secs(1))
            .burst(BURST)
            .redis(palisade_rate_limit::redis::RedisStore::new(conn).prefix(prefix))
            .build()?
            .layer(inner);
        all_ok &= run("redis", redis, RATE / 4).await;
    }
    std::process::exit(if all_ok { 0 } else { 1 });
}
