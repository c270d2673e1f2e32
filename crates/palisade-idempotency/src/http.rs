//! The HTTP mode: `HttpIdempotencyLayer` around an `http::Request<B>` service (an axum `Router`, a hyper
//! service).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use palisade_core::body::{BodyError, collect_limited};
use palisade_core::{BoxError, GatewayKey, HttpClassifier, IdempotencyKey, Outcome, Problem};
use tower_service::Service;

use crate::config::{DEFAULT_BODY_LIMIT, MissingKey, Settings, common_setters};
pub use crate::defaults::DEFAULT_STORED_HEADERS;
use crate::engine::{Begin, Engine, KeyBuf, count, gateway_key_for};
use crate::error::IdempotencyRejection;
use crate::layer::FieldHasher;
use palisade_store::lease::{Fingerprint, Payload};

/// The request header that carries the key (Stripe, and draft-ietf-httpapi-idempotency-key-header).
pub use palisade_core::IDEMPOTENCY_KEY;

/// The header a replayed response carries: `Idempotent-Replayed: true` (Stripe's name).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Headers never stored, even when configured: they belong to one response (`Set-Cookie`, `Date`), to the
/// connection (`Content-Length`, `Transfer-Encoding`, `Connection`), or to a moment (`Retry-After`, rate-limit
/// headers — any name starting with `ratelimit` or `x-ratelimit`).
pub const FORBIDDEN_STORED_HEADERS: [HeaderName; 6] = [
    header::SET_COOKIE,
    header::DATE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::RETRY_AFTER,
];

fn storable(name: &HeaderName) -> bool {
    let s = name.as_str();
    !FORBIDDEN_STORED_HEADERS.contains(name) && !s.starts_with("ratelimit") && !s.starts_with("x-ratelimit")
}

type PartsScopeFn = Arc<dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync>;
type StatusClassifyFn = Arc<dyn Fn(StatusCode, &HeaderMap) -> Outcome + Send + Sync>;

fn default_classify() -> StatusClassifyFn {
    Arc::new(|status, headers| HttpClassifier::classify_parts(status, headers, SystemTime::now()))
}

struct HttpShared {
    engine: Arc<Engine>,
    methods: Vec<Method>,
    fingerprint_headers: Vec<HeaderName>,
    stored_headers: Arc<[HeaderName]>,
    body_limit: usize,
    scope: Option<PartsScopeFn>,
    classify: StatusClassifyFn,
    json_fingerprint: bool,
}

/// Makes an HTTP service idempotent on the `Idempotency-Key` header. See the [crate docs](crate).
///
/// The service takes and hands on `http::Request<B>` for any body `B: Body + From<Bytes>`: axum's `Body`
/// (so it goes straight onto a `Router`), `http_body_util::Full<Bytes>`, .... With plain hyper, turn the
/// `Incoming` body into one of those first (`req.map(axum::body::Body::new)`, or a `BoxBody`-like type of your own
/// that implements `From<Bytes>`).
///
/// Cheap to clone. Built with [`HttpIdempotencyLayer::builder`].
#[derive(Clone)]
pub struct HttpIdempotencyLayer {
    shared: Arc<HttpShared>,
}

impl fmt::Debug for HttpIdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("HttpIdempotencyLayer")
            .field("settings", &s.engine.settings)
            .field("methods", &s.methods)
            .field("fingerprint_headers", &s.fingerprint_headers)
            .field("stored_headers", &s.stored_headers)
            .field("body_limit", &s.body_limit)
            .field("scoped", &s.scope.is_some())
            .finish()
    }
}

impl HttpIdempotencyLayer {
    /// A builder: POST and PATCH, [`DEFAULT_STORED_HEADERS`], 1 MiB body limit, no scope, a fresh
    /// [`MemoryStore`](crate::MemoryStore), 24 h TTL, 10 s lease renewed while a request runs.
    pub fn builder() -> HttpIdempotencyLayerBuilder {
        HttpIdempotencyLayerBuilder::with_settings(Settings::default())
    }
}

