//! The checkout saga the tests run (reserve stock → authorize → capture → ship, against the simulated gateway),
//! and scenarios every log must pass: run on the memory log (tests/memory.rs) and on Redis and PostgreSQL.

#![allow(dead_code)]

pub mod real;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{
    CaptureRequest, Currency, GatewayRequest, GatewayResponse, Money, Operation, PaymentError, RefundRequest,
    VoidRequest,
};
use palisade_saga::{Event, Orchestrator, Saga, SagaLog, SagaState, Step};
use palisade_sim::GatewaySim;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    pub order: String,
    pub sku: String,
    pub amount: String,
    pub token: String,
}

pub fn checkout(order: &str) -> Checkout {
    Checkout { order: order.into(), sku: "mug".into(), amount: "25.00".into(), token: "tok_visa".into() }
}

/// Where a step stops to "die": before its effect (the log says started, nothing happened) or after it (the
/// effect happened, the log does not say so). The step then never returns; the test aborts its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    BeforeEffect,
    AfterEffect,
}

/// Everything outside the saga: the gateway, the warehouse, what failed on purpose, and the crash plan.
#[derive(Clone, Default)]
pub struct World {
    pub sim: GatewaySim,
    /// Stock holds by the reserve step's key (the warehouse deduplicates by it, as a gateway does), with the sku.
    pub holds: Arc<Mutex<HashMap<String, String>>>,
    /// Shipments by the ship step's key.
    pub shipments: Arc<Mutex<HashMap<String, String>>>,
    /// Voids sent to the gateway.
    pub voids: Arc<AtomicUsize>,
    /// Shipping fails for good (a terminal error) while this is set.
    pub ship_fails: Arc<std::sync::atomic::AtomicBool>,
    /// Refunds fail while this is above zero (counting down).
    pub refunds_fail: Arc<AtomicUsize>,
    /// Step name and where it dies (once).
    pub crash: Arc<Mutex<Option<(String, Crash)>>>,
    /// Signalled when a step has reached its crash point.
    pub crashed: Arc<Notify>,
    /// Calls of each step's action, by name.
    pub calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl World {
    pub fn new() -> Self {
        World::default()
    }

    async fn checkpoint(&self, step: &str, at: Crash) {
        let hit = {
            let mut c = self.crash.lock();
            match &*c {
                Some((s, a)) if s == step && *a == at => c.take().is_some(),
                _ => false,
            }
        };
        if hit {
            self.crashed.notify_one();
            std::future::pending::<()>().await;
        }
    }

    fn called(&self, step: &str) {
        *self.calls.lock().entry(step.to_owned()).or_default() += 1;
    }

    pub fn calls_of(&self, step: &str) -> usize {
        self.calls.lock().get(step).copied().unwrap_or(0)
    }

    pub fn held(&self, sku: &str) -> usize {
        self.holds.lock().values().filter(|s| *s == sku).count()
    }

    pub fn shipped(&self) -> usize {
        self.shipments.lock().len()
    }

    /// Gateway operations of `op` recorded for `order`.
    pub fn ledger(&self, order: &str, op: Operation) -> usize {
        self.sim.entries_for(order).iter().filter(|e| e.operation == op).count()
    }
}

fn money(amount: &str) -> Result<Money, PaymentError> {
    Money::parse(amount, Currency::USD).map_err(|e| PaymentError::invalid_request(e.to_string()))
}

/// reserve → authorize → capture → ship. Authorize is compensated by a void, capture by a refund (never a void
/// of a captured payment), reserve by releasing the stock; ship has no compensation (it is last).
pub fn checkout_saga(world: &World) -> Saga<Checkout> {
    let w = world.clone();
    let reserve = Step::<Checkout>::new("reserve", move |cx| {
        let w = w.clone();
        async move {
            w.called("reserve");
            w.checkpoint("reserve", Crash::BeforeEffect).await;
            w.holds.lock().insert(cx.key().to_string(), cx.context().sku.clone());
            w.checkpoint("reserve", Crash::AfterEffect).await;
            Ok(format!("hold-{}", cx.saga_id()))
        }
    });
    let w = world.clone();
    let reserve = reserve.compensate(move |cx, _hold| {
        let w = w.clone();
        async move {
            w.holds.lock().remove(cx.key().as_str());
            Ok(())
        }
    });

    let w = world.clone();
    let authorize = Step::<Checkout>::new("authorize", move |cx| {
        let w = w.clone();
        async move {
            w.called("authorize");
            w.checkpoint("authorize", Crash::BeforeEffect).await;
            let c = cx.context();
            let req = palisade_testkit::charge(&c.order).amount(&c.amount).token(&c.token).key(cx.key().as_str());
            let res: GatewayResponse = w.sim.handle(req.authorize()).await?;
            w.checkpoint("authorize", Crash::AfterEffect).await;
            Ok(res.id.to_string())
        }
    });
    let w = world.clone();
    let authorize = authorize.compensate(move |cx, auth| {
        let w = w.clone();
        async move {
            if cx.output::<String>("capture").is_some() {
                // Captured: the capture's refund undoes the payment; a captured authorization cannot be voided.
                return Ok(());
            }
            let Some(auth) = auth.as_str().map(str::to_owned) else {
                // The authorization's answer was lost: nothing to void by id; it lapses on its own.
                return Ok(());
            };
            w.voids.fetch_add(1, Ordering::SeqCst);
            let req = VoidRequest { authorization_id: auth.into(), idempotency_key: Some(cx.compensation_key()) };
            w.sim.handle(GatewayRequest::Void(req)).await.map(|_| ())
        }
    });

    let w = world.clone();
    let capture = Step::<Checkout>::new("capture", move |cx| {
        let w = w.clone();
        async move {
            w.called("capture");
            w.checkpoint("capture", Crash::BeforeEffect).await;
            let auth: String =
                cx.output("authorize").ok_or_else(|| PaymentError::invalid_request("no authorization"))?;
            let req = CaptureRequest {
                authorization_id: auth.into(),
                amount: Some(money(&cx.context().amount)?),
                idempotency_key: Some(cx.key()),
            };
            let res = w.sim.handle(GatewayRequest::Capture(req)).await?;
            w.checkpoint("capture", Crash::AfterEffect).await;
            Ok(res.id.to_string())
        }
    });
    let w = world.clone();
    let capture = capture.compensate(move |cx, payment| {
        let w = w.clone();
        async move {
            if w.refunds_fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(PaymentError::GatewayUnavailable { retry_after: None });
            }
            let Some(payment) = payment.as_str().map(str::to_owned) else { return Ok(()) };
            let req = RefundRequest {
                payment_id: payment.into(),
                amount: Some(money(&cx.context().amount)?),
                idempotency_key: Some(cx.compensation_key()),
            };
            w.sim.handle(GatewayRequest::Refund(req)).await.map(|_| ())
        }
    });

