//! The waits the layer really takes stay within the jitter's bounds, for any seed and settings (proptest over
//! the layer itself, under paused time; the timer wheel rounds a wait up to the next millisecond).

use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};
use palisade_core::*;
use palisade_retry::RetryLayer;
use palisade_testkit::TestGateway;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const TICK: Duration = Duration::from_millis(1);

/// Runs one call against a gateway that always fails `Retriable`, and returns the gaps between attempts.
fn gaps(backoff: Backoff, min_delay: Duration, attempts: u32, seed: u64) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let gw = TestGateway::<GatewayRequest, ()>::err(PaymentError::network("refused")).recording();
        let mut svc = RetryLayer::builder()
            .backoff(backoff)
            .min_delay(min_delay)
            .max_attempts(attempts)
            .no_deadline()
            .no_budget()
            .seed(seed)
            .build()
            .layer(gw.clone());
        let req = GatewayRequest::Void(VoidRequest { authorization_id: "auth_1".into(), idempotency_key: None });
        assert!(svc.ready().await.unwrap().call(req).await.is_err());
        let at: Vec<Instant> = gw.log().iter().map(|c| c.at).collect();
        assert_eq!(at.len() as u32, attempts);
        at.windows(2).map(|w| w[1] - w[0]).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn full_jitter_waits_stay_under_the_ceiling(seed in any::<u64>(), base_ms in 1u64..500, max_ms in 1u64..5_000,
                                                min_ms in 0u64..50) {
        let b = Backoff { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), factor: 2.0,
                          jitter: Jitter::Full };
        let min = Duration::from_millis(min_ms);
        for (i, gap) in gaps(b, min, 6, seed).into_iter().enumerate() {
            let ceiling = b.ceiling(i as u32).max(min).min(b.max);
            prop_assert!(gap <= ceiling + TICK, "seed {seed}: retry {i} waited {gap:?} > {ceiling:?}");
            prop_assert!(gap >= min.min(b.max), "seed {seed}: retry {i} waited {gap:?} < min {min:?}");
        }
    }

    #[test]
    fn decorrelated_jitter_waits_stay_between_base_and_three_times_the_last(seed in any::<u64>(),
                                                                            base_ms in 1u64..300,
                                                                            max_ms in 300u64..5_000) {
        let b = Backoff { base: Duration::from_millis(base_ms), max: Duration::from_millis(max_ms), factor: 2.0,
                          jitter: Jitter::Decorrelated };
        let mut prev = b.base;
        for (i, gap) in gaps(b, Duration::ZERO, 6, seed).into_iter().enumerate() {
            let hi = (prev * 3).min(b.max);
            prop_assert!(gap >= b.base, "seed {seed}: retry {i} waited {gap:?} < base");
            prop_assert!(gap <= hi + TICK, "seed {seed}: retry {i} waited {gap:?} > {hi:?}");
            // The real last delay is at most the observed gap (waits round up), so this bound is never too tight.
            prev = gap;
        }
    }
}

/// Full jitter really spreads: across seeds the first wait takes many different values (a constant delay would
/// pass the bound checks above).
#[test]
fn full_jitter_spreads() {
    let b =
        Backoff { base: Duration::from_millis(1_000), max: Duration::from_secs(10), factor: 2.0, jitter: Jitter::Full };
    let mut firsts: Vec<Duration> = (0..40).map(|seed| gaps(b, Duration::ZERO, 2, seed)[0]).collect();
    firsts.sort();
    firsts.dedup();
    assert!(firsts.len() > 20, "{firsts:?}");
}
