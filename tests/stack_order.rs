//! The whole stack, built by `palisade::Stack` in its fixed order, over the simulated gateway:
//! Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit → gateway.
//!
//! These tests check the promises that only hold because of the order: a duplicate never reaches anything below
//! idempotency; retries below it reuse the edge key so the gateway charges once; the breaker sees a failure only
//! when retries could not fix it; every attempt spends a rate-limit token; a decline is replayed, not retried.

use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer, State};
use palisade::core::*;
use palisade::fraud::FraudEngine;
use palisade::idempotency::IdempotencyLayer;
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade::sim::{Fault, GatewaySim};
use palisade::{Stack, StackStores};
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

type Gateway = BoxCloneService<GatewayRequest, GatewayResponse, PaymentError>;

fn stack(sim: &GatewaySim, rate_per_sec: u32) -> (Gateway, CircuitBreakerHandle) {
    let breaker = CircuitBreakerLayer::builder()
        .window_calls(10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_duration(Duration::from_secs(30))
        .build()
        .expect("valid breaker config");
    let handle = breaker.handle();
    let svc = Stack::new()
        .stores(StackStores::memory())
        .idempotency(IdempotencyLayer::builder())
        .fraud(FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").expect("valid rules"))
        .circuit_breaker(breaker)
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(RateLimitLayer::builder().rate(rate_per_sec, Duration::from_secs(1)))
        .audit(AuditLayer::new())
        .service(sim.clone())
        .expect("valid stack");
    (BoxCloneService::new(svc), handle)
}

fn charge(order: &str, token: &str, key: &str) -> GatewayRequest {
    palisade_testkit::charge(order).amount("42.00").currency(Currency::EUR).token(token).key(key).build()
}

async fn call(svc: &mut Gateway, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn lost_responses_are_retried_with_the_edge_key_and_charge_once() {
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);
    let (mut gw, breaker) = stack(&sim, 100);

    let res = call(&mut gw, charge("order-1", "tok_visa", "edge-key-1")).await;
    assert!(res.is_ok(), "retry recovered: {res:?}");
    assert_eq!(sim.charges_for("order-1").len(), 1, "the card was charged once");
    assert_eq!(sim.calls(), 3, "three attempts reached the gateway");
    let keys: Vec<_> = sim.ledger().iter().map(|e| e.gateway_key.clone()).collect();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].is_some(), "the gateway saw an idempotency key");
    assert_eq!(breaker.state(), State::Closed, "a failure retries fixed is not a breaker failure");

    // The client retries too (its own timeout fired, say): answered from the idempotency store.
    let again = call(&mut gw, charge("order-1", "tok_visa", "edge-key-1")).await.unwrap();
    assert_eq!(Some(again), res.ok());
    assert_eq!(sim.calls(), 3, "a duplicate never reaches anything below idempotency");
}

