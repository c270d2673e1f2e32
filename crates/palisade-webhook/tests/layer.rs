//! The layer behind axum: raw-body capture, verification, problem+json, effectively-once delivery on the
//! memory and Redis stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Json, State};
use axum::routing::post;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use palisade_core::{FailurePolicy, PaymentError};
use palisade_webhook::{
    Claim, ClaimToken, DeliveryStore, EventId, ManualClock, MemoryDeliveryStore, Message, Signer, StandardWebhooks,
    Stripe, Verified, Verifier, WebhookLayer,
};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_700_000_000;

#[derive(Default)]
struct Handler {
    calls: AtomicUsize,
    /// Number of upcoming calls that answer 500.
    fail_next: AtomicUsize,
    /// When set, each call waits for a permit before answering.
    gate: Option<Semaphore>,
    seen: parking_lot::Mutex<Vec<(String, Bytes)>>,
}

async fn handle(State(h): State<Arc<Handler>>, Extension(id): Extension<EventId>, body: Bytes) -> StatusCode {
    h.calls.fetch_add(1, Ordering::SeqCst);
    h.seen.lock().push((id.0, body));
    if let Some(gate) = &h.gate {
        gate.acquire().await.expect("gate stays open").forget();
    }
    let failing = h.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

fn verifier() -> Verifier {
    Verifier::builder(StandardWebhooks).secret(SECRET).clock(ManualClock::new(NOW)).build().unwrap()
}

fn app<D: DeliveryStore>(store: D, h: Arc<Handler>) -> Router {
    let layer = WebhookLayer::builder(verifier()).dedup(store).build();
    Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h)
}

fn signed(id: &str, ts: i64, body: &[u8]) -> Request<Body> {
    let headers =
        Signer::new(StandardWebhooks, SECRET).unwrap().headers(&Message { id: Some(id), timestamp: ts, body }).unwrap();
    let mut req = Request::post("/hook")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    req.headers_mut().extend(headers);
    req
}

