//! The six-layer `palisade::Stack` (Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit) on memory
//! stores around a gateway that answers at once, against that bare gateway: the stack's overhead per call
//! (issue 22 goal: ≤ 1 µs). A new key per call (the path that claims and completes an idempotency record), a
//! replay (a duplicate answered from the store), and each layer alone (its own share).
//!
//! `cargo bench --bench stack` (criterion). On a busy machine, count instructions instead:
//! `STACK_INSTR=<case>:<calls>` runs one case `calls` times without criterion, for `valgrind --tool=callgrind`;
//! the difference between two call counts divided by the difference in calls is the cost of one call (requests
//! are built before the loop, their construction is in both runs and cancels out of the difference only when
//! the `construct` case is subtracted too). Only the calls are counted with
//! `--toggle-collect='stack::measured_calls*'` (then building the requests, and dropping the stores' records
//! after the loop, are left out). `STACK_SIZES=1` also prints the sizes of the service and of its future.
//! Cases: see [`CASES`].
//!
//! A store that only grows (every record kept for the 60 s TTL, as above) is not a process that has run for
//! days, whose expired records are reclaimed and their memory reused. `STACK_STEADY_MS=<ms>` measures that: the
//! idempotency TTL and lease are `ms`, and before the measured calls as many calls again, with other keys, run
//! for at least twice the TTL, so the measured calls meet a store that holds about a TTL of records and
//! reclaims one for each it files. Criterion's own run measures both: `six_layers_new_key` on a store that only
//! grows, `six_layers_steady_new_key` with a 1 s TTL (its 3 s warm-up reaches the steady state).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::{GatewayRequest, GatewayResponse, PaymentError};
use palisade::fraud::FraudEngine;
use palisade::idempotency::IdempotencyLayer;
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade::{Stack, StackStores};
use palisade_testkit::{InstantGateway, call_spinning, stripe_charge};
use tower::Service;

/// The cases: each a service over the instant gateway.
const CASES: [&str; 10] = [
    "bare",
    "six_layers",
    "five_layers_no_fraud",
    "idempotency",
    "fraud",
    "breaker",
    "retry",
    "rate_limit",
    "audit",
    "construct",
];

fn gateway() -> InstantGateway<GatewayResponse> {
    InstantGateway::ok(stripe_charge())
}

fn fraud() -> palisade::fraud::FraudEngineBuilder {
    FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap()
}

fn rate_limit() -> palisade::rate_limit::RateLimitLayerBuilder {
    RateLimitLayer::builder().rate(1_000_000_000, Duration::from_secs(1))
}

/// The idempotency layer: records kept for `steady` (TTL and lease) when given, else for 60 s (nothing expires
/// during a run: a store that only grows).
fn idempotency(steady: Option<Duration>) -> palisade::idempotency::IdempotencyLayerBuilder<GatewayRequest> {
    match steady {
        Some(ttl) => IdempotencyLayer::builder().ttl(ttl).lease(ttl),
        None => IdempotencyLayer::builder().ttl(Duration::from_secs(60)),
    }
}

/// The TTL of criterion's `six_layers_steady_new_key`: about a million records live at a call a microsecond.
const CRITERION_STEADY_TTL: Duration = Duration::from_secs(1);

/// `STACK_STEADY_MS`: the records' TTL of a steady-state run (see the module's doc).
fn steady_ttl() -> Option<Duration> {
    let ms: u64 = std::env::var("STACK_STEADY_MS").ok()?.parse().expect("STACK_STEADY_MS=<milliseconds>");
    Some(Duration::from_millis(ms.max(1)))
}

/// What to do with the service of a case (generic, so no case pays for boxing).
trait Run {
    fn run<S>(self, svc: S)
    where
        S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>;
    /// The `construct` case: no service.
    fn none(self);
}

/// Builds the service of `case` and hands it to `r`; `steady`: the idempotency TTL (see [`idempotency`]).
fn with_service(case: &str, steady: Option<Duration>, r: impl Run) {
    let s = Stack::new().stores(StackStores::memory());
    match case {
        "bare" => r.run(gateway()),
        "six_layers" => r.run(
            s.idempotency(idempotency(steady))
                .fraud(fraud())
                .circuit_breaker(CircuitBreakerLayer::builder())
                .retry(RetryLayer::builder().max_attempts(3))
                .rate_limit(rate_limit())
                .audit(AuditLayer::builder())
                .service(gateway())
                .unwrap(),
        ),
        "five_layers_no_fraud" => r.run(
            s.idempotency(idempotency(steady))
                .circuit_breaker(CircuitBreakerLayer::builder())
                .retry(RetryLayer::builder().max_attempts(3))
                .rate_limit(rate_limit())
                .audit(AuditLayer::builder())
                .service(gateway())
                .unwrap(),
        ),
        "idempotency" => r.run(s.idempotency(idempotency(steady)).service(gateway()).unwrap()),
        "fraud" => r.run(s.fraud(fraud()).service(gateway()).unwrap()),
        "breaker" => r.run(s.circuit_breaker(CircuitBreakerLayer::builder()).service(gateway()).unwrap()),
        "retry" => r.run(s.retry(RetryLayer::builder().max_attempts(3)).service(gateway()).unwrap()),
        "rate_limit" => r.run(s.rate_limit(rate_limit()).service(gateway()).unwrap()),
        "audit" => r.run(s.audit(AuditLayer::builder()).service(gateway()).unwrap()),
        "construct" => r.none(),
        other => panic!("unknown case {other:?}; one of {CASES:?}"),
    }
}

