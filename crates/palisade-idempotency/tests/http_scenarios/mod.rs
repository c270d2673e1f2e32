//! The HTTP-mode scenarios, written once and run on every store: the memory store (tests/http.rs, under paused
//! time) and Redis (tests/http_redis.rs, through palisade-testkit, on real time). Each scenario takes the store its
//! layers share; none of them sleeps or depends on the clock.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use palisade_core::GatewayKey;
use palisade_idempotency::{
    Claim, Fingerprint, Hold, HttpIdempotencyLayer, HttpIdempotencyLayerBuilder, LeaseStore, MissingKey, NotExecuted,
    Payload, Record, StoreFuture,
};
use tokio::sync::Semaphore;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type App = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// A builder whose layer uses `store` (a clone of it: clones of a store share its records).
fn on<S: LeaseStore + Clone>(store: &S) -> HttpIdempotencyLayerBuilder {
    HttpIdempotencyLayer::builder().store(store.clone())
}

/// The inner handler and what it went through: `calls` counts executions, `entered` gets a permit as each one
/// starts, and `gate` holds each one until it has a permit.
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    entered: Arc<Semaphore>,
    gate: Arc<Semaphore>,
}

impl Handler {
    /// A handler that answers at once.
    fn open() -> Self {
        Handler::with_gate(Semaphore::MAX_PERMITS)
    }

    /// A handler that waits in every execution until [`let_one_through`](Self::let_one_through).
    fn gated() -> Self {
        Handler::with_gate(0)
    }

    fn with_gate(permits: usize) -> Self {
        Handler {
            calls: Arc::new(AtomicUsize::new(0)),
            entered: Arc::new(Semaphore::new(0)),
            gate: Arc::new(Semaphore::new(permits)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until an execution has started.
    async fn entered(&self) {
        self.entered.acquire().await.unwrap().forget();
    }

    fn let_one_through(&self) {
        self.gate.add_permits(1);
    }

    /// The handler behind `layer`: it echoes the body, reports the gateway key it saw, sets a mix of headers, and
    /// answers with the status in `x-status` (default 201).
    fn app(&self, layer: HttpIdempotencyLayer) -> App {
        let me = self.clone();
        let inner = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                let n = me.calls.fetch_add(1, Ordering::SeqCst) + 1;
                me.entered.add_permits(1);
                me.gate.acquire().await.unwrap().forget();
                let status = req
                    .headers()
                    .get("x-status")
                    .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                    .map_or(StatusCode::CREATED, |s| StatusCode::from_u16(s).unwrap());
                let gk = req.extensions().get::<GatewayKey>().map(|k| k.0.to_string()).unwrap_or_default();
                let not_executed = req.headers().contains_key("x-not-executed");
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let mut res = Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::LOCATION, "/v1/charges/ch_1")
                    .header(header::SET_COOKIE, "session=abc")
                    .header(header::DATE, "Sun, 22 Nov 2026 05:00:00 GMT")
                    .header("ratelimit-remaining", "9")
                    .header("x-gateway-key", gk)
                    .header("x-execution", n.to_string())
                    .body(Body::from(body))
                    .unwrap();
                if not_executed {
                    res.extensions_mut().insert(NotExecuted);
                }
                Ok::<_, Infallible>(res)
            }
        });
        BoxCloneService::new(layer.layer(inner))
    }
}

fn post(key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post("/v1/charges?expand=source");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(body.into()).unwrap()
}

fn keyed(method: Method, uri: &str, key: &str, body: &'static str) -> Request<Body> {
    Request::builder().method(method).uri(uri).header("idempotency-key", key).body(Body::from(body)).unwrap()
}

fn is_replay(res: &Response<Body>) -> bool {
    match res.headers().get("idempotent-replayed") {
        None => false,
        Some(v) => {
            assert_eq!(v, "true", "the replay marker's value");
            true
        }
    }
}

async fn body_of(res: Response<Body>) -> bytes::Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

async fn problem_of(res: Response<Body>) -> serde_json::Value {
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    serde_json::from_slice(&body_of(res).await).unwrap()
}