async fn problem(res: Response<Body>) -> (StatusCode, serde_json::Value) {
    let status = res.status();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn verified_bytes_reach_the_handler_unchanged_with_the_event_id() {
    // Odd spacing, key order and escapes: a re-serialized body would differ.
    let body = "{ \"id\" : \"evt_9\",\"amount\":4999 , \"note\":\"caf\\u00e9 ☕\"}\n";
    let app = Router::new()
        .route(
            "/hook",
            post(
                |Extension(id): Extension<EventId>,
                 Extension(v): Extension<Verified>,
                 Json(json): Json<serde_json::Value>| async move {
                    assert_eq!(v.secret_index, 0);
                    format!("{}:{}", id.as_str(), json["amount"])
                },
            ),
        )
        .route_layer(WebhookLayer::builder(verifier()).build());
    let res = app.clone().oneshot(signed("msg_json", NOW, body.as_bytes())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "msg_json:4999");

    let h = Arc::new(Handler::default());
    let app = app_without_dedup(h.clone());
    let res = app.oneshot(signed("msg_raw", NOW, body.as_bytes())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h.seen.lock()[0], ("msg_raw".to_owned(), Bytes::from(body)));
}

fn app_without_dedup(h: Arc<Handler>) -> Router {
    Router::new().route("/hook", post(handle)).route_layer(WebhookLayer::builder(verifier()).build()).with_state(h)
}

#[tokio::test]
async fn failures_are_400_problems_and_never_reach_the_handler() {
    let h = Arc::new(Handler::default());
    let app = app(MemoryDeliveryStore::new(), h.clone());

    let mut tampered = signed("msg_t", NOW, br#"{"amount":100}"#);
    *tampered.body_mut() = Body::from(r#"{"amount":900}"#);
    let (status, p) = problem(app.clone().oneshot(tampered).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["type"], "urn:palisade:problem:webhook_signature");
    assert!(p["detail"].as_str().unwrap().contains("no_signature_matched"), "{p}");

    let (status, p) = problem(app.clone().oneshot(signed("msg_old", NOW - 301, b"{}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["type"], "urn:palisade:problem:webhook_replay");
    assert!(p["detail"].as_str().unwrap().contains("too_old"), "{p}");

    let mut unsigned = signed("msg_u", NOW, b"{}");
    unsigned.headers_mut().remove("webhook-signature");
    let (status, p) = problem(app.clone().oneshot(unsigned).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("header_missing"), "{p}");

    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bodies_beyond_the_limit_get_413_before_verification() {
    let h = Arc::new(Handler::default());
    let layer = WebhookLayer::builder(verifier()).body_limit(1024).build();
    let app = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());

    let big = vec![b'x'; 1025];
    // No Content-Length: the limit is enforced while reading.
    let (status, p) = problem(app.clone().oneshot(signed("msg_big", NOW, &big)).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(p["type"], "urn:palisade:problem:webhook_body_too_large");
    // A declared Content-Length beyond the limit is refused without reading.
    let mut req = signed("msg_decl", NOW, b"{}");
    req.headers_mut().insert(header::CONTENT_LENGTH, "1000000".parse().unwrap());
    assert_eq!(app.clone().oneshot(req).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit is fine.
    let at = vec![b'x'; 1024];
    assert_eq!(app.oneshot(signed("msg_at", NOW, &at)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
}

/// 100 concurrent deliveries of one event: one runs the handler, 99 are told to come back (503 +
/// Retry-After) while it runs; afterwards a duplicate gets 200 without the handler.
async fn hundred_concurrent_deliveries_run_the_handler_once<D: DeliveryStore>(store: D) {
    let h = Arc::new(Handler { gate: Some(Semaphore::new(0)), ..Handler::default() });
    let app = app(store, h.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        tasks.spawn(async move { app.oneshot(signed("msg_concurrent", NOW, br#"{"n":1}"#)).await.unwrap() });
    }
    // The handler is held until the other 99 have been answered, so they all overlap with it.
    let mut early = Vec::new();
    while early.len() < 99 {
        early.push(tasks.join_next().await.unwrap().unwrap());
    }
    h.gate.as_ref().unwrap().add_permits(1);
    let last = tasks.join_next().await.unwrap().unwrap();
    assert_eq!(last.status(), StatusCode::OK);
    for res in early {
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs} within the lease");
        let (_, p) = problem(res).await;
        assert_eq!(p["type"], "urn:palisade:problem:webhook_in_progress");
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);

    h.gate.as_ref().unwrap().add_permits(10);
    let again = app.oneshot(signed("msg_concurrent", NOW, br#"{"n":1}"#)).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()[palisade_webhook::DUPLICATE_HEADER], "done");
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "a duplicate after DONE does not run the handler");
}

/// A handler that fails releases the claim: the sender's redelivery runs it again, and once it succeeds the
/// event is done.
async fn failed_handler_runs_again_on_redelivery<D: DeliveryStore>(store: D) {
    let h = Arc::new(Handler { fail_next: AtomicUsize::new(1), ..Handler::default() });
    let app = app(store, h.clone());
    let deliver = || app.clone().oneshot(signed("msg_retry", NOW, b"{}"));
    assert_eq!(deliver().await.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    assert_eq!(deliver().await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2, "the redelivery ran the handler again");
    assert_eq!(deliver().await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2, "and after success it is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_hundred_concurrent_deliveries_run_the_handler_once() {
    hundred_concurrent_deliveries_run_the_handler_once(MemoryDeliveryStore::new()).await;
}

#[tokio::test]
async fn memory_failed_handler_runs_again_on_redelivery() {
    failed_handler_runs_again_on_redelivery(MemoryDeliveryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hundred_concurrent_deliveries_run_the_handler_once() {
    let Some(r) = palisade_testkit::redis("webhook_hundred_concurrent").await else { return };
    let store = palisade_webhook::RedisDeliveryStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    hundred_concurrent_deliveries_run_the_handler_once(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_failed_handler_runs_again_on_redelivery() {
    let Some(r) = palisade_testkit::redis("webhook_failed_handler").await else { return };
    let store = palisade_webhook::RedisDeliveryStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    failed_handler_runs_again_on_redelivery(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_keys_are_hash_tagged_and_expire() {
    let Some(r) = palisade_testkit::redis("webhook_keys").await else { return };
    let store = palisade_webhook::RedisDeliveryStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    let Claim::Acquired(token) = store.claim("evt_{x}", Duration::from_secs(60)).await.unwrap() else {
        panic!("first claim acquires")
    };
    // Braces in an event id are escaped, so the hash tag stays whole and `evt_(x)` is another event.
    let key = format!("{}{{evt_%7Bx%7D}}", r.prefix);
    let mut conn = r.conn.clone();
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "lease is the key's expiry: {ttl}");
    match store.claim("evt_{x}", Duration::from_secs(60)).await.unwrap() {
        Claim::InProgress { retry_after } => assert!(retry_after <= Duration::from_secs(60)),
        other => panic!("expected in progress, got {other:?}"),
    }
    assert!(matches!(store.claim("evt_(x)", Duration::from_secs(60)).await.unwrap(), Claim::Acquired(_)));
    // A stale token cannot release the claim; the holder's can; completion keeps it for the retention.
    let Claim::Acquired(stale) = store.claim("evt_other", Duration::from_secs(60)).await.unwrap() else {
        panic!("other claim")
    };
    store.release("evt_{x}", &stale).await.unwrap();
    assert!(matches!(store.claim("evt_{x}", Duration::from_secs(60)).await.unwrap(), Claim::InProgress { .. }));
    store.complete("evt_{x}", &token, Duration::from_secs(7 * 24 * 3600)).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl > 6 * 24 * 3600 * 1000, "retention: {ttl}");
    assert_eq!(store.claim("evt_{x}", Duration::from_secs(60)).await.unwrap(), Claim::Done);
    r.cleanup().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holder_s_claim_expires_after_the_lease() {
    let store = MemoryDeliveryStore::new();
    let h = Arc::new(Handler::default());
    let app = app(store.clone(), h.clone());
    // A process claimed the event and died: nobody releases it.
    let Claim::Acquired(_) = store.claim("msg_crash", palisade_webhook::DEFAULT_LEASE).await.unwrap() else {
        panic!("claim")
    };
    let res = app.clone().oneshot(signed("msg_crash", NOW, b"{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], palisade_webhook::DEFAULT_LEASE.as_secs().to_string().as_str());
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
    tokio::time::advance(palisade_webhook::DEFAULT_LEASE).await;
    assert_eq!(app.oneshot(signed("msg_crash", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "the redelivery after the lease ran the handler");
}

#[tokio::test]
async fn a_delivery_dropped_mid_handler_releases_its_claim() {
    let store = MemoryDeliveryStore::new();
    let h = Arc::new(Handler { gate: Some(Semaphore::new(0)), ..Handler::default() });
    let app = app(store.clone(), h.clone());
    let task = tokio::spawn(app.clone().oneshot(signed("msg_drop", NOW, b"{}")));
    while h.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;
    // The release runs on a spawned task; let it.
    for _ in 0..100 {
        if store.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(store.is_empty(), "the dropped delivery released its claim");
    h.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(app.oneshot(signed("msg_drop", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
}

/// A store that is down.
#[derive(Clone)]
struct DownStore;

impl DeliveryStore for DownStore {
    async fn claim_with(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<Claim, PaymentError> {
        Err(PaymentError::store_unavailable("redis: connection refused"))
    }
    async fn renew(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<bool, PaymentError> {
        Err(PaymentError::store_unavailable("down"))
    }
    async fn complete(&self, _: &str, _: &ClaimToken, _: Duration) -> Result<(), PaymentError> {
        Err(PaymentError::store_unavailable("down"))
    }
    async fn release(&self, _: &str, _: &ClaimToken) -> Result<(), PaymentError> {
        Err(PaymentError::store_unavailable("down"))
    }
}

#[tokio::test]
async fn store_down_fails_closed_by_default_and_open_when_asked() {
    let h = Arc::new(Handler::default());
    let (status, p) = problem(app(DownStore, h.clone()).oneshot(signed("msg_down", NOW, b"{}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["type"], "urn:palisade:problem:store_unavailable");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);

    let layer = WebhookLayer::builder(verifier()).dedup(DownStore).failure_policy(FailurePolicy::FailOpen).build();
    let open = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());
    assert_eq!(open.oneshot(signed("msg_down", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stripe_events_are_deduplicated_by_the_event_json_id() {
    let h = Arc::new(Handler::default());
    let v = Verifier::builder(Stripe).secret("whsec_s").clock(ManualClock::new(NOW)).build().unwrap();
    let layer = WebhookLayer::builder(v).dedup(MemoryDeliveryStore::new()).build();
    let app = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());
    let req = |body: &'static str, ts: i64| {
        let headers = Signer::new(Stripe, "whsec_s")
            .unwrap()
            .headers(&Message { id: None, timestamp: ts, body: body.as_bytes() })
            .unwrap();
        let mut req = Request::post("/hook").body(Body::from(body)).unwrap();
        req.headers_mut().extend(headers);
        req
    };
    // Stripe re-signs each attempt with a new timestamp; the event id is what identifies it.
    assert_eq!(app.clone().oneshot(req(r#"{"id":"evt_42"}"#, NOW)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.clone().oneshot(req(r#"{"id":"evt_42"}"#, NOW + 5)).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.seen.lock()[0].0, "evt_42");
    let (status, p) = problem(app.oneshot(req(r#"{"object":"event"}"#, NOW)).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(p["type"], "urn:palisade:problem:webhook_event_id_missing");
}

#[tokio::test]
async fn redis_down_answers_503_and_the_lazy_store_connects_once_redis_is_there() {
    let h = Arc::new(Handler::default());
    let down = palisade_webhook::RedisDeliveryStore::open(&palisade_testkit::unreachable_redis_url()).unwrap();
    let (status, p) = problem(app(down, h.clone()).oneshot(signed("msg_rd", NOW, b"{}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["type"], "urn:palisade:problem:store_unavailable");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0, "fail closed: the handler did not run");

    let Some(r) = palisade_testkit::redis("webhook_lazy_open").await else { return };
    let lazy = palisade_webhook::RedisDeliveryStore::open(&r.url).unwrap().with_prefix(r.prefix.clone());
    assert_eq!(
        app(lazy.clone(), h.clone()).oneshot(signed("msg_rd", NOW, b"{}")).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(lazy.claim("msg_rd", Duration::from_secs(60)).await.unwrap(), Claim::Done);
    r.cleanup().await;
}

/// A handler that takes `delay`, counting its calls.
fn slow_app<D: DeliveryStore>(store: D, lease: Duration, delay: Duration, calls: Arc<AtomicUsize>) -> Router {
    let layer = WebhookLayer::builder(verifier()).dedup(store).lease(lease).build();
    let handler = move || {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            StatusCode::OK
        }
    };
    Router::new().route("/hook", post(handler)).route_layer(layer)
}

/// Issue 16, finding 4: a handler ten leases long keeps its claim (the layer renews it), so the sender's retry
/// in the middle is answered "in progress" and never runs the handler a second time.
#[tokio::test(start_paused = true)]
async fn a_handler_of_many_leases_keeps_its_claim() {
    let lease = Duration::from_secs(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(MemoryDeliveryStore::new(), lease, lease * 10, calls.clone());
    let first = tokio::spawn(app.clone().oneshot(signed("msg_long", NOW, b"{}")));
    tokio::time::sleep(lease * 5).await;
    let (status, p) = problem(app.clone().oneshot(signed("msg_long", NOW, b"{}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:webhook_in_progress");
    assert!(p["retry_after"].as_u64().unwrap() <= 1, "Retry-After is the lease left: {p}");
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Issue 16, finding 3: Redis stalls past its response timeout while an event is claimed: the delivery gets 503,
/// the claim lands when Redis resumes, and the layer's release (sent after it on the same connection) undoes it,
/// so the sender's redelivery after `Retry-After` is handled instead of "in progress" for a whole lease.
#[tokio::test]
async fn a_claim_that_timed_out_does_not_block_the_redelivery() {
    let Some(r) = palisade_testkit::redis("webhook_stalled_claim").await else { return };
    let proxy = palisade_testkit::StallProxy::start(&r.url).await;
    let store =
        palisade_webhook::RedisDeliveryStore::connect(&proxy.url()).await.unwrap().with_prefix(r.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(store, palisade_webhook::DEFAULT_LEASE, Duration::ZERO, calls.clone());
    assert_eq!(app.clone().oneshot(signed("msg_warm", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);

    proxy.stall();
    let refused = app.clone().oneshot(signed("msg_stalled", NOW, b"{}")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;

    let redelivered = app.clone().oneshot(signed("msg_stalled", NOW, b"{}")).await.unwrap();
    assert_eq!(redelivered.status(), StatusCode::OK, "handled, not in progress");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the warm-up and the redelivery");
    r.cleanup().await;
}

/// Issue 16, finding 15: a GET (or any method but POST) on the webhook route is 405 with `Allow: POST`, not a 400
/// about a missing signature; the handler never runs.
#[tokio::test]
async fn other_methods_get_405_with_allow_post() {
    let h = Arc::new(Handler::default());
    let layer = WebhookLayer::builder(verifier()).dedup(MemoryDeliveryStore::new()).build();
    let app = Router::new().route("/hook", axum::routing::any(handle)).route_layer(layer).with_state(h.clone());
    for method in [http::Method::GET, http::Method::PUT, http::Method::DELETE] {
        let req = Request::builder().method(method.clone()).uri("/hook").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.headers()[header::ALLOW], "POST", "{method}");
        let (status, p) = problem(res).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(p["type"], "urn:palisade:problem:method_not_allowed");
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
}
