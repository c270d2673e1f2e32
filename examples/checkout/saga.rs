//! Scenarios: the checkout saga. Reserve stock, authorize, capture, ship, each step paired with what undoes it
//! (release the stock, void the authorization, refund the capture), run by `palisade::saga` with every step's
//! start and end written to a saga log (in memory here) and the step key sent as the gateway idempotency key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::core::backoff::{Backoff, Jitter};
use palisade::core::*;
use palisade::fraud::{FraudEngine, FraudLayer};
use palisade::saga::{Event, MemoryLog, Orchestrator, Saga, SagaRecord, SagaState, Step, compensation_key, step_key};
use palisade::sim::{Fault, GatewaySim};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::Env;
use crate::report::Report;

/// The saga's context: what it was started with (stored in the saga log as JSON).
#[derive(Serialize, Deserialize)]
pub(crate) struct Checkout {
    order: String,
    sku: String,
    amount: String,
    token: String,
    email: String,
}

/// What the saga's gateway steps call: the simulator, or a stack of layers around it.
type Gateway = BoxCloneSyncService<GatewayRequest, GatewayResponse, PaymentError>;

/// Everything outside the saga: the gateway, the warehouse, the carrier.
#[derive(Clone)]
pub(crate) struct Shop {
    /// The simulated gateway itself: its ledger, and the faults a scenario scripts.
    pub(crate) sim: GatewaySim,
    /// What the steps call: `sim`, or `sim` behind a fraud screen.
    gateway: Gateway,
    /// Stock holds by the reserve step's key (the warehouse deduplicates by it), with the sku.
    holds: Arc<Mutex<HashMap<String, String>>>,
    /// What happened to the stock, in order ("reserve mug", "release mug").
    warehouse: Arc<Mutex<Vec<String>>>,
    /// Shipments by the ship step's key.
    shipments: Arc<Mutex<HashMap<String, String>>>,
    /// The carrier refuses the address (a terminal error) while set.
    carrier_refuses: Arc<AtomicBool>,
    /// Gateway keys sent by the authorize step, attempt by attempt.
    authorize_keys: Arc<Mutex<Vec<String>>>,
}

impl Default for Shop {
    fn default() -> Self {
        let sim = GatewaySim::new();
        Shop::around(sim.clone(), BoxCloneSyncService::new(sim))
    }
}

impl Shop {
    fn around(sim: GatewaySim, gateway: Gateway) -> Self {
        Shop {
            sim,
            gateway,
            holds: Arc::default(),
            warehouse: Arc::default(),
            shipments: Arc::default(),
            carrier_refuses: Arc::default(),
            authorize_keys: Arc::default(),
        }
    }

    /// A shop whose gateway calls pass through `palisade::fraud::FraudLayer` with `engine` first.
    pub(crate) fn screened(engine: FraudEngine) -> Self {
        let sim = GatewaySim::new();
        Shop::around(sim.clone(), BoxCloneSyncService::new(FraudLayer::new(engine).layer(sim)))
    }

    async fn call(&self, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
        self.gateway.clone().oneshot(req).await
    }

    pub(crate) fn held(&self) -> usize {
        self.holds.lock().map(|h| h.len()).unwrap_or(usize::MAX)
    }
    fn shipped(&self) -> usize {
        self.shipments.lock().map(|s| s.len()).unwrap_or(usize::MAX)
    }
    pub(crate) fn warehouse(&self) -> Vec<String> {
        self.warehouse.lock().map(|w| w.clone()).unwrap_or_default()
    }
    /// The gateway operations the ledger shows for `order`, in the order they happened.
    pub(crate) fn ledger_ops(&self, order: &str) -> Vec<Operation> {
        self.sim.entries_for(order).iter().map(|e| e.operation).collect()
    }
}

fn money(amount: &str) -> Result<Money, PaymentError> {
    Money::parse(amount, Currency::USD).map_err(|e| PaymentError::invalid_request(e.to_string()))
}

/// Short waits so the walkthrough runs in moments (the defaults start at 100 ms, see `palisade::saga::defaults`).
const QUICK: Backoff =
    Backoff { base: Duration::from_millis(5), max: Duration::from_millis(50), factor: 2.0, jitter: Jitter::Full };