#[tokio::test(start_paused = true)]
async fn a_decline_is_replayed_not_retried_and_never_trips_the_breaker() {
    let sim = GatewaySim::new();
    let (mut gw, breaker) = stack(&sim, 1000);
    for i in 0..20 {
        let key = format!("decline-{i}");
        let e = call(&mut gw, charge(&format!("o{i}"), "tok_chargeDeclined", &key)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::CardDeclined);
        let replay = call(&mut gw, charge(&format!("o{i}"), "tok_chargeDeclined", &key)).await.unwrap_err();
        assert_eq!(replay, e, "the replay is the same typed decline");
    }
    assert_eq!(sim.calls(), 20, "each decline reached the gateway once: no retries, replays from the store");
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_outage_opens_the_breaker_which_stops_the_retry_loop() {
    let sim = GatewaySim::new();
    sim.set_outage(Some(Fault::Unavailable { retry_after: None }));
    let (mut gw, breaker) = stack(&sim, 1000);
    for i in 0..4 {
        let e = call(&mut gw, charge(&format!("o{i}"), "tok_visa", &format!("k{i}"))).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::GatewayUnavailable);
    }
    assert_eq!(sim.calls(), 12, "each call was tried three times below the breaker");
    assert_eq!(breaker.state(), State::Open, "four exhausted calls out of four trip it");
    let e = call(&mut gw, charge("o-next", "tok_visa", "k-next")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen);
    assert_eq!(sim.calls(), 12, "an open breaker stops the whole retry loop: nothing reached the gateway");
    assert!(sim.ledger().is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_attempt_spends_a_rate_limit_token() {
    let sim = GatewaySim::new();
    // Two calls per second leave the process. The first charge's response is lost once: its retry is the
    // second token, so a second order in the same instant is refused at the rate limit and then waits.
    sim.script(Operation::Charge, [Fault::FailBeforeCommit]);
    let (mut gw, _breaker) = stack(&sim, 2);
    call(&mut gw, charge("a", "tok_visa", "ka")).await.unwrap();
    assert_eq!(sim.calls(), 2, "two attempts");
    let started = tokio::time::Instant::now();
    let res = call(&mut gw, charge("b", "tok_visa", "kb")).await;
    assert!(res.is_ok(), "{res:?}");
    assert!(started.elapsed() > Duration::ZERO, "the second order had to wait for a token");
    assert_eq!(sim.charges_for("a").len() + sim.charges_for("b").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_fraud_block_never_reaches_the_breaker_or_the_gateway_and_is_replayed() {
    let sim = GatewaySim::new();
    let engine =
        FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").expect("valid rules").build();
    let breaker = CircuitBreakerLayer::builder().window_calls(10).minimum_calls(2).failure_rate(0.5).build().unwrap();
    let handle = breaker.handle();
    let mut gw = BoxCloneService::new(
        Stack::new()
            .idempotency(IdempotencyLayer::builder())
            .fraud(engine.clone())
            .circuit_breaker(breaker)
            .retry(RetryLayer::builder().max_attempts(3))
            .service(sim.clone())
            .unwrap(),
    );
    let blocked = |i: usize| {
        let mut c = palisade_testkit::charge(&format!("o{i}")).key(&format!("fraud-{i}")).request();
        c.metadata.insert("email".into(), Reference::new("mallory@fraud.test").unwrap());
        GatewayRequest::Charge(c)
    };
    for i in 0..5 {
        let e = call(&mut gw, blocked(i)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FraudBlocked);
    }
    assert_eq!(sim.calls(), 0, "a block never reaches the gateway");
    assert_eq!(handle.window().calls, 0, "nor the breaker: gateway health is untouched");
    assert_eq!(handle.state(), State::Closed);
    // The rules change; the same key still gets the block it was given (replayed, not screened again).
    engine.reload("").unwrap();
    let e = call(&mut gw, blocked(0)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FraudBlocked, "the block is replayed by idempotency");
    assert_eq!(sim.calls(), 0);
    // A new key under the new rules passes through.
    call(&mut gw, blocked(9)).await.unwrap();
    assert_eq!(sim.calls(), 1);
}

/// A charge whose outcome was Unknown (the gateway charged it, the answer was lost on every attempt) is released
/// by idempotency and executed again when the client retries. Attempts on the same card came in between and
/// pushed its velocity over the limit; the re-execution is still decided on the velocity its first decision saw,
/// so it reaches the gateway with the same key and gets the charge that exists — not a block that would tell the
/// customer "declined" while their card is charged.
#[tokio::test(start_paused = true)]
async fn a_charge_re_executed_after_an_unknown_outcome_is_not_blocked_by_attempts_that_came_after_it() {
    let sim = GatewaySim::new();
    let mut gw = BoxCloneService::new(
        Stack::new()
            .stores(StackStores::memory())
            .idempotency(IdempotencyLayer::builder())
            .fraud(FraudEngine::builder().rule_file("block if attempts_per_card_1h > 2").expect("valid rules"))
            .retry(RetryLayer::builder().max_attempts(2))
            .service(sim.clone())
            .unwrap(),
    );
    let on_card = |order: &str, key: &str| {
        let mut c = palisade_testkit::charge(order).key(key).request();
        c.metadata.insert("card_fingerprint".into(), Reference::new("fp_shared").unwrap());
        GatewayRequest::Charge(c)
    };
    sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);
    let lost = call(&mut gw, on_card("o1", "k1")).await.unwrap_err();
    assert_eq!(lost.outcome().class(), OutcomeClass::Unknown, "{lost:?}");
    assert_eq!(sim.charges_for("o1").len(), 1, "the card was charged; the answer was lost");
    call(&mut gw, on_card("o2", "k2")).await.unwrap();
    let third = call(&mut gw, on_card("o3", "k3")).await.unwrap_err();
    assert_eq!(third.kind(), ErrorKind::FraudBlocked, "the third attempt on the card is over the limit");

    let again = call(&mut gw, on_card("o1", "k1")).await.expect("the charge that exists, not a block");
    assert_eq!(sim.charges_for("o1").len(), 1, "still one charge");
    assert_eq!(sim.charges_for("o1")[0].payment_id, again.id.as_str());
}
