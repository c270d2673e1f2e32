//! [`GatewaySim`]: the state of the simulated gateway and its `tower::Service`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::StdRng;

use palisade_core::{
    GatewayCode, GatewayId, GatewayKeyed, GatewayRequest, GatewayResponse, IdempotencyKey, Money, Operation,
    PaymentError, PaymentStatus, Reference,
};

use crate::faults::{Fault, FaultPlan, Latency, fault_error};
use crate::ledger::LedgerEntry;

/// Builder for [`GatewaySim`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SimBuilder {
    seed: u64,
    latency: Latency,
    plan: FaultPlan,
}

impl SimBuilder {
    /// Seed for latency and fault draws (default 0). The same seed and the same call sequence give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Latency per call (default none).
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }
    /// Random faults (default none).
    pub fn faults(mut self, plan: FaultPlan) -> Self {
        self.plan = plan;
        self
    }
    /// Builds the simulator.
    pub fn build(self) -> GatewaySim {
        GatewaySim {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    rng: StdRng::seed_from_u64(self.seed),
                    latency: self.latency,
                    plan: self.plan,
                    ..State::default()
                }),
                calls: AtomicU64::new(0),
                seed: self.seed,
            }),
        }
    }
}

#[derive(Debug)]
enum KeyEntry {
    InProgress { params: GatewayRequest },
    Done { params: GatewayRequest, result: Result<GatewayResponse, PaymentError> },
}

#[derive(Debug, Clone)]
struct Payment {
    status: PaymentStatus,
    amount: Money,
    captured: Option<Money>,
    refunded: Option<Money>,
    order_reference: Reference,
}

#[derive(Debug)]
struct State {
    keys: HashMap<IdempotencyKey, KeyEntry>,
    payments: HashMap<GatewayId, Payment>,
    ledger: Vec<LedgerEntry>,
    scripted: HashMap<Operation, VecDeque<Fault>>,
    outage: Option<Fault>,
    rng: StdRng,
    latency: Latency,
    plan: FaultPlan,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            keys: HashMap::new(),
            payments: HashMap::new(),
            ledger: Vec::new(),
            scripted: HashMap::new(),
            outage: None,
            rng: StdRng::seed_from_u64(0),
            latency: Latency::default(),
            plan: FaultPlan::default(),
            next_id: 0,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    calls: AtomicU64,
    seed: u64,
}

/// The simulated gateway. Clones share one gateway (one ledger, one key store).
#[derive(Debug, Clone)]
pub struct GatewaySim {
    inner: Arc<Inner>,
}

impl Default for GatewaySim {
    fn default() -> Self {
        GatewaySim::new()
    }
}

