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
use palisade_core::FailurePolicy;
use palisade_store::StoreError;
use palisade_store::lease::{Claim, Fingerprint, Hold, Payload, Record, StoreFuture};
use palisade_webhook::{
    EventId, GitHub, LeaseStore, ManualClock, MemoryStore, Message, Signer, StandardWebhooks, Stripe, Verified,
    Verifier, WebhookLayer,
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

fn app(store: impl LeaseStore, h: Arc<Handler>) -> Router {
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
    let app = app(MemoryStore::new(), h.clone());

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
async fn hundred_concurrent_deliveries_run_the_handler_once(store: impl LeaseStore) {
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
async fn failed_handler_runs_again_on_redelivery(store: impl LeaseStore) {
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
    hundred_concurrent_deliveries_run_the_handler_once(MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_failed_handler_runs_again_on_redelivery() {
    failed_handler_runs_again_on_redelivery(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_hundred_concurrent_deliveries_run_the_handler_once() {
    let Some(r) = palisade_testkit::redis("webhook_hundred_concurrent").await else { return };
    let store = palisade_webhook::RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    hundred_concurrent_deliveries_run_the_handler_once(store).await;
    r.cleanup().await;
}

async fn postgres_store(name: &str) -> Option<(palisade_testkit::PostgresTest, palisade_webhook::PostgresStore)> {
    let pg = palisade_testkit::postgres(name).await?;
    let store = palisade_webhook::PostgresStore::new(pg.pool.clone()).with_prefix(&pg.prefix()).unwrap();
    store.migrate().await.unwrap();
    Some((pg, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_hundred_concurrent_deliveries_run_the_handler_once() {
    let Some((pg, store)) = postgres_store("webhook_hundred").await else { return };
    hundred_concurrent_deliveries_run_the_handler_once(store).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_failed_handler_runs_again_on_redelivery() {
    let Some((pg, store)) = postgres_store("webhook_failed").await else { return };
    failed_handler_runs_again_on_redelivery(store).await;
    pg.cleanup().await;
}

/// Delivery records on PostgreSQL outlive the process: a second layer on a new pool (a restarted instance)
/// answers the redelivery of a handled event as a duplicate.
#[tokio::test]
async fn postgres_delivery_records_survive_a_new_pool() {
    let Some((pg, store)) = postgres_store("webhook_restart").await else { return };
    let h = Arc::new(Handler::default());
    assert_eq!(app(store, h.clone()).oneshot(signed("msg_pg", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    let restarted = palisade_webhook::PostgresStore::connect(&pg.url).await.unwrap().with_prefix(&pg.prefix()).unwrap();
    let again = app(restarted, h.clone()).oneshot(signed("msg_pg", NOW, b"{}")).await.unwrap();
    assert_eq!(again.headers()[palisade_webhook::DUPLICATE_HEADER], "done");
    assert_eq!(h.calls.load(Ordering::SeqCst), 1);
    pg.cleanup().await;
}

#[tokio::test]
async fn redis_failed_handler_runs_again_on_redelivery() {
    let Some(r) = palisade_testkit::redis("webhook_failed_handler").await else { return };
    let store = palisade_webhook::RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    failed_handler_runs_again_on_redelivery(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn redis_keys_are_hash_tagged_and_expire() {
    let Some(r) = palisade_testkit::redis("webhook_keys").await else { return };
    let store = palisade_webhook::RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    // The layer's record for event `evt_{x}`.
    let (id, minute) = ("webhook:evt_{x}", Duration::from_secs(60));
    let none = Fingerprint::NONE;
    let Claim::Acquired { hold, .. } = store.claim(id, &none, minute, minute).await.unwrap() else {
        panic!("first claim acquires")
    };
    // Braces in an event id are escaped, so the hash tag stays whole and `evt_(x)` is another event.
    let key = format!("{}{{webhook:evt_%7Bx%7D}}", r.prefix);
    let mut conn = r.conn.clone();
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "the claim's retention is the key's expiry: {ttl}");
    match store.claim(id, &none, minute, minute).await.unwrap() {
        Claim::Held { lease_remaining } => assert!(lease_remaining <= minute),
        other => panic!("expected in progress, got {other:?}"),
    }
    assert!(matches!(store.claim("webhook:evt_(x)", &none, minute, minute).await.unwrap(), Claim::Acquired { .. }));
    // A stale token cannot release the claim; the holder's can; completion keeps it for the retention.
    let Claim::Acquired { hold: other, .. } = store.claim("webhook:evt_other", &none, minute, minute).await.unwrap()
    else {
        panic!("other claim")
    };
    let stale = Hold::new(id, other.token());
    assert!(!store.release(&stale).await.unwrap());
    assert!(!store.abandon(id, 7).await.unwrap(), "another attempt's claim is left alone");
    assert!(!store.renew(&stale, minute).await.unwrap());
    assert!(store.renew(&hold, minute).await.unwrap());
    assert!(matches!(store.claim(id, &none, minute, minute).await.unwrap(), Claim::Held { .. }));
    assert!(store.complete(&hold, Payload::Bytes(Bytes::new()), Duration::from_secs(7 * 24 * 3600)).await.unwrap());
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl > 6 * 24 * 3600 * 1000, "retention: {ttl}");
    assert!(matches!(store.claim(id, &none, minute, minute).await.unwrap(), Claim::Done { .. }));
    r.cleanup().await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_holder_s_claim_expires_after_the_lease() {
    let store = MemoryStore::new();
    let h = Arc::new(Handler::default());
    let app = app(store.clone(), h.clone());
    // A process claimed the event and died: nobody releases it.
    let (lease, retention) = (palisade_webhook::DEFAULT_LEASE, palisade_webhook::DEFAULT_RETENTION);
    let Claim::Acquired { .. } = store.claim("webhook:msg_crash", &Fingerprint::NONE, lease, retention).await.unwrap()
    else {
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
    let store = MemoryStore::new();
    let h = Arc::new(Handler { gate: Some(Semaphore::new(0)), ..Handler::default() });
    let app = app(store.clone(), h.clone());
    let task = tokio::spawn(app.clone().oneshot(signed("msg_drop", NOW, b"{}")));
    while h.calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;
    let released =
        |r: Option<Record>| matches!(r, Some(Record::Held { lease_remaining, .. }) if lease_remaining.is_zero());
    assert!(released(store.get("webhook:msg_drop").await.unwrap()), "the dropped delivery released its claim");
    h.gate.as_ref().unwrap().add_permits(1);
    assert_eq!(app.oneshot(signed("msg_drop", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
}

/// A store that is down.
#[derive(Clone)]
struct DownStore;

impl LeaseStore for DownStore {
    fn claim_as<'a>(
        &'a self,
        _: &'a str,
        _: &'a Fingerprint,
        _: Duration,
        _: Duration,
        _: u64,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::ready(Err(StoreError::new("redis: connection refused")))
    }
    fn complete<'a>(&'a self, _: &'a Hold, _: Payload, _: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Err(StoreError::new("down")))
    }
    fn release<'a>(&'a self, _: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Err(StoreError::new("down")))
    }
    fn renew<'a>(&'a self, _: &'a Hold, _: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Err(StoreError::new("down")))
    }
    fn forget<'a>(&'a self, _: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::ready(Err(StoreError::new("down")))
    }
    fn get<'a>(&'a self, _: &'a str) -> StoreFuture<'a, Option<Record>> {
        StoreFuture::ready(Err(StoreError::new("down")))
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
    let layer = WebhookLayer::builder(v).dedup(MemoryStore::new()).build();
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
    let down = palisade_webhook::RedisStore::open(&palisade_testkit::unreachable_redis_url()).unwrap();
    let (status, p) = problem(app(down, h.clone()).oneshot(signed("msg_rd", NOW, b"{}")).await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["type"], "urn:palisade:problem:store_unavailable");
    assert_eq!(h.calls.load(Ordering::SeqCst), 0, "fail closed: the handler did not run");

    let Some(r) = palisade_testkit::redis("webhook_lazy_open").await else { return };
    let lazy = palisade_webhook::RedisStore::open(&r.url).unwrap().with_prefix(r.prefix.clone());
    assert_eq!(
        app(lazy.clone(), h.clone()).oneshot(signed("msg_rd", NOW, b"{}")).await.unwrap().status(),
        StatusCode::OK
    );
    let minute = Duration::from_secs(60);
    assert!(matches!(
        lazy.claim("webhook:msg_rd", &Fingerprint::NONE, minute, minute).await.unwrap(),
        Claim::Done { .. }
    ));
    r.cleanup().await;
}

/// A handler that takes `delay`, counting its calls.
fn slow_app(store: impl LeaseStore, lease: Duration, delay: Duration, calls: Arc<AtomicUsize>) -> Router {
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

/// Issue 16, finding 4: a handler ten leases long keeps its claim (the layer renews it), so the sender's retries
/// all along are answered "in progress", with a Retry-After no longer than the lease, and never run the handler a
/// second time.
#[tokio::test(start_paused = true)]
async fn a_handler_of_many_leases_keeps_its_claim() {
    let lease = Duration::from_secs(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(MemoryStore::new(), lease, lease * 10, calls.clone());
    let first = tokio::spawn(app.clone().oneshot(signed("msg_long", NOW, b"{}")));
    for _ in 0..19 {
        tokio::time::sleep(lease / 2).await;
        let (status, p) = problem(app.clone().oneshot(signed("msg_long", NOW, b"{}")).await.unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
        assert_eq!(p["type"], "urn:palisade:problem:webhook_in_progress");
        assert!(p["retry_after"].as_u64().unwrap() <= 1, "Retry-After is the lease left: {p}");
    }
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let again = app.oneshot(signed("msg_long", NOW, b"{}")).await.unwrap();
    assert_eq!(again.headers()[palisade_webhook::DUPLICATE_HEADER], "done");
}

/// A memory store whose renewals, releases or completions can be made to fail, as a store that is briefly
/// unreachable would.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryStore,
    /// Number of upcoming renewals that fail.
    failing_renewals: Arc<AtomicUsize>,
    releases_fail: Arc<std::sync::atomic::AtomicBool>,
    completions_fail: Arc<std::sync::atomic::AtomicBool>,
}

fn timed_out<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    StoreFuture::ready(Err(StoreError::new("redis: timed out")))
}

impl LeaseStore for Flaky {
    fn claim_as<'a>(
        &'a self,
        id: &'a str,
        fp: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        self.inner.claim_as(id, fp, lease, ttl, attempt)
    }
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        if self.failing_renewals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return timed_out();
        }
        self.inner.renew(hold, lease)
    }
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, retention: Duration) -> StoreFuture<'a, bool> {
        if self.completions_fail.load(Ordering::SeqCst) {
            return timed_out();
        }
        self.inner.complete(hold, response, retention)
    }
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        if self.releases_fail.load(Ordering::SeqCst) {
            return timed_out();
        }
        self.inner.release(hold)
    }
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        self.inner.forget(hold)
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        self.inner.get(key)
    }
}

/// Issue 16, finding 4: a delivery dropped mid-handler whose release fails too (the store is down) blocks its
/// event for at most one lease after the drop: its renewals stopped with it.
#[tokio::test(start_paused = true)]
async fn a_dropped_holder_blocks_its_event_for_at_most_one_lease() {
    let lease = Duration::from_secs(3);
    let store = Flaky::default();
    store.releases_fail.store(true, Ordering::SeqCst);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let layer = WebhookLayer::builder(verifier()).dedup(store).lease(lease).build();
    // The first delivery's handler never ends; later ones answer at once.
    let handler = move || {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            StatusCode::OK
        }
    };
    let app = Router::new().route("/hook", post(handler)).route_layer(layer);

    let first = tokio::spawn(app.clone().oneshot(signed("msg_dropped", NOW, b"{}")));
    // Five renewals (every second) keep the claim alive past its first lease...
    tokio::time::sleep(Duration::from_millis(5500)).await;
    first.abort();
    let _ = first.await;
    // ...and none after the drop: the claim renewed at 5 s ends at 8 s, within one lease of the drop.
    tokio::time::sleep(lease - Duration::from_secs(1)).await;
    let res = app.clone().oneshot(signed("msg_dropped", NOW, b"{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "still held until the lease ends");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let res = app.clone().oneshot(signed("msg_dropped", NOW, b"{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "free one lease after the drop");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Issue 16, finding 4: renewals every third of the lease absorb one failed renewal; two in a row lose the claim
/// (the third comes as the lease ends), a redelivery then runs the handler, and fencing keeps the late holder's
/// completion from overwriting the new claim.
#[tokio::test(start_paused = true)]
async fn one_failed_renewal_is_absorbed_two_lose_the_claim_to_a_fenced_takeover() {
    let lease = Duration::from_secs(3);
    let store = Flaky::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(store.clone(), lease, Duration::from_secs(5), calls.clone());
    let deliver = |id: &'static str| app.clone().oneshot(signed(id, NOW, b"{}"));

    // One failed renewal (at 1 s): the one at 2 s renews in time; the handler (5 s) runs once.
    store.failing_renewals.store(1, Ordering::SeqCst);
    let first = tokio::spawn(deliver("msg_hiccup"));
    for at in [2500, 1500] {
        tokio::time::sleep(Duration::from_millis(at)).await;
        assert_eq!(deliver("msg_hiccup").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(deliver("msg_hiccup").await.unwrap().headers()[palisade_webhook::DUPLICATE_HEADER], "done");

    // Two failed renewals (at 1 s and 2 s): the lease ends at 3 s and a redelivery at 3.5 s takes it over.
    calls.store(0, Ordering::SeqCst);
    store.failing_renewals.store(2, Ordering::SeqCst);
    let late = tokio::spawn(deliver("msg_outage"));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let takeover = tokio::spawn(deliver("msg_outage"));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // The late holder finished at 5 s; its completion was refused, so the new holder still holds the event.
    assert_eq!(late.await.unwrap().unwrap().status(), StatusCode::OK);
    let (status, p) = problem(deliver("msg_outage").await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:webhook_in_progress");
    assert_eq!(takeover.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the lost claim let the redelivery run the handler");
    assert_eq!(deliver("msg_outage").await.unwrap().headers()[palisade_webhook::DUPLICATE_HEADER], "done");
}

/// Issue 16, finding 18: when the store fails after the handler ran, the log says the handler ran (and what
/// happens next), never that nothing was executed.
#[tokio::test(flavor = "current_thread")]
async fn logs_say_the_handler_ran_when_the_store_fails_after_it() {
    let logs = palisade_testkit::LogCapture::new();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let store = Flaky::default();
    store.completions_fail.store(true, Ordering::SeqCst);
    store.releases_fail.store(true, Ordering::SeqCst);
    let h = Arc::new(Handler { fail_next: AtomicUsize::new(1), ..Handler::default() });
    let app = app(store, h.clone());
    assert_eq!(
        app.clone().oneshot(signed("msg_log", NOW, b"{}")).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(app.oneshot(signed("msg_log2", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2);
    let text = logs.contents();
    let release = text.lines().find(|l| l.contains("release_failed")).expect("the failed release is logged");
    assert!(release.contains("the handler ran and failed"), "{release}");
    let complete = text.lines().find(|l| l.contains("store_failed")).expect("the failed completion is logged");
    assert!(complete.contains("the handler ran and succeeded"), "{complete}");
    assert!(complete.contains("a redelivery after that runs the handler again"), "{complete}");
    for line in [release, complete] {
        assert!(!line.contains("not attempted") && !line.contains("not run"), "{line}");
    }
}

/// Issue 16, finding 3: Redis stalls past the store's response timeout while an event is claimed: the delivery
/// gets 503 with a short Retry-After; the claim lands when Redis resumes, and the layer's undo (sent after it on
/// the same connection, timed out too but still queued) removes it, so the sender's redelivery after
/// `Retry-After` runs the handler, once, instead of "in progress" for a whole lease.
#[tokio::test]
async fn a_claim_that_timed_out_does_not_block_the_redelivery() {
    let Some(r) = palisade_testkit::redis("webhook_stalled_claim").await else { return };
    let proxy = palisade_testkit::StallProxy::start(&r.url).await;
    let timeout = Duration::from_millis(300);
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(timeout));
    let conn = redis::aio::ConnectionManager::new_with_config(redis::Client::open(proxy.url()).unwrap(), config)
        .await
        .unwrap();
    let store = palisade_webhook::RedisStore::new(conn).with_prefix(r.prefix.clone());
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(store.clone(), palisade_webhook::DEFAULT_LEASE, Duration::ZERO, calls.clone());
    assert_eq!(app.clone().oneshot(signed("msg_warm", NOW, b"{}")).await.unwrap().status(), StatusCode::OK);

    proxy.stall();
    let asked = std::time::Instant::now();
    let refused = app.clone().oneshot(signed("msg_stalled", NOW, b"{}")).await.unwrap();
    assert!(asked.elapsed() < Duration::from_millis(1500), "answered after the 300 ms timeout: {:?}", asked.elapsed());
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    let (status, p) = problem(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{p}");
    assert_eq!(p["type"], "urn:palisade:problem:store_unavailable");
    assert_eq!(retry_after, 1, "a short Retry-After, not a lease");
    // Redis stays stalled past the undo's own timeout too; then it runs the claim and everything after it.
    tokio::time::sleep(timeout * 2).await;
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;

    let redelivered = app.clone().oneshot(signed("msg_stalled", NOW, b"{}")).await.unwrap();
    assert_eq!(redelivered.status(), StatusCode::OK, "handled, not in progress");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the warm-up and the redelivery");
    let again = app.oneshot(signed("msg_stalled", NOW, b"{}")).await.unwrap();
    assert_eq!(again.headers()[palisade_webhook::DUPLICATE_HEADER], "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "exactly once");
    r.cleanup().await;
}

/// A memory store whose next claim lands but answers an error (a stalled store's timeout), and whose undos can be
/// made to fail.
#[derive(Clone, Default)]
struct LosesAnswers {
    inner: MemoryStore,
    lose_next_claim: Arc<std::sync::atomic::AtomicBool>,
    /// Number of upcoming undos that fail.
    failing_abandons: Arc<AtomicUsize>,
}

impl LeaseStore for LosesAnswers {
    fn claim_as<'a>(
        &'a self,
        id: &'a str,
        fp: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        let claim = self.inner.claim_as(id, fp, lease, ttl, attempt);
        if self.lose_next_claim.swap(false, Ordering::SeqCst) {
            // The memory store acted at once; the answer is what gets lost.
            drop(claim);
            return timed_out();
        }
        claim
    }
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        self.inner.renew(hold, lease)
    }
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, retention: Duration) -> StoreFuture<'a, bool> {
        self.inner.complete(hold, response, retention)
    }
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        self.inner.release(hold)
    }
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        self.inner.forget(hold)
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        self.inner.get(key)
    }
    fn abandon<'a>(&'a self, id: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        if self.failing_abandons.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return StoreFuture::ready(Err(StoreError::new("redis: connection reset")));
        }
        self.inner.abandon(id, attempt)
    }
}

/// Issue 16, finding 3: a claim that landed although its answer was lost is undone; an undo that fails is tried
/// again, so the redelivery after `Retry-After: 1` is handled. When every undo fails, the event is blocked for
/// one lease at most, and the redelivery meanwhile is told the truth (503 in progress, the lease left).
#[tokio::test(start_paused = true)]
async fn a_lost_claim_is_undone_even_when_the_first_undos_fail() {
    let store = LosesAnswers::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = slow_app(store.clone(), palisade_webhook::DEFAULT_LEASE, Duration::ZERO, calls.clone());
    let deliver = |id: &'static str| app.clone().oneshot(signed(id, NOW, b"{}"));

    store.lose_next_claim.store(true, Ordering::SeqCst);
    store.failing_abandons.store(2, Ordering::SeqCst);
    let refused = deliver("msg_lost").await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deliver("msg_lost").await.unwrap().status(), StatusCode::OK, "the third undo freed the event");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    store.lose_next_claim.store(true, Ordering::SeqCst);
    store.failing_abandons.store(usize::MAX, Ordering::SeqCst);
    assert_eq!(deliver("msg_stuck").await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, p) = problem(deliver("msg_stuck").await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(p["type"], "urn:palisade:problem:webhook_in_progress");
    assert_eq!(p["retry_after"], 8, "the lease left: {p}");
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(deliver("msg_stuck").await.unwrap().status(), StatusCode::OK, "free after one lease");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Issue 16, finding 15: a GET (or any method but POST) on the webhook route is 405 with `Allow: POST`, not a 400
/// about a missing signature; the handler never runs.
#[tokio::test]
async fn other_methods_get_405_with_allow_post() {
    let h = Arc::new(Handler::default());
    let layer = WebhookLayer::builder(verifier()).dedup(MemoryStore::new()).build();
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

/// Issue 16, finding 13: the event id must be one value for deduplication and for the handler. Per scheme, the
/// event id is one member or header, and naming it twice is refused (400, the handler never runs): Stripe's is
/// the body's top-level `"id"` (a nested `"id"` is another object's); Standard Webhooks' is `webhook-id` and
/// GitHub's `X-GitHub-Delivery`, so for them a body with two `"id"` members is the handler's business.
#[tokio::test]
async fn an_ambiguous_event_id_is_refused_under_every_scheme() {
    async fn send(layer: WebhookLayer, req: Request<Body>) -> (Response<Body>, usize) {
        let h = Arc::new(Handler::default());
        let app = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());
        let res = app.oneshot(req).await.unwrap();
        let calls = h.calls.load(Ordering::SeqCst);
        (res, calls)
    }
    let dedup = |v: Verifier| WebhookLayer::builder(v).dedup(MemoryStore::new()).build();

    // Stripe: two top-level ids, however spelled, are refused; a nested id is not the event's.
    let stripe = || Verifier::builder(Stripe).secret("whsec_s").clock(ManualClock::new(NOW)).build().unwrap();
    let stripe_req = |body: &'static str| {
        let headers = Signer::new(Stripe, "whsec_s").unwrap().headers(&Message {
            id: None,
            timestamp: NOW,
            body: body.as_bytes(),
        });
        let mut req = Request::post("/hook").body(Body::from(body)).unwrap();
        req.headers_mut().extend(headers.unwrap());
        req
    };
    for body in [r#"{"id":"evt_1","type":"charge.succeeded","id":"evt_2"}"#, r#"{"id":"evt_1","i\u0064":"evt_2"}"#] {
        let (res, calls) = send(dedup(stripe()), stripe_req(body)).await;
        let (status, p) = problem(res).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(p["type"], "urn:palisade:problem:webhook_event_id_ambiguous");
        assert!(p["detail"].as_str().unwrap().starts_with("event_id_ambiguous: "), "{p}");
        assert_eq!(calls, 0);
    }
    let (res, calls) =
        send(dedup(stripe()), stripe_req(r#"{"id":"evt_1","data":{"object":{"id":"ch_1","id":"x"}}}"#)).await;
    assert_eq!((res.status(), calls), (StatusCode::OK, 1), "nested ids are not the event id");

    // Standard Webhooks: the id is the webhook-id header; two of them are refused, two body ids are not.
    let (res, calls) = send(dedup(verifier()), signed("msg_1", NOW, br#"{"id":"a","id":"b"}"#)).await;
    assert_eq!((res.status(), calls), (StatusCode::OK, 1));
    let mut twice = signed("msg_1", NOW, b"{}");
    twice.headers_mut().append("webhook-id", http::HeaderValue::from_static("msg_2"));
    let (res, calls) = send(dedup(verifier()), twice).await;
    let (status, p) = problem(res).await;
    assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("header_malformed"), "{p}");

    // GitHub: the id is X-GitHub-Delivery; two of them are refused, two body ids are not.
    let github = || Verifier::builder(GitHub).secret("gh_secret").build().unwrap();
    let github_req = |body: &'static [u8], deliveries: &[&'static str]| {
        let headers =
            Signer::new(GitHub, "gh_secret").unwrap().headers(&Message { id: None, timestamp: NOW, body }).unwrap();
        let mut req = Request::post("/hook").body(Body::from(body)).unwrap();
        req.headers_mut().extend(headers);
        for d in deliveries {
            req.headers_mut().append("x-github-delivery", http::HeaderValue::from_static(d));
        }
        req
    };
    let (res, calls) = send(dedup(github()), github_req(br#"{"id":1,"id":2}"#, &["d-1"])).await;
    assert_eq!((res.status(), calls), (StatusCode::OK, 1));
    let (res, calls) = send(dedup(github()), github_req(b"{}", &["d-1", "d-2"])).await;
    let (status, p) = problem(res).await;
    assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("x-github-delivery"), "{p}");
}

/// A GitHub delivery: `X-Hub-Signature-256` over `body`, and `X-GitHub-Delivery: delivery` when given.
fn github_req(secret: &str, delivery: Option<&str>, body: &[u8]) -> Request<Body> {
    let headers = Signer::new(GitHub, secret).unwrap().headers(&Message { id: None, timestamp: 0, body }).unwrap();
    let mut req = Request::post("/hook").body(Body::from(body.to_vec())).unwrap();
    req.headers_mut().extend(headers);
    if let Some(d) = delivery {
        req.headers_mut().insert("x-github-delivery", http::HeaderValue::from_str(d).unwrap());
    }
    req
}

/// Review finding (HIGH): GitHub's signature covers the body only, not `X-GitHub-Delivery`, and GitHub signs no
/// timestamp. Whoever captured one signed delivery can send it again with a fresh delivery id (or none): that
/// must be a duplicate, not a new event, for the whole retention. A redelivery from GitHub (same body, same id)
/// is a duplicate too, and another event (another body) is handled.
async fn a_github_replay_with_a_fresh_delivery_id_is_a_duplicate(store: impl LeaseStore) {
    let h = Arc::new(Handler::default());
    let v = Verifier::builder(GitHub).secret("gh_secret").build().unwrap();
    let layer = WebhookLayer::builder(v).dedup(store).build();
    let app = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());
    let body = br#"{"action":"completed","check_run":{"id":7}}"#;
    let deliver = |delivery: Option<&str>, body: &[u8]| app.clone().oneshot(github_req("gh_secret", delivery, body));

    assert_eq!(deliver(Some("d-1"), body).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.seen.lock()[0].0, "d-1", "the handler's EventId is still X-GitHub-Delivery");
    for replay in [Some("d-1"), Some("d-2"), Some("attacker-chosen-3"), None] {
        let res = deliver(replay, body).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{replay:?}");
        assert_eq!(res.headers()[palisade_webhook::DUPLICATE_HEADER], "done", "{replay:?}");
    }
    assert_eq!(h.calls.load(Ordering::SeqCst), 1, "a replay under a fresh delivery id did not run the handler");

    let other = br#"{"action":"completed","check_run":{"id":8}}"#;
    assert_eq!(deliver(Some("d-1"), other).await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.calls.load(Ordering::SeqCst), 2, "another body is another event");
}

#[tokio::test]
async fn memory_a_github_replay_with_a_fresh_delivery_id_is_a_duplicate() {
    a_github_replay_with_a_fresh_delivery_id_is_a_duplicate(MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_a_github_replay_with_a_fresh_delivery_id_is_a_duplicate() {
    let Some(r) = palisade_testkit::redis("webhook_github_replay").await else { return };
    let store = palisade_webhook::RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    a_github_replay_with_a_fresh_delivery_id_is_a_duplicate(store).await;
    r.cleanup().await;
}

/// Whatever an attacker can change in a captured delivery without breaking its signature, the handler runs
/// once: under every scheme, deduplication keys on something the signature covers (Stripe: the event `id` in
/// the signed body; Standard Webhooks: the signed `webhook-id`; GitHub: the signed body itself).
#[tokio::test]
async fn a_replayed_delivery_runs_the_handler_once_under_every_scheme() {
    async fn run(v: Verifier, original: Request<Body>, replays: Vec<Request<Body>>) -> usize {
        let h = Arc::new(Handler::default());
        let layer = WebhookLayer::builder(v).dedup(MemoryStore::new()).build();
        let app = Router::new().route("/hook", post(handle)).route_layer(layer).with_state(h.clone());
        assert_eq!(app.clone().oneshot(original).await.unwrap().status(), StatusCode::OK);
        for replay in replays {
            let _ = app.clone().oneshot(replay).await.unwrap();
        }
        h.calls.load(Ordering::SeqCst)
    }
    // Stripe: the only unsigned freedom is sending it again inside the window.
    let stripe = Verifier::builder(Stripe).secret("whsec_s").clock(ManualClock::new(NOW)).build().unwrap();
    let stripe_req = || {
        let body = br#"{"id":"evt_replay"}"#;
        let headers =
            Signer::new(Stripe, "whsec_s").unwrap().headers(&Message { id: None, timestamp: NOW, body }).unwrap();
        let mut req = Request::post("/hook").body(Body::from(&body[..])).unwrap();
        req.headers_mut().extend(headers);
        req
    };
    assert_eq!(run(stripe, stripe_req(), vec![stripe_req(), stripe_req()]).await, 1, "stripe");
    // Standard Webhooks: a fresh webhook-id breaks the signature.
    let mut fresh_id = signed("msg_replay", NOW, b"{}");
    fresh_id.headers_mut().insert("webhook-id", http::HeaderValue::from_static("msg_fresh"));
    let replays = vec![signed("msg_replay", NOW, b"{}"), fresh_id];
    assert_eq!(run(verifier(), signed("msg_replay", NOW, b"{}"), replays).await, 1, "standard");
    // GitHub: a fresh X-GitHub-Delivery keeps the signature.
    let github = Verifier::builder(GitHub).secret("gh_secret").build().unwrap();
    let gh = |d: &str| github_req("gh_secret", Some(d), b"{\"zen\":\"x\"}");
    assert_eq!(run(github, gh("d-1"), vec![gh("d-1"), gh("d-2"), gh("d-3")]).await, 1, "github");
}

/// A Stripe delivery of `body` signed with `secret`.
fn stripe_req(secret: &str, body: &'static str) -> Request<Body> {
    let headers = Signer::new(Stripe, secret)
        .unwrap()
        .headers(&Message { id: None, timestamp: NOW, body: body.as_bytes() })
        .unwrap();
    let mut req = Request::post("/hook").body(Body::from(body)).unwrap();
    req.headers_mut().extend(headers);
    req
}

/// Review finding (LOW): two webhook endpoints sharing one store (two Stripe accounts, or one account's two
/// endpoints, which both receive the same `evt_…`) must not take each other's events for duplicates. Each gets a
/// namespace; an endpoint without one keeps the key of earlier versions, `webhook:<event id>`, so records written
/// before an upgrade are still found.
async fn namespaced_endpoints_share_a_store_without_meeting(store: impl LeaseStore + Clone) {
    let endpoint = |secret: &'static str, namespace: Option<&str>, h: Arc<Handler>| {
        let v = Verifier::builder(Stripe).secret(secret).clock(ManualClock::new(NOW)).build().unwrap();
        let mut b = WebhookLayer::builder(v).dedup(store.clone());
        if let Some(ns) = namespace {
            b = b.namespace(ns);
        }
        Router::new().route("/hook", post(handle)).route_layer(b.build()).with_state(h)
    };
    let (eu, us, plain) = (Arc::new(Handler::default()), Arc::new(Handler::default()), Arc::new(Handler::default()));
    let eu_app = endpoint("whsec_eu", Some("stripe-eu"), eu.clone());
    let us_app = endpoint("whsec_us", Some("stripe-us"), us.clone());
    let plain_app = endpoint("whsec_plain", None, plain.clone());
    let body = r#"{"id":"evt_shared","object":"event"}"#;
    for _ in 0..2 {
        assert_eq!(eu_app.clone().oneshot(stripe_req("whsec_eu", body)).await.unwrap().status(), StatusCode::OK);
        assert_eq!(us_app.clone().oneshot(stripe_req("whsec_us", body)).await.unwrap().status(), StatusCode::OK);
        assert_eq!(plain_app.clone().oneshot(stripe_req("whsec_plain", body)).await.unwrap().status(), StatusCode::OK);
    }
    let calls = |h: &Handler| h.calls.load(Ordering::SeqCst);
    assert_eq!((calls(&eu), calls(&us), calls(&plain)), (1, 1, 1), "each endpoint ran its event once");

    let done = |r: Option<Record>| matches!(r, Some(Record::Done { .. }));
    assert!(done(store.get("webhook9:stripe-eu:evt_shared").await.unwrap()));
    assert!(done(store.get("webhook9:stripe-us:evt_shared").await.unwrap()));
    assert!(done(store.get("webhook:evt_shared").await.unwrap()), "no namespace: the key of earlier versions");

    // A record an earlier version wrote (`webhook:<event id>`) is found by an endpoint without a namespace.
    let (lease, retention) = (palisade_webhook::DEFAULT_LEASE, palisade_webhook::DEFAULT_RETENTION);
    let Claim::Acquired { hold, .. } =
        store.claim("webhook:evt_before_upgrade", &Fingerprint::NONE, lease, retention).await.unwrap()
    else {
        panic!("claim")
    };
    assert!(store.complete(&hold, Payload::Bytes(Bytes::new()), retention).await.unwrap());
    let old = r#"{"id":"evt_before_upgrade"}"#;
    let res = plain_app.oneshot(stripe_req("whsec_plain", old)).await.unwrap();
    assert_eq!(res.headers()[palisade_webhook::DUPLICATE_HEADER], "done");
    assert_eq!(calls(&plain), 1);
}

#[tokio::test]
async fn memory_namespaced_endpoints_share_a_store_without_meeting() {
    namespaced_endpoints_share_a_store_without_meeting(MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_namespaced_endpoints_share_a_store_without_meeting() {
    let Some(r) = palisade_testkit::redis("webhook_namespaces").await else { return };
    let store = palisade_webhook::RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    namespaced_endpoints_share_a_store_without_meeting(store).await;
    let mut conn = r.conn.clone();
    let key = format!("{}{{webhook9:stripe-eu:evt_shared}}", r.prefix);
    let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(exists, "one hash-tagged key per namespaced record: {key}");
    r.cleanup().await;
}
