//! Leases in the layer (issue 16, findings 3 and 4): a running request renews its lease, so a call many leases
//! long is never taken over by a duplicate; and a claim whose answer was lost to a stalled store is undone, so
//! the 503 it caused means the key is usable when its `Retry-After` says.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use palisade_core::*;
use palisade_idempotency::{HttpIdempotencyLayer, IdempotencyLayer, MemoryStore, RedisStore};
use palisade_sim::{GatewaySim, Latency};
use tower::{Layer, ServiceExt};

fn charge(key: &str) -> GatewayRequest {
    palisade_testkit::charge("order-lease").key(key).build()
}

/// Typed mode on the memory store: a gateway call of ten leases keeps its claim; a duplicate halfway through is
/// refused as in flight (with a `Retry-After` no longer than the lease) and never reaches the gateway.
#[tokio::test(start_paused = true)]
async fn a_call_of_many_leases_keeps_its_claim_typed() {
    let lease = Duration::from_secs(1);
    let sim = GatewaySim::builder().latency(Latency::fixed(lease * 10)).build();
    let svc = IdempotencyLayer::builder().store(MemoryStore::new()).lease(lease).build().layer(sim.clone());
    let first = tokio::spawn(svc.clone().oneshot(charge("long")));
    tokio::time::sleep(lease * 5).await;
    match svc.clone().oneshot(charge("long")).await {
        Err(PaymentError::IdempotencyInFlight { retry_after: Some(d) }) => assert!(d <= lease, "{d:?}"),
        other => panic!("the duplicate must be refused as in flight by the layer: {other:?}"),
    }
    assert!(first.await.unwrap().is_ok());
    assert_eq!(sim.calls(), 1, "the duplicate never reached the gateway");
    assert_eq!(sim.charges_for("order-lease").len(), 1);
    // Boxed path too: a store the layer cannot call in place (shared through an Arc).
    let shared: Arc<dyn palisade_idempotency::LeaseStore> = Arc::new(MemoryStore::new());
    let svc = IdempotencyLayer::builder().store(shared).lease(lease).build().layer(sim.clone());
    let first = tokio::spawn(svc.clone().oneshot(charge("long-boxed")));
    tokio::time::sleep(lease * 5).await;
    assert!(matches!(svc.clone().oneshot(charge("long-boxed")).await, Err(PaymentError::IdempotencyInFlight { .. })));
    assert!(first.await.unwrap().is_ok());
    assert_eq!(sim.calls(), 2);
}

/// A handler that takes `delay` and counts its executions.
fn slow_app(
    layer: HttpIdempotencyLayer,
    delay: Duration,
) -> (tower::util::BoxCloneService<Request<Body>, Response<Body>, Infallible>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Body>| {
        let calls = counted.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(Response::builder().status(StatusCode::CREATED).body(Body::from("charged")).unwrap())
        }
    });
    (tower::util::BoxCloneService::new(layer.layer(inner)), calls)
}

fn post(key: &str) -> Request<Body> {
    Request::post("/v1/charges")
        .header("idempotency-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"amount":"10.00"}"#))
        .unwrap()
}

/// HTTP mode on Redis (real time, short lease): a request four leases long keeps its claim.
#[tokio::test]
async fn a_call_of_many_leases_keeps_its_claim_on_redis() {
    let Some(r) = palisade_testkit::redis("idem_lease_heartbeat").await else { return };
    let lease = Duration::from_millis(300);
    let store = RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    let (app, calls) = slow_app(HttpIdempotencyLayer::builder().store(store).lease(lease).build(), lease * 4);
    let first = tokio::spawn(app.clone().oneshot(post("long")));
    tokio::time::sleep(lease * 2).await;
    let dup = app.clone().oneshot(post("long")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT, "still held: the heartbeat renewed the lease");
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    r.cleanup().await;
}

/// Redis stalls longer than the store's response timeout while a key is claimed: the layer answers 503, the claim
/// lands when Redis resumes, and the layer's abandon (sent after it on the same connection) undoes it, so the
/// retry after `Retry-After` executes instead of getting 409 for a whole lease.
#[tokio::test]
async fn a_claim_that_timed_out_does_not_lock_the_key() {
    let Some(r) = palisade_testkit::redis("idem_stalled_claim").await else { return };
    let proxy = palisade_testkit::StallProxy::start(&r.url).await;
    let store = RedisStore::connect(&proxy.url()).await.unwrap().with_prefix(r.prefix.clone());
    let (app, calls) = slow_app(HttpIdempotencyLayer::builder().store(store).build(), Duration::ZERO);
    assert_eq!(app.clone().oneshot(post("warm")).await.unwrap().status(), StatusCode::CREATED);

    proxy.stall();
    let refused = app.clone().oneshot(post("stalled")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;

    let retried = app.clone().oneshot(post("stalled")).await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED, "the key is usable when Retry-After said");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "warm-up and the retry: the timed-out request never executed");
    r.cleanup().await;
}

/// A response body that sends its bytes only after `after`: the headers come at once.
struct SlowBody(Option<std::pin::Pin<Box<tokio::time::Sleep>>>);

impl http_body::Body for SlowBody {
    type Data = bytes::Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        let Some(sleep) = self.0.as_mut() else { return std::task::Poll::Ready(None) };
        std::task::ready!(sleep.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"charged")))))
    }
}

/// HTTP mode: the lease is renewed while a stored answer's body is read too, not only until its headers come. A
/// body five leases slow keeps the claim: a duplicate meanwhile is refused in flight, and the service runs once.
#[tokio::test(start_paused = true)]
async fn a_slow_response_body_keeps_its_claim() {
    let lease = Duration::from_secs(1);
    let layer = HttpIdempotencyLayer::builder().store(MemoryStore::new()).lease(lease).build();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let body = Body::new(SlowBody(Some(Box::pin(tokio::time::sleep(lease * 5)))));
        async move { Ok::<_, Infallible>(Response::builder().status(StatusCode::CREATED).body(body).unwrap()) }
    });
    let app = tower::util::BoxCloneService::new(layer.layer(inner));
    let first = tokio::spawn(app.clone().oneshot(post("slow-body")));
    tokio::time::sleep(lease * 3).await;
    let dup = app.clone().oneshot(post("slow-body")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT, "the duplicate is refused in flight, not run");
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the service ran once");
    let replay = app.clone().oneshot(post("slow-body")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