impl HttpIdempotencyLayerBuilder {
    /// The HTTP builder's defaults over settings a typed builder already has (see
    /// [`IdempotencyLayerBuilder::http`](crate::IdempotencyLayerBuilder::http)).
    pub(crate) fn with_settings(settings: Settings) -> Self {
        HttpIdempotencyLayerBuilder {
            settings,
            methods: vec![Method::POST, Method::PATCH],
            fingerprint_headers: Vec::new(),
            stored_headers: DEFAULT_STORED_HEADERS.to_vec(),
            body_limit: DEFAULT_BODY_LIMIT,
            scope: None,
            classify: default_classify(),
            json_fingerprint: true,
        }
    }
}

impl<S> tower_layer::Layer<S> for HttpIdempotencyLayer {
    type Service = HttpIdempotencyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpIdempotencyService { inner, shared: self.shared.clone() }
    }
}

/// Builder for [`HttpIdempotencyLayer`].
#[must_use]
pub struct HttpIdempotencyLayerBuilder {
    settings: Settings,
    methods: Vec<Method>,
    fingerprint_headers: Vec<HeaderName>,
    stored_headers: Vec<HeaderName>,
    body_limit: usize,
    scope: Option<PartsScopeFn>,
    classify: StatusClassifyFn,
    json_fingerprint: bool,
}

impl HttpIdempotencyLayerBuilder {
    common_setters!();

    /// The methods the layer applies to (default POST and PATCH; the others are idempotent by definition).
    /// Requests with other methods pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Adds a request header to the fingerprint (default: none; method, path, query and body always count).
    pub fn fingerprint_header(mut self, name: HeaderName) -> Self {
        self.fingerprint_headers.push(name);
        self
    }

    /// Whether a JSON body (`application/json`, `application/*+json`) is fingerprinted by its canonical form
    /// (default `true`): the same JSON with its members reordered or re-spaced is the same request (replayed),
    /// as a client that re-serializes a map on retry expects. A body holding a number other than a 64-bit integer
    /// (or a duplicate member, or not JSON at all) is fingerprinted by its bytes, so two different amounts can
    /// never read as one. `false` fingerprints every body byte for byte.
    pub fn json_fingerprint(mut self, on: bool) -> Self {
        self.json_fingerprint = on;
        self
    }

    /// Adds a response header to store and replay (default [`DEFAULT_STORED_HEADERS`]). Headers in
    /// [`FORBIDDEN_STORED_HEADERS`] and rate-limit headers are never stored.
    pub fn store_header(mut self, name: HeaderName) -> Self {
        self.stored_headers.push(name);
        self
    }

    /// The most request body bytes buffered for the fingerprint (default [`DEFAULT_BODY_LIMIT`], 1 MiB);
    /// larger bodies get 413.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The scope (tenant, account, user) a key belongs to, from the request head (headers, extensions set by an
    /// authentication layer). Equal keys in two scopes never meet. Default: none.
    pub fn scope(mut self, f: impl Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.scope = Some(Arc::new(f));
        self
    }

    /// The scope from a request header (for example the account header an authenticating proxy sets); no
    /// header, no scope. Every value is a scope of its own: bytes outside visible ASCII (and `%`) are written
    /// `%XX`, so two values never read as one, and a value that is not text is never taken for "no scope".
    pub fn scope_header(self, name: HeaderName) -> Self {
        self.scope(move |p| p.headers.get(&name).map(|v| header_scope(v.as_bytes())))
    }

    /// How a response's status and headers map to an [`Outcome`] (default: [`HttpClassifier`]: 2xx/3xx Success,
    /// 4xx Terminal except 408/409/425/429, 503 Retriable, other 5xx Unknown). Success and Terminal responses are
    /// stored and replayed; the others release the key.
    pub fn classifier(mut self, f: impl Fn(StatusCode, &HeaderMap) -> Outcome + Send + Sync + 'static) -> Self {
        self.classify = Arc::new(f);
        self
    }

    /// Builds the layer.
    pub fn build(self) -> HttpIdempotencyLayer {
        let mut stored = self.stored_headers;
        stored.retain(storable);
        HttpIdempotencyLayer {
            shared: Arc::new(HttpShared {
                engine: Engine::new(self.settings),
                methods: self.methods,
                fingerprint_headers: self.fingerprint_headers,
                stored_headers: stored.into(),
                body_limit: self.body_limit,
                scope: self.scope,
                classify: self.classify,
                json_fingerprint: self.json_fingerprint,
            }),
        }
    }
}