pub async fn replay_carries_marker_and_only_allow_listed_headers<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let first = app.clone().oneshot(post(Some("k1"), "{\"amount\":\"1.00\"}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!is_replay(&first));
    assert!(first.headers().get(header::SET_COOKIE).is_some(), "the original response is untouched");
    assert_eq!(first.headers()["x-gateway-key"], "k1", "the handler sees the gateway key");
    let first_body = body_of(first).await;
    assert_eq!(first_body, "{\"amount\":\"1.00\"}");

    let again = app.clone().oneshot(post(Some("k1"), "{\"amount\":\"1.00\"}")).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let h2 = again.headers();
    assert_eq!(h2["idempotent-replayed"], "true");
    assert_eq!(h2[header::LOCATION], "/v1/charges/ch_1");
    assert_eq!(h2[header::CONTENT_TYPE], "application/octet-stream");
    for gone in ["set-cookie", "date", "ratelimit-remaining", "x-gateway-key", "x-execution"] {
        assert!(h2.get(gone).is_none(), "{gone} must not be replayed");
    }
    assert_eq!(body_of(again).await, first_body);
    assert_eq!(h.calls(), 1);
}

pub async fn configured_headers_are_stored_but_forbidden_ones_never<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let layer =
        on(&store).store_header(http::HeaderName::from_static("x-execution")).store_header(header::SET_COOKIE).build();
    let app = h.app(layer);
    let first = app.clone().oneshot(post(Some("k"), "x")).await.unwrap();
    assert_eq!(first.headers()[header::SET_COOKIE], "session=abc");
    let again = app.oneshot(post(Some("k"), "x")).await.unwrap();
    assert!(is_replay(&again));
    assert_eq!(again.headers()["x-execution"], "1", "the configured header is the first execution's");
    assert!(again.headers().get(header::SET_COOKIE).is_none(), "Set-Cookie is never stored, even when configured");
    assert_eq!(h.calls(), 1);
}

pub async fn non_utf8_bodies_fingerprint_and_replay_byte_for_byte<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let raw: &'static [u8] = &[0xff, 0xfe, 0x00, 0xc3, 0x28, b'a'];
    let first = app.clone().oneshot(post(Some("bin"), raw)).await.unwrap();
    assert_eq!(body_of(first).await.as_ref(), raw, "the handler got the body unchanged");
    let again = app.clone().oneshot(post(Some("bin"), raw)).await.unwrap();
    assert!(is_replay(&again));
    assert_eq!(body_of(again).await.as_ref(), raw);
    let other: &'static [u8] = &[0xff, 0xfe, 0x00, 0xc3, 0x28, b'b'];
    let conflict = app.clone().oneshot(post(Some("bin"), other)).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_of(conflict).await["status"], 422);
    assert_eq!(h.calls(), 1);
}

pub async fn path_query_and_method_are_part_of_the_fingerprint<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    assert_eq!(app.clone().oneshot(post(Some("k"), "x")).await.unwrap().status(), StatusCode::CREATED);
    for (method, uri) in [
        (Method::POST, "/v1/charges?expand=none"),
        (Method::POST, "/v1/refunds?expand=source"),
        (Method::PATCH, "/v1/charges?expand=source"),
    ] {
        let res = app.clone().oneshot(keyed(method.clone(), uri, "k", "x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{method} {uri}");
        assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:idempotency_conflict", "{method} {uri}");
    }
    assert_eq!(h.calls(), 1);
}

pub async fn sf_string_and_bare_keys_are_the_same_key<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let first = app.clone().oneshot(post(Some("\"order-1\""), "x")).await.unwrap();
    assert_eq!(first.headers()["x-gateway-key"], "order-1", "the sf-string's quotes are not part of the key");
    let again = app.clone().oneshot(post(Some("order-1"), "x")).await.unwrap();
    assert!(is_replay(&again));
    assert_eq!(h.calls(), 1);
    for bad in ["\"unterminated", "has space", "\"\""] {
        let res = app.clone().oneshot(post(Some(bad), "x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:idempotency_key_invalid");
    }
    let mut two = post(Some("a"), "x");
    two.headers_mut().append("idempotency-key", HeaderValue::from_static("b"));
    assert_eq!(app.clone().oneshot(two).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.calls(), 1);
}

pub async fn bodies_over_the_limit_get_413_with_or_without_content_length<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).body_limit(16).build());
    let declared = Request::post("/v1/charges")
        .header("idempotency-key", "big")
        .header(header::CONTENT_LENGTH, "17")
        .body(Body::from(vec![b'a'; 17]))
        .unwrap();
    let res = app.clone().oneshot(declared).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:payload_too_large");
    let stream = chunked_body(vec![vec![b'a'; 10], vec![b'a'; 10]]);
    let res = app.clone().oneshot(post(Some("big"), stream)).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:payload_too_large");
    assert_eq!(h.calls(), 0);
    // Exactly at the limit is fine, and a refused body left no claim behind.
    let at_limit = app.oneshot(post(Some("big"), vec![b'a'; 16])).await.unwrap();
    assert_eq!(at_limit.status(), StatusCode::CREATED);
    assert!(!is_replay(&at_limit));
    assert_eq!(body_of(at_limit).await.as_ref(), [b'a'; 16]);
    assert_eq!(h.calls(), 1);
}

