//! Scenarios 1–3: what the gateway's answers mean, before any layer is added.

use palisade::core::*;
use palisade::sim::{Fault, GatewaySim};
use tower::{Service, ServiceExt};

use crate::Env;
use crate::report::Report;

fn charge(order: &str, amount: &str, token: &str, key: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).expect("valid amount"),
            PaymentToken::new(token).expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(key).expect("valid key")),
    )
}

pub async fn successful_charge(r: &mut Report, _env: &Env) {
    r.scenario(
        "a successful charge",
        "A customer pays 49.99 USD with a good card (tok_visa). The gateway charges once.",
    );
    let mut gw = GatewaySim::new();
    let res =
        gw.ready().await.expect("sim is always ready").call(charge("order-1001", "49.99", "tok_visa", "k-1001")).await;
    let outcome = DefaultClassifier.classify(&res);
    if let Ok(ch) = &res {
        r.step(format!("gateway answered {} {} for {}", ch.id, ch.amount, ch.order_reference));
    }
    r.check("the call is classified Success", outcome == Outcome::Success);
    r.check("exactly one charge for order-1001 in the gateway's ledger", gw.charges_for("order-1001").len() == 1);
}

pub async fn decline_is_terminal(r: &mut Report, _env: &Env) {
    r.scenario(
        "a decline is final",
        "The issuer declines the card (tok_chargeDeclined). A decline is an answer, not an outage:\n\
         it is never retried and never counts against the gateway's health.",
    );
    let mut gw = GatewaySim::new();
    let res =
        gw.ready().await.expect("ready").call(charge("order-1002", "20.00", "tok_chargeDeclined", "k-1002")).await;
    if let Err(e) = &res {
        r.step(format!("gateway said: {e} (code {})", e.gateway_code()));
    }
    r.check("the call is classified Terminal", DefaultClassifier.classify(&res) == Outcome::Terminal);
    r.check(
        "the error keeps its type through storage (a replay is the same decline)",
        match &res {
            Err(e) => {
                serde_json::from_str::<PaymentError>(&serde_json::to_string(e).unwrap_or_default()).ok().as_ref()
                    == Some(e)
            }
            Ok(_) => false,
        },
    );
    r.check("nothing was charged", gw.charges_for("order-1002").is_empty());
}

pub async fn lost_response_is_unknown(r: &mut Report, _env: &Env) {
    r.scenario(
        "a lost response",
        "The gateway charges the card, then the connection drops before the answer arrives.\n\
         The caller cannot tell whether money moved: the outcome is Unknown, and only a retry with\n\
         the same gateway idempotency key is safe.",
    );
    let mut gw = GatewaySim::new();
    gw.script(Operation::Charge, [Fault::FailAfterCommit]);
    let res = gw.ready().await.expect("ready").call(charge("order-1003", "75.00", "tok_visa", "k-1003")).await;
    if let Err(e) = &res {
        r.step(format!("caller saw: {e}"));
    }
    r.check("the call is classified Unknown", DefaultClassifier.classify(&res) == Outcome::Unknown);
    r.check("the ledger shows the charge did happen", gw.charges_for("order-1003").len() == 1);
    let again = gw.ready().await.expect("ready").call(charge("order-1003", "75.00", "tok_visa", "k-1003")).await;
    r.check("asking again with the same key returns the stored charge", again.is_ok());
    r.check("and still exactly one charge is in the ledger", gw.charges_for("order-1003").len() == 1);
}
