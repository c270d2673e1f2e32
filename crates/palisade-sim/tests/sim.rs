//! The simulated gateway behaves like Stripe where money is concerned.
use std::time::Duration;

use palisade_core::*;
use palisade_sim::{Fault, FaultPlan, GatewaySim, Latency};
use tower::{Service, ServiceExt};

fn charge(order: &str, amount: &str, token: &str, key: Option<&str>) -> GatewayRequest {
    palisade_testkit::charge(order).amount(amount).token(token).maybe_key(key).build()
}

async fn call(sim: &mut GatewaySim, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
    sim.ready().await.unwrap().call(req).await
}

#[tokio::test]
async fn magic_tokens() {
    let mut sim = GatewaySim::new();
    assert!(call(&mut sim, charge("o", "1.00", "tok_visa", None)).await.is_ok());
    assert_eq!(
        call(&mut sim, charge("o", "1.00", "tok_chargeDeclined", None)).await.unwrap_err().kind(),
        ErrorKind::CardDeclined
    );
    assert_eq!(
        call(&mut sim, charge("o", "1.00", "tok_insufficientFunds", None)).await.unwrap_err().kind(),
        ErrorKind::InsufficientFunds
    );
    assert_eq!(
        call(&mut sim, charge("o", "1.00", "tok_fraudulent", None)).await.unwrap_err().kind(),
        ErrorKind::FraudBlocked
    );
    let e = call(&mut sim, charge("o", "1.00", "tok_authenticationRequired", None)).await.unwrap_err();
    assert!(matches!(e, PaymentError::AuthenticationRequired { challenge_url: Some(_) }));
    assert_eq!(sim.charges_for("o").len(), 1, "only the successful charge is in the ledger");
}

#[tokio::test]
async fn same_key_same_params_replays_including_errors() {
    let mut sim = GatewaySim::new();
    let a = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    let b = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(sim.charges_for("o1").len(), 1);
    let d1 = call(&mut sim, charge("o2", "5.00", "tok_chargeDeclined", Some("k2"))).await.unwrap_err();
    let d2 = call(&mut sim, charge("o2", "5.00", "tok_chargeDeclined", Some("k2"))).await.unwrap_err();
    assert_eq!(d1, d2);
    assert_eq!(sim.calls(), 4);
}

#[tokio::test]
async fn same_key_different_params_is_refused() {
    let mut sim = GatewaySim::new();
    call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    let e = call(&mut sim, charge("o1", "6.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e, PaymentError::IdempotencyConflict);
    assert_eq!(sim.charges_for("o1").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn same_key_concurrently_conflicts() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(50))).build();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut s = sim.clone();
        tasks.push(tokio::spawn(async move { call(&mut s, charge("o1", "5.00", "tok_visa", Some("k1"))).await }));
    }
    let mut ok = 0;
    let mut in_flight = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(PaymentError::IdempotencyInFlight { .. }) => in_flight += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok, in_flight), (1, 9));
    assert_eq!(sim.charges_for("o1").len(), 1);
}

/// Issue 16, finding 17: a caller that goes away mid-call (its client timed out, its future was dropped) does not
/// leave the key in progress forever: the gateway finishes the call, and the same key then replays its result.
#[tokio::test(start_paused = true)]
async fn a_dropped_caller_does_not_leave_its_key_in_flight() {
    let mut sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let first =
        tokio::time::timeout(Duration::from_millis(10), call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))));
    assert!(first.await.is_err(), "the caller gave up before the gateway answered");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await;
    assert!(again.is_ok(), "the key answers with the finished call's result, not in flight: {again:?}");
    assert_eq!(sim.charges_for("o1").len(), 1, "the call the caller abandoned was finished once, and replayed");
}

#[tokio::test]
async fn fail_after_commit_charges_but_caller_sees_unknown() {
    let mut sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit]);
    let e = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(DefaultClassifier.classify(&Err::<(), _>(e)), Outcome::Unknown);
    assert_eq!(sim.charges_for("o1").len(), 1, "the charge happened");
    // same key: replayed, no second charge
    call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(sim.charges_for("o1").len(), 1);
    // a new key for the same order charges again: that is exactly the double charge keys prevent
    call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k2"))).await.unwrap();
    assert_eq!(sim.charges_for("o1").len(), 2);
}