impl GatewaySim {
    /// A gateway with no faults and no latency.
    #[must_use]
    pub fn new() -> Self {
        GatewaySim::builder().build()
    }
    /// A builder.
    pub fn builder() -> SimBuilder {
        SimBuilder { seed: 0, latency: Latency::default(), plan: FaultPlan::none() }
    }
    /// The seed this simulator was built with (print it when a test fails).
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }
    /// The next calls of `op` get these faults, in order, before any random fault plan applies.
    pub fn script(&self, op: Operation, faults: impl IntoIterator<Item = Fault>) {
        self.inner.state.lock().scripted.entry(op).or_default().extend(faults);
    }
    /// While set, every call fails with `fault` (an outage); `None` ends it. Scripted faults still come first.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.inner.state.lock().outage = fault;
    }
    /// Changes the latency of later calls.
    pub fn set_latency(&self, latency: Latency) {
        self.inner.state.lock().latency = latency;
    }
    /// How many calls reached the gateway (including failed and deduplicated ones).
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }
    /// Everything the gateway really did, in order.
    #[must_use]
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.inner.state.lock().ledger.clone()
    }
    /// Ledger entries for one order.
    #[must_use]
    pub fn entries_for(&self, order_id: &str) -> Vec<LedgerEntry> {
        self.inner.state.lock().ledger.iter().filter(|e| e.order_id == order_id).cloned().collect()
    }
    /// The charges against the card for one order: `charge` and `authorize` entries (each is one hold or charge
    /// the customer sees).
    #[must_use]
    pub fn charges_for(&self, order_id: &str) -> Vec<LedgerEntry> {
        self.inner
            .state
            .lock()
            .ledger
            .iter()
            .filter(|e| e.order_id == order_id && matches!(e.operation, Operation::Charge | Operation::Authorize))
            .cloned()
            .collect()
    }

    /// Handles one request (what `Service::call` runs).
    pub async fn handle(&self, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        let op = req.operation();
        let key = req.gateway_key().cloned();
        // Arrival: draw latency and fault, then claim the key (like Stripe, a concurrent duplicate is refused).
        let (delay, fault, replay) = {
            let mut st = self.inner.state.lock();
            let fault = st.next_fault(op);
            let delay = st.draw_latency();
            let mut replay = None;
            if let Some(k) = &key {
                match st.keys.get(k) {
                    Some(KeyEntry::Done { params, result }) => {
                        if *params != req.without_key() {
                            return Err(PaymentError::IdempotencyConflict);
                        }
                        replay = Some(result.clone());
                    }
                    Some(KeyEntry::InProgress { params }) => {
                        if *params != req.without_key() {
                            return Err(PaymentError::IdempotencyConflict);
                        }
                        return Err(PaymentError::IdempotencyInFlight { retry_after: Some(Duration::from_secs(1)) });
                    }
                    None => {
                        if !matches!(fault, Some(Fault::FailBeforeCommit)) {
                            st.keys.insert(k.clone(), KeyEntry::InProgress { params: req.without_key() });
                        }
                    }
                }
            }
            (delay, fault, replay)
        };
        if matches!(fault, Some(Fault::FailBeforeCommit)) {
            // Refused before anything was read: fast, no latency.
            return Err(PaymentError::network("connection refused by simulated gateway"));
        }
        if delay.is_zero() {
            return self.finish(req, key, fault, replay);
        }
        // The gateway has the request now. Like a real gateway it finishes the call even when the caller goes
        // away (a client timeout, a dropped future): otherwise the key would stay in progress forever.
        let this = self.clone();
        let work = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.finish(req, key, fault, replay)
        });
        match work.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(PaymentError::timeout(format!("simulated gateway stopped mid-call: {e}"))),
        }
    }

    /// The part of a call after the latency: replay, fault or execution, and the key's final state.
    fn finish(
        &self,
        req: GatewayRequest,
        key: Option<IdempotencyKey>,
        fault: Option<Fault>,
        replay: Option<Result<GatewayResponse, PaymentError>>,
    ) -> Result<GatewayResponse, PaymentError> {
        if let Some(result) = replay {
            // A replay of a stored result has no effect; its response can still be lost like any other.
            return match fault.and_then(fault_error) {
                Some(err) => Err(err),
                None if matches!(fault, Some(Fault::FailAfterCommit)) => {
                    Err(PaymentError::timeout("simulated gateway: response lost"))
                }
                None => result,
            };
        }
        let mut st = self.inner.state.lock();
        let early = fault.and_then(fault_error);
        if let Some(err) = early {
            if let Some(k) = &key {
                st.keys.remove(k);
            }
            return Err(err);
        }
        let result = st.execute(&req, key.as_ref());
        if let Some(k) = key {
            st.keys.insert(k, KeyEntry::Done { params: req.without_key(), result: result.clone() });
        }
        drop(st);
        if matches!(fault, Some(Fault::FailAfterCommit)) {
            return Err(PaymentError::timeout("simulated gateway: response lost after commit"));
        }
        result
    }
}

impl State {
    fn next_fault(&mut self, op: Operation) -> Option<Fault> {
        if let Some(f) = self.scripted.get_mut(&op).and_then(VecDeque::pop_front) {
            return Some(f);
        }
        if let Some(f) = self.outage {
            return Some(f);
        }
        self.plan.draw(op, &mut self.rng)
    }

    fn draw_latency(&mut self) -> Duration {
        self.latency.draw(&mut self.rng)
    }

    fn new_id(&mut self, prefix: &str) -> GatewayId {
        self.next_id += 1;
        GatewayId::from(format!("{prefix}_{:06}", self.next_id))
    }

    fn record(
        &mut self,
        op: Operation,
        order: &Reference,
        amount: Money,
        payment_id: &str,
        key: Option<&IdempotencyKey>,
    ) {
        let seq = self.ledger.len() as u64 + 1;
        self.ledger.push(LedgerEntry {
            seq,
            operation: op,
            order_id: order.as_str().to_owned(),
            amount,
            payment_id: payment_id.to_owned(),
            gateway_key: key.map(|k| k.as_str().to_owned()),
        });
    }

