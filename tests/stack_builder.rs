//! `palisade::Stack`'s own behaviour: the order is the stack's whatever order the setters are called in, every
//! position is optional, one `StackStores` feeds the layers given as builders, a built layer keeps its own store,
//! builders' refusals surface as `StackError`, and the HTTP variant runs the same order over `http::Request`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::core::*;
use palisade::fraud::{Attributes, FraudEngine, FraudLayer};
use palisade::idempotency::{IdempotencyLayer, MemoryStore};
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade::sim::{Fault, GatewaySim};
use palisade::{Backend, Stack, StackError, StackStores};
use tower::{Service, ServiceExt};

fn charge(order: &str, key: &str) -> GatewayRequest {
    palisade_testkit::charge(order).amount("42.00").key(key).build()
}

async fn call<S>(svc: &mut S, req: GatewayRequest) -> Result<GatewayResponse, PaymentError>
where
    S: Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn the_order_is_the_stacks_whatever_order_the_setters_are_called_in() {
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailAfterCommit]);
    let breaker = CircuitBreakerLayer::builder().window_calls(10).minimum_calls(2).failure_rate(0.5).build().unwrap();
    let handle = breaker.handle();
    // Innermost first, outermost last: the reverse of the stack's order.
    let mut svc = Stack::new()
        .audit(AuditLayer::builder())
        .rate_limit(RateLimitLayer::builder().rate(1000, Duration::from_secs(1)))
        .retry(RetryLayer::builder().max_attempts(3))
        .circuit_breaker(breaker)
        .fraud(FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap())
        .idempotency(IdempotencyLayer::builder())
        .stores(StackStores::memory())
        .service(sim.clone())
        .unwrap();

    // Retry is inside idempotency and keeps the gateway key: a lost response is retried, the card charged once.
    let first = call(&mut svc, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim.calls(), 2);
    assert_eq!(sim.charges_for("o1").len(), 1);
    assert!(sim.ledger()[0].gateway_key.is_some());
    // Breaker outside retry: the call retry fixed is one successful call to the breaker.
    assert_eq!(handle.window().calls, 1);
    assert_eq!(handle.window().failures, 0);

    // Idempotency outermost: a duplicate is answered before breaker, retry or gateway see anything.
    let again = call(&mut svc, charge("o1", "k1")).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(sim.calls(), 2);
    assert_eq!(handle.window().calls, 1, "the breaker never saw the duplicate");

    // Fraud before the breaker: a block reaches neither the breaker nor the gateway.
    let mut c = palisade_testkit::charge("o2").key("k2").request();
    c.metadata.insert("email".into(), Reference::new("m@fraud.test").unwrap());
    let e = call(&mut svc, GatewayRequest::Charge(c)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FraudBlocked);
    assert_eq!(sim.calls(), 2);
    assert_eq!(handle.window().calls, 1);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn every_position_is_optional() {
    // Nothing: the gateway itself.
    let sim = GatewaySim::new();
    let mut bare = Stack::new().service(sim.clone()).unwrap();
    call(&mut bare, charge("o1", "k1")).await.unwrap();
    call(&mut bare, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim.calls(), 2, "no idempotency layer: both calls reach the gateway (which deduplicates)");

    // Retry alone recovers from a refused connection.
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailBeforeCommit]);
    let mut retry_only = Stack::new().retry(RetryLayer::builder().max_attempts(2)).service(sim.clone()).unwrap();
    call(&mut retry_only, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim.calls(), 2);

    // Idempotency alone answers a duplicate.
    let sim = GatewaySim::new();
    let mut idem_only = Stack::new().idempotency(IdempotencyLayer::builder()).service(sim.clone()).unwrap();
    call(&mut idem_only, charge("o1", "k1")).await.unwrap();
    call(&mut idem_only, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim.calls(), 1);

    // A setter called twice replaces its position.
    let sim = GatewaySim::new();
    sim.script(Operation::Charge, [Fault::FailBeforeCommit, Fault::FailBeforeCommit]);
    let mut svc = Stack::new()
        .retry(RetryLayer::builder().max_attempts(2))
        .retry(RetryLayer::builder().max_attempts(3))
        .service(sim.clone())
        .unwrap();
    call(&mut svc, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim.calls(), 3, "the second retry setting won");
}

