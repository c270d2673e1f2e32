//! Rate limiting: a card-testing burst from one card is throttled; another customer's charge goes through.

use std::time::Duration;

use palisade::core::*;
use palisade::rate_limit::RateLimitLayer;
use palisade::rate_limit::redis::RedisStore;
use palisade::sim::GatewaySim;
use tower::{Layer, ServiceExt};

use crate::Env;
use crate::report::Report;

fn charge(order: &str, amount: &str, token: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).expect("valid amount"),
            PaymentToken::new(token).expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(format!("k-{order}")).expect("valid key")),
    )
}

/// The card a request charges: the limit's key. Tokens only; a raw card number never reaches this layer.
fn card_of(req: &GatewayRequest) -> String {
    match req {
        GatewayRequest::Charge(c) | GatewayRequest::Authorize(c) => c.source.as_str().to_owned(),
        other => format!("op:{:?}", other.operation()),
    }
}

pub async fn card_testing_is_throttled(r: &mut Report, env: &Env) {
    r.scenario(
        "card testing is throttled per card",
        "A fraudster replays 25 small charges against one stolen card token within a second, to learn\n\
         whether it works. RateLimitLayer allows 3 charges per card per minute (GCRA, keyed by card token),\n\
         so the gateway sees only 3 of them. A real customer paying with another card at the same moment\n\
         is not affected: each card has its own limit.",
    );
    let builder = RateLimitLayer::builder().name("per-card").rate(3, Duration::from_secs(60)).key_by(card_of);
    let builder = match &env.redis_url {
        Some(url) => {
            r.step("limit state in Redis (shared by every instance of the checkout service)");
            let prefix = format!("palisade-checkout:{}:{}:", std::process::id(), uuid_like());
            builder.redis(RedisStore::from_url(url).prefix(prefix))
        }
        None => builder,
    };
    let layer = builder.build().expect("valid limit");
    let gw = GatewaySim::new();
    // Clone the service per request, as axum does: the limit is shared by every clone.
    let svc = layer.layer(gw.clone());

    let mut refused = Vec::new();
    let mut admitted = 0;
    for i in 1..=25 {
        let res = svc.clone().oneshot(charge(&format!("test-{i}"), "1.00", "tok_stolen_card")).await;
        match res {
            Ok(_) => admitted += 1,
            Err(e) => refused.push(e),
        }
    }
    r.step(format!("fraudster: {admitted} of 25 charges went through, {} refused", refused.len()));
    if let Some(e) = refused.first() {
        r.step(format!("first refusal: {e}"));
    }
    let customer = svc.clone().oneshot(charge("order-2001", "64.90", "tok_visa")).await;
    r.step(match &customer {
        Ok(ch) => format!("customer: charged {} for {}", ch.amount, ch.order_reference),
        Err(e) => format!("customer: {e}"),
    });

    let reached: usize = (1..=25).map(|i| gw.charges_for(&format!("test-{i}")).len()).sum();
    r.check("the gateway's ledger shows exactly 3 charges on the stolen card", reached == 3);
    r.check(
        "the 22 others were refused as RateLimited with a retry_after of at most 20 s (one per 20 s)",
        refused.len() == 22
            && refused.iter().all(|e| {
                matches!(e, PaymentError::RateLimited { retry_after: Some(d) } if *d > Duration::ZERO && *d <= Duration::from_secs(20))
            }),
    );
    r.check(
        "a refusal is Retriable and nothing was charged for it (classified before the gateway)",
        refused.iter().all(|e| matches!(e.outcome(), Outcome::Retriable { .. })),
    );
    r.check("the other customer's charge went through", customer.is_ok());
    r.check("exactly one charge for order-2001 in the ledger", gw.charges_for("order-2001").len() == 1);
}

/// A short unique suffix so reruns against one Redis never share keys.
fn uuid_like() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