    fn execute(&mut self, req: &GatewayRequest, key: Option<&IdempotencyKey>) -> Result<GatewayResponse, PaymentError> {
        match req {
            GatewayRequest::Charge(c) | GatewayRequest::Authorize(c) => {
                match c.source.as_str() {
                    "tok_chargeDeclined" => return Err(PaymentError::declined("card_declined")),
                    "tok_insufficientFunds" => return Err(PaymentError::InsufficientFunds),
                    "tok_fraudulent" => {
                        return Err(PaymentError::FraudBlocked { rule: Some(GatewayCode::new("fraudulent")) });
                    }
                    "tok_authenticationRequired" => {
                        return Err(PaymentError::AuthenticationRequired {
                            challenge_url: Some("https://sim.invalid/3ds/challenge".to_owned()),
                        });
                    }
                    _ => {}
                }
                c.amount.require_positive()?;
                let charge = matches!(req, GatewayRequest::Charge(_));
                let (prefix, status) =
                    if charge { ("ch", PaymentStatus::Captured) } else { ("auth", PaymentStatus::Authorized) };
                let id = self.new_id(prefix);
                self.payments.insert(
                    id.clone(),
                    Payment {
                        status,
                        amount: c.amount,
                        captured: charge.then_some(c.amount),
                        refunded: None,
                        order_reference: c.order_reference.clone(),
                    },
                );
                self.record(req.operation(), &c.order_reference, c.amount, &id, key);
                Ok(GatewayResponse {
                    id,
                    operation: req.operation(),
                    status,
                    amount: c.amount,
                    order_reference: c.order_reference.clone(),
                })
            }
            GatewayRequest::Capture(c) => {
                let p = self.payment(&c.authorization_id)?;
                if p.status != PaymentStatus::Authorized {
                    return Err(PaymentError::invalid_request("authorization is not capturable"));
                }
                let amount = c.amount.unwrap_or(p.amount);
                amount.require_positive()?;
                if amount.checked_cmp(&p.amount).map_err(|e| PaymentError::invalid_request(e.to_string()))?
                    == std::cmp::Ordering::Greater
                {
                    return Err(PaymentError::invalid_request("capture amount exceeds the authorization"));
                }
                let order = p.order_reference.clone();
                if let Some(p) = self.payments.get_mut(&c.authorization_id) {
                    p.status = PaymentStatus::Captured;
                    p.captured = Some(amount);
                }
                self.record(Operation::Capture, &order, amount, &c.authorization_id, key);
                Ok(GatewayResponse {
                    id: c.authorization_id.clone(),
                    operation: Operation::Capture,
                    status: PaymentStatus::Captured,
                    amount,
                    order_reference: order,
                })
            }
            GatewayRequest::Void(v) => {
                let p = self.payment(&v.authorization_id)?;
                if p.status != PaymentStatus::Authorized {
                    return Err(PaymentError::invalid_request("only an uncaptured authorization can be voided"));
                }
                let (order, amount) = (p.order_reference.clone(), p.amount);
                if let Some(p) = self.payments.get_mut(&v.authorization_id) {
                    p.status = PaymentStatus::Voided;
                }
                self.record(Operation::Void, &order, amount, &v.authorization_id, key);
                Ok(GatewayResponse {
                    id: v.authorization_id.clone(),
                    operation: Operation::Void,
                    status: PaymentStatus::Voided,
                    amount,
                    order_reference: order,
                })
            }
            GatewayRequest::Refund(r) => {
                let p = self.payment(&r.payment_id)?;
                let Some(captured) = p.captured else {
                    return Err(PaymentError::invalid_request("payment was not captured"));
                };
                let already = p.refunded.unwrap_or(Money::from_minor(0, captured.currency()));
                let left = captured.checked_sub(&already).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
                let amount = r.amount.unwrap_or(left);
                amount.require_positive()?;
                if amount.checked_cmp(&left).map_err(|e| PaymentError::invalid_request(e.to_string()))?
                    == std::cmp::Ordering::Greater
                {
                    return Err(PaymentError::invalid_request("refund exceeds the captured amount"));
                }
                let order = p.order_reference.clone();
                let total = already.checked_add(&amount).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
                let id = self.new_id("re");
                if let Some(p) = self.payments.get_mut(&r.payment_id) {
                    p.refunded = Some(total);
                    if total == captured {
                        p.status = PaymentStatus::Refunded;
                    }
                }
                self.record(Operation::Refund, &order, amount, &r.payment_id, key);
                Ok(GatewayResponse {
                    id,
                    operation: Operation::Refund,
                    status: PaymentStatus::Refunded,
                    amount,
                    order_reference: order,
                })
            }
            _ => Err(PaymentError::invalid_request("operation not supported by the simulator")),
        }
    }

    fn payment(&self, id: &str) -> Result<&Payment, PaymentError> {
        self.payments.get(id).ok_or_else(|| PaymentError::invalid_request(format!("no such payment: {id}")))
    }
}

impl tower_service::Service<GatewayRequest> for GatewaySim {
    type Response = GatewayResponse;
    type Error = PaymentError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, PaymentError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.handle(req).await })
    }
}
