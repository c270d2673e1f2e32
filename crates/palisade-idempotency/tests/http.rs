//! HTTP mode over an axum-style service: statuses, problem+json, header allow-list, replay marker, body limits,
//! non-UTF-8 bodies, sf-string keys, methods that pass through, and the gateway key in the extensions.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use palisade_core::GatewayKey;
use palisade_idempotency::{HttpIdempotencyLayer, MemoryStore, MissingKey};
use tokio::sync::Semaphore;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type App = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// A handler that echoes the body, reports the gateway key it saw, sets a mix of headers, and answers with the
/// status in `x-status` (default 201). `calls` counts executions; `gate` (if closed) holds them.
fn app(layer: HttpIdempotencyLayer, calls: Arc<AtomicUsize>, gate: Arc<Semaphore>) -> App {
    let inner = tower::service_fn(move |req: Request<Body>| {
        let (calls, gate) = (calls.clone(), gate.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            gate.acquire().await.unwrap().forget();
            let status = req
                .headers()
                .get("x-status")
                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                .map_or(StatusCode::CREATED, |s| StatusCode::from_u16(s).unwrap());
            let gk = req.extensions().get::<GatewayKey>().map(|k| k.0.to_string()).unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let n = calls.load(Ordering::SeqCst);
            let res = Response::builder()
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
            Ok::<_, Infallible>(res)
        }
    });
    BoxCloneService::new(layer.layer(inner))
}

fn open_gate() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(1_000_000))
}

fn post(key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post("/v1/charges?expand=source");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(body.into()).unwrap()
}

async fn body_of(res: Response<Body>) -> bytes::Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

async fn problem_of(res: Response<Body>) -> serde_json::Value {
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/problem+json");
    serde_json::from_slice(&body_of(res).await).unwrap()
}

#[tokio::test(start_paused = true)]
async fn replay_carries_marker_and_only_allow_listed_headers() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls.clone(), open_gate());
    let first = app.clone().oneshot(post(Some("k1"), "{\"amount\":\"1.00\"}")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert!(first.headers().get(header::SET_COOKIE).is_some(), "the original response is untouched");
    assert_eq!(first.headers()["x-gateway-key"], "k1", "the handler sees the gateway key");
    let first_body = body_of(first).await;

    let again = app.clone().oneshot(post(Some("k1"), "{\"amount\":\"1.00\"}")).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    let h = again.headers();
    assert_eq!(h["idempotent-replayed"], "true");
    assert_eq!(h[header::LOCATION], "/v1/charges/ch_1");
    assert_eq!(h[header::CONTENT_TYPE], "application/octet-stream");
    for gone in ["set-cookie", "date", "ratelimit-remaining", "x-gateway-key", "x-execution"] {
        assert!(h.get(gone).is_none(), "{gone} must not be replayed");
    }
    assert_eq!(body_of(again).await, first_body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn configured_headers_are_stored_but_forbidden_ones_never() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = HttpIdempotencyLayer::builder()
        .store_header(http::HeaderName::from_static("x-execution"))
        .store_header(header::SET_COOKIE)
        .build();
    let app = app(layer, calls, open_gate());
    app.clone().oneshot(post(Some("k"), "x")).await.unwrap();
    let again = app.oneshot(post(Some("k"), "x")).await.unwrap();
    assert_eq!(again.headers()["x-execution"], "1");
    assert!(again.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test(start_paused = true)]
async fn non_utf8_bodies_fingerprint_and_replay_byte_for_byte() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls.clone(), open_gate());
    let raw: &'static [u8] = &[0xff, 0xfe, 0x00, 0xc3, 0x28, b'a'];
    let first = app.clone().oneshot(post(Some("bin"), raw)).await.unwrap();
    assert_eq!(body_of(first).await.as_ref(), raw, "the handler got the body unchanged");
    let again = app.clone().oneshot(post(Some("bin"), raw)).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(body_of(again).await.as_ref(), raw);
    let other: &'static [u8] = &[0xff, 0xfe, 0x00, 0xc3, 0x28, b'b'];
    let conflict = app.clone().oneshot(post(Some("bin"), other)).await.unwrap();
    assert_eq!(conflict.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_of(conflict).await["status"], 422);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn path_query_and_method_are_part_of_the_fingerprint() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls, open_gate());
    app.clone().oneshot(post(Some("k"), "x")).await.unwrap();
    let other_query =
        Request::post("/v1/charges?expand=none").header("idempotency-key", "k").body(Body::from("x")).unwrap();
    assert_eq!(app.clone().oneshot(other_query).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other_method =
        Request::patch("/v1/charges?expand=source").header("idempotency-key", "k").body(Body::from("x")).unwrap();
    assert_eq!(app.oneshot(other_method).await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(start_paused = true)]
async fn sf_string_and_bare_keys_are_the_same_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls.clone(), open_gate());
    app.clone().oneshot(post(Some("\"order-1\""), "x")).await.unwrap();
    let again = app.clone().oneshot(post(Some("order-1"), "x")).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for bad in ["\"unterminated", "has space", "\"\""] {
        let res = app.clone().oneshot(post(Some(bad), "x")).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:idempotency_key_invalid");
    }
    let mut two = post(Some("a"), "x");
    two.headers_mut().append("idempotency-key", HeaderValue::from_static("b"));
    assert_eq!(app.clone().oneshot(two).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_get_413_with_or_without_content_length() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().body_limit(16).build(), calls.clone(), open_gate());
    let declared = Request::post("/v1/charges")
        .header("idempotency-key", "big")
        .header(header::CONTENT_LENGTH, "17")
        .body(Body::from(vec![b'a'; 17]))
        .unwrap();
    assert_eq!(app.clone().oneshot(declared).await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);
    let stream = futures_body(vec![vec![b'a'; 10], vec![b'a'; 10]]);
    let res = app.clone().oneshot(post(Some("big"), stream)).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:payload_too_large");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // exactly at the limit is fine
    assert_eq!(app.oneshot(post(Some("big"), vec![b'a'; 16])).await.unwrap().status(), StatusCode::CREATED);
}