    let w = world.clone();
    let ship = Step::<Checkout>::new("ship", move |cx| {
        let w = w.clone();
        async move {
            w.called("ship");
            w.checkpoint("ship", Crash::BeforeEffect).await;
            if w.ship_fails.load(Ordering::SeqCst) {
                return Err(PaymentError::invalid_request("the carrier refused the address"));
            }
            w.shipments.lock().insert(cx.key().to_string(), cx.context().order.clone());
            w.checkpoint("ship", Crash::AfterEffect).await;
            Ok(format!("ship-{}", cx.context().order))
        }
    });

    Saga::builder("checkout")
        .step(reserve.attempts(3))
        .step(authorize.attempts(3))
        .step(capture.attempts(3))
        .step(ship.attempts(2))
        .build()
        .unwrap()
}

/// The step names of a history, in order, for events of one kind.
pub fn steps_of(events: &[Event], pick: impl Fn(&Event) -> Option<&str>) -> Vec<String> {
    events.iter().filter_map(|e| pick(e).map(str::to_owned)).collect()
}

pub fn compensated(events: &[Event]) -> Vec<String> {
    steps_of(events, |e| match e {
        Event::CompensationDone { step } => Some(step),
        _ => None,
    })
}

/// For every step and both crash points: the saga dies there (its task is aborted, as a killed process stops),
/// a second orchestrator on the same log takes it over once the lease ends, and it completes; the gateway shows
/// each payment effect exactly once and the stock is held once. `lease` must be what `make` gives the
/// orchestrators; `wait_out` lets the lease end (advancing paused time, or sleeping on a real server).
pub async fn crash_at_every_boundary<L: SagaLog + Clone>(
    log: L,
    lease: Duration,
    wait_out: impl Fn(Duration) -> futures_util::future::BoxFuture<'static, ()>,
) {
    for step in ["reserve", "authorize", "capture", "ship"] {
        for at in [Crash::BeforeEffect, Crash::AfterEffect] {
            let world = World::new();
            let order = format!("order-{step}-{at:?}").to_lowercase();
            *world.crash.lock() = Some((step.to_owned(), at));
            let first = Orchestrator::builder(log.clone()).owner("first").lease(lease).build();
            let saga = first.register(checkout_saga(&world));
            let mut running = tokio::spawn({
                let (first, saga, order) = (first.clone(), saga.clone(), order.clone());
                async move { first.start(&saga, &order, checkout(&order)).await }
            });
            // A run that ends before its crash point (a store error) fails the test instead of hanging it.
            tokio::select! {
                () = world.crashed.notified() => {}
                ended = &mut running => panic!("{step} {at:?}: the run ended before its crash point: {ended:?}"),
            }
            running.abort();
            let _ = running.await;
            let record = log.get(&order).await.unwrap().unwrap();
            assert_eq!(record.state, SagaState::Running, "{step} {at:?}: the dead owner left it running");

            wait_out(lease).await;
            let second = Orchestrator::builder(log.clone()).owner("second").lease(lease).build();
            second.register(checkout_saga(&world));
            let reports = second.recover().await.unwrap();
            let report = reports.into_iter().map(Result::unwrap).find(|r| r.id == order).expect("recovered");
            assert_eq!(report.state, SagaState::Completed, "{step} {at:?}");
            assert_eq!(world.ledger(&order, Operation::Authorize), 1, "{step} {at:?}: one authorization");
            assert_eq!(world.ledger(&order, Operation::Capture), 1, "{step} {at:?}: one capture");
            assert_eq!(world.held("mug"), 1, "{step} {at:?}: one stock hold (deduplicated by the step key)");
            assert_eq!(world.shipped(), 1, "{step} {at:?}: one shipment");
            let record = log.get(&order).await.unwrap().unwrap();
            assert_eq!(record.owner, None, "finished: nobody owns it");
            assert_eq!(record.state, SagaState::Completed);
        }
    }
}

