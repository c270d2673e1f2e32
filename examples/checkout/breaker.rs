//! Circuit breaker scenario: a gateway outage opens the breaker, checkouts fail fast, a half-open probe finds the
//! gateway back, and the breaker closes again. Declines before the outage never count.

use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerLayer, RedisShared, State};
use palisade::core::*;
use palisade::sim::{Fault, GatewaySim};
use tower::{Layer, Service, ServiceExt};

use crate::Env;
use crate::report::Report;

fn charge(order: &str, token: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("30.00", Currency::USD).expect("valid amount"),
            PaymentToken::new(token).expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(format!("k-{order}")).expect("valid key")),
    )
}

pub async fn outage_opens_and_recovers(r: &mut Report, env: &Env) {
    r.scenario(
        "a gateway outage trips the breaker",
        "First a run of declined cards: the gateway answers, so the breaker stays closed. Then the gateway\n\
         goes down (503s). After 5 failures in the last 10 calls the breaker opens: the next checkouts fail\n\
         fast with CircuitOpen and a Retry-After, without touching the gateway. When the open time is over,\n\
         one probe checkout goes through; the gateway is back, so the breaker closes again.",
    );
    let gw = GatewaySim::new();
    let open_for = Duration::from_millis(300);
    let builder = CircuitBreakerLayer::builder()
        .name("checkout-psp")
        .window_calls(10)
        .minimum_calls(10)
        .failure_rate(0.5)
        .open_duration(open_for)
        .half_open_probes(1);
    let layer = match &env.redis_url {
        Some(url) => match RedisShared::connect(url).await {
            Ok(shared) => {
                r.step("breaker state shared through Redis (aggregated failure rate across instances)");
                let prefix = format!("palisade:checkout:{}:cb:", std::process::id());
                builder.shared(shared.prefix(prefix).sync_interval(Duration::from_millis(100))).build()
            }
            Err(e) => {
                r.step(format!("Redis unreachable ({e}): the breaker decides locally"));
                builder.build()
            }
        },
        None => builder.build(),
    }
    .expect("valid breaker config");
    let breaker = layer.handle();
    let mut svc = layer.layer(gw.clone());

    let mut declines = 0;
    for i in 0..30 {
        let res = svc.ready().await.expect("ready").call(charge(&format!("order-5{i:03}"), "tok_chargeDeclined")).await;
        declines += usize::from(matches!(res, Err(PaymentError::CardDeclined { .. })));
    }
    r.step(format!("{declines} cards declined by the issuer"));
    r.check("30 declines leave the breaker closed (a decline is not an outage)", breaker.state() == State::Closed);

    gw.set_outage(Some(Fault::Unavailable { retry_after: None }));
    r.step("the gateway goes down: every call answers 503");
    let mut attempts = 0;
    while breaker.state() == State::Closed && attempts < 50 {
        attempts += 1;
        let _ = svc.ready().await.expect("ready").call(charge(&format!("order-6{attempts:03}"), "tok_visa")).await;
    }
    r.step(format!("the breaker opened after {attempts} failed checkouts"));
    r.check("the breaker opens at 5 failures in the last 10 calls", breaker.state() == State::Open && attempts == 5);

    let calls_before = gw.calls();
    let mut fast = 0;
    let mut hint = None;
    for i in 0..20 {
        let res = svc.ready().await.expect("ready").call(charge(&format!("order-7{i:03}"), "tok_visa")).await;
        if let Err(PaymentError::CircuitOpen { retry_after }) = res {
            fast += 1;
            hint = retry_after;
        }
    }
    r.step(format!(
        "20 more checkouts: {fast} failed fast with CircuitOpen, retry after {} ms",
        hint.map_or(0, |d| d.as_millis())
    ));
    r.check("every checkout during the outage failed fast", fast == 20);
    r.check("none of them reached the gateway", gw.calls() == calls_before);
    r.check("the caller is told when to come back", hint.is_some_and(|d| d > Duration::ZERO && d <= open_for));

    gw.set_outage(None);
    r.step("the gateway recovers; we wait out the open time");
    tokio::time::sleep(breaker.retry_after().unwrap_or_default() + Duration::from_millis(20)).await;
    let probe = svc.ready().await.expect("ready").call(charge("order-8000", "tok_visa")).await;
    r.check("the half-open probe checkout succeeds", probe.is_ok());
    r.check("one probe success closes the breaker", breaker.state() == State::Closed);
    r.check("the probe charged the card exactly once", gw.charges_for("order-8000").len() == 1);
    let after = svc.ready().await.expect("ready").call(charge("order-8001", "tok_visa")).await;
    r.check("checkouts flow again", after.is_ok() && gw.charges_for("order-8001").len() == 1);
}
