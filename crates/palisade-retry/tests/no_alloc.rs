//! When nothing fails, a call through the retry layer allocates nothing of its own: no box, no timer, no event.
//! dhat's heap profiler (testing mode) counts allocations over many calls with a request type whose clone does not
//! allocate (a gateway key is an `Arc<str>`). Runs as a plain `main` (`harness = false`), so no other thread
//! allocates while it measures.

use palisade_core::{GatewayKeyed, IdempotencyKey, PaymentError};
use palisade_retry::RetryLayer;
use palisade_testkit::{Answer, TestGateway};
use tower::Layer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// A request whose clone is a reference-count increment.
#[derive(Clone)]
struct Req(Option<IdempotencyKey>);

impl GatewayKeyed for Req {
    fn gateway_key(&self) -> Option<&IdempotencyKey> {
        self.0.as_ref()
    }
    fn set_gateway_key(&mut self, key: IdempotencyKey) {
        self.0 = Some(key);
    }
}

/// Answers at once: 200, or a decline for every tenth call (Terminal: returned, not retried).
fn gateway() -> TestGateway<Req, u16> {
    // `InsufficientFunds` carries no string, so answering with it does not allocate.
    let mut answers = vec![Answer::Ok(200); 9];
    answers.push(Answer::Err(PaymentError::InsufficientFunds));
    TestGateway::cycle(answers)
}

fn main() {
    let key = IdempotencyKey::new("order-1-charge").unwrap();
    for (name, layer) in [
        ("defaults (budget, deadline, key assignment)", RetryLayer::builder().build()),
        (
            "no deadline, decorrelated jitter",
            RetryLayer::builder().no_deadline().jitter(palisade_retry::Jitter::Decorrelated).build(),
        ),
    ] {
        let mut svc = layer.layer(gateway());
        // Warm up; the ten calls also align the declines on every tenth call below.
        for _ in 0..10 {
            let _ = palisade_testkit::call_spinning(&mut svc, Req(Some(key.clone())));
        }
        let profiler = dhat::Profiler::builder().testing().build();
        let before = dhat::HeapStats::get().total_blocks;
        let mut declines = 0;
        for _ in 0..10_000 {
            declines += u32::from(palisade_testkit::call_spinning(&mut svc, Req(Some(key.clone()))).is_err());
        }
        let during = dhat::HeapStats::get().total_blocks - before;
        // The profiler does count: a request without a key gets one, and that is an allocation.
        let _ = palisade_testkit::call_spinning(&mut svc, Req(None));
        let after = dhat::HeapStats::get().total_blocks - before;
        drop(profiler);
        assert_eq!(declines, 1_000, "{name}: declines are returned, not retried");
        assert_eq!(during, 0, "{name}: allocations on the success path");
        assert!(after > 0, "{name}: the profiler sees allocations");
    }
    println!("success_path_does_not_allocate ... ok");
}