/// Shipping fails for good after authorize and capture: the payment is refunded (not voided: it was captured),
/// the authorization's void is skipped by the gateway (nothing left to void is fine), the stock released, in
/// reverse order.
pub async fn compensates_in_reverse_order<L: SagaLog + Clone>(log: L) {
    let world = World::new();
    world.ship_fails.store(true, Ordering::SeqCst);
    let o = Orchestrator::builder(log.clone()).build();
    let saga = o.register(checkout_saga(&world));
    let report = o.start(&saga, "order-comp", checkout("order-comp")).await.unwrap();
    assert_eq!(report.state, SagaState::Compensated);
    assert!(matches!(report.error, Some(PaymentError::InvalidRequest { .. })), "{:?}", report.error);
    let record = log.get("order-comp").await.unwrap().unwrap();
    assert_eq!(compensated(&record.events), ["capture", "authorize", "reserve"], "reverse order");
    assert_eq!(world.ledger("order-comp", Operation::Refund), 1, "a captured payment is refunded");
    assert_eq!(world.voids.load(Ordering::SeqCst), 0, "and not voided");
    assert_eq!(world.held("mug"), 0, "stock released");
    assert_eq!(world.calls_of("ship"), 1, "a terminal failure is not retried");
}

/// A memory log with hooks for crash and race tests: `dies_at` (the first write of a matching event fails, as if
/// the process died there), `gate_take_over` (the next take-over says it was reached, then waits for the gate to
/// open) and `late_last_answer` (the write that ends a saga takes effect at once, its answer comes later). The
/// memory log's writes go through `append_owned` (`append_at`'s default), so the hooks see every event.
#[derive(Clone)]
pub struct Hooked {
    pub log: palisade_saga::MemoryLog,
    dies_at: Option<fn(&Event) -> bool>,
    late_last_answer: Option<Duration>,
    dying: Arc<std::sync::atomic::AtomicBool>,
    gated: Arc<std::sync::atomic::AtomicBool>,
    pub reached: Arc<tokio::sync::Notify>,
    pub gate: Arc<tokio::sync::Notify>,
}