#[tokio::test(start_paused = true)]
async fn one_store_choice_feeds_every_builder() {
    let stores = StackStores::memory();
    assert_eq!(stores.backend(), Backend::Memory);
    let sim = GatewaySim::new();
    let rules = "block if attempts_per_card_1h > 2";
    let build = |stores: &StackStores| {
        Stack::new()
            .stores(stores.clone())
            .idempotency(IdempotencyLayer::builder())
            .fraud(FraudEngine::builder().rule_file(rules).unwrap())
            .service(sim.clone())
            .unwrap()
    };
    // Two instances on the same stores: one idempotency record store, one set of velocity counters.
    let (mut a, mut b) = (build(&stores), build(&stores));
    let first = call(&mut a, charge("o1", "k1")).await.unwrap();
    assert_eq!(call(&mut b, charge("o1", "k1")).await.unwrap(), first, "b replays a's record");
    assert_eq!(sim.calls(), 1);
    let with_card = |order: &str, key: &str| {
        let mut c = palisade_testkit::charge(order).key(key).request();
        c.metadata.insert("card_fingerprint".into(), Reference::new("fp_1").unwrap());
        GatewayRequest::Charge(c)
    };
    call(&mut a, with_card("o2", "k2")).await.unwrap();
    call(&mut b, with_card("o3", "k3")).await.unwrap();
    let e = call(&mut a, with_card("o4", "k4")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FraudBlocked, "a counted b's attempt with the same card");

    // Without `.stores`, each builder keeps its own (default) store: no shared records.
    let sim2 = GatewaySim::new();
    let mut c = Stack::new().idempotency(IdempotencyLayer::builder()).service(sim2.clone()).unwrap();
    let mut d = Stack::new().idempotency(IdempotencyLayer::builder()).service(sim2.clone()).unwrap();
    call(&mut c, charge("o1", "k1")).await.unwrap();
    call(&mut d, charge("o1", "k1")).await.unwrap();
    assert_eq!(sim2.calls(), 2);

    // A layer given built keeps the store it was built with, even when the stack has stores.
    let own = MemoryStore::new();
    let sim3 = GatewaySim::new();
    let mut e = Stack::new()
        .stores(stores.clone())
        .idempotency(IdempotencyLayer::builder().store(own.clone()).build())
        .service(sim3.clone())
        .unwrap();
    call(&mut e, charge("o9", "k9")).await.unwrap();
    assert_eq!(own.len(), 1, "the record went to the layer's own store");
    let before = sim.calls();
    call(&mut a, charge("o9", "k9")).await.unwrap();
    assert_eq!(sim.calls(), before + 1, "not to the stack's: a executed it, nothing to replay");
}

#[test]
fn a_builders_refusal_is_a_stack_error() {
    let err = Stack::new().rate_limit(RateLimitLayer::builder()).service(GatewaySim::new()).unwrap_err();
    assert!(matches!(err, StackError::RateLimit(_)), "{err}");
    let err = Stack::new()
        .circuit_breaker(CircuitBreakerLayer::builder().failure_rate(2.0))
        .service(GatewaySim::new())
        .unwrap_err();
    assert!(matches!(err, StackError::CircuitBreaker(_)), "{err}");
}

type Req = http::Request<Full<Bytes>>;
type Res = http::Response<Full<Bytes>>;

fn post(key: &str, email: &str) -> Req {
    let mut r = http::Request::post("/v1/charges")
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"amount":"12.34"}"#)))
        .unwrap();
    r.extensions_mut()
        .insert(Attributes::new(Money::parse("12.34", Currency::USD).unwrap()).email(email).card_fingerprint("fp_1"));
    r
}

async fn send<S>(svc: &mut S, req: Req) -> Result<Res, S::Error>
where
    S: Service<Req, Response = Res>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn the_http_variant_runs_the_same_order() {
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let handler = tower::service_fn(move |_req: Req| {
        let n = h.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let body = format!(r#"{{"id":"ch_{n}"}}"#);
            Ok::<Res, Infallible>(http::Response::builder().status(201).body(Full::new(Bytes::from(body))).unwrap())
        }
    });
    let engine = FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap().build();
    // Typed builders, switched by the stack to their HTTP modes; setters in any order.
    let mut svc = Stack::http()
        .audit(AuditLayer::builder())
        .retry(RetryLayer::builder().max_attempts(2))
        .rate_limit(RateLimitLayer::builder().rate(1000, Duration::from_secs(1)))
        .circuit_breaker(CircuitBreakerLayer::builder())
        .fraud(FraudLayer::builder(engine))
        .idempotency(IdempotencyLayer::builder())
        .stores(StackStores::memory())
        .service(handler)
        .unwrap();

    let res = send(&mut svc, post("k1", "a@example.com")).await.unwrap();
    assert_eq!(res.status(), 201);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let replay = send(&mut svc, post("k1", "a@example.com")).await.unwrap();
    assert_eq!(replay.status(), 201);
    assert!(replay.headers().contains_key("idempotent-replayed"), "{:?}", replay.headers());
    assert_eq!(replay.into_body().collect().await.unwrap().to_bytes(), body);
    assert_eq!(handled.load(Ordering::SeqCst), 1, "the duplicate never reached the handler");

    let blocked = send(&mut svc, post("k2", "m@fraud.test")).await.unwrap();
    assert_eq!(blocked.status(), 402);
    assert_eq!(blocked.headers()["content-type"], "application/problem+json");
    let problem = blocked.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&problem).contains("fraud_blocked"), "{problem:?}");
    assert_eq!(handled.load(Ordering::SeqCst), 1, "a block never reaches the handler");
    // The block is stored and replayed too.
    let again = send(&mut svc, post("k2", "m@fraud.test")).await.unwrap();
    assert_eq!(again.status(), 402);
    assert!(again.headers().contains_key("idempotent-replayed"));
}