/// A body without a length, in chunks.
fn futures_body(chunks: Vec<Vec<u8>>) -> Body {
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

#[tokio::test(start_paused = true)]
async fn methods_not_covered_pass_through_untouched() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().missing_key(MissingKey::Reject).build(), calls.clone(), open_gate());
    for _ in 0..2 {
        let get = Request::get("/v1/charges/ch_1").header("idempotency-key", "k").body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get).await.unwrap();
        assert!(res.headers().get("idempotent-replayed").is_none());
        assert_eq!(res.headers()["x-gateway-key"], "", "no gateway key is invented for uncovered methods");
    }
    let put = Request::put("/v1/things/1").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(put).await.unwrap().status(), StatusCode::CREATED, "no key needed for PUT");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn missing_key_is_400_when_required_and_passes_otherwise() {
    let calls = Arc::new(AtomicUsize::new(0));
    let strict =
        app(HttpIdempotencyLayer::builder().missing_key(MissingKey::Reject).build(), calls.clone(), open_gate());
    let res = strict.oneshot(post(None, "x")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem_of(res).await["type"], "urn:palisade:problem:idempotency_key_missing");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let lax = app(HttpIdempotencyLayer::builder().build(), calls.clone(), open_gate());
    lax.clone().oneshot(post(None, "x")).await.unwrap();
    lax.oneshot(post(None, "x")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn in_flight_duplicate_gets_409_with_retry_after_then_a_replay() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls.clone(), gate.clone());
    let first = tokio::spawn(app.clone().oneshot(post(Some("slow"), "x")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let dup = app.clone().oneshot(post(Some("slow"), "x")).await.unwrap();
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    assert_eq!(dup.headers()[header::RETRY_AFTER], "1");
    assert_eq!(problem_of(dup).await["type"], "urn:palisade:problem:idempotency_in_flight");
    let other = app.clone().oneshot(post(Some("slow"), "y")).await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY, "conflict wins over in-flight");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let replay = app.oneshot(post(Some("slow"), "x")).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_duplicates_get_the_replay() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let layer = HttpIdempotencyLayer::builder().wait_for_in_flight(Duration::from_secs(5)).build();
    let app = app(layer, calls.clone(), gate.clone());
    let first = tokio::spawn(app.clone().oneshot(post(Some("w"), "x")));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let dup = tokio::spawn(app.clone().oneshot(post(Some("w"), "x")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CREATED);
    let dup = dup.await.unwrap().unwrap();
    assert_eq!(dup.status(), StatusCode::CREATED);
    assert_eq!(dup.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn terminal_answers_are_stored_and_failures_released() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().build(), calls.clone(), open_gate());
    let with_status = |key: &str, status: &str| {
        Request::post("/v1/charges")
            .header("idempotency-key", key)
            .header("x-status", status)
            .body(Body::from("x"))
            .unwrap()
    };
    // 402 (a decline) is Terminal: stored and replayed.
    app.clone().oneshot(with_status("d", "402")).await.unwrap();
    let replay = app.clone().oneshot(with_status("d", "402")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // 500 and 503 are released: the next request executes again.
    for (key, status) in [("u", "500"), ("r", "503")] {
        app.clone().oneshot(with_status(key, status)).await.unwrap();
        let again = app.clone().oneshot(with_status(key, status)).await.unwrap();
        assert!(again.headers().get("idempotent-replayed").is_none(), "{status}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn scopes_keep_tenants_apart_and_change_the_gateway_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = HttpIdempotencyLayer::builder()
        .store(MemoryStore::new())
        .scope_header(http::HeaderName::from_static("x-tenant"))
        .build();
    let app = app(layer, calls.clone(), open_gate());
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
    let (ka, kb) = (a.headers()["x-gateway-key"].clone(), b.headers()["x-gateway-key"].clone());
    assert_ne!(ka, kb);
    assert_ne!(ka, "same");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn patch_is_covered_by_default_and_methods_are_configurable() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(HttpIdempotencyLayer::builder().methods([Method::PUT]).build(), calls.clone(), open_gate());
    for _ in 0..2 {
        let put = Request::put("/x").header("idempotency-key", "p").body(Body::from("x")).unwrap();
        app.clone().oneshot(put).await.unwrap();
        let post = Request::post("/x").header("idempotency-key", "p").body(Body::from("x")).unwrap();
        app.clone().oneshot(post).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "PUT replayed once, POST not covered");
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides_what_is_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    // This API's 409 means "business conflict, final", unlike HttpClassifier's "in flight, retry".
    let layer = HttpIdempotencyLayer::builder()
        .classifier(|status, headers| match status.as_u16() {
            409 => palisade_core::Outcome::Terminal,
            _ => palisade_core::HttpClassifier::classify_parts(status, headers, std::time::SystemTime::now()),
        })
        .build();
    let app = app(layer, calls.clone(), open_gate());
    let req =
        || Request::post("/x").header("idempotency-key", "c").header("x-status", "409").body(Body::from("x")).unwrap();
    app.clone().oneshot(req()).await.unwrap();
    let again = app.oneshot(req()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