/// A body without a length, in chunks.
fn chunked_body(chunks: Vec<Vec<u8>>) -> Body {
    Body::new(Chunks(chunks.into_iter().map(bytes::Bytes::from).collect()))
}

struct Chunks(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

pub async fn methods_not_covered_pass_through_untouched<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).missing_key(MissingKey::Reject).build());
    for n in 1..=2 {
        let get = Request::get("/v1/charges/ch_1").header("idempotency-key", "k").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert!(!is_replay(&res));
        assert_eq!(res.headers()["x-execution"], n.to_string(), "every GET executes");
        assert_eq!(res.headers()["x-gateway-key"], "", "no gateway key is invented for uncovered methods");
    }
    let put = Request::put("/v1/things/1").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(put).await.unwrap().status(), StatusCode::CREATED, "no key needed for PUT");
    assert_eq!(h.calls(), 3);
}

pub async fn missing_key_is_400_when_required_and_passes_otherwise<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let strict = h.app(on(&store).missing_key(MissingKey::Reject).build());
    let res = strict.oneshot(post(None, "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:idempotency_key_missing");
    assert_eq!(h.calls(), 0);
    let lax = h.app(on(&store).build());
    for n in 1..=2 {
        let res = lax.clone().oneshot(post(None, "x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert!(!is_replay(&res));
        assert_eq!(res.headers()["x-execution"], n.to_string());
    }
    assert_eq!(h.calls(), 2);
}

pub async fn in_flight_duplicate_gets_409_with_retry_after_then_a_replay<S: LeaseStore + Clone>(store: S) {
    let h = Handler::gated();
    let app = h.app(on(&store).build());
    let first = tokio::spawn(app.clone().oneshot(post(Some("slow"), "x")));
    h.entered().await;
    let dup = app.clone().oneshot(post(Some("slow"), "x")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert_eq!(dup.headers()[header::RETRY_AFTER], "1");
    assert_eq!(problem_of(dup).await["type"], "urn:palisade:problem:idempotency_in_flight");
    let other = app.clone().oneshot(post(Some("slow"), "y")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY, "conflict wins over in-flight");
    assert_eq!(h.calls(), 1);
    h.let_one_through();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!is_replay(&first));
    let replay = app.oneshot(post(Some("slow"), "x")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert!(is_replay(&replay));
    assert_eq!(body_of(replay).await, "x");
    assert_eq!(h.calls(), 1);
}

/// A store that hands every operation to `inner`, and adds a permit to `in_flight` each time a claim finds the
/// key in flight: the moment a waiting duplicate starts to wait.
struct SeesInFlight<S> {
    inner: S,
    in_flight: Arc<Semaphore>,
}

impl<S: LeaseStore> LeaseStore for SeesInFlight<S> {
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::new(async move {
            let claim = self.inner.claim_as(key, fingerprint, lease, ttl, attempt).await?;
            if matches!(claim, Claim::Held { .. }) {
                self.in_flight.add_permits(1);
            }
            Ok(claim)
        })
    }
    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool> {
        self.inner.complete(hold, response, ttl)
    }
    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        self.inner.release(hold)
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        self.inner.get(key)
    }
    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        self.inner.renew(hold, lease)
    }
    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        self.inner.forget(hold)
    }
}

/// The duplicate runs on a second instance sharing the store, whose store says when the duplicate found the
/// original in flight; only then is the original let through, so the duplicate must have waited to get the replay.
pub async fn waiting_duplicates_get_the_replay<S: LeaseStore + Clone>(store: S) {
    let wait = Duration::from_secs(5);
    let h = Handler::gated();
    let original = h.app(on(&store).wait_for_in_flight(wait).build());
    let in_flight = Arc::new(Semaphore::new(0));
    let observed = SeesInFlight { inner: store.clone(), in_flight: in_flight.clone() };
    let duplicate = h.app(HttpIdempotencyLayer::builder().store(observed).wait_for_in_flight(wait).build());

    let first = tokio::spawn(original.oneshot(post(Some("w"), "x")));
    h.entered().await;
    let dup = tokio::spawn(duplicate.oneshot(post(Some("w"), "x")));
    in_flight.acquire().await.unwrap().forget();
    assert!(!dup.is_finished(), "the duplicate waits for the original instead of answering 409");
    h.let_one_through();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!is_replay(&first));
    let dup = dup.await.unwrap().unwrap();
    assert_eq!(dup.status(), StatusCode::CREATED);
    assert!(is_replay(&dup));
    assert_eq!(dup.headers()[header::LOCATION], "/v1/charges/ch_1");
    assert_eq!(body_of(dup).await, "x");
    assert_eq!(h.calls(), 1);
}