fn charge(key: &str) -> GatewayRequest {
    palisade_testkit::charge("o1").amount("12.34").key(key).build()
}

/// `STACK_INSTR=<case>:<calls>`: `calls` new requests through `case`, nothing else.
fn instructions(spec: &str) {
    struct Calls(Vec<GatewayRequest>, Vec<GatewayRequest>);
    impl Run for Calls {
        fn run<S>(self, mut svc: S)
        where
            S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
        {
            let calls = self.0.len();
            if std::env::var_os("STACK_SIZES").is_some() {
                eprintln!(
                    "service {} B, future {} B, request {} B, response {} B",
                    std::mem::size_of::<S>(),
                    std::mem::size_of::<S::Future>(),
                    std::mem::size_of::<GatewayRequest>(),
                    std::mem::size_of::<GatewayResponse>()
                );
            }
            let (mut reqs, mut warm) = (self.0, self.1);
            if let Some(ttl) = steady_ttl() {
                // Warm calls until twice the TTL has passed: the store then reclaims as it files.
                let began = std::time::Instant::now();
                while began.elapsed() < 2 * ttl {
                    let chunk = warm.len().min(calls / 4 + 1);
                    if chunk == 0 {
                        panic!("the warm calls ended before twice the TTL: a shorter STACK_STEADY_MS or more calls");
                    }
                    // Not through `measured_calls`, so callgrind's `--toggle-collect` still counts only the
                    // measured calls.
                    for r in warm.drain(..chunk) {
                        black_box(call_spinning(&mut svc, r).unwrap());
                    }
                }
            }
            let (cpu, wall) = (on_cpu_ns(), std::time::Instant::now());
            measured_calls(&mut svc, &mut reqs);
            let (cpu, wall) = (on_cpu_ns().saturating_sub(cpu), wall.elapsed().as_nanos());
            // The service (and the records its stores keep) and the requests' buffer are dropped after the
            // measurement: their teardown is no part of a call.
            drop((reqs, warm));
            // To stderr, so callgrind's output stays the only thing on stdout that scripts read.
            eprintln!(
                "{:.1} ns per call on the CPU ({:.1} ns wall)",
                cpu as f64 / calls as f64,
                wall as f64 / calls as f64
            );
        }
        fn none(self) {
            drop(black_box((self.0, self.1)));
        }
    }
    let (case, calls) = spec.split_once(':').expect("STACK_INSTR=<case>:<calls>");
    let calls: usize = calls.parse().expect("a number of calls");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let reqs: Vec<_> = (0..calls).map(|i| charge(&format!("k{i}"))).collect();
    let warm: Vec<_> =
        if steady_ttl().is_some() { (0..calls).map(|i| charge(&format!("w{i}"))).collect() } else { Vec::new() };
    with_service(case, steady_ttl(), Calls(reqs, warm));
}

/// The measured calls, in a function of their own (never inlined) so that
/// `valgrind --tool=callgrind --toggle-collect='stack::measured_calls*'` counts them and nothing else: not building
/// the requests, not dropping the service and its stores' records afterwards.
#[inline(never)]
fn measured_calls<S>(svc: &mut S, reqs: &mut Vec<GatewayRequest>)
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
{
    for r in reqs.drain(..) {
        black_box(call_spinning(svc, r).unwrap());
    }
}

/// Nanoseconds this thread has run on a CPU (Linux `/proc/thread-self/schedstat`; 0 elsewhere): on a shared,
/// busy machine, time on the CPU is steadier than wall time, which also counts the time other processes ran.
fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn bench(c: &mut Criterion) {
    struct Bench<'a, 'c> {
        g: &'a mut criterion::BenchmarkGroup<'c, criterion::measurement::WallTime>,
        /// The benchmark's name: `<name>_new_key`.
        name: &'a str,
        n: &'a mut u64,
    }
    impl Run for Bench<'_, '_> {
        fn run<S>(self, mut svc: S)
        where
            S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
        {
            let n = self.n;
            // Requests are made in batches outside the timed loop: only the calls are timed.
            self.g.bench_function(format!("{}_new_key", self.name), |b| {
                b.iter_batched(
                    || {
                        *n += 1;
                        charge(&format!("k{n}"))
                    },
                    |req| call_spinning(&mut svc, black_box(req)).unwrap(),
                    criterion::BatchSize::SmallInput,
                )
            });
            if self.name == "six_layers" {
                let template = charge("k");
                self.g.bench_function("six_layers_replay", |b| {
                    b.iter_batched(
                        || template.clone(),
                        |req| call_spinning(&mut svc, black_box(req)).unwrap(),
                        criterion::BatchSize::SmallInput,
                    )
                });
            }
        }
        fn none(self) {}
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("stack");
    let mut n = 0u64;
    for case in CASES {
        with_service(case, steady_ttl(), Bench { g: &mut g, name: case, n: &mut n });
    }
    // The steady state of a long-running process: criterion's warm-up (3 s) outlasts twice the TTL, so the
    // measured calls meet a store that reclaims an expired record for each one it files.
    let ttl = steady_ttl().unwrap_or(CRITERION_STEADY_TTL);
    with_service("six_layers", Some(ttl), Bench { g: &mut g, name: "six_layers_steady", n: &mut n });
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{bench, criterion_group};
    criterion_group!(benches, bench);
}

fn main() {
    if let Ok(spec) = std::env::var("STACK_INSTR") {
        return instructions(&spec);
    }
    group::benches();
    Criterion::default().configure_from_args().final_summary();
}