impl Hooked {
    /// `log`, with no hook armed.
    pub fn new(log: palisade_saga::MemoryLog) -> Self {
        Hooked {
            log,
            dies_at: None,
            late_last_answer: None,
            dying: Arc::default(),
            gated: Arc::default(),
            reached: Arc::default(),
            gate: Arc::default(),
        }
    }

    /// The first write of an event `dies` matches fails.
    pub fn dies_at(mut self, dies: fn(&Event) -> bool) -> Self {
        self.dies_at = Some(dies);
        self.dying.store(true, Ordering::SeqCst);
        self
    }

    /// The answer to the write that ends a saga comes `late` after the write took effect.
    pub fn late_last_answer(mut self, late: Duration) -> Self {
        self.late_last_answer = Some(late);
        self
    }

    /// The next take-over notifies `reached`, then waits for `gate`.
    pub fn gate_take_over(self) -> Self {
        self.gated.store(true, Ordering::SeqCst);
        self
    }
}

impl SagaLog for Hooked {
    fn create_shared<'a>(
        &'a self,
        id: &'a palisade_saga::Name,
        name: &'a str,
        context: Arc<dyn palisade_saga::log::ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> palisade_saga::log::StoreFuture<'a, Option<u64>> {
        self.log.create_shared(id, name, context, owner, lease)
    }
    fn append_owned<'a>(
        &'a self,
        id: &'a str,
        token: u64,
        event: Event,
        state: SagaState,
    ) -> palisade_saga::log::StoreFuture<'a, bool> {
        if self.dies_at.is_some_and(|dies| dies(&event)) && self.dying.swap(false, Ordering::SeqCst) {
            let died = palisade_saga::log::StoreError::new("process died");
            return palisade_saga::log::StoreFuture::ready(Err(died));
        }
        let written = self.log.append_owned(id, token, event, state);
        match self.late_last_answer {
            Some(late) if state.is_terminal() => palisade_saga::log::StoreFuture::new(async move {
                let answer = written.await;
                tokio::time::sleep(late).await;
                answer
            }),
            _ => written,
        }
    }
    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> palisade_saga::log::StoreFuture<'a, bool> {
        self.log.renew(id, token, lease)
    }
    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> palisade_saga::log::StoreFuture<'a, Option<u64>> {
        palisade_saga::log::StoreFuture::new(async move {
            if self.gated.swap(false, Ordering::SeqCst) {
                self.reached.notify_one();
                self.gate.notified().await;
            }
            self.log.take_over(id, owner, lease, state).await
        })
    }
    fn orphans<'a>(&'a self, limit: usize) -> palisade_saga::log::StoreFuture<'a, Vec<String>> {
        self.log.orphans(limit)
    }
    fn get<'a>(&'a self, id: &'a str) -> palisade_saga::log::StoreFuture<'a, Option<palisade_saga::SagaRecord>> {
        self.log.get(id)
    }
    fn list<'a>(
        &'a self,
        state: Option<SagaState>,
        limit: usize,
    ) -> palisade_saga::log::StoreFuture<'a, Vec<palisade_saga::SagaSummary>> {
        self.log.list(state, limit)
    }
}
