//! Scenario: a transient failure. The retry layer recovers from two lost responses, and the charge happens once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::core::*;
use palisade::retry::RetryLayer;
use palisade::sim::{Fault, GatewaySim};
use tower::{Layer, Service, ServiceExt};

use crate::Env;
use crate::report::Report;

pub async fn transient_failure_recovers(r: &mut Report, _env: &Env) {
    r.scenario(
        "transient failure: retry recovers from two network errors and the charge happens once",
        "The customer pays 120.00 USD. The gateway charges the card, then the connection drops before the\n\
         answer arrives, twice in a row. Both are Unknown outcomes: the charge may have happened. The retry\n\
         layer gives the request a gateway idempotency key before the first attempt and sends that same key\n\
         every time, so the gateway answers the retries from its record instead of charging again.",
    );
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit, Fault::FailAfterCommit]);

    // Record what each attempt carried, between the retry layer and the gateway.
    let sent: Arc<Mutex<Vec<Option<IdempotencyKey>>>> = Arc::default();
    let log = sent.clone();
    let gateway = tower::util::MapRequestLayer::new(move |req: GatewayRequest| {
        if let Ok(mut seen) = log.lock() {
            seen.push(req.gateway_key().cloned());
        }
        req
    })
    .layer(sim.clone());
    let mut svc = RetryLayer::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(50))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .layer(gateway);

    // The request arrives without a gateway key.
    let req = GatewayRequest::Charge(ChargeRequest::new(
        Money::parse("120.00", Currency::USD).expect("valid amount"),
        PaymentToken::new("tok_visa").expect("valid token"),
        "order-1004".parse().expect("a reference without card data"),
    ));
    let res = match svc.ready().await {
        Ok(ready) => ready.call(req).await,
        Err(e) => Err(e),
    };
    let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
    for (i, key) in sent.iter().enumerate() {
        let key = key.as_ref().map_or("none", IdempotencyKey::as_str);
        r.step(format!("attempt {} sent gateway key {key}", i + 1));
    }
    match &res {
        Ok(ch) => r.step(format!("caller got {} {} for {}", ch.id, ch.amount, ch.order_reference)),
        Err(e) => r.step(format!("caller got an error: {e}")),
    }
    r.check("the caller gets success", res.is_ok());
    r.check("the gateway saw three attempts (two lost responses, then the stored result)", sim.calls() == 3);
    r.check(
        "every attempt carried the same gateway key, assigned before the first",
        sent.len() == 3 && sent[0].is_some() && sent.iter().all(|k| *k == sent[0]),
    );
    r.check("the ledger shows exactly one charge for order-1004", sim.charges_for("order-1004").len() == 1);
}