/// The service [`HttpIdempotencyLayer`] produces.
#[derive(Clone)]
pub struct HttpIdempotencyService<S> {
    inner: S,
    shared: Arc<HttpShared>,
}

impl<S: fmt::Debug> fmt::Debug for HttpIdempotencyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpIdempotencyService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// Marks a response whose request was refused before it had any effect (a validation error, a precondition
/// that failed before the gateway was called): the idempotency layer then keeps no record, and the key stays
/// unused, so the corrected request can still be sent with it. Stripe saves a result only once an endpoint
/// started executing; this is how a handler says it did not.
///
/// ```
/// use axum::http::StatusCode;
/// use axum::response::{IntoResponse, Response};
/// use palisade_idempotency::NotExecuted;
///
/// fn invalid(message: &'static str) -> Response {
///     let mut res = (StatusCode::BAD_REQUEST, message).into_response();
///     res.extensions_mut().insert(NotExecuted);
///     res
/// }
/// # let _ = invalid("amount must be positive");
/// ```
///
/// Responses the router makes itself, `404 Not Found` and `405 Method Not Allowed`, are treated as not executed
/// without the marker: no handler ran. Every other response is classified and, when final, stored, a decline
/// (402) included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NotExecuted;

/// True when `res` says its request had no effect: [`NotExecuted`], or a routing refusal (404, 405).
fn not_executed<B>(res: &Response<B>) -> bool {
    res.extensions().get::<NotExecuted>().is_some()
        || matches!(res.status(), StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED)
}

fn reject<B: From<Bytes>>(r: &IdempotencyRejection) -> Response<B> {
    r.to_problem().into_response()
}

/// Reads the key: absent → `Ok(None)`; several headers or a malformed value → rejection.
fn read_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, IdempotencyRejection> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(IdempotencyRejection::InvalidKey("send exactly one Idempotency-Key header".into()));
    }
    let s = v.to_str().map_err(|_| IdempotencyRejection::InvalidKey("key is not visible ASCII".into()))?;
    Ok(Some(IdempotencyKey::parse(s)?))
}

