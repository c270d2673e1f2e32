//! The closed-state path allocates nothing: dhat's heap profiler (testing mode) sees zero allocations over many
//! calls (successes, failures and declines) through a closed breaker. Runs as a plain `main` (no test harness),
//! so no other thread can allocate while it measures.

use std::task::{Context, Waker};

use palisade_circuit_breaker::{CircuitBreakerLayer, State};
use palisade_core::PaymentError;
use palisade_testkit::{Answer, TestGateway};
use tower::{Layer, Service};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn once<S: Service<u32, Response = u32, Error = PaymentError>>(svc: &mut S, x: u32) -> Result<u32, PaymentError> {
    let mut cx = Context::from_waker(Waker::noop());
    while svc.poll_ready(&mut cx).is_pending() {}
    palisade_testkit::spin(svc.call(x))
}

/// One failure and one decline in every ten calls, the rest successes.
fn gateway() -> TestGateway<u32, u32> {
    // The errors carry no message string, so answering with them does not allocate: `GatewayUnavailable` and
    // `InsufficientFunds`.
    let mut answers = vec![Answer::Ok(0); 8];
    answers.push(Answer::Err(PaymentError::GatewayUnavailable { retry_after: None }));
    answers.push(Answer::Err(PaymentError::InsufficientFunds));
    TestGateway::cycle(answers)
}

/// Runs without the libtest harness (`harness = false`): this is the process's only thread, so the heap profiler
/// sees nothing but the breaker's calls.
fn main() {
    for layer in [
        CircuitBreakerLayer::builder().build().unwrap(),
        CircuitBreakerLayer::builder()
            .window_time(std::time::Duration::from_secs(60))
            .slow_calls(std::time::Duration::from_secs(5), 0.5)
            .consecutive_failures(50)
            .build()
            .unwrap(),
    ] {
        let h = layer.handle();
        let mut svc = layer.layer(gateway());
        once(&mut svc, 2).unwrap(); // warm up
        let profiler = dhat::Profiler::builder().testing().build();
        let before = dhat::HeapStats::get().total_blocks;
        for i in 0..10_000 {
            let _ = once(&mut svc, i);
        }
        let during = dhat::HeapStats::get().total_blocks - before;
        // The profiler does count: an allocation is seen.
        let v = std::hint::black_box(vec![1u8; 16]);
        let after = dhat::HeapStats::get().total_blocks - before;
        drop(v);
        drop(profiler);
        assert_eq!(h.state(), State::Closed, "10 % failures must not trip");
        assert_eq!(during, 0, "allocations on the closed-state path");
        assert_eq!(after, 1, "the profiler sees allocations");
    }
    println!("closed_state_calls_do_not_allocate ... ok");

    // The open state's fast fail allocates nothing either: a rejection is counted through a key the breaker
    // made with its label, not one made per call (with the `metrics` feature, which the workspace's tests
    // enable, `metrics::counter!` with the label allocated twice per rejected call).
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(gateway());
    h.force_open();
    assert!(once(&mut svc, 1).is_err(), "warm up: rejected");
    let profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get().total_blocks;
    for i in 0..10_000 {
        assert!(once(&mut svc, i).is_err(), "rejected while forced open");
    }
    let during = dhat::HeapStats::get().total_blocks - before;
    drop(profiler);
    assert_eq!(during, 0, "allocations on the rejection path");
    println!("rejected_calls_do_not_allocate ... ok");
}
