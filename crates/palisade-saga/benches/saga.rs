//! Sagas per second: a 4-step saga on the memory log (each step trivial async work with a compensation), the work
//! of the seed's `Saga` bench (`bench/saga/seed_saga.py`, which runs the same 4 steps with no log at all).
//!
//! ```text
//! cargo bench -p palisade-saga --bench saga -- --warm-up-time 1 --measurement-time 3   # criterion
//! SAGA_BENCH_LOOP=100000 cargo bench -p palisade-saga --bench saga                      # whole loop, JSON line
//! bench/saga/run.sh                                                                     # both sides, the ratio
//! ```
//!
//! Criterion groups (`Throughput::Elements(1)`: one saga per iteration, so criterion prints sagas/s):
//! - `saga_memory/completed_4_steps`: start → 4 steps, each start and end written to the log → `Completed`;
//! - `saga_memory/completed_4_steps_null_log`: the same on a log that keeps nothing (the orchestrator alone);
//! - `saga_memory/compensated_4_steps`: the 4th step fails for good (a decline), the 3 before it are compensated
//!   in reverse order → `Compensated`.
//!
//! Each criterion sample runs on a fresh log (iter_custom), so the log holds at most one sample's sagas. The whole
//! loop (`SAGA_BENCH_LOOP=N`) runs N sagas one after the other on one log that keeps them all, on a
//! current-thread runtime, as the seed runs them in one asyncio loop, and prints
//! `{"palisade_saga_4step_per_s": …}`; `SAGA_BENCH_ROUNDS` (default 3) rounds, each on a new log, the best
//! reported.
//!
//! Durable logs, `SAGA_BENCH_BACKEND=redis|postgres` with `SAGA_BENCH_LOOP=N` and `SAGA_BENCH_CONCURRENCY=C`
//! (default 50): N sagas, C at a time, on one current-thread runtime (one client thread, like
//! `redis-benchmark`), against `PALISADE_REDIS_URL` (default `redis://127.0.0.1:6379`, key prefix
//! `palisade:saga-bench:<run>:`) or `PALISADE_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, tables `palisade_saga_bench_*`, migrated first; saga ids carry
//! the run's start time, so runs never collide; a pool of `SAGA_BENCH_PG_POOL` connections, default C). Prints
//! `{"backend": …, "sagas_per_s": …, "transitions_per_s": …}` (10 log writes per saga, each one round trip).
//! `bench/saga/durable.sh` runs both beside `redis-benchmark` and `pgbench` doing the same writes.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use palisade_saga::{MemoryLog, Orchestrator, PostgresLog, RedisLog, Saga, SagaLog, SagaState};

mod support;
use support::{Ctx, NullLog, four_steps};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Runs `n` sagas one after the other on a fresh memory log and returns the time they took.
async fn run_sagas(saga_fn: fn(bool) -> Saga<Ctx>, fail_last: bool, n: u64, want: SagaState) -> Duration {
    let orchestrator = Orchestrator::builder(MemoryLog::new()).owner("bench").build();
    let saga: Arc<Saga<Ctx>> = orchestrator.register(saga_fn(fail_last));
    let start = Instant::now();
    for i in 0..n {
        let report = orchestrator.start(&saga, &format!("saga-{i}"), Ctx { i }).await.expect("the log answers");
        assert_eq!(report.state, want);
    }
    let took = start.elapsed();
    // Dropping the log (and its n records) is not part of the measurement.
    drop((saga, orchestrator));
    took
}

/// `n` completed sagas one after the other on `log`; the time they took.
async fn run_on<L: SagaLog>(log: L, n: u64) -> Duration {
    let orchestrator = Orchestrator::builder(log).owner("bench").build();
    let saga = orchestrator.register(four_steps(false));
    let start = Instant::now();
    for i in 0..n {
        let report = orchestrator.start(&saga, &format!("saga-{i}"), Ctx { i }).await.expect("the log answers");
        assert_eq!(report.state, SagaState::Completed);
    }
    start.elapsed()
}

fn sagas(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("saga_memory");
    g.throughput(Throughput::Elements(1));
    g.bench_function("completed_4_steps", |b| {
        b.iter_custom(|iters| rt.block_on(run_sagas(four_steps, false, iters, SagaState::Completed)))
    });
    g.bench_function("completed_4_steps_null_log", |b| b.iter_custom(|iters| rt.block_on(run_on(NullLog, iters))));
    g.bench_function("compensated_4_steps", |b| {
        b.iter_custom(|iters| rt.block_on(run_sagas(four_steps, true, iters, SagaState::Compensated)))
    });
    g.finish();
}