/// reserve → authorize → capture → ship. The authorization is undone by a void, the capture by a refund (a
/// captured payment cannot be voided), the reservation by releasing the stock; shipping is last and has nothing
/// after it to undo.
pub(crate) fn checkout_saga(shop: &Shop) -> Saga<Checkout> {
    let s = shop.clone();
    let reserve = Step::<Checkout>::new("reserve", move |cx| {
        let s = s.clone();
        async move {
            let sku = cx.context().sku.clone();
            if let (Ok(mut holds), Ok(mut log)) = (s.holds.lock(), s.warehouse.lock()) {
                // Keyed by the step key: running the step again holds nothing more.
                if holds.insert(cx.key().to_string(), sku.clone()).is_none() {
                    log.push(format!("reserve {sku}"));
                }
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
            if let Ok(mut keys) = s.authorize_keys.lock() {
                keys.push(cx.key().to_string());
            }
            let mut charge = ChargeRequest::new(
                money(&c.amount)?,
                PaymentToken::new(&c.token).map_err(|e| PaymentError::invalid_request(e.to_string()))?,
                c.order.parse().map_err(|_| PaymentError::invalid_request("order reference"))?,
            )
            .idempotency_key(cx.key());
            // A fraud screen in front of the gateway reads the customer's email from the request's metadata.
            let email = Reference::new(&c.email).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
            charge.metadata.insert("email".into(), email);
            let res = s.call(GatewayRequest::Authorize(charge)).await?;
            Ok(res.id.to_string())
        }
    });
    let s = shop.clone();
    let authorize = authorize.compensate(move |cx, auth| {
        let s = s.clone();
        async move {
            if cx.output::<String>("capture").is_some() {
                // Captured: the capture's refund gives the money back; a captured authorization cannot be voided.
                return Ok(());
            }
            let Some(auth) = auth.as_str() else {
                // The authorization's answer was lost for good: there is no id to void; it lapses on its own.
                return Ok(());
            };
            let req = VoidRequest { authorization_id: auth.into(), idempotency_key: Some(cx.compensation_key()) };
            s.call(GatewayRequest::Void(req)).await.map(|_| ())
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
            let res = s.call(GatewayRequest::Capture(req)).await?;
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
            s.call(GatewayRequest::Refund(req)).await.map(|_| ())
        }
    });

    let s = shop.clone();
    let ship = Step::<Checkout>::new("ship", move |cx| {
        let s = s.clone();
        async move {
            if s.carrier_refuses.load(Ordering::SeqCst) {
                return Err(PaymentError::invalid_request("the carrier refused the address"));
            }
            if let Ok(mut shipments) = s.shipments.lock() {
                shipments.insert(cx.key().to_string(), cx.context().order.clone());
            }
            Ok(format!("ship-{}", cx.context().order))
        }
    });

    Saga::builder("checkout")
        .step(reserve.backoff(QUICK).compensation_backoff(QUICK))
        .step(authorize.backoff(QUICK).compensation_backoff(QUICK))
        .step(capture.backoff(QUICK).compensation_backoff(QUICK))
        .step(ship.backoff(QUICK))
        .build()
        .expect("a valid definition")
}

fn checkout(order: &str, amount: &str) -> Checkout {
    checkout_by(order, amount, "alice@example.com")
}

/// A mug for `amount`, bought by `email`.
pub(crate) fn checkout_by(order: &str, amount: &str, email: &str) -> Checkout {
    Checkout {
        order: order.into(),
        sku: "mug".into(),
        amount: amount.into(),
        token: "tok_visa".into(),
        email: email.into(),
    }
}

/// The step names of the events `pick` selects, in the order the log has them.
fn steps_of(record: &SagaRecord, pick: impl Fn(&Event) -> Option<&str>) -> Vec<String> {
    record.events.iter().filter_map(|e| pick(e).map(str::to_owned)).collect()
}

fn compensated(record: &SagaRecord) -> Vec<String> {
    steps_of(record, |e| match e {
        Event::CompensationDone { step } => Some(step),
        _ => None,
    })
}

pub async fn transient_failure_saga_completes(r: &mut Report, _env: &Env) {
    r.scenario(
        "transient failure: retry recovers from two network errors, saga completes",
        "The customer checks out a mug for 35.00 USD: reserve stock, authorize, capture, ship, as a saga.\n\
         The authorization meets two network errors: the first connection is refused before the gateway\n\
         reads it; the second authorizes the card and then loses the answer (Unknown: it may have happened).\n\
         The saga retries the step with backoff, and every attempt sends the step's key (derived from the saga\n\
         id and the step name) as the gateway idempotency key, so the third attempt gets the authorization\n\
         the second one made instead of a second hold on the card. The saga log (in memory here) has each\n\
         attempt's start written before the call and its end after.",
    );
    let shop = Shop::default();
    shop.sim.script(Operation::Authorize, [Fault::FailBeforeCommit, Fault::FailAfterCommit]);
    let log = MemoryLog::new();
    let orchestrator = Orchestrator::builder(log.clone()).owner("checkout-example").build();
    let saga = orchestrator.register(checkout_saga(&shop));

    let order = "order-1010";
    let report = orchestrator.start(&saga, order, checkout(order, "35.00")).await;
    let record = orchestrator.get(order).await.ok().flatten();
    for e in record.iter().flat_map(|rec| &rec.events) {
        match e {
            Event::StepStarted { step, attempt } => r.step(format!("{step}: attempt {attempt} started (logged)")),
            Event::StepFailed { step, error, outcome, .. } => r.step(format!("{step}: failed ({outcome:?}): {error}")),
            Event::StepDone { step, output } => r.step(format!("{step}: done → {output}")),
            Event::Finished { state } => r.step(format!("saga finished: {state}")),
            _ => {}
        }
    }
    let state = report.as_ref().map(|rep| rep.state).ok();
    r.check("the saga completes", state == Some(SagaState::Completed));
    let failures = record.as_ref().map_or(0, |rec| {
        rec.events
            .iter()
            .filter(|e| matches!(e, Event::StepFailed { step, last: false, .. } if step == "authorize"))
            .count()
    });
    r.check("the log shows two failed attempts of the authorization, each retried", failures == 2);
    let keys = shop.authorize_keys.lock().map(|k| k.clone()).unwrap_or_default();
    let expected = step_key(order, "authorize").to_string();
    r.check(
        "all three attempts sent the same gateway key, the step key of (order-1010, authorize)",
        keys.len() == 3 && keys.iter().all(|k| *k == expected),
    );
    r.check(
        "the ledger shows exactly one authorization and one capture for order-1010, nothing undone",
        shop.ledger_ops(order) == [Operation::Authorize, Operation::Capture],
    );
    r.check("the stock is held once and the order shipped once", shop.held() == 1 && shop.shipped() == 1);
}

pub async fn compensation_in_reverse_order(r: &mut Report, _env: &Env) {
    r.scenario(
        "saga compensation: shipment fails after authorize + capture; the payment is refunded and the inventory released, in reverse order",
        "The customer checks out a mug for 42.00 USD. Stock is reserved, the card authorized and captured;\n\
         then the carrier refuses the address, a final error (not retried). The saga undoes what it did, last\n\
         step first: the capture is refunded (a captured payment is refunded, never voided: the seed's checkout\n\
         \"voided\" it), the authorization needs nothing more (its money came back with the refund), and the\n\
         stock is released. Each compensation sends its own key, so running it again cannot refund twice.\n\
         Then a second order whose capture fails for good: its authorization is voided, not refunded.",
    );
    let shop = Shop::default();
    shop.carrier_refuses.store(true, Ordering::SeqCst);
    let log = MemoryLog::new();
    let orchestrator = Orchestrator::builder(log.clone()).owner("checkout-example").build();
    let saga = orchestrator.register(checkout_saga(&shop));

    let order = "order-1011";
    let report = orchestrator.start(&saga, order, checkout(order, "42.00")).await;
    if let Ok(rep) = &report {
        r.step(format!("saga ended {} after: {}", rep.state, rep.error.as_ref().map_or("-".into(), |e| e.to_string())));
    }
    let record = orchestrator.get(order).await.ok().flatten();
    let undone = record.as_ref().map(compensated).unwrap_or_default();
    r.step(format!("compensated, in order: {}", undone.join(", ")));
    let entries = shop.sim.entries_for(order);
    for e in &entries {
        r.step(format!("ledger #{}: {:?} {} ({})", e.seq, e.operation, e.amount, e.payment_id));
    }
    r.step(format!("warehouse: {}", shop.warehouse().join(", ")));

    r.check(
        "the saga ends Compensated, with the carrier's refusal as its error",
        matches!(&report, Ok(rep) if rep.state == SagaState::Compensated
            && matches!(rep.error, Some(PaymentError::InvalidRequest { .. }))),
    );
    r.check(
        "the steps were undone in reverse order: capture, authorize, reserve",
        undone == ["capture", "authorize", "reserve"],
    );
    r.check(
        "the ledger shows authorize, capture, then one refund for order-1011, and no void",
        shop.ledger_ops(order) == [Operation::Authorize, Operation::Capture, Operation::Refund],
    );
    let captured = entries.iter().find(|e| e.operation == Operation::Capture).map(|e| e.amount);
    let refund = entries.iter().find(|e| e.operation == Operation::Refund);
    r.check(
        "the refund gives back the whole captured amount, sent with the capture's compensation key",
        refund.is_some_and(|e| {
            Some(e.amount) == captured && e.gateway_key.as_deref() == Some(compensation_key(order, "capture").as_str())
        }),
    );
    r.check(
        "the stock was reserved, then released: nothing held, nothing shipped",
        shop.warehouse() == ["reserve mug", "release mug"] && shop.held() == 0 && shop.shipped() == 0,
    );

    // An authorization that was not captured is voided.
    shop.carrier_refuses.store(false, Ordering::SeqCst);
    shop.sim.script(Operation::Capture, [Fault::FailBeforeCommit; 3]);
    let order = "order-1012";
    let report = orchestrator.start(&saga, order, checkout(order, "18.00")).await;
    let ops = shop.ledger_ops(order);
    r.step(format!(
        "order-1012: capture refused three times; saga ended {:?}; ledger {ops:?}",
        report.map(|rep| rep.state).ok()
    ));
    r.check(
        "when the capture fails for good, the authorization is voided (not refunded): authorize, then void",
        ops == [Operation::Authorize, Operation::Void],
    );
}
