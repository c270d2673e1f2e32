//! Behaviour of the circuit breaker under paused time: trip rules, open, half-open, handle, per-key, HTTP mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_circuit_breaker::{
    CircuitBreakerLayer, CircuitOpen, Event, LayerRejections, Reason, Snapshot, State, Window,
};
use palisade_core::PaymentError;
use palisade_core::backoff::{Backoff, Jitter};
use parking_lot::Mutex;
use tower::{Layer, Service, ServiceExt, service_fn};

type Res = Result<(), PaymentError>;

fn ok() -> Res {
    Ok(())
}
fn down() -> Res {
    Err(PaymentError::timeout("read timed out"))
}
fn declined() -> Res {
    Err(PaymentError::declined("do_not_honor"))
}

/// A service that answers with whatever the request says.
fn echo() -> impl Service<Res, Response = (), Error = PaymentError, Future = impl Future<Output = Res>> + Clone {
    service_fn(|r: Res| async move { r })
}

async fn call<S: Service<Res, Response = (), Error = PaymentError>>(s: &mut S, r: Res) -> Res {
    s.ready().await?.call(r).await
}

fn fixed(open: Duration) -> palisade_circuit_breaker::CircuitBreakerLayerBuilder {
    CircuitBreakerLayer::builder().window_calls(10).minimum_calls(10).failure_rate(0.5).open_duration(open)
}

#[tokio::test(start_paused = true)]
async fn trips_exactly_at_threshold_and_not_before_minimum_calls() {
    let layer = fixed(Duration::from_secs(30)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    // Nine calls, all failing: 100 % but below the minimum of ten calls.
    for _ in 0..9 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.window(), Snapshot { calls: 9, failures: 9, slow: 0 });

    // A fresh breaker: 5 successes then 4 failures = 4/9; the 10th call fails: 5/10 = 50 % → trips exactly then.
    let layer = fixed(Duration::from_secs(30)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..5 {
        call(&mut svc, ok()).await.unwrap();
    }
    for _ in 0..4 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Closed, "4 failures of 9 calls must not trip");
    let _ = call(&mut svc, down()).await;
    assert_eq!(h.state(), State::Open, "5 of 10 is the 50 % threshold");

    // 4 of 10 (below threshold) does not trip, however many calls follow at that rate.
    let layer = fixed(Duration::from_secs(30)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for i in 0..200 {
        let r = if i % 10 < 4 { down() } else { ok() };
        let _ = call(&mut svc, r).await;
    }
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_declines_never_trip() {
    let layer =
        CircuitBreakerLayer::builder().window_calls(10).minimum_calls(5).consecutive_failures(3).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..1000 {
        let e = call(&mut svc, declined()).await.unwrap_err();
        assert!(matches!(e, PaymentError::CardDeclined { .. }));
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.window().failures, 0);
    assert_eq!(h.window().calls, 10);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_below_minimum_calls() {
    let layer = CircuitBreakerLayer::builder().minimum_calls(100).consecutive_failures(3).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    let _ = call(&mut svc, down()).await;
    let _ = call(&mut svc, down()).await;
    call(&mut svc, ok()).await.unwrap(); // a success breaks the run
    let _ = call(&mut svc, down()).await;
    let _ = call(&mut svc, declined()).await; // a decline is a success for health: breaks the run too
    let _ = call(&mut svc, down()).await;
    let _ = call(&mut svc, down()).await;
    assert_eq!(h.state(), State::Closed);
    let _ = call(&mut svc, down()).await;
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips() {
    let layer = CircuitBreakerLayer::builder()
        .no_failure_rate()
        .window_calls(4)
        .minimum_calls(4)
        .slow_calls(Duration::from_secs(2), 0.5)
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(|d: Duration| async move {
        tokio::time::sleep(d).await;
        Ok::<(), PaymentError>(())
    }));
    for d in [1, 3, 1] {
        svc.ready().await.unwrap().call(Duration::from_secs(d)).await.unwrap();
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.window().slow, 1);
    svc.ready().await.unwrap().call(Duration::from_secs(2)).await.unwrap();
    assert_eq!(h.state(), State::Open, "2 slow calls of 4 is 50 %");
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let layer = CircuitBreakerLayer::builder()
        .window(Window::Time { length: Duration::from_secs(10), buckets: 10 })
        .minimum_calls(4)
        .failure_rate(0.5)
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..3 {
        let _ = call(&mut svc, down()).await;
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The three failures have left the window: one more failure is 1 of 1, below the minimum.
    let _ = call(&mut svc, down()).await;
    assert_eq!(h.window(), Snapshot { calls: 1, failures: 1, slow: 0 });
    for _ in 0..3 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Open);
}

/// The time window tags a bucket with a few bits of its epoch; a quiet period of exactly 65 536 buckets (1 h 49 min
/// of 100 ms buckets) used to bring old failures back as current ones.
#[tokio::test(start_paused = true)]
async fn time_window_failures_do_not_come_back_after_65536_quiet_buckets() {
    // 1 s window in 16 buckets: the next call lands in the very bucket the old failures sit in.
    let layer = CircuitBreakerLayer::builder()
        .window(Window::Time { length: Duration::from_millis(1_600), buckets: 16 })
        .minimum_calls(5)
        .failure_rate(0.5)
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..4 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.window(), Snapshot { calls: 4, failures: 4, slow: 0 });
    tokio::time::advance(Duration::from_millis(100 * 65_536)).await;
    assert_eq!(h.window(), Snapshot::default(), "failures from 1 h 49 min ago are outside a 1.6 s window");
    call(&mut svc, ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed, "one success after a quiet period tripped the breaker");
    assert_eq!(h.window(), Snapshot { calls: 1, failures: 0, slow: 0 });
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_with_the_remaining_open_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let layer = fixed(Duration::from_secs(30)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(move |r: Res| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { r }
    }));
    for _ in 0..10 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Open);
    tokio::time::advance(Duration::from_secs(12)).await;
    let e = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(e, PaymentError::CircuitOpen { retry_after: Some(Duration::from_secs(18)) });
    assert_eq!(h.retry_after(), Some(Duration::from_secs(18)));
    assert_eq!(calls.load(Ordering::SeqCst), 10, "the rejected call never reached the gateway");
    assert_eq!(
        DefaultOutcome::of(&e),
        palisade_core::Outcome::Retriable { retry_after: Some(Duration::from_secs(18)) }
    );
}