#[tokio::test]
async fn fail_before_commit_does_nothing_and_releases_the_key() {
    let mut sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailBeforeCommit, Fault::Timeout]);
    let e = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::RETRIABLE);
    let e = call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Unknown);
    assert!(sim.ledger().is_empty());
    call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.unwrap();
    assert_eq!(sim.charges_for("o1").len(), 1);
}

#[tokio::test]
async fn lost_replay_responses_are_faults_too() {
    let mut sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);
    assert!(call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.is_err());
    assert!(call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.is_err());
    assert!(call(&mut sim, charge("o1", "5.00", "tok_visa", Some("k1"))).await.is_ok());
    assert_eq!(sim.charges_for("o1").len(), 1);
}

#[tokio::test]
async fn rate_limit_and_unavailable_faults_carry_retry_after() {
    let mut sim = GatewaySim::new();
    sim.script(
        Operation::Charge,
        [
            Fault::RateLimited { retry_after: Duration::from_secs(2) },
            Fault::Unavailable { retry_after: None },
            Fault::ServerError { status: 502 },
        ],
    );
    let e = call(&mut sim, charge("o", "1.00", "tok_visa", Some("a"))).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Retriable { retry_after: Some(Duration::from_secs(2)) });
    let e = call(&mut sim, charge("o", "1.00", "tok_visa", Some("a"))).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::GatewayUnavailable);
    let e = call(&mut sim, charge("o", "1.00", "tok_visa", Some("a"))).await.unwrap_err();
    assert_eq!(e.outcome(), Outcome::Unknown);
    assert!(sim.ledger().is_empty());
}

async fn run_plan(seed: u64) -> Vec<String> {
    let plan = FaultPlan::none()
        .with(None, Fault::FailBeforeCommit, 0.2)
        .with(Some(Operation::Charge), Fault::FailAfterCommit, 0.2)
        .with(None, Fault::ServerError { status: 500 }, 0.1);
    let mut sim = GatewaySim::builder().seed(seed).faults(plan).build();
    let mut seen = Vec::new();
    for i in 0..200 {
        let r = call(&mut sim, charge(&format!("o{i}"), "1.00", "tok_visa", Some(&format!("k{i}")))).await;
        seen.push(match r {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind().to_string(),
        });
    }
    seen
}

#[tokio::test]
async fn fault_plan_is_reproducible_from_a_seed() {
    let a = run_plan(7).await;
    assert_eq!(a, run_plan(7).await, "same seed, same faults");
    assert_ne!(a, run_plan(8).await, "another seed, other faults");
    let faults = a.iter().filter(|s| *s != "ok").count();
    assert!((40..=160).contains(&faults), "about half fail: {faults}");
}

#[tokio::test]
async fn outage_and_recovery() {
    let mut sim = GatewaySim::new();
    sim.set_outage(Some(Fault::Unavailable { retry_after: None }));
    assert!(call(&mut sim, charge("o", "1.00", "tok_visa", None)).await.is_err());
    sim.set_outage(None);
    assert!(call(&mut sim, charge("o", "1.00", "tok_visa", None)).await.is_ok());
}

