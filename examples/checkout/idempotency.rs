//! Scenario: idempotent replay — the IdempotencyLayer in front of the gateway.

use std::time::Duration;

use palisade::core::*;
use palisade::idempotency::{IdempotencyLayer, LeaseStore, MemoryStore, RedisStore};
use palisade::sim::{Fault, GatewaySim, Latency};
use tower::{Layer, ServiceExt};

use crate::Env;
use crate::report::Report;

fn charge(order: &str, amount: &str, key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).expect("valid amount"),
            PaymentToken::new("tok_visa").expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(key).expect("valid key")),
    )
}

fn layered<S: LeaseStore>(store: S, sim: &GatewaySim) -> Gateway {
    // A walkthrough keeps its records ten minutes, not the default 24 h, so a dev Redis does not fill up.
    let layer =
        IdempotencyLayer::builder().store(store).lease(Duration::from_secs(30)).ttl(Duration::from_secs(600)).build();
    tower::util::BoxCloneService::new(layer.layer(sim.clone()))
}

/// The gateway behind the layer, with Redis records (under a prefix of its own, so runs never replay each
/// other) when `PALISADE_REDIS_URL` is set, in memory otherwise.
async fn gateway(r: &Report, env: &Env, sim: &GatewaySim) -> Gateway {
    if let Some(url) = &env.redis_url {
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        match RedisStore::connect(url).await {
            Ok(s) => {
                r.step(format!("idempotency records are kept in Redis at {url}"));
                return layered(s.with_prefix(format!("palisade:checkout:{}:{nonce}:", std::process::id())), sim);
            }
            Err(e) => r.step(format!("Redis unavailable ({e}); using the in-memory store")),
        }
    }
    layered(MemoryStore::new(), sim)
}

type Gateway = tower::util::BoxCloneService<GatewayRequest, GatewayResponse, PaymentError>;

pub async fn idempotent_replay(r: &mut Report, env: &Env) {
    r.scenario(
        "idempotent replay",
        "The customer clicks Pay twice, the browser retries, a load balancer replays the request: the same\n\
         Idempotency-Key arrives again and again, some copies while the first is still running. The\n\
         IdempotencyLayer claims the key atomically, so the charge runs once; later copies get the stored\n\
         charge back, and a different payload under the same key is refused.",
    );
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(50))).build();
    let gw = gateway(r, env, &sim).await;

    let first = gw.clone().oneshot(charge("order-2001", "49.99", "checkout-order-2001")).await;
    let Ok(first) = first else {
        r.check("the first charge succeeds", false);
        return;
    };
    r.step(format!("first request charged {} as {}", first.amount, first.id));
    let again = gw.clone().oneshot(charge("order-2001", "49.99", "checkout-order-2001")).await;
    r.check("the same key and payload return the stored charge", again.as_ref().ok() == Some(&first));

    let calls_before = sim.calls();
    let mut copies = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let gw = gw.clone();
        copies.spawn(async move { gw.oneshot(charge("order-2002", "15.00", "checkout-order-2002")).await });
    }
    let (mut ok, mut in_flight, mut other) = (0, 0, Vec::new());
    while let Some(res) = copies.join_next().await {
        match res {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(PaymentError::IdempotencyInFlight { .. })) => in_flight += 1,
            // Anything else (a 503 from a stalled store, a panic) is named, so a failed claim says why.
            Ok(Err(e)) => other.push(e.to_string()),
            Err(e) => other.push(format!("task failed: {e}")),
        }
    }
    r.step(format!(
        "20 concurrent copies of another payment: {ok} answered with the charge, {in_flight} told 409 in flight"
    ));
    if !other.is_empty() {
        r.step(format!("{} copies got something else: {}", other.len(), other.join("; ")));
    }
    r.check(
        "every copy got the charge or a 409, and only one reached the gateway",
        ok + in_flight == 20 && sim.calls() - calls_before == 1,
    );

    let different = gw.clone().oneshot(charge("order-2001", "99.00", "checkout-order-2001")).await;
    if let Err(e) = &different {
        r.step(format!("same key, different amount: {e}"));
    }
    r.check("a different payload under the same key is refused", different == Err(PaymentError::IdempotencyConflict));

    sim.script(Operation::Charge, [Fault::FailAfterCommit]);
    let lost = gw.clone().oneshot(charge("order-2003", "20.00", "checkout-order-2003")).await;
    let retried = gw.clone().oneshot(charge("order-2003", "20.00", "checkout-order-2003")).await;
    r.step(format!(
        "a lost response ({}) is released, and the retry carries the same gateway key",
        lost.as_ref().err().map_or("no error".to_owned(), ToString::to_string)
    ));
    r.check("the retry after a lost response gets the charge", retried.is_ok());

    r.check("the ledger shows exactly one charge for order-2001", sim.charges_for("order-2001").len() == 1);
    r.check("the ledger shows exactly one charge for order-2002", sim.charges_for("order-2002").len() == 1);
    r.check("the ledger shows exactly one charge for order-2003", sim.charges_for("order-2003").len() == 1);
}