struct DefaultOutcome;
impl DefaultOutcome {
    fn of(e: &PaymentError) -> palisade_core::Outcome {
        e.outcome()
    }
}

/// Trips a `fixed` breaker with ten failures.
async fn trip<S: Service<Res, Response = (), Error = PaymentError>>(svc: &mut S) {
    for _ in 0..10 {
        let _ = call(svc, down()).await;
    }
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes_under_many_concurrent_callers() {
    let layer = fixed(Duration::from_secs(5)).half_open_probes(3).build().unwrap();
    let h = layer.handle();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let inner_calls = Arc::new(AtomicUsize::new(0));
    let (g, ic) = (gate.clone(), inner_calls.clone());
    let svc = layer.layer(service_fn(move |r: Res| {
        let g = g.clone();
        let ic = ic.clone();
        async move {
            if r.is_ok() {
                ic.fetch_add(1, Ordering::SeqCst);
                // Probes wait here until the test opens the gate, so all callers overlap.
                let _p = g.acquire().await.map_err(|_| PaymentError::network("closed"))?;
            }
            r
        }
    }));
    let mut s = svc.clone();
    trip(&mut s).await;
    tokio::time::advance(Duration::from_secs(5)).await;

    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut s = svc.clone();
        tasks.push(tokio::spawn(async move { call(&mut s, ok()).await }));
    }
    // Let every task run up to its admission decision.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(inner_calls.load(Ordering::SeqCst), 3, "exactly three probes reach the gateway");
    gate.add_permits(1000);
    let mut ok_count = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok_count += 1,
            Err(PaymentError::CircuitOpen { retry_after }) => {
                assert_eq!(retry_after, Some(palisade_circuit_breaker::HALF_OPEN_RETRY_HINT));
                rejected += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok_count, rejected), (3, 197));
    assert_eq!(h.state(), State::Closed, "three successful probes close it");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_and_the_open_time_grows() {
    let layer = CircuitBreakerLayer::builder()
        .window_calls(10)
        .minimum_calls(10)
        .open_backoff(Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(35),
            factor: 2.0,
            jitter: Jitter::None,
        })
        .half_open_probes(1)
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    trip(&mut svc).await;
    assert_eq!(h.retry_after(), Some(Duration::from_secs(10)));
    for expected in [20, 35, 35] {
        tokio::time::advance(h.retry_after().unwrap()).await;
        // The probe fails: open again, for longer.
        let e = call(&mut svc, down()).await.unwrap_err();
        assert!(matches!(e, PaymentError::GatewayTimeout { .. }));
        assert_eq!(h.state(), State::Open);
        assert_eq!(h.retry_after(), Some(Duration::from_secs(expected)));
    }
    // A successful probe closes it and the next trip starts from the base again.
    tokio::time::advance(Duration::from_secs(35)).await;
    call(&mut svc, ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    trip(&mut svc).await;
    assert_eq!(h.retry_after(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn jittered_open_time_stays_within_bounds() {
    let seed = 0xC0FFEE_u64;
    for i in 0..50u64 {
        let layer = CircuitBreakerLayer::builder()
            .window_calls(10)
            .minimum_calls(10)
            .seed(seed + i)
            .open_backoff(Backoff {
                base: Duration::from_secs(30),
                max: Duration::from_secs(300),
                factor: 2.0,
                jitter: Jitter::Equal,
            })
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(echo());
        trip(&mut svc).await;
        let d = h.retry_after().unwrap();
        assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30), "seed {}: {d:?}", seed + i);
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let layer = fixed(Duration::from_secs(5)).half_open_probes(1).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(|r: Option<Res>| async move {
        match r {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }));
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(Some(down())).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let hung = svc.ready().await.unwrap().call(None);
    // The only probe slot is taken.
    let e = svc.ready().await.unwrap().call(Some(ok())).await.unwrap_err();
    assert!(matches!(e, PaymentError::CircuitOpen { .. }));
    // The caller gives up on the hung probe (a timeout, a client disconnect): the slot comes back.
    drop(hung);
    svc.ready().await.unwrap().call(Some(ok())).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_result_from_before_the_trip_does_not_count_as_a_probe() {
    let layer = fixed(Duration::from_secs(5)).half_open_probes(1).build().unwrap();
    let h = layer.handle();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let svc = layer.layer(service_fn(move |(wait, r): (bool, Res)| {
        let g = g.clone();
        async move {
            if wait {
                g.notified().await;
            }
            r
        }
    }));
    let mut slow = svc.clone();
    let late = tokio::spawn(async move { slow.ready().await.unwrap().call((true, ok())).await });
    tokio::task::yield_now().await;
    let mut s = svc.clone();
    for _ in 0..10 {
        let _ = s.ready().await.unwrap().call((false, down())).await;
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    // A probe is admitted, then the call from before the trip completes successfully: it must not close it.
    let mut p = svc.clone();
    let probe = tokio::spawn(async move { p.ready().await.unwrap().call((true, down())).await });
    tokio::task::yield_now().await;
    gate.notify_one();
    late.await.unwrap().unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    gate.notify_one();
    assert!(probe.await.unwrap().is_err());
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn handle_forces_disables_and_resets() {
    let layer = fixed(Duration::from_secs(30)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());

    h.force_open();
    assert_eq!(h.state(), State::ForcedOpen);
    let e = call(&mut svc, ok()).await.unwrap_err();
    assert_eq!(e, PaymentError::CircuitOpen { retry_after: None });
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(call(&mut svc, ok()).await.is_err(), "forced open stays open");

    h.force_closed();
    for _ in 0..50 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::ForcedClosed, "forced closed never trips");
    assert_eq!(h.window().failures, 10, "but still counts");

    h.disable();
    for _ in 0..50 {
        let _ = call(&mut svc, down()).await;
    }
    assert_eq!(h.state(), State::Disabled);
    assert_eq!(h.window(), Snapshot::default(), "disabled counts nothing");

    h.reset();
    assert_eq!(h.state(), State::Closed);
    trip(&mut svc).await;
    assert_eq!(h.state(), State::Open);
    h.reset();
    assert_eq!(h.state(), State::Closed);
    call(&mut svc, ok()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn events_reach_the_callback() {
    let seen: Arc<Mutex<Vec<(String, Event)>>> = Arc::default();
    let s = seen.clone();
    let layer = fixed(Duration::from_secs(5))
        .name("stripe")
        .half_open_probes(1)
        .on_event(move |label, e| s.lock().push((label.to_owned(), e.clone())))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    trip(&mut svc).await;
    let _ = call(&mut svc, ok()).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    call(&mut svc, ok()).await.unwrap();
    let seen = seen.lock();
    let kinds: Vec<_> = seen
        .iter()
        .map(|(l, e)| {
            assert_eq!(l, "stripe");
            match e {
                Event::Transition { from, to, reason, .. } => format!("{from}->{to}:{}", reason.as_str()),
                Event::Rejected { state, .. } => format!("rejected:{state}"),
                other => format!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "closed->open:failure_rate",
            "rejected:open",
            "open->half_open:open_time_elapsed",
            "half_open->closed:probes_succeeded"
        ]
    );
    assert!(matches!(
        seen[0].1,
        Event::Transition { reason: Reason::FailureRate, open_for: Some(d), .. } if d == Duration::from_secs(5)
    ));
}

#[tokio::test(start_paused = true)]
async fn inner_layer_rejections_are_ignored_by_default_and_configurable() {
    let rate_limited = || Err(PaymentError::RateLimited { retry_after: Some(Duration::from_secs(1)) });
    let layer = fixed(Duration::from_secs(5)).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..100 {
        let _ = call(&mut svc, rate_limited()).await;
    }
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.window().calls, 0);

    let layer = fixed(Duration::from_secs(5)).layer_rejections(LayerRejections::Failure).build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(echo());
    for _ in 0..10 {
        let _ = call(&mut svc, rate_limited()).await;
    }
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn per_key_breakers_are_isolated_bounded_and_evicted_when_idle() {
    let layer = fixed(Duration::from_secs(30))
        .max_keys(3)
        .idle_timeout(Duration::from_secs(60))
        .build_keyed(|r: &(&'static str, Res)| r.0)
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(|(_, r): (&'static str, Res)| async move { r }));
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(("adyen", down())).await;
    }
    svc.ready().await.unwrap().call(("stripe", ok())).await.unwrap();
    assert_eq!(h.get(&"adyen").unwrap().state(), State::Open);
    assert_eq!(h.get(&"adyen").unwrap().label(), "gateway/adyen");
    assert_eq!(h.get(&"stripe").unwrap().state(), State::Closed, "one key's outage does not open another");
    assert!(matches!(svc.ready().await.unwrap().call(("adyen", ok())).await, Err(PaymentError::CircuitOpen { .. })));

    // At most three keys: a fourth evicts the least recently used closed one, never the open one.
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call(("braintree", ok())).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call(("paypal", ok())).await.unwrap();
    assert_eq!(h.len(), 3);
    assert!(h.get(&"stripe").is_none(), "stripe was the least recently used closed breaker");
    assert_eq!(h.get(&"adyen").unwrap().state(), State::Open);

    // Idle for longer than the timeout: evicted.
    tokio::time::advance(Duration::from_secs(61)).await;
    svc.ready().await.unwrap().call(("paypal", ok())).await.unwrap();
    assert_eq!(h.evict_idle(), 2);
    assert_eq!(h.keys(), vec!["paypal"]);
}

type KeyedReq = (&'static str, Res);

fn keyed_echo()
-> impl Service<KeyedReq, Response = (), Error = PaymentError, Future = impl Future<Output = Res>> + Clone {
    service_fn(|(_, r): KeyedReq| async move { r })
}

/// An operator's override, and an open breaker that still has open time left, are kept however long the key is
/// idle: forgetting them would send the key's next call to the gateway through a fresh closed breaker.
#[tokio::test(start_paused = true)]
async fn idle_sweep_keeps_operator_overrides_and_open_breakers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let layer =
        fixed(Duration::from_secs(900)).idle_timeout(Duration::from_secs(600)).build_keyed(|r: &KeyedReq| r.0).unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(move |(_, r): KeyedReq| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { r }
    }));
    // Blocked before any traffic (the documented use of `entry`), plus the other overrides.
    h.entry(&"blocked").force_open();
    h.entry(&"pinned").force_closed();
    h.entry(&"unwatched").disable();
    // Opens for 15 min, longer than the idle timeout.
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(("down", down())).await;
    }
    svc.ready().await.unwrap().call(("quiet", ok())).await.unwrap();
    assert_eq!(h.get(&"down").unwrap().state(), State::Open);

    // Eleven minutes without traffic for any of them; another key's call triggers the sweep.
    tokio::time::advance(Duration::from_secs(660)).await;
    svc.ready().await.unwrap().call(("other", ok())).await.unwrap();
    assert!(h.get(&"quiet").is_none(), "an idle closed breaker is dropped");
    assert_eq!(h.evict_idle(), 0);
    let states: Vec<_> =
        ["blocked", "pinned", "unwatched", "down"].iter().map(|k| h.get(k).map(|b| b.state())).collect();
    assert_eq!(
        states,
        vec![Some(State::ForcedOpen), Some(State::ForcedClosed), Some(State::Disabled), Some(State::Open)]
    );
    calls.store(0, Ordering::SeqCst);
    assert!(matches!(svc.ready().await.unwrap().call(("blocked", ok())).await, Err(PaymentError::CircuitOpen { .. })));
    assert!(matches!(svc.ready().await.unwrap().call(("down", ok())).await, Err(PaymentError::CircuitOpen { .. })));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no call reached the gateway");

    // Once the open time has run out and the key has been idle for the timeout, the breaker may go.
    tokio::time::advance(Duration::from_secs(900)).await;
    assert_eq!(h.evict_idle(), 2, "`down` (open time over) and `other` go; the overrides stay");
    let mut keys = h.keys();
    keys.sort_unstable();
    assert_eq!(keys, vec!["blocked", "pinned", "unwatched"]);
}

/// A full map drops the least recently used closed breaker; with none left it grows past `max_keys` instead of
/// forgetting an open breaker, and comes back under the bound once those breakers stop refusing.
#[tokio::test(start_paused = true)]
async fn a_full_per_key_map_never_drops_an_open_breaker() {
    let layer =
        fixed(Duration::from_secs(30)).consecutive_failures(1).max_keys(2).build_keyed(|r: &KeyedReq| r.0).unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(keyed_echo());
    for k in ["gw-a", "gw-b"] {
        let _ = svc.ready().await.unwrap().call((k, down())).await;
        assert_eq!(h.get(&k).unwrap().state(), State::Open);
    }
    h.entry(&"gw-a").force_open();
    svc.ready().await.unwrap().call(("gw-c", ok())).await.unwrap();
    let kept: Vec<_> = ["gw-a", "gw-b", "gw-c"].iter().map(|k| h.get(k).map(|b| b.state())).collect();
    assert_eq!(kept, vec![Some(State::ForcedOpen), Some(State::Open), Some(State::Closed)]);
    assert_eq!(h.len(), 3, "over the bound rather than forgetting an open breaker");
    assert!(matches!(svc.ready().await.unwrap().call(("gw-b", ok())).await, Err(PaymentError::CircuitOpen { .. })));

    // gw-b's open time runs out: it refuses nothing any more, so the next new key brings the map back under the
    // bound by dropping it and gw-c; the operator's block stays.
    tokio::time::advance(Duration::from_secs(31)).await;
    svc.ready().await.unwrap().call(("gw-d", ok())).await.unwrap();
    let mut keys = h.keys();
    keys.sort_unstable();
    assert_eq!(keys, vec!["gw-a", "gw-d"]);
    svc.ready().await.unwrap().call(("gw-e", ok())).await.unwrap();
    let mut keys = h.keys();
    keys.sort_unstable();
    assert_eq!(keys, vec!["gw-a", "gw-e"]);
    assert_eq!(h.get(&"gw-a").unwrap().state(), State::ForcedOpen, "the operator's block is never dropped");
}

#[tokio::test(start_paused = true)]
async fn http_mode_answers_503_problem_with_retry_after() {
    use http::{Request, Response, StatusCode};
    let layer = fixed(Duration::from_millis(29_500)).http().build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(service_fn(|req: Request<()>| async move {
        let status = if req.uri().path() == "/down" { 502 } else { 402 };
        Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(Vec::<u8>::new()).unwrap_or_default())
    }));
    // 402 (a decline) is not an outage.
    for _ in 0..20 {
        let r = svc.ready().await.unwrap().call(Request::get("/decline").body(()).unwrap()).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
    }
    assert_eq!(h.state(), State::Closed);
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(Request::get("/down").body(()).unwrap()).await;
    }
    assert_eq!(h.state(), State::Open);
    let r = svc.ready().await.unwrap().call(Request::get("/decline").body(()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[http::header::RETRY_AFTER], "30", "29.5 s rounds up");
    assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/problem+json");
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body["type"], "urn:palisade:problem:circuit_open");
}

/// In HTTP mode an inner Palisade layer's own refusal (its problem+json response carries
/// `palisade_core::problem::LayerRefusal`) is ignored like the typed error would be: a client hammering one card
/// behind a per-card rate limit must not open the gateway breaker for every customer.
#[tokio::test(start_paused = true)]
async fn http_mode_ignores_inner_layers_problem_refusals() {
    use http::{Request, Response, StatusCode};
    use palisade_core::Problem;
    let inner = || {
        service_fn(|req: Request<()>| async move {
            let res: Response<Vec<u8>> = match req.uri().path() {
                // What an inner RateLimitLayer / IdempotencyLayer / breaker in HTTP mode answers.
                "/limited" => {
                    Problem::from_error(&PaymentError::RateLimited { retry_after: Some(Duration::from_secs(20)) })
                        .into_response()
                }
                "/in-flight" => Problem::new(StatusCode::CONFLICT, "idempotency_in_flight", "request in flight", "x")
                    .with_retry_after(Duration::from_secs(1))
                    .into_response(),
                "/store-down" => Problem::from_error(&PaymentError::store_unavailable("redis down")).into_response(),
                "/inner-open" => Problem::from_error(&PaymentError::CircuitOpen { retry_after: None }).into_response(),
                // The gateway's own 429 and an attempt timeout (retry layer, HTTP mode): real failures.
                "/gateway-429" => Response::builder().status(429).body(Vec::new()).unwrap_or_default(),
                "/timeout" => Problem::from_error(&PaymentError::timeout("attempt timed out")).into_response(),
                _ => Response::new(b"charged".to_vec()),
            };
            Ok::<_, std::convert::Infallible>(res)
        })
    };
    let get = |path: &str| Request::get(path).body(()).unwrap();

    let layer = fixed(Duration::from_secs(30)).http().build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(inner());
    for path in ["/limited", "/in-flight", "/store-down", "/inner-open"] {
        for _ in 0..20 {
            let r = svc.ready().await.unwrap().call(get(path)).await.unwrap();
            assert!(r.status().is_client_error() || r.status().is_server_error(), "{path}");
        }
    }
    let r = svc.ready().await.unwrap().call(get("/customer")).await.unwrap();
    assert_eq!(
        (h.state(), r.status(), h.window().calls),
        (State::Closed, StatusCode::OK, 1),
        "inner layers' own refusals were counted as gateway failures"
    );
    // Without the marker a 429 is the gateway's, and a timeout is a failure whoever reports it.
    for path in ["/gateway-429", "/timeout"] {
        let layer = fixed(Duration::from_secs(30)).http().build().unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(inner());
        for _ in 0..10 {
            let _ = svc.ready().await.unwrap().call(get(path)).await;
        }
        assert_eq!(h.state(), State::Open, "{path}");
    }
    // The policy applies as in typed mode.
    let layer = fixed(Duration::from_secs(30)).layer_rejections(LayerRejections::Failure).http().build().unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(inner());
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(get("/limited")).await;
    }
    assert_eq!(h.state(), State::Open);
}

#[test]
fn rejections_convert_and_configs_are_checked() {
    let r = CircuitOpen::new(State::Open, Some(Duration::from_secs(3)));
    assert_eq!(PaymentError::from(r), PaymentError::CircuitOpen { retry_after: Some(Duration::from_secs(3)) });
    assert!(r.to_string().contains("retry after 3000 ms"));
    assert!(CircuitBreakerLayer::builder().failure_rate(1.5).build().is_err());
    assert!(CircuitBreakerLayer::builder().half_open_probes(2).half_open_successes(3).build().is_err());
    assert!(CircuitBreakerLayer::builder().no_failure_rate().build().is_err());
    assert!(CircuitBreakerLayer::builder().half_open_probes(0).build().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_listener_may_call_back_into_the_handle() {
    // An operator hook that re-closes the breaker whenever it opens (e.g. during a drill) must not deadlock.
    let slot: Arc<Mutex<Option<palisade_circuit_breaker::CircuitBreakerHandle>>> = Arc::default();
    let s = slot.clone();
    let layer = fixed(Duration::from_secs(30))
        .on_event(move |_, e| {
            if matches!(e, Event::Transition { to: State::Open, .. })
                && let Some(h) = s.lock().clone()
            {
                h.force_closed();
            }
        })
        .build()
        .unwrap();
    *slot.lock() = Some(layer.handle());
    let mut svc = layer.layer(echo());
    trip(&mut svc).await;
    assert_eq!(layer.handle().state(), State::ForcedClosed);
}