criterion_group!(benches, sagas);

/// `SAGA_BENCH_LOOP=N`: N completed sagas in one loop, on one log, best of `SAGA_BENCH_ROUNDS` rounds.
fn whole_loop(n: u64) {
    let rounds: u32 = std::env::var("SAGA_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rt = runtime();
    // Warm-up: allocator, code paths.
    rt.block_on(run_sagas(four_steps, false, n.min(1000), SagaState::Completed));
    let times: Vec<Duration> =
        (0..rounds.max(1)).map(|_| rt.block_on(run_sagas(four_steps, false, n, SagaState::Completed))).collect();
    let best = times.iter().min().copied().unwrap_or_default();
    let per_s = |d: &Duration| (n as f64 / d.as_secs_f64()) as u64;
    let rounds: Vec<String> = times.iter().map(|d| per_s(d).to_string()).collect();
    println!(
        "{{\"palisade_saga_4step_per_s\": {}, \"n\": {n}, \"seconds\": {:.4}, \"rounds_per_s\": [{}]}}",
        per_s(&best),
        best.as_secs_f64(),
        rounds.join(", ")
    );
}

/// N sagas, `concurrency` at a time, on `log`; the time they took.
async fn concurrent_sagas<L: SagaLog + Clone>(log: L, run: &str, n: u64, concurrency: usize) -> Duration {
    use futures_util::StreamExt;
    let orchestrator = Orchestrator::builder(log).owner("bench").build();
    let saga: Arc<Saga<Ctx>> = orchestrator.register(four_steps(false));
    let start = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (orchestrator, saga) = (orchestrator.clone(), saga.clone());
            let id = format!("{run}-{i}");
            async move {
                let report = orchestrator.start(&saga, &id, Ctx { i }).await.expect("the log answers");
                assert_eq!(report.state, SagaState::Completed);
            }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|()| async {})
        .await;
    start.elapsed()
}

/// `SAGA_BENCH_BACKEND=redis|postgres`: N sagas, C at a time, on a durable log.
fn durable(backend: &str, n: u64) {
    let concurrency: usize = std::env::var("SAGA_BENCH_CONCURRENCY").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let run = format!(
        "bench-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
    );
    let rt = runtime();
    let took = rt.block_on(async {
        match backend {
            "redis" => {
                let url = std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                let log =
                    RedisLog::connect(&url).await.expect("redis").with_prefix(format!("palisade:saga-bench:{run}:"));
                concurrent_sagas(log.clone(), &run, n.min(200), concurrency).await; // warm-up
                concurrent_sagas(log, &format!("{run}-m"), n, concurrency).await
            }
            "postgres" => {
                let url = std::env::var("PALISADE_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
                // One connection per concurrent saga (the stores' default pool has 20): a saga holds a connection
                // only for one statement at a time, but 50 sagas waiting on 20 connections measure the pool.
                let pool_size: u32 = std::env::var("SAGA_BENCH_PG_POOL")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::try_from(concurrency).unwrap_or(50));
                let pool = palisade_store::postgres::pool_options()
                    .max_connections(pool_size)
                    .connect(&url)
                    .await
                    .expect("postgres");
                let log = PostgresLog::new(pool).with_prefix("palisade_saga_bench_").expect("a valid prefix");
                log.migrate().await.expect("migrate");
                concurrent_sagas(log.clone(), &run, n.min(200), concurrency).await; // warm-up
                concurrent_sagas(log, &format!("{run}-m"), n, concurrency).await
            }
            other => panic!("SAGA_BENCH_BACKEND={other}: redis or postgres"),
        }
    });
    println!(
        "{{\"backend\": \"{backend}\", \"sagas_per_s\": {}, \"n\": {n}, \"concurrency\": {concurrency}, \"seconds\": {:.3}, \"transitions_per_s\": {}}}",
        (n as f64 / took.as_secs_f64()) as u64,
        took.as_secs_f64(),
        // create + 4 × (start, done) + finished: 10 log writes per saga.
        (10.0 * n as f64 / took.as_secs_f64()) as u64,
    );
}

fn main() {
    if let Some(n) = std::env::var("SAGA_BENCH_LOOP").ok().and_then(|s| s.parse::<u64>().ok()) {
        match std::env::var("SAGA_BENCH_BACKEND").ok().filter(|b| b != "memory") {
            Some(backend) => durable(&backend, n),
            None => whole_loop(n),
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