#[tokio::test]
async fn authorize_capture_void_refund() {
    let mut sim = GatewaySim::new();
    let auth = GatewayRequest::Authorize(ChargeRequest::new(
        Money::parse("10.00", Currency::USD).unwrap(),
        PaymentToken::new("tok_visa").unwrap(),
        "o1".parse().unwrap(),
    ));
    let a = call(&mut sim, auth.clone()).await.unwrap();
    assert_eq!(a.status, PaymentStatus::Authorized);
    let over = GatewayRequest::Capture(CaptureRequest {
        authorization_id: a.id.clone(),
        amount: Some(Money::parse("11.00", Currency::USD).unwrap()),
        idempotency_key: None,
    });
    assert_eq!(call(&mut sim, over).await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    let cap =
        GatewayRequest::Capture(CaptureRequest { authorization_id: a.id.clone(), amount: None, idempotency_key: None });
    assert_eq!(call(&mut sim, cap.clone()).await.unwrap().status, PaymentStatus::Captured);
    assert_eq!(call(&mut sim, cap).await.unwrap_err().kind(), ErrorKind::InvalidRequest, "no double capture");
    let void = GatewayRequest::Void(VoidRequest { authorization_id: a.id.clone(), idempotency_key: None });
    assert_eq!(call(&mut sim, void).await.unwrap_err().kind(), ErrorKind::InvalidRequest);
    let part = GatewayRequest::Refund(RefundRequest {
        payment_id: a.id.clone(),
        amount: Some(Money::parse("4.00", Currency::USD).unwrap()),
        idempotency_key: None,
    });
    call(&mut sim, part).await.unwrap();
    let rest = GatewayRequest::Refund(RefundRequest { payment_id: a.id.clone(), amount: None, idempotency_key: None });
    assert_eq!(call(&mut sim, rest).await.unwrap().amount, Money::parse("6.00", Currency::USD).unwrap());
    let ops: Vec<_> = sim.entries_for("o1").iter().map(|e| e.operation).collect();
    assert_eq!(ops, [Operation::Authorize, Operation::Capture, Operation::Refund, Operation::Refund]);

    let b = call(
        &mut sim,
        GatewayRequest::Authorize(ChargeRequest::new(
            Money::parse("3.00", Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "o2".parse().unwrap(),
        )),
    )
    .await
    .unwrap();
    let v = call(&mut sim, GatewayRequest::Void(VoidRequest { authorization_id: b.id, idempotency_key: None }))
        .await
        .unwrap();
    assert_eq!(v.status, PaymentStatus::Voided);
}

/// A capture or refund of a negative or zero amount is refused and moves no money: a refund of -5.00 must not
/// raise what is left to refund, nor a capture of -1.00 capture anything.
#[tokio::test]
async fn negative_or_zero_capture_and_refund_amounts_are_refused() {
    let mut sim = GatewaySim::new();
    let usd = |s: &str| Money::parse(s, Currency::USD).unwrap();
    let auth = GatewayRequest::Authorize(ChargeRequest::new(
        usd("10.00"),
        PaymentToken::new("tok_visa").unwrap(),
        "o_neg".parse().unwrap(),
    ));
    let a = call(&mut sim, auth).await.unwrap();
    for bad in ["-1.00", "0.00"] {
        let cap = GatewayRequest::Capture(CaptureRequest {
            authorization_id: a.id.clone(),
            amount: Some(usd(bad)),
            idempotency_key: None,
        });
        assert_eq!(call(&mut sim, cap).await.unwrap_err().kind(), ErrorKind::InvalidRequest, "capture {bad}");
    }
    let cap =
        GatewayRequest::Capture(CaptureRequest { authorization_id: a.id.clone(), amount: None, idempotency_key: None });
    call(&mut sim, cap).await.unwrap();
    for bad in ["-5.00", "0.00"] {
        let refund = GatewayRequest::Refund(RefundRequest {
            payment_id: a.id.clone(),
            amount: Some(usd(bad)),
            idempotency_key: None,
        });
        assert_eq!(call(&mut sim, refund).await.unwrap_err().kind(), ErrorKind::InvalidRequest, "refund {bad}");
    }
    let rest = GatewayRequest::Refund(RefundRequest { payment_id: a.id.clone(), amount: None, idempotency_key: None });
    assert_eq!(call(&mut sim, rest).await.unwrap().amount, usd("10.00"), "nothing was refunded or added before");
    let ops: Vec<_> = sim.entries_for("o_neg").iter().map(|e| e.operation).collect();
    assert_eq!(ops, [Operation::Authorize, Operation::Capture, Operation::Refund]);
}

#[tokio::test]
async fn ledger_serializes_with_op_order_amount_currency() {
    let mut sim = GatewaySim::new();
    call(&mut sim, charge("o1", "12.34", "tok_visa", Some("k"))).await.unwrap();
    let json = serde_json::to_value(sim.ledger()).unwrap();
    let e = &json[0];
    assert_eq!(e["op"], "charge");
    assert_eq!(e["order_id"], "o1");
    assert_eq!(e["amount"], "12.34");
    assert_eq!(e["currency"], "USD");
}

/// A rate that is not a finite number counts as 0: the rule never fires (before, a NaN passed the clamp and
/// every call panicked in `random_bool`).
#[tokio::test]
async fn a_fault_plan_rate_that_is_not_a_number_never_fires() {
    let plan = FaultPlan::none()
        .with(None, Fault::Timeout, f64::NAN)
        .with(None, Fault::FailAfterCommit, f64::INFINITY)
        .with(None, Fault::FailBeforeCommit, f64::NEG_INFINITY);
    let mut sim = GatewaySim::builder().faults(plan).build();
    for i in 0..5 {
        call(&mut sim, charge(&format!("o{i}"), "1.00", "tok_visa", None)).await.unwrap();
    }
    assert_eq!(sim.ledger().len(), 5);
}