pub async fn terminal_answers_are_stored_and_failures_released<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let with_status = |key: &str, status: &str| {
        Request::post("/v1/charges")
            .header("idempotency-key", key)
            .header("x-status", status)
            .body(Body::from("x"))
            .unwrap()
    };
    // 402 (a decline) is Terminal: stored and replayed.
    assert_eq!(app.clone().oneshot(with_status("d", "402")).await.unwrap().status(), StatusCode::PAYMENT_REQUIRED);
    let replay = app.clone().oneshot(with_status("d", "402")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(is_replay(&replay));
    assert_eq!(h.calls(), 1);
    // 500 and 503 are released: the next request executes again.
    for (key, status) in [("u", 500), ("r", 503)] {
        let first = app.clone().oneshot(with_status(key, &status.to_string())).await.unwrap();
        assert_eq!(first.status(), status);
        let again = app.clone().oneshot(with_status(key, &status.to_string())).await.unwrap();
        assert_eq!(again.status(), status);
        assert!(!is_replay(&again), "{status}");
        assert_eq!(again.headers()["x-gateway-key"], key, "the re-execution carries the same gateway key");
    }
    assert_eq!(h.calls(), 5);
}

pub async fn scopes_keep_tenants_apart_and_change_the_gateway_key<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).scope_header(http::HeaderName::from_static("x-tenant")).build());
    let for_tenant = |t: &str, body: &'static str| {
        Request::post("/v1/charges")
            .header("idempotency-key", "same")
            .header("x-tenant", t)
            .body(Body::from(body))
            .unwrap()
    };
    let a = app.clone().oneshot(for_tenant("a", "one")).await.unwrap();
    let b = app.clone().oneshot(for_tenant("b", "two")).await.unwrap();
    assert_eq!(b.status(), StatusCode::CREATED, "tenant b's request is not a conflict with tenant a's");
    assert!(!is_replay(&b));
    let (ka, kb) = (a.headers()["x-gateway-key"].clone(), b.headers()["x-gateway-key"].clone());
    assert_ne!(ka, kb);
    assert_ne!(ka, "same");
    assert_eq!(h.calls(), 2);
    // Within a tenant the key still deduplicates, and a different request is still a conflict.
    let again = app.clone().oneshot(for_tenant("a", "one")).await.unwrap();
    assert!(is_replay(&again));
    assert_eq!(body_of(again).await, "one");
    assert_eq!(app.clone().oneshot(for_tenant("b", "one")).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.calls(), 2);
    // Scope values that are not visible ASCII (obs-text bytes a header may carry) are scopes too, each its own:
    // they were read as "no scope", so two such tenants shared the unscoped record and one got the other's charge.
    let raw = |bytes: &'static [u8], body: &'static str| {
        Request::post("/v1/charges")
            .header("idempotency-key", "same-raw")
            .header("x-tenant", http::HeaderValue::from_bytes(bytes).unwrap())
            .body(Body::from(body))
            .unwrap()
    };
    let c1 = app.clone().oneshot(raw(b"caf\xE9", "cafe")).await.unwrap();
    let c2 = app.clone().oneshot(raw(b"caf\xE8", "cafe")).await.unwrap();
    let plain = Request::post("/v1/charges").header("idempotency-key", "same-raw").body(Body::from("cafe")).unwrap();
    let c3 = app.clone().oneshot(plain).await.unwrap();
    for c in [&c1, &c2, &c3] {
        assert_eq!(c.status(), StatusCode::CREATED);
        assert!(!is_replay(c), "no tenant is replayed another's (or the unscoped) record");
    }
    assert_eq!(h.calls(), 5);
    let raw_keys = [&c1, &c2, &c3].map(|c| c.headers()["x-gateway-key"].clone());
    assert!(raw_keys[0] != raw_keys[1] && raw_keys[1] != raw_keys[2] && raw_keys[0] != raw_keys[2], "{raw_keys:?}");
    assert!(is_replay(&app.clone().oneshot(raw(b"caf\xE9", "cafe")).await.unwrap()), "a tenant still replays");
    // A request without the scope, sending tenant a's gateway key (or a saga step's, `sg-…`) as its own key,
    // reaches the gateway under another key: the gateway cannot answer it with tenant a's charge.
    let ka = ka.to_str().unwrap().to_owned();
    for borrowed in [ka.as_str(), "sg-0123456789abcdef0123456789abcdef01234567"] {
        let unscoped =
            Request::post("/v1/charges").header("idempotency-key", borrowed).body(Body::from("three")).unwrap();
        let c = app.clone().oneshot(unscoped).await.unwrap();
        assert_eq!(c.status(), StatusCode::CREATED);
        let kc = c.headers()["x-gateway-key"].to_str().unwrap().to_owned();
        assert_ne!(kc, borrowed, "a key spelled like a derived one is not sent as it is");
        assert_ne!(kc, ka);
        assert!(kc.starts_with("pal-"), "{kc}");
    }
}

