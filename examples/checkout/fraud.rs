//! Scenario: fraud block — a blocklisted email is refused before any gateway call, and the checkout saga gives
//! the stock back. The saga reserves stock, then authorizes through `palisade::fraud::FraudLayer` (rules from a
//! rule file) in front of the simulated gateway, then captures and ships.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::core::backoff::{Backoff, Jitter};
use palisade::core::*;
use palisade::fraud::{FraudEngine, FraudLayer};
use palisade::saga::{Event, MemoryLog, Orchestrator, Saga, SagaRecord, SagaState, Step};
use palisade::sim::GatewaySim;
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::Env;
use crate::report::Report;

/// The rules, as an operator would keep them in a file (reloadable with `FraudEngine::reload`).
const RULES: &str = "block if email == \"fraud@example.com\"  # the blocklist: chargebacks from this address\n";

type Gateway = BoxCloneSyncService<GatewayRequest, GatewayResponse, PaymentError>;

/// The saga's context, stored in the saga log as JSON.
#[derive(Serialize, Deserialize)]
struct Checkout {
    order: String,
    sku: String,
    amount: String,
    email: String,
}

/// The world outside the saga: the raw simulator (to read its ledger), the screened gateway the steps call, and
/// the warehouse.
#[derive(Clone)]
struct Shop {
    sim: GatewaySim,
    gateway: Gateway,
    /// Stock holds by the reserve step's key, with the sku.
    holds: Arc<Mutex<HashMap<String, String>>>,
    /// What happened to the stock, in order ("reserve mug", "release mug").
    warehouse: Arc<Mutex<Vec<String>>>,
}

impl Shop {
    fn new(engine: FraudEngine) -> Self {
        let sim = GatewaySim::new();
        let gateway = BoxCloneSyncService::new(FraudLayer::new(engine).layer(sim.clone()));
        Shop { sim, gateway, holds: Arc::default(), warehouse: Arc::default() }
    }
    fn held(&self) -> usize {
        self.holds.lock().map(|h| h.len()).unwrap_or(usize::MAX)
    }
    fn warehouse(&self) -> Vec<String> {
        self.warehouse.lock().map(|w| w.clone()).unwrap_or_default()
    }
    fn ledger_ops(&self, order: &str) -> Vec<Operation> {
        self.sim.entries_for(order).iter().map(|e| e.operation).collect()
    }
}

fn money(amount: &str) -> Result<Money, PaymentError> {
    Money::parse(amount, Currency::USD).map_err(|e| PaymentError::invalid_request(e.to_string()))
}

const QUICK: Backoff =
    Backoff { base: Duration::from_millis(5), max: Duration::from_millis(50), factor: 2.0, jitter: Jitter::Full };

/// reserve → authorize (screened) → capture → ship; the reservation is released, the authorization voided and
/// the capture refunded when a later step fails for good.
fn checkout_saga(shop: &Shop) -> Saga<Checkout> {
    let s = shop.clone();
    let reserve = Step::<Checkout>::new("reserve", move |cx| {
        let s = s.clone();
        async move {
            let sku = cx.context().sku.clone();
            if let (Ok(mut holds), Ok(mut log)) = (s.holds.lock(), s.warehouse.lock())
                && holds.insert(cx.key().to_string(), sku.clone()).is_none()
            {
                log.push(format!("reserve {sku}"));
            }
            Ok(format!("hold-{}", cx.saga_id()))
        }
    });
    let s = shop.clone();
    let reserve = reserve.compensate(move |cx, _hold| {
        let s = s.clone();
        async move {
            if let (Ok(mut holds), Ok(mut log)) = (s.holds.lock(), s.warehouse.lock())
                && let Some(sku) = holds.remove(cx.key().as_str())
            {
                log.push(format!("release {sku}"));
            }
            Ok(())
        }
    });

    let s = shop.clone();
    let authorize = Step::<Checkout>::new("authorize", move |cx| {
        let s = s.clone();
        async move {
            let c = cx.context();
            let mut charge = ChargeRequest::new(
                money(&c.amount)?,
                PaymentToken::new("tok_visa").map_err(|e| PaymentError::invalid_request(e.to_string()))?,
                c.order.parse().map_err(|_| PaymentError::invalid_request("order reference"))?,
            )
            .idempotency_key(cx.key());
            // The fraud layer reads the customer's email from the request's metadata.
            let email = Reference::new(&c.email).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
            charge.metadata.insert("email".into(), email);
            let res = s.gateway.clone().oneshot(GatewayRequest::Authorize(charge)).await?;
            Ok(res.id.to_string())
        }
    });
    let s = shop.clone();
    let authorize = authorize.compensate(move |cx, auth| {
        let s = s.clone();
        async move {
            if cx.output::<String>("capture").is_some() {
                return Ok(()); // captured: the capture's refund gives the money back
            }
            let Some(auth) = auth.as_str() else { return Ok(()) };
            let req = VoidRequest { authorization_id: auth.into(), idempotency_key: Some(cx.compensation_key()) };
            s.gateway.clone().oneshot(GatewayRequest::Void(req)).await.map(|_| ())
        }
    });

    let s = shop.clone();
    let capture = Step::<Checkout>::new("capture", move |cx| {
        let s = s.clone();
        async move {
            let auth: String =
                cx.output("authorize").ok_or_else(|| PaymentError::invalid_request("no authorization"))?;
            let req = CaptureRequest {
                authorization_id: auth.into(),
                amount: Some(money(&cx.context().amount)?),
                idempotency_key: Some(cx.key()),
            };
            let res = s.gateway.clone().oneshot(GatewayRequest::Capture(req)).await?;
            Ok(res.id.to_string())
        }
    });
    let s = shop.clone();
    let capture = capture.compensate(move |cx, payment| {
        let s = s.clone();
        async move {
            let Some(payment) = payment.as_str() else { return Ok(()) };
            let req = RefundRequest {
                payment_id: payment.into(),
                amount: Some(money(&cx.context().amount)?),
                idempotency_key: Some(cx.compensation_key()),
            };
            s.gateway.clone().oneshot(GatewayRequest::Refund(req)).await.map(|_| ())
        }
    });

    let ship = Step::<Checkout>::new("ship", |cx| async move { Ok(format!("ship-{}", cx.context().order)) });

    Saga::builder("checkout")
        .step(reserve.backoff(QUICK).compensation_backoff(QUICK))
        .step(authorize.backoff(QUICK).compensation_backoff(QUICK))
        .step(capture.backoff(QUICK).compensation_backoff(QUICK))
        .step(ship.backoff(QUICK))
        .build()
        .expect("a valid definition")
}

