//! Issue 22, examples/server's checkouts: `POST /v1/checkouts` runs the checkout saga through the whole stack
//! (idempotency around the route; fraud, breaker, retry, rate limit and audit around the simulated gateway), and
//! `GET /v1/orders/{id}`, `/metrics`, `/healthz` and `/readyz` tell where things are.
//!
//! In process and under paused time (no sockets): a completed checkout and its replay, a decline, a fraud block,
//! a compensated saga, answers lost for good undone, a failed compensation, the orders' states, a retry after the
//! client gave up, readiness and metrics. With a real process (the server binary, built by `cargo build --example
//! server`): SIGTERM while a checkout is in flight stops accepting, answers that checkout and exits 0.

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/charges.rs"]
mod charges;
#[path = "../examples/server/checkouts.rs"]
mod checkouts;
#[path = "../examples/server/ledger.rs"]
mod ledger;
#[allow(dead_code)]
#[path = "../examples/server/ops.rs"]
mod ops;
#[path = "../examples/server/orders.rs"]
mod orders;
#[allow(dead_code)]
#[path = "../examples/server/serve.rs"]
mod serve;

#[path = "support/server_process.rs"]
mod server_process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use palisade::core::Operation;
use palisade::idempotency::{LeaseStore, MemoryStore, RedisStore};
use palisade::sim::{Fault, GatewaySim, HttpFault, Latency, SimServer};
use palisade_saga::{MemoryLog, RedisLog, SagaLog, SagaState, step_key, step_key_of_run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tower::ServiceExt;

struct Server {
    app: Router,
    sim: GatewaySim,
    shop: checkouts::Shop,
}

/// The server's routes as main.rs assembles them, on memory stores.
fn server(sim: GatewaySim) -> Server {
    server_with(sim, checkouts::fraud_engine())
}

/// [`server`] with the fraud `engine` (a clone of it reloads its rules).
fn server_with(sim: GatewaySim, engine: palisade_fraud::FraudEngine) -> Server {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let log: Arc<dyn SagaLog> = Arc::new(MemoryLog::new());
    let gateway = checkouts::gateway_stack_with(sim.clone(), checkouts::DEFAULT_GATEWAY_RATE, engine).unwrap();
    let shop = checkouts::Shop::new(gateway, checkouts::Inventory::new(store.clone()), log.clone(), "test-instance");
    let app = app::router(sim.clone(), store.clone())
        .merge(checkouts::router(shop.clone(), store.clone()))
        .merge(orders::router(shop.orchestrator().clone()))
        .merge(ops::router(ops::Readiness { store, log }));
    let app = ops::with_fallbacks(app);
    Server { app, sim, shop }
}

fn body(order: &str) -> Value {
    json!({
        "order_id": order, "amount": "12.34", "currency": "USD", "source": "tok_visa", "email": "a@example.com",
        "items": [{"sku": "sku_1", "qty": 1}], "fail_shipment": false
    })
}

fn checkout(key: &str, body: &Value) -> Request<Body> {
    Request::post("/v1/checkouts")
        .header("Idempotency-Key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (parts.status, parts.headers, value)
}

async fn get(app: &Router, path: &str) -> (StatusCode, http::HeaderMap, Value) {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

impl Server {
    /// The gateway operations the sim's ledger shows for `order`, in order.
    async fn ops(&self, order: &str) -> Vec<String> {
        let (status, _, ledger) = get(&self.app, "/v1/_sim/ledger").await;
        assert_eq!(status, StatusCode::OK);
        ledger
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["order_id"] == order)
            .map(|e| e["op"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn held(&self, order: &str) -> bool {
        self.held_in(order, 0).await
    }

    /// Whether the reservation of run `run` of the order's saga is held (a restarted saga's runs hold under keys of
    /// their own).
    async fn held_in(&self, order: &str, run: u32) -> bool {
        self.shop.inventory().is_held(step_key_of_run(order, "reserve", run).as_str()).await.unwrap()
    }

    async fn state(&self, order: &str) -> Value {
        let (status, _, order) = get(&self.app, &format!("/v1/orders/{order}")).await;
        assert_eq!(status, StatusCode::OK, "{order}");
        order
    }
}

#[tokio::test(start_paused = true)]
async fn a_checkout_completes_and_its_replay_runs_nothing() {
    let s = server(GatewaySim::new());
    let (status, h, order) = send(&s.app, checkout("k1", &body("o1"))).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert!(h.get("idempotent-replayed").is_none());
    assert_eq!(h[header::LOCATION], "/v1/orders/o1");
    assert_eq!((order["order_id"].as_str(), order["state"].as_str()), (Some("o1"), Some("completed")));
    let charge_id = order["charge_id"].as_str().expect("a charge id").to_owned();
    assert_eq!(s.ops("o1").await, ["authorize", "capture"]);
    assert!(s.held("o1").await, "the stock stays reserved for a completed order");
    let (status, _, ledger) = get(&s.app, "/v1/_sim/ledger").await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = ledger.as_array().unwrap().iter().map(|e| e["gateway_key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [step_key("o1", "authorize").as_str(), step_key("o1", "capture").as_str()],
        "the saga's step keys are the gateway idempotency keys"
    );

    let calls = s.sim.calls();
    let (status, h, again) = send(&s.app, checkout("k1", &body("o1"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(again, order, "the same answer");
    assert_eq!(s.sim.calls(), calls, "the replay reached no gateway");
    assert_eq!(s.ops("o1").await, ["authorize", "capture"], "no new ledger entries");

    let shown = s.state("o1").await;
    assert_eq!(shown, json!({"order_id": "o1", "state": "completed", "charge_id": charge_id}));

    // Another key for the same order runs nothing either: the order exists (and the key stays usable).
    let (status, _, p) = send(&s.app, checkout("k1-other", &body("o1"))).await;
    assert_eq!((status, p["type"].as_str()), (StatusCode::CONFLICT, Some("urn:palisade:problem:order_exists")));
    assert_eq!(s.sim.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn a_decline_is_a_402_replayed_with_the_stock_released() {
    let s = server(GatewaySim::new());
    let mut declined = body("o-decline");
    declined["source"] = json!("tok_chargeDeclined");
    let (status, h, p) = send(&s.app, checkout("k-decline", &declined)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:card_declined");
    assert!(!s.held("o-decline").await, "the reservation was released");
    assert!(!s.ops("o-decline").await.contains(&"capture".to_owned()));
    assert_eq!(s.state("o-decline").await, json!({"order_id": "o-decline", "state": "compensated"}));

    let calls = s.sim.calls();
    let (status, h, again) = send(&s.app, checkout("k-decline", &declined)).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::PAYMENT_REQUIRED, &"true".parse().unwrap()));
    assert_eq!(again, p);
    assert_eq!(s.sim.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn a_fraud_block_never_reaches_the_gateway_and_releases_the_stock() {
    let s = server(GatewaySim::new());
    let mut fraud = body("o-fraud");
    fraud["email"] = json!("Fraud@Example.com");
    let (status, h, p) = send(&s.app, checkout("k-fraud", &fraud)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:fraud_blocked");
    assert_eq!(s.sim.calls(), 0, "no gateway call");
    assert!(s.ops("o-fraud").await.is_empty());
    assert!(!s.held("o-fraud").await, "the inventory reservation was compensated");
    assert_eq!(s.state("o-fraud").await["state"], "compensated");

    let (status, h, again) = send(&s.app, checkout("k-fraud", &fraud)).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::PAYMENT_REQUIRED, &"true".parse().unwrap()));
    assert_eq!(again, p);
}

#[tokio::test(start_paused = true)]
async fn a_failed_shipment_is_a_409_with_the_capture_refunded() {
    let s = server(GatewaySim::new());
    let mut failing = body("o-ship");
    failing["fail_shipment"] = json!(true);
    let (status, h, p) = send(&s.app, checkout("k-ship", &failing)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:checkout_compensated");
    assert!(p["detail"].as_str().unwrap().contains("the carrier refused the shipment"), "{p}");
    assert_eq!(s.ops("o-ship").await, ["authorize", "capture", "refund"], "refunded, not voided");
    assert!(!s.held("o-ship").await, "the reservation was released");
    let shown = s.state("o-ship").await;
    assert_eq!(shown["state"], "compensated");
    assert!(shown["charge_id"].is_string(), "the refunded charge is still named: {shown}");

    let calls = s.sim.calls();
    let (status, h, again) = send(&s.app, checkout("k-ship", &failing)).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::CONFLICT, &"true".parse().unwrap()));
    assert_eq!(again, p);
    assert_eq!(s.sim.calls(), calls);
}

#[tokio::test(start_paused = true)]
async fn an_answer_lost_for_good_is_found_out_and_undone() {
    // Each step is tried 9 times (3 saga attempts of 3 retry-layer attempts): the first commits and loses its
    // answer, the other 8 fail with 500s, so the step fails for good not knowing whether it acted.
    let lost_for_good = || std::iter::once(Fault::FailAfterCommit).chain([Fault::ServerError { status: 500 }; 8]);

    // A capture: the authorization's void is refused (it is captured), so it is refunded in full.
    let s = server(GatewaySim::new());
    s.sim.script(Operation::Capture, lost_for_good());
    let (status, _, p) = send(&s.app, checkout("k-lost-capture", &body("o-lost-capture"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:checkout_compensated");
    assert_eq!(s.ops("o-lost-capture").await, ["authorize", "capture", "refund"], "captured once, refunded");
    assert_eq!(s.state("o-lost-capture").await["state"], "compensated");
    let note = s.shop.inventory().payment_note("o-lost-capture").await.unwrap().unwrap();
    assert!(note.starts_with("refunded:auth_"), "the payment note names the refunded authorization: {note}");

    // An authorization: asked again under its step key (answered from what the gateway did), then voided.
    let s = server(GatewaySim::new());
    s.sim.script(Operation::Authorize, lost_for_good());
    let (status, _, p) = send(&s.app, checkout("k-lost-auth", &body("o-lost-auth"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(s.ops("o-lost-auth").await, ["authorize", "void"], "authorized once, voided");
    assert_eq!(s.state("o-lost-auth").await["state"], "compensated");
    let note = s.shop.inventory().payment_note("o-lost-auth").await.unwrap().unwrap();
    assert!(note.starts_with("voided:auth_"), "the payment note names the authorization found out: {note}");

    // The same when the attempts after the lost one are refused before they act (Retriable, not Unknown): the
    // retry layer answers the lost attempt's Unknown, so the saga still knows the step may have acted.
    let s = server(GatewaySim::new());
    s.sim.script(Operation::Authorize, std::iter::once(Fault::FailAfterCommit).chain([Fault::FailBeforeCommit; 8]));
    let (status, _, p) = send(&s.app, checkout("k-lost-refused", &body("o-lost-refused"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(s.ops("o-lost-refused").await, ["authorize", "void"], "authorized once, voided");
    let note = s.shop.inventory().payment_note("o-lost-refused").await.unwrap().unwrap();
    assert!(note.starts_with("voided:auth_"), "the payment note names the authorization found out: {note}");
}

/// A gateway outage before anything was authorized compensates the checkout, but does not spend the order: the
/// answer is 503 `gateway_unavailable` with `Retry-After` (not stored), and the retry with the same key, once the
/// gateway is back, runs the saga again (a new run, keys of its own) and charges once. Before, the answer was a
/// stored 409 `checkout_compensated`, and the order could never be paid (another key: 409 `order_exists`).
#[tokio::test(start_paused = true)]
async fn a_gateway_outage_before_authorizing_is_a_503_and_the_retry_charges_once() {
    let s = server(GatewaySim::new());
    s.sim.set_outage(Some(Fault::FailBeforeCommit));
    let (status, h, p) = send(&s.app, checkout("k-outage", &body("o-outage"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:gateway_unavailable", "{p}");
    assert!(h.contains_key(header::RETRY_AFTER), "{h:?}");
    assert!(s.ops("o-outage").await.is_empty(), "nothing reached the gateway's ledger");
    assert!(!s.held("o-outage").await, "the reservation was released");
    assert_eq!(s.state("o-outage").await["state"], "compensated");

    // Still down: the retry runs again and is answered the same (not replayed: the 503 was not stored).
    let (status, h, p) = send(&s.app, checkout("k-outage", &body("o-outage"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert!(!h.contains_key("idempotent-replayed"), "{h:?}");

    s.sim.set_outage(None);
    let (status, _, order) = send(&s.app, checkout("k-outage", &body("o-outage"))).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(s.ops("o-outage").await, ["authorize", "capture"], "charged once");
    assert_eq!(order["charge_id"], s.state("o-outage").await["charge_id"]);
    assert_eq!(s.state("o-outage").await["state"], "completed");
    // Run 0 (the first request), run 1 (its retry during the outage), run 2 (the retry that completed).
    assert!(!s.held_in("o-outage", 0).await && !s.held_in("o-outage", 1).await, "the runs before stay released");
    assert!(s.held_in("o-outage", 2).await, "held by the run that completed");
    let (status, h, replay) = send(&s.app, checkout("k-outage", &body("o-outage"))).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::CREATED, &"true".parse().unwrap()));
    assert_eq!(replay, order);
    let (status, _, p) = send(&s.app, checkout("k-other", &body("o-outage"))).await;
    assert_eq!((status, &p["type"]), (StatusCode::CONFLICT, &json!("urn:palisade:problem:order_exists")));
}

/// Through an outage that outlasts the client's retries, a checkout gets at most `MAX_CHECKOUT_RUNS` runs: the
/// last one's answer is the final, stored 409 `checkout_compensated`, so the saga's history stops growing.
#[tokio::test(start_paused = true)]
async fn a_checkout_retried_through_a_long_outage_ends_after_its_last_run() {
    let s = server(GatewaySim::new());
    s.sim.set_outage(Some(Fault::FailBeforeCommit));
    for n in 1..checkouts::MAX_CHECKOUT_RUNS {
        let (status, _, p) = send(&s.app, checkout("k-long", &body("o-long"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "run {n}: {p}");
    }
    let (status, _, p) = send(&s.app, checkout("k-long", &body("o-long"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:checkout_compensated");
    let record = s.shop.orchestrator().get("o-long").await.unwrap().unwrap();
    assert_eq!(palisade_saga::latest_run(&record), checkouts::MAX_CHECKOUT_RUNS - 1);
    s.sim.set_outage(None);
    let (status, h, _) = send(&s.app, checkout("k-long", &body("o-long"))).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::CONFLICT, &"true".parse().unwrap()), "final");
    assert!(s.ops("o-long").await.is_empty());
}

/// An authorization whose answer was lost, whose next attempt the fraud screen refuses (the email blocklisted
/// by a rule reloaded while the checkout ran): the compensation asks the gateway what the lost attempt did without
/// the screen, and voids it. Before, the screen refused the question too, the payment note said "none", and the
/// authorization stayed on the customer's card.
#[tokio::test(start_paused = true)]
async fn an_authorization_lost_then_blocked_by_a_reloaded_rule_is_still_voided() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_secs(1))).build();
    let engine = checkouts::fraud_engine();
    let s = server_with(sim, engine.clone());
    // The saga's first attempt: three retry-layer attempts, the first committed with its answer lost.
    s.sim.script(
        Operation::Authorize,
        [Fault::FailAfterCommit, Fault::ServerError { status: 500 }, Fault::ServerError { status: 500 }],
    );
    let app = s.app.clone();
    let running = tokio::spawn(async move { send(&app, checkout("k-blocked-later", &body("o-blocked-later"))).await });
    // While that first attempt is at the gateway (1 s of latency), the email is blocklisted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.reload("late_block: block if email == \"a@example.com\"").unwrap();
    let (status, _, p) = running.await.unwrap();
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:fraud_blocked", "{p}");
    assert_eq!(s.ops("o-blocked-later").await, ["authorize", "void"], "the lost authorization was voided");
    let note = s.shop.inventory().payment_note("o-blocked-later").await.unwrap().unwrap();
    assert!(note.starts_with("voided:auth_"), "the payment note names the voided authorization: {note}");
    assert_eq!(s.state("o-blocked-later").await["state"], "compensated");
}

#[tokio::test(start_paused = true)]
async fn a_refund_that_keeps_failing_leaves_the_order_in_failed_compensation() {
    let s = server(GatewaySim::new());
    s.sim.script(Operation::Refund, std::iter::repeat_n(Fault::FailBeforeCommit, 1000));
    let mut failing = body("o-stuck");
    failing["fail_shipment"] = json!(true);
    let (status, _, p) = send(&s.app, checkout("k-stuck", &failing)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:saga_compensation_failed");
    let shown = s.state("o-stuck").await;
    assert_eq!(shown["state"], "failed_compensation");
    assert!(shown["charge_id"].is_string(), "the charge whose refund is owed is named: {shown}");
}

#[tokio::test(start_paused = true)]
async fn orders_are_running_while_their_saga_runs_and_404_when_unknown() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let s = server(sim);
    let app = s.app.clone();
    let running = tokio::spawn(async move { send(&app, checkout("k-slow", &body("o-slow"))).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.state("o-slow").await, json!({"order_id": "o-slow", "state": "running"}));
    // The same key while the first runs: the layer's 409, not stored.
    let (status, _, p) = send(&s.app, checkout("k-slow", &body("o-slow"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{p}");
    assert_eq!(running.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(s.state("o-slow").await["state"], "completed");

    let (status, h, p) = get(&s.app, "/v1/orders/o-unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["status"], 404);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_the_client_gave_up_gets_the_checkout_s_own_result() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let s = server(sim);
    let app = s.app.clone();
    let gone = tokio::spawn(async move { send(&app, checkout("k-gone", &body("o-gone"))).await });
    // The client gives up while the authorization runs: the checkout goes on without it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    gone.abort();
    let _ = gone.await;
    let (status, _, order) = send(&s.app, checkout("k-gone", &body("o-gone"))).await;
    assert_eq!(status, StatusCode::CREATED, "the same request gets the checkout's result, not order_exists: {order}");
    assert_eq!(order["state"], "completed");
    assert_eq!(s.ops("o-gone").await, ["authorize", "capture"], "charged once");
    let (status, h, again) = send(&s.app, checkout("k-gone", &body("o-gone"))).await;
    assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::CREATED, &"true".parse().unwrap()));
    assert_eq!(again, order);
}

#[tokio::test(start_paused = true)]
async fn a_retry_with_another_body_after_the_client_gave_up_is_refused() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let s = server(sim);
    let app = s.app.clone();
    let gone = tokio::spawn(async move { send(&app, checkout("k-other", &body("o-other"))).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    gone.abort();
    let _ = gone.await;
    // Same key and order, another amount: the order was charged the first body's amount, so the answer must not
    // be a 201 showing this one, nor be stored under the key. The idempotency layer refuses it: a key released
    // when its client gave up keeps the fingerprint of the body that started it.
    let mut other = body("o-other");
    other["amount"] = json!("99.99");
    let (status, _, p) = send(&s.app, checkout("k-other", &other)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:idempotency_conflict");
    // The checkout's own body still gets its result.
    let (status, _, order) = send(&s.app, checkout("k-other", &body("o-other"))).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["amount"], body("o-other")["amount"]);
    assert_eq!(s.ops("o-other").await, ["authorize", "capture"], "charged once");
}

#[tokio::test(start_paused = true)]
async fn a_second_instance_on_the_same_store_finishes_a_checkout_its_dead_peer_started() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryStore::new());
    let log: Arc<dyn SagaLog> = Arc::new(MemoryLog::new());
    let instance = |name: &str| {
        let gateway = checkouts::gateway_stack(sim.clone()).unwrap();
        checkouts::Shop::new(gateway, checkouts::Inventory::new(store.clone()), log.clone(), name)
    };
    let (a, b) = (instance("instance-a"), instance("instance-b"));
    let recovery_a = a.orchestrator().spawn_recovery(Duration::from_secs(1));
    let app_a = checkouts::router(a.clone(), store.clone());
    let dying = tokio::spawn(async move { send(&app_a, checkout("k-dead", &body("o-dead"))).await });
    // The authorization (100 ms) is done and the capture is on its way when instance a dies.
    tokio::time::sleep(Duration::from_millis(150)).await;
    a.halt();
    dying.abort();
    recovery_a.abort();
    let _ = dying.await;

    // Instance b sees the order on the shared store, still running, and its recovery worker takes it over once
    // a's lease has ended.
    let orders_b = orders::router(b.orchestrator().clone());
    assert_eq!(get(&orders_b, "/v1/orders/o-dead").await.2["state"], "running");
    // The recovery worker, as main.rs runs it: a shutdown of b (`Recovery::shutdown`) waits for a saga it resumed.
    let recovery_b = b.orchestrator().spawn_recovery(Duration::from_secs(1));
    let taken_over = async {
        loop {
            let record = b.orchestrator().get("o-dead").await.unwrap().unwrap();
            if record.owner.as_deref() == Some("instance-b") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(palisade_saga::defaults::DEFAULT_LEASE + Duration::from_secs(3), taken_over)
        .await
        .expect("b takes the checkout over once a's lease has ended");
    let still = recovery_b.shutdown(tokio::time::Instant::now() + Duration::from_secs(30)).await;
    assert!(still.is_empty(), "{still:?}");
    let shown = get(&orders_b, "/v1/orders/o-dead").await.2;
    assert_eq!(shown["state"], "completed", "{shown}");
    assert!(shown["charge_id"].is_string());
    let ops: Vec<Operation> = sim.entries_for("o-dead").iter().map(|e| e.operation).collect();
    assert_eq!(ops, [Operation::Authorize, Operation::Capture], "each step acted once");
    let record = b.orchestrator().get("o-dead").await.unwrap().unwrap();
    assert!(record.token > 1, "taken over with a new fencing token: {record:?}");
}

#[tokio::test(start_paused = true)]
async fn bad_bodies_are_400_and_leave_the_key_usable() {
    let s = server(GatewaySim::new());
    let (status, _, p) = send(&s.app, checkout("k-bad", &json!({"order_id": "o-bad"}))).await;
    assert_eq!((status, p["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:palisade:problem:invalid_request")));
    let (status, _, _) = send(&s.app, checkout("k-bad", &body("o-bad"))).await;
    assert_eq!(status, StatusCode::CREATED, "the corrected request runs under the same key");
    let no_key = Request::post("/v1/checkouts").body(Body::from(body("o-nokey").to_string())).unwrap();
    assert_eq!(send(&s.app, no_key).await.0, StatusCode::BAD_REQUEST);

    // A zero or negative amount is refused before stock is held or the gateway is asked, and spends neither the
    // key nor the order.
    for amount in ["-5.00", "0", "0.00"] {
        let mut bad = body("o-neg");
        bad["amount"] = json!(amount);
        let (status, _, p) = send(&s.app, checkout("k-neg", &bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount}: {p}");
        assert_eq!(p["type"], "urn:palisade:problem:invalid_request");
    }
    assert!(s.ops("o-neg").await.is_empty(), "the gateway was never asked");
    let (status, _, p) = send(&s.app, checkout("k-neg", &body("o-neg"))).await;
    assert_eq!(status, StatusCode::CREATED, "the corrected request runs under the same key and order: {p}");
}

/// An unknown route is a 404 problem+json like the server's other errors (it was an empty 404); so are another
/// method on a known route (405, was empty) and an order id that does not decode (400, was plain text).
#[tokio::test(start_paused = true)]
async fn an_unknown_route_is_a_problem() {
    let s = server(GatewaySim::new());
    let (status, h, p) = get(&s.app, "/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:not_found", "{p}");

    for (method, path) in [("GET", "/v1/checkouts"), ("DELETE", "/v1/orders/o1"), ("POST", "/healthz")] {
        let req = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let (status, h, p) = send(&s.app, req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(h[header::CONTENT_TYPE], "application/problem+json", "{method} {path}");
        assert_eq!(p["type"], "urn:palisade:problem:method_not_allowed", "{method} {path}: {p}");
        assert!(h.contains_key(header::ALLOW), "{method} {path}: {h:?}");
    }

    let (status, h, p) = get(&s.app, "/v1/orders/%ff").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(p["type"], "urn:palisade:problem:invalid_request", "{p}");
}

#[tokio::test(start_paused = true)]
async fn healthz_readyz_and_metrics() {
    let _ = ops::metrics_handle();
    let s = server(GatewaySim::new());
    assert_eq!(get(&s.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&s.app, "/readyz").await.0, StatusCode::OK);
    assert_eq!(send(&s.app, checkout("k-metrics", &body("o-metrics"))).await.0, StatusCode::CREATED);
    let (status, h, text) = get(&s.app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let text = text.as_str().unwrap();
    for name in [
        "palisade_checkouts_total",
        "palisade_idempotency_requests_total",
        "palisade_saga_started_total",
        "palisade_fraud_decisions_total",
        "palisade_rate_limit_decisions_total",
    ] {
        assert!(text.contains(name), "/metrics has {name}:\n{text}");
    }
}

#[tokio::test]
async fn readyz_is_503_while_redis_is_unreachable() {
    let url = palisade_testkit::unreachable_redis_url();
    let store: Arc<dyn LeaseStore> = Arc::new(RedisStore::open(&url).unwrap());
    let log: Arc<dyn SagaLog> = Arc::new(RedisLog::open(&url).unwrap());
    let app = ops::router(ops::Readiness { store, log });
    let (status, h, p) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK, "the process is up all the same");
}

// ---------------------------------------------------------------------------------------------------------------
// A real process.

/// Sends one request on its own connection and reads the status line's code.
async fn status_of(addr: SocketAddr, head: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{head}\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("answered").unwrap();
    let raw = String::from_utf8_lossy(&raw);
    raw.split_whitespace().nth(1).expect("a status line").parse().unwrap()
}

/// Starts the server binary on a free port with `args`; returns it and its address once it listens.
async fn start(args: &[&str]) -> (Child, SocketAddr) {
    server_process::start_server(args, "whsec_server_checkouts_test").await
}

const CHECKOUT_HEAD: &str = "POST /v1/checkouts HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key:";

#[tokio::test]
async fn sigterm_finishes_the_checkout_in_flight_and_exits_0() {
    let (mut child, addr) = start(&["--latency-ms", "400", "--instance", "sigterm-test"]).await;
    assert_eq!(status_of(addr, "GET /healthz HTTP/1.1", "").await, 200);

    // A checkout takes two gateway calls of 400 ms each: SIGTERM arrives while it runs.
    let head = format!("{CHECKOUT_HEAD} k-term");
    let in_flight = tokio::spawn(async move { status_of(addr, &head, &body("o-term").to_string()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "no new connection is accepted once SIGTERM arrived");

    assert_eq!(in_flight.await.unwrap(), 201, "the checkout in flight was answered");
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits").unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test]
async fn with_gateway_url_checkouts_go_to_a_simulator_over_http_and_a_lost_response_charges_once() {
    let (sim, _task) = SimServer::builder().bind("127.0.0.1:0").await.unwrap().spawn();
    // The authorization commits, then its connection closes without an answer: Unknown, retried with the same
    // step key, which the simulator deduplicates.
    sim.script([Some(HttpFault::LostResponse)]);
    let (_server, addr) = start(&["--gateway", &sim.base_url()]).await;
    let head = format!("{CHECKOUT_HEAD} k-remote");
    assert_eq!(status_of(addr, &head, &body("o-remote").to_string()).await, 201);
    let ops: Vec<Operation> = sim.sim().entries_for("o-remote").iter().map(|e| e.operation).collect();
    assert_eq!(ops, [Operation::Authorize, Operation::Capture], "one authorization, one capture");
    assert!(sim.sim().calls() >= 3, "the lost answer was retried");
}

/// The checkout's gateway, three ways over one stack: with the circuit breaker open, the screened and unscreened
/// ways fail fast, and the compensations' way still reaches the gateway (a void goes through). Before, every
/// compensation waited behind the breaker; one whose open time had doubled past their retries left a
/// compensation in `failed_compensation` without the gateway being asked (a chaos run).
#[tokio::test(start_paused = true)]
async fn compensations_reach_the_gateway_while_the_breaker_is_open() {
    use palisade::core::{GatewayRequest, VoidRequest};

    let sim = GatewaySim::new();
    let gateway = checkouts::gateway_stack(sim.clone()).unwrap();
    // An authorization that exists, to void later.
    let auth = GatewayRequest::Authorize(palisade_testkit::charge("o-open").amount("12.34").key("k-open").request());
    let authorized = gateway.unscreened.clone().oneshot(auth).await.unwrap();
    // The gateway fails every call until the breaker opens.
    sim.set_outage(Some(Fault::FailBeforeCommit));
    for i in 0..40 {
        let req = GatewayRequest::Authorize(
            palisade_testkit::charge(&format!("o-down-{i}")).amount("1.00").key(&format!("k-down-{i}")).request(),
        );
        let _ = gateway.unscreened.clone().oneshot(req).await;
    }
    sim.set_outage(None);
    let probe = GatewayRequest::Authorize(palisade_testkit::charge("o-probe").amount("1.00").key("k-probe").request());
    let refused = gateway.unscreened.clone().oneshot(probe).await.unwrap_err();
    assert_eq!(refused.kind(), palisade::core::ErrorKind::CircuitOpen, "the breaker is open: {refused}");
    let before = sim.calls();
    let void = GatewayRequest::Void(VoidRequest {
        authorization_id: authorized.id.to_string().into(),
        idempotency_key: Some("k-void-open".parse().unwrap()),
    });
    gateway.undo.clone().oneshot(void).await.expect("the void reaches the gateway");
    assert_eq!(sim.calls(), before + 1);
    assert_eq!(ledger_ops(&sim, "o-open"), ["authorize", "void"]);
}

fn ledger_ops(sim: &GatewaySim, order: &str) -> Vec<String> {
    sim.entries_for(order).into_iter().map(|e| format!("{:?}", e.operation).to_lowercase()).collect()
}

/// The checkouts' gateway rate limit waits for its next unit instead of refusing at once: six authorizations at
/// once against one call a second all go through, spread over five seconds, where a refusing limiter (and
/// retry's three attempts) turned half of them into `rate_limited` errors, each a compensated checkout.
#[tokio::test(start_paused = true)]
async fn the_gateway_rate_limit_waits_for_its_next_unit() {
    use palisade::core::GatewayRequest;
    use tower::Service;

    let sim = GatewaySim::new();
    let gateway = checkouts::gateway_stack_at(sim.clone(), 1).unwrap();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let mut gateway = gateway.screened.clone();
        let order = format!("o-rate-{i}");
        tasks.push(tokio::spawn(async move {
            let auth =
                GatewayRequest::Authorize(palisade_testkit::charge(&order).amount("12.34").key(&order).request());
            gateway.ready().await.unwrap().call(auth).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let failed: Vec<String> = answers.iter().filter_map(|a| a.as_ref().err()).map(ToString::to_string).collect();
    assert!(failed.is_empty(), "every authorization went through: {failed:?}");
    assert_eq!(sim.ledger().len(), 6, "six authorizations, each once");
    assert!(start.elapsed() >= Duration::from_secs(5), "at one a second: {:?}", start.elapsed());
}

// ---------------------------------------------------------------------------------------------------------------
// The review's findings (fraud limit, identifiers, the 201's amount, shutdown with sagas running).

/// The example's "block above 10,000.00" rule blocks (402 `fraud_blocked`, stored and replayed, nothing reaches
/// the gateway), in USD and EUR; 10,000.00 itself goes through.
#[tokio::test(start_paused = true)]
async fn a_checkout_over_10000_is_fraud_blocked_and_never_reaches_the_gateway() {
    let s = server(GatewaySim::new());
    for (order, currency) in [("o-big-usd", "USD"), ("o-big-eur", "EUR")] {
        let mut big = body(order);
        big["amount"] = json!("10000.01");
        big["currency"] = json!(currency);
        let key = format!("k-{order}");
        let (status, h, p) = send(&s.app, checkout(&key, &big)).await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{currency}: {p}");
        assert_eq!(h[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(p["type"], "urn:palisade:problem:fraud_blocked", "{p}");
        assert_eq!(s.sim.calls(), 0, "{currency}: nothing reached the gateway");
        assert!(s.ops(order).await.is_empty());
        assert!(!s.held(order).await, "the reservation was released");
        assert_eq!(s.state(order).await["state"], "compensated");
        let (status, h, again) = send(&s.app, checkout(&key, &big)).await;
        assert_eq!((status, &h["idempotent-replayed"]), (StatusCode::PAYMENT_REQUIRED, &"true".parse().unwrap()));
        assert_eq!(again, p);
    }
    let mut at_limit = body("o-at-limit");
    at_limit["amount"] = json!("10000.00");
    let (status, _, order) = send(&s.app, checkout("k-at-limit", &at_limit)).await;
    assert_eq!(status, StatusCode::CREATED, "the limit itself is not above it: {order}");
    assert_eq!(s.ops("o-at-limit").await, ["authorize", "capture"]);
}

/// `order_id` and `items[].sku` are identifiers: `[A-Za-z0-9_.:-]`, 1 to 255 (order) or 64 (sku) characters. A
/// control character (a forged log line), `/ ? #` (a wrong `Location`), a space or a card number is a 400 that
/// runs nothing, holds nothing and leaves the key usable; the ids the chaos run and bench/http send go through.
#[tokio::test(start_paused = true)]
async fn order_ids_and_skus_are_identifiers_and_anything_else_is_a_400() {
    let s = server(GatewaySim::new());
    let long = "o".repeat(256);
    let bad_orders = [
        "o\nforged",
        "o\r\nX-Forged: 1",
        "o\u{1b}[31m",
        "a/b",
        "a?b",
        "a#b",
        "a b",
        "o-é",
        "",
        ".",
        "..",
        long.as_str(),
    ];
    for (i, bad) in bad_orders.into_iter().enumerate() {
        let key = format!("k-bad-order-{i}");
        let (status, h, p) = send(&s.app, checkout(&key, &body(bad))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {p}");
        assert_eq!(p["type"], "urn:palisade:problem:invalid_request", "{bad:?}: {p}");
        assert!(h.get(header::LOCATION).is_none());
        // The key stays usable for the corrected request.
        let fixed = format!("o-fixed-{i}");
        assert_eq!(send(&s.app, checkout(&key, &body(&fixed))).await.0, StatusCode::CREATED, "{bad:?}");
    }
    let pan_skus = ["4242424242424242", "4242 4242 4242 4242", "sku-4242424242424242"];
    for (i, sku) in pan_skus.into_iter().chain(["sku\n1", "sku/1", "", "s".repeat(65).as_str()]).enumerate() {
        let order = format!("o-bad-sku-{i}");
        let mut bad = body(&order);
        bad["items"] = json!([{"sku": "sku_1", "qty": 1}, {"sku": sku, "qty": 2}]);
        let (status, _, p) = send(&s.app, checkout(&format!("k-bad-sku-{i}"), &bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sku:?}: {p}");
        assert_eq!(p["type"], "urn:palisade:problem:invalid_request", "{sku:?}: {p}");
        assert!(!p.to_string().contains("4242424242424242"), "the card number is not echoed: {p}");
        assert_eq!(get(&s.app, &format!("/v1/orders/{order}")).await.0, StatusCode::NOT_FOUND, "no saga for {sku:?}");
        assert!(!s.held(&order).await, "nothing held for {sku:?}");
    }
    assert!(s.sim.ledger().iter().all(|e| e.order_id.as_str().starts_with("o-fixed-")), "{:?}", s.sim.ledger());

    // What the chaos run, bench/http and the tests send.
    for (i, good) in
        ["chaos-23-117", "o-1733270400-1-42", "A.b_c:d-1", "o".repeat(255).as_str()].into_iter().enumerate()
    {
        let mut ok = body(good);
        ok["items"] = json!([{"sku": "sku_1", "qty": 1}, {"sku": "SKU-9.a:b_c", "qty": 3}]);
        let (status, h, order) = send(&s.app, checkout(&format!("k-good-{i}"), &ok)).await;
        assert_eq!(status, StatusCode::CREATED, "{good}: {order}");
        assert_eq!(h[header::LOCATION], format!("/v1/orders/{good}").as_str());
        assert_eq!(order["order_id"], good);
    }
}

/// The 201 says what was charged: the amount in the currency's canonical form and its ISO code, not the client's
/// spelling of them.
#[tokio::test(start_paused = true)]
async fn the_201_shows_the_amount_and_currency_charged() {
    let s = server(GatewaySim::new());
    for (i, (amount, currency, shown, code)) in
        [("1.000", "usd", "1.00", "USD"), ("12.3", "Eur", "12.30", "EUR"), ("500", "jpy", "500", "JPY")]
            .into_iter()
            .enumerate()
    {
        let order_id = format!("o-canon-{i}");
        let mut c = body(&order_id);
        c["amount"] = json!(amount);
        c["currency"] = json!(currency);
        let (status, _, order) = send(&s.app, checkout(&format!("k-canon-{i}"), &c)).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        assert_eq!((order["amount"].as_str(), order["currency"].as_str()), (Some(shown), Some(code)), "{order}");
        let charged: Vec<(String, String)> = s
            .sim
            .entries_for(&order_id)
            .iter()
            .map(|e| (e.amount.amount().to_string(), e.amount.currency().code().to_owned()))
            .collect();
        assert_eq!(charged, vec![(shown.to_owned(), code.to_owned()); 2], "the 201 shows what was charged");
    }
}

/// What a shutdown waits for after the HTTP requests: the sagas still running, here a checkout whose client gave
/// up while its capture ran. `wait_for_sagas` names it while it runs and returns once it has completed.
#[tokio::test(start_paused = true)]
async fn a_shutdown_waits_for_the_sagas_still_running_and_names_those_past_the_grace() {
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(100))).build();
    let s = server(sim);
    let app = s.app.clone();
    let gone = tokio::spawn(async move { send(&app, checkout("k-drain", &body("o-drain"))).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gone.abort();
    let _ = gone.await;
    assert_eq!(s.shop.running_sagas(), ["o-drain"], "the saga runs on without its request");
    let now = tokio::time::Instant::now();
    assert_eq!(s.shop.wait_for_sagas(now + Duration::from_millis(10)).await, ["o-drain"], "past a short grace");
    let still = s.shop.wait_for_sagas(tokio::time::Instant::now() + Duration::from_secs(30)).await;
    assert!(still.is_empty(), "{still:?}");
    assert!(now.elapsed() < Duration::from_secs(1), "returned when the saga ended, not at the deadline");
    assert_eq!(s.ops("o-drain").await, ["authorize", "capture"]);
    assert_eq!(s.state("o-drain").await["state"], "completed");
}

/// SIGTERM while a checkout's saga runs on after its client gave up: the server waits for the saga (within the
/// shutdown grace) before it exits, so the capture the gateway made is recorded and the order completed. Before,
/// only HTTP requests in flight were waited for (none here): the process exited mid-capture, the gateway captured,
/// and the saga log kept the order `running` until another instance's recovery took it over (on memory: lost).
#[tokio::test]
async fn sigterm_waits_for_a_checkout_whose_client_gave_up() {
    let Some(redis) = palisade_testkit::redis("server_sigterm_saga").await else { return };
    let (sim, _task) =
        SimServer::builder().latency(Duration::from_millis(400)).bind("127.0.0.1:0").await.unwrap().spawn();
    let (mut child, addr) = start(&[
        "--redis",
        &redis.url,
        "--redis-prefix",
        &redis.prefix,
        "--gateway",
        &sim.base_url(),
        "--instance",
        "sigterm-saga-test",
    ])
    .await;
    // Two gateway calls of 400 ms: the client gives up after 600 ms, while the capture runs.
    let head = format!("{CHECKOUT_HEAD} k-gave-up");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(600), status_of(addr, &head, &body("o-gave-up").to_string())).await;
    assert!(gave_up.is_err(), "the client gave up before the answer: {gave_up:?}");
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits").unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");

    let ops: Vec<Operation> = sim.sim().entries_for("o-gave-up").iter().map(|e| e.operation).collect();
    assert_eq!(ops, [Operation::Authorize, Operation::Capture], "captured before the server exited, once");
    let log = RedisLog::open(&redis.url).unwrap().with_prefix(format!("{}saga:", redis.prefix));
    let record = log.get("o-gave-up").await.unwrap().expect("the order is in the saga log");
    assert_eq!(record.state, SagaState::Completed, "the saga finished before the exit: {record:?}");
    redis.cleanup().await;
}

/// A saga still running when the shutdown grace (`--shutdown-grace-ms`) ends is named in the log; on the memory
/// store it is abandoned, and the log says so; the process does not wait past the grace.
#[tokio::test]
async fn a_saga_still_running_when_the_grace_ends_is_logged_as_abandoned_on_memory() {
    let bin = tokio::task::spawn_blocking(server_process::server_binary).await.unwrap();
    let log = std::env::temp_dir().join(format!("palisade-abandoned-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let args = ["--latency-ms", "3000", "--shutdown-grace-ms", "300", "--instance", "grace-test"];
    let (mut child, addr) =
        server_process::spawn_server(&bin, &args, "whsec_server_checkouts_test", Some(&log)).await.unwrap();
    let head = format!("{CHECKOUT_HEAD} k-abandoned");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), status_of(addr, &head, &body("o-abandoned").to_string()))
            .await;
    assert!(gave_up.is_err(), "the client gave up: {gave_up:?}");
    let pid = child.id().unwrap().to_string();
    let signalled = std::time::Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits").unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(2), "exited at the end of the grace: {:?}", signalled.elapsed());
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("stopped") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_file(&log);
    let line = text.lines().find(|l| l.contains("o-abandoned")).unwrap_or_else(|| panic!("named in the log:\n{text}"));
    assert!(line.contains("abandoned"), "{line}");
}