/// True for `application/json` and `application/*+json` media types (parameters and case aside).
fn is_json(content_type: &[u8]) -> bool {
    let media = content_type.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    media.eq_ignore_ascii_case(b"application/json")
        || (media.len() > 17
            && media[..12].eq_ignore_ascii_case(b"application/")
            && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// What makes two requests the same request: method, path, query, `Content-Type`, the configured headers, and
/// the body, which for JSON (when `json` is on) is its canonical form (see [`crate::canonical`]).
fn fingerprint(parts: &http::request::Parts, headers: &[HeaderName], body: &[u8], json: bool) -> Fingerprint {
    let mut h = FieldHasher::new();
    h.field(parts.method.as_str().as_bytes());
    h.field(parts.uri.path().as_bytes());
    h.field(parts.uri.query().unwrap_or("").as_bytes());
    // The media type changes what the body means: the same bytes as JSON and as a form are two requests.
    let content_type = parts.headers.get(header::CONTENT_TYPE).map_or(&b""[..], HeaderValue::as_bytes);
    let mut lower = [0u8; 64];
    match lower.get_mut(..content_type.len()) {
        // Lowercased on the stack: a media type with its parameters fits in 64 bytes.
        Some(buf) => {
            buf.copy_from_slice(content_type);
            buf.make_ascii_lowercase();
            h.field(buf);
        }
        None => h.field(&content_type.to_ascii_lowercase()),
    }
    let canonical = if json && is_json(content_type) { crate::canonical::canonical_json(body) } else { None };
    h.field(if canonical.is_some() { b"canonical-json" } else { b"bytes" });
    for name in headers {
        h.field(name.as_str().as_bytes());
        for v in parts.headers.get_all(name) {
            h.field(v.as_bytes());
        }
        h.field(b"\0end");
    }
    h.field(canonical.as_deref().unwrap_or(body));
    h.finish()
}

/// Stored form: status (u16), header count (u16), each header as name length (u16), name, value length (u32),
/// value; then the body. Binary, so any body (non-UTF-8 included) round-trips unchanged.
pub(crate) fn encode(status: StatusCode, headers: &HeaderMap, keep: &[HeaderName], body: &[u8]) -> Bytes {
    let kept: Vec<(&HeaderName, &HeaderValue)> = headers.iter().filter(|(n, _)| keep.contains(n)).collect();
    let mut out = BytesMut::with_capacity(4 + body.len() + kept.len() * 48);
    out.put_u16(status.as_u16());
    out.put_u16(kept.len() as u16);
    for (n, v) in kept {
        out.put_u16(n.as_str().len() as u16);
        out.put_slice(n.as_str().as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
    out.put_slice(body);
    out.freeze()
}

fn decode(mut b: Bytes) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let short = || "stored response is truncated".to_owned();
    if b.remaining() < 4 {
        return Err(short());
    }
    let status = StatusCode::from_u16(b.get_u16()).map_err(|e| e.to_string())?;
    let n = b.get_u16() as usize;
    let mut headers = HeaderMap::with_capacity(n + 1);
    for _ in 0..n {
        if b.remaining() < 2 {
            return Err(short());
        }
        let nl = b.get_u16() as usize;
        if b.remaining() < nl + 4 {
            return Err(short());
        }
        let name = HeaderName::from_bytes(&b.split_to(nl)).map_err(|e| e.to_string())?;
        let vl = b.get_u32() as usize;
        if b.remaining() < vl {
            return Err(short());
        }
        let value = HeaderValue::from_maybe_shared(b.split_to(vl)).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    Ok((status, headers, b))
}

fn replay<B: From<Bytes>>(stored: Bytes) -> Response<B> {
    match decode(stored) {
        Ok((status, headers, body)) => {
            let mut res = Response::new(B::from(body));
            *res.status_mut() = status;
            *res.headers_mut() = headers;
            res.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            res
        }
        Err(e) => reject(&IdempotencyRejection::UnreadableRecord(e)),
    }
}

/// The future of [`HttpIdempotencyService`].
pub type HttpResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, ResB> Service<Request<B>> for HttpIdempotencyService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body + From<Bytes> + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResB: Body + From<Bytes> + Send + 'static,
    ResB::Data: Send,
    ResB::Error: fmt::Display,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = HttpResponseFuture<Response<ResB>, S::Error>;

    /// Always ready: the inner service's readiness is awaited only when a request is really executed.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        if !shared.methods.contains(req.method()) {
            return Box::pin(async move {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(req).await
            });
        }
        let key = match read_key(req.headers()) {
            Ok(Some(k)) => k,
            Ok(None) if shared.engine.settings.missing_key == MissingKey::PassThrough => {
                count("passthrough");
                return Box::pin(async move {
                    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                    inner.call(req).await
                });
            }
            Ok(None) => {
                count("missing_key");
                return Box::pin(std::future::ready(Ok(reject(&IdempotencyRejection::KeyMissing))));
            }
            Err(r) => {
                count("invalid_key");
                return Box::pin(std::future::ready(Ok(reject(&r))));
            }
        };
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = match collect_limited(&parts.headers, body, shared.body_limit).await {
                Ok(bytes) => bytes,
                Err(BodyError::TooLarge { limit }) => {
                    count("body_too_large");
                    return Ok(reject(&IdempotencyRejection::BodyTooLarge { limit }));
                }
                Err(e) => return Ok(reject(&IdempotencyRejection::BodyRead(e.to_string()))),
            };
            let fp = fingerprint(&parts, &shared.fingerprint_headers, &bytes, shared.json_fingerprint);
            let scope = shared.scope.as_ref().and_then(|f| f(&parts));
            // The storage key is built on the stack and is gone before any await, so it takes no room in this
            // future; only other stores and waiting duplicates need it on the heap.
            let local = {
                let mut buf = KeyBuf::new();
                let skey = buf.spell(scope.as_deref(), &key);
                shared.engine.begin_now(skey, &fp).ok_or_else(|| Arc::<str>::from(skey))
            };
            let begun = match local {
                Ok(begun) => begun,
                // Boxed: inline, the general path's state would grow every call's future.
                Err(skey) => Box::pin(shared.engine.begin(skey, fp)).await,
            };
            let ticket = match begun {
                Ok(Begin::Execute(t)) => t,
                Ok(Begin::Replay(stored)) => return Ok(replay(stored.to_bytes())),
                Err(r) => return Ok(reject(&r)),
            };
            // Only a request that executes needs its gateway key (a replay or a refusal allocates nothing for it).
            parts.extensions.insert(GatewayKey(gateway_key_for(scope.as_deref(), &key)));
            #[cfg(feature = "postgres")]
            let tx_completion = {
                let c = ticket.tx_completion(shared.stored_headers.clone());
                parts.extensions.insert(c.clone());
                c
            };
            if let Err(e) = std::future::poll_fn(|cx| inner.poll_ready(cx)).await {
                // The service never saw the request.
                ticket.forget().await;
                return Err(e);
            }
            let res = match ticket.hold(inner.call(Request::from_parts(parts, B::from(bytes)))).await {
                Ok(res) => res,
                Err(e) => {
                    // A failed service may or may not have acted: Unknown, released for re-execution.
                    ticket.release().await;
                    return Err(e);
                }
            };
            #[cfg(feature = "postgres")]
            if tx_completion.used() {
                // The handler completed the record in its own transaction: committed, it is done; rolled back,
                // the claim is still held, and is released so a retry executes.
                ticket.after_transaction().await;
                return Ok(res);
            }
            if not_executed(&res) {
                // Refused before any effect: the key stays unused, so the real request can still use it.
                ticket.forget().await;
                return Ok(res);
            }
            let outcome = (shared.classify)(res.status(), res.headers());
            if !outcome.is_final() {
                // Not stored: hand the response on as it is, streaming.
                ticket.release().await;
                return Ok(res);
            }
            let (res_parts, res_body) = res.into_parts();
            // Still under the lease's heartbeat: a body slower than the lease must not let a duplicate take over.
            let collected = ticket.hold(res_body.collect()).await.map_err(|e| e.to_string());
            let body = match collected {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    ticket.release().await;
                    let p = Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "response_body_failed",
                        "response body failed",
                        format!(
                            "the response body failed while it was read: {e}; the request may be retried with the same key"
                        ),
                    );
                    return Ok(p.into_response());
                }
            };
            let stored = &shared.stored_headers;
            let payload = encode(res_parts.status, &res_parts.headers, stored, &body);
            ticket.record(outcome, Some(Payload::Bytes(payload))).await;
            Ok(Response::from_parts(res_parts, ResB::from(body)))
        })
    }
}