pub async fn patch_is_covered_by_default_and_methods_are_configurable<S: LeaseStore + Clone>(store: S) {
    // Default settings: a PATCH duplicate is replayed, and a PATCH reusing the key for another body is refused.
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let first = app.clone().oneshot(keyed(Method::PATCH, "/v1/charges/ch_1", "patch", "{\"a\":1}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!is_replay(&first));
    assert_eq!(first.headers()["x-gateway-key"], "patch", "a covered PATCH carries the gateway key");
    let again = app.clone().oneshot(keyed(Method::PATCH, "/v1/charges/ch_1", "patch", "{\"a\":1}")).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert!(is_replay(&again), "a PATCH duplicate is replayed by default");
    assert_eq!(body_of(again).await, "{\"a\":1}");
    let other = app.clone().oneshot(keyed(Method::PATCH, "/v1/charges/ch_1", "patch", "{\"a\":2}")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.calls(), 1);

    // Only PUT configured: PUT is replayed, POST and PATCH pass through and execute every time.
    let h = Handler::open();
    let app = h.app(on(&store).methods([Method::PUT]).build());
    for round in 0..2 {
        let put = app.clone().oneshot(keyed(Method::PUT, "/x", "put", "x")).await.unwrap();
        assert_eq!(is_replay(&put), round == 1, "PUT round {round}");
        for method in [Method::POST, Method::PATCH] {
            let res = app.clone().oneshot(keyed(method.clone(), "/x", "not-covered", "x")).await.unwrap();
            assert!(!is_replay(&res), "{method} round {round}");
            assert_eq!(res.headers()["x-gateway-key"], "", "{method} is not covered");
        }
    }
    assert_eq!(h.calls(), 5, "PUT once, POST twice, PATCH twice");
}

pub async fn a_custom_classifier_decides_what_is_stored<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    // This API's 409 means "business conflict, final", unlike HttpClassifier's "in flight, retry".
    let layer = on(&store)
        .classifier(|status, headers| match status.as_u16() {
            409 => palisade_core::Outcome::Terminal,
            _ => palisade_core::HttpClassifier::classify_parts(status, headers, std::time::SystemTime::now()),
        })
        .build();
    let app = h.app(layer);
    let req =
        || Request::post("/x").header("idempotency-key", "c").header("x-status", "409").body(Body::from("x")).unwrap();
    assert_eq!(app.clone().oneshot(req()).await.unwrap().status(), StatusCode::CONFLICT);
    let again = app.oneshot(req()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(is_replay(&again));
    assert_eq!(h.calls(), 1);
}

/// Issue 16, finding 5: a request refused before any effect (the router's 404 and 405, a handler's 400 marked
/// [`NotExecuted`]) leaves its key unused, so the real request with that key executes (no 422, no replay of the
/// refusal); a decline (402) and an unmarked 400 are still final answers, stored and replayed.
pub async fn refusals_before_any_effect_leave_the_key_unused<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let refused = |method: Method, status: &str, marked: bool| {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/charges")
            .header("idempotency-key", "k-refused")
            .header("x-status", status);
        if marked {
            b = b.header("x-not-executed", "1");
        }
        b.body(Body::from("wrong")).unwrap()
    };
    for (method, status, marked) in [
        (Method::PATCH, "405", false),
        (Method::POST, "404", false),
        (Method::POST, "400", true),
        (Method::POST, "422", true),
    ] {
        let res = app.clone().oneshot(refused(method.clone(), status, marked)).await.unwrap();
        assert_eq!(res.status().as_str(), status);
        assert!(!is_replay(&res), "{method} {status} was not replayed");
    }
    // The real request, another method and body under the same key, executes.
    let real = keyed(Method::POST, "/v1/charges", "k-refused", "the real charge");
    let res = app.clone().oneshot(real).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(!is_replay(&res));
    assert_eq!(body_of(res).await, "the real charge");
    let again = app.clone().oneshot(keyed(Method::POST, "/v1/charges", "k-refused", "the real charge")).await.unwrap();
    assert!(is_replay(&again), "and is stored like any final answer");
    assert_eq!(h.calls(), 5);

    // An unmarked 400 is a final answer (a gateway's invalid_request after execution): stored and replayed.
    let unmarked = || {
        Request::post("/v1/charges").header("idempotency-key", "k-400").header("x-status", "400").body(Body::from("x"))
    };
    assert_eq!(app.clone().oneshot(unmarked().unwrap()).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert!(is_replay(&app.clone().oneshot(unmarked().unwrap()).await.unwrap()));
}

/// Issue 16, finding 6: the same JSON with its members reordered or re-spaced is the same request (replayed, not
/// 422); a JSON amount that is not an integer keeps byte-for-byte fingerprints (two amounts never read as one);
/// and `Content-Type` is part of the fingerprint (the same bytes as another media type are another request).
pub async fn json_bodies_are_fingerprinted_by_value_and_content_type_counts<S: LeaseStore + Clone>(store: S) {
    let h = Handler::open();
    let app = h.app(on(&store).build());
    let send = |key: &'static str, content_type: &'static str, body: &'static str| {
        Request::post("/v1/charges")
            .header("idempotency-key", key)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let first = app.clone().oneshot(send("j", "application/json", r#"{"amount":"12.34","currency":"USD","n":7}"#));
    assert_eq!(first.await.unwrap().status(), StatusCode::CREATED);
    let reordered =
        send("j", "application/json; charset=utf-8", "{ \"n\": 7,\n  \"currency\": \"USD\", \"amount\": \"12.34\" }");
    // The charset parameter is part of the media type header: another request.
    assert_eq!(app.clone().oneshot(reordered).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let reordered = send("j", "application/json", "{ \"n\": 7,\n  \"currency\": \"USD\", \"amount\": \"12.34\" }");
    let res = app.clone().oneshot(reordered).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(is_replay(&res), "the same JSON value is the same request");
    let other = send("j", "application/json", r#"{"amount":"12.35","currency":"USD","n":7}"#);
    assert_eq!(app.clone().oneshot(other).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Same bytes, another media type: another request.
    let form = send("j", "application/x-www-form-urlencoded", r#"{"amount":"12.34","currency":"USD","n":7}"#);
    assert_eq!(app.clone().oneshot(form).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);

    // A fractional JSON number keeps the bytes: reordering it is a conflict, never a replay of another amount.
    let f = app.clone().oneshot(send("f", "application/json", r#"{"amount":12.34,"currency":"USD"}"#));
    assert_eq!(f.await.unwrap().status(), StatusCode::CREATED);
    let f2 = send("f", "application/json", r#"{"currency":"USD","amount":12.34}"#);
    assert_eq!(app.clone().oneshot(f2).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.calls(), 2);
}

/// The typed builder's `.http()` switch keeps the settings both modes share (here the store and the missing-key
/// policy): the HTTP layer it builds stores in that store and refuses a request without a key.
pub async fn the_typed_builder_switches_to_http_with_its_settings<S: LeaseStore + Clone>(store: S) {
    let layer = palisade_idempotency::IdempotencyLayer::builder()
        .store(store.clone())
        .missing_key(MissingKey::Reject)
        .http()
        .build();
    let h = Handler::open();
    let app = h.app(layer);
    assert_eq!(app.clone().oneshot(post(Some("switch"), "x")).await.unwrap().status(), StatusCode::CREATED);
    let key = palisade_idempotency::storage_key(None, &palisade_core::IdempotencyKey::new("switch").unwrap());
    assert!(matches!(store.get(&key).await.unwrap(), Some(Record::Done { .. })), "stored in the given store");
    assert!(is_replay(&app.clone().oneshot(post(Some("switch"), "x")).await.unwrap()));
    assert_eq!(app.oneshot(post(None, "x")).await.unwrap().status(), StatusCode::BAD_REQUEST, "the typed policy");
    assert_eq!(h.calls(), 1);
}