fn checkout(order: &str, amount: &str, email: &str) -> Checkout {
    Checkout { order: order.into(), sku: "mug".into(), amount: amount.into(), email: email.into() }
}

fn count(record: Option<&SagaRecord>, pick: impl Fn(&Event) -> bool) -> usize {
    record.map_or(0, |rec| rec.events.iter().filter(|e| pick(e)).count())
}

pub async fn fraud_block(r: &mut Report, _env: &Env) {
    r.scenario(
        "fraud block: a blocklisted email is rejected before any gateway call; the stock reservation is released",
        "The checkout saga reserves stock, then authorizes the card through the FraudLayer, which screens every\n\
         charge and authorization against the operator's rule file before the gateway sees it. A customer on\n\
         the blocklist checks out a mug: stock is reserved, the screen refuses the authorization (402\n\
         fraud_blocked, a Terminal error, never retried), the gateway is never called, and the saga undoes\n\
         what it did: the reservation is released. A customer not on the list goes through the same screen.",
    );
    let engine = match FraudEngine::builder().rule_file(RULES) {
        Ok(b) => b.build(),
        Err(e) => {
            r.check(&format!("the rule file parses ({e})"), false);
            return;
        }
    };
    r.step(format!("rule file: {}", RULES.trim()));
    let shop = Shop::new(engine);
    let orchestrator = Orchestrator::builder(MemoryLog::new()).owner("checkout-example").build();
    let saga = orchestrator.register(checkout_saga(&shop));

    // A legitimate customer first: the screen lets the authorization through.
    let good = "order-1020";
    let report = orchestrator.start(&saga, good, checkout(good, "25.00", "alice@example.com")).await;
    r.step(format!("{good} (alice@example.com): saga ended {:?}", report.as_ref().map(|rep| rep.state).ok()));
    r.check(
        "a customer not on the blocklist is screened, authorized and captured: the saga completes",
        matches!(&report, Ok(rep) if rep.state == SagaState::Completed)
            && shop.ledger_ops(good) == [Operation::Authorize, Operation::Capture],
    );

    // The blocklisted customer.
    let order = "order-1021";
    let calls_before = shop.sim.calls();
    let holds_before = shop.held();
    let report = orchestrator.start(&saga, order, checkout(order, "89.00", "fraud@example.com")).await;
    let record = orchestrator.get(order).await.ok().flatten();
    for e in record.iter().flat_map(|rec| &rec.events) {
        match e {
            Event::StepDone { step, output } => r.step(format!("{step}: done → {output}")),
            Event::StepFailed { step, error, outcome, .. } => r.step(format!("{step}: failed ({outcome:?}): {error}")),
            Event::CompensationDone { step } => r.step(format!("{step}: compensated")),
            Event::Finished { state } => r.step(format!("saga finished: {state}")),
            _ => {}
        }
    }
    r.step(format!("warehouse: {}", shop.warehouse().join(", ")));

    r.check(
        "the saga ends Compensated, with fraud_blocked (a Terminal error) as its error",
        matches!(&report, Ok(rep) if rep.state == SagaState::Compensated
            && rep.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::FraudBlocked && e.outcome() == Outcome::Terminal)),
    );
    let attempts = count(record.as_ref(), |e| matches!(e, Event::StepStarted { step, .. } if step == "authorize"));
    r.check("the blocked authorization was attempted once, not retried", attempts == 1);
    r.check(
        "no gateway call was made: the simulator saw no request, and its ledger has no entry for order-1021",
        shop.sim.calls() == calls_before && shop.sim.entries_for(order).is_empty(),
    );
    let undone = record.as_ref().map_or_else(Vec::new, |rec| {
        rec.events
            .iter()
            .filter_map(|e| match e {
                Event::CompensationDone { step } => Some(step.as_str()),
                _ => None,
            })
            .collect()
    });
    r.check("only the reservation needed undoing, and it was compensated", undone == ["reserve"]);
    r.check(
        "the stock reserved for order-1021 was released: the warehouse holds no more than before",
        shop.held() == holds_before
            && shop.warehouse().ends_with(&["reserve mug".to_owned(), "release mug".to_owned()]),
    );
}