/// A header value as a scope: visible ASCII and spaces as they are, every other byte (and `%`) as `%XX`. Injective,
/// so two header values are never one scope.
fn header_scope(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut scope = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b.is_ascii_graphic() && b != b'%') || b == b' ' {
            scope.push(char::from(b));
        } else {
            let _ = write!(scope, "%{b:02X}");
        }
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_any_bytes_and_only_kept_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        h.insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
        h.append(header::LINK, HeaderValue::from_static("<a>"));
        h.append(header::LINK, HeaderValue::from_static("<b>"));
        let body = [0xff_u8, 0x00, 0xc3, 0x28];
        let keep: Vec<HeaderName> = DEFAULT_STORED_HEADERS.to_vec();
        let (status, headers, got) = decode(encode(StatusCode::CREATED, &h, &keep, &body)).unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&got[..], &body);
        assert_eq!(headers.get_all(header::LINK).iter().count(), 2);
        assert!(headers.get(header::SET_COOKIE).is_none());
        assert!(decode(Bytes::from_static(&[0, 200, 0, 1, 0])).is_err());
    }

    #[test]
    fn forbidden_headers_cannot_be_configured() {
        for n in ["set-cookie", "date", "ratelimit-remaining", "x-ratelimit-limit", "retry-after"] {
            assert!(!storable(&HeaderName::from_static(n)), "{n}");
        }
        assert!(storable(&header::LOCATION));
    }
}
