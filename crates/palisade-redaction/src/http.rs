//! HTTP mode of the audit layer: method, URI, headers (secrets masked) and bodies, all through the redactor.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use palisade_core::body::{BodyError, collect_limited};
use palisade_core::{BoxError, ErrorOutcome, HttpClassifier, Problem};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::defaults::{DEFAULT_BODY_BUFFER_LIMIT, DEFAULT_BODY_LOG_LIMIT, DEFAULT_SENSITIVE_HEADERS};
use crate::layer::{AuditConfig, AuditLayerBuilder, Held};

/// What a masked header value is written as.
pub const HEADER_PLACEHOLDER: &str = "[REDACTED]";

#[derive(Debug)]
struct HttpConfig {
    audit: AuditConfig,
    sensitive: Vec<HeaderName>,
    body_limit: usize,
    buffer_limit: usize,
}

/// The audit layer for HTTP services (an axum `Router`, a hyper client). The request and response bodies are
/// buffered so they can be logged (redacted, JSON-aware, up to [`DEFAULT_BODY_LOG_LIMIT`] bytes each) and are
/// passed on unchanged as `Full<Bytes>`; the outcome comes from [`HttpClassifier`]. A request body over
/// [`DEFAULT_BODY_BUFFER_LIMIT`] (see [`body_buffer_limit`](HttpAuditLayerBuilder::body_buffer_limit)) is answered
/// `413` problem+json (`payload_too_large`) without calling the inner service. As in typed mode
/// ([`AuditLayer`](crate::AuditLayer)), a request and a response are rendered only for an event a subscriber
/// records: with only WARN recorded, the request's method, URI, headers and body are kept and rendered if the
/// call fails.
///
/// ```
/// use palisade_redaction::AuditLayer;
/// use tower::{ServiceBuilder, ServiceExt};
/// use http_body_util::Full;
/// use bytes::Bytes;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AuditLayer::builder().http().build())
///     .service_fn(|_req: http::Request<Full<Bytes>>| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}"))))
///     });
/// let req = http::Request::post("/charges?card=4242424242424242")
///     .header("authorization", "Bearer sk_live_secret")
///     .body(Full::new(Bytes::from_static(br#"{"card_number":"4111111111111111","amount":100}"#)))
///     .unwrap();
/// let cap = palisade_testkit::LogCapture::new();
/// let _guard = tracing::subscriber::set_default(cap.subscriber());
/// svc.oneshot(req).await.unwrap();
/// let log = cap.contents();
/// assert!(!log.contains("sk_live_secret") && !log.contains("4111111111111111") && !log.contains("4242424242424242"));
/// assert!(log.contains("authorization: [REDACTED]") && log.contains("amount"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HttpAuditLayer {
    cfg: Arc<HttpConfig>,
}

/// Builds an [`HttpAuditLayer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpAuditLayerBuilder {
    base: AuditLayerBuilder<()>,
    sensitive: Vec<HeaderName>,
    body_limit: usize,
    buffer_limit: usize,
}

impl<C> AuditLayerBuilder<C> {
    /// Switches to HTTP mode.
    pub fn http(self) -> HttpAuditLayerBuilder {
        HttpAuditLayerBuilder {
            base: self.classifier(()),
            sensitive: DEFAULT_SENSITIVE_HEADERS.iter().map(|h| HeaderName::from_static(h)).collect(),
            body_limit: DEFAULT_BODY_LOG_LIMIT,
            buffer_limit: DEFAULT_BODY_BUFFER_LIMIT,
        }
    }
}

impl HttpAuditLayerBuilder {
    /// Masks one more header (in addition to [`DEFAULT_SENSITIVE_HEADERS`]).
    pub fn sensitive_header(mut self, name: HeaderName) -> Self {
        self.sensitive.push(name);
        self
    }
    /// How many bytes of each redacted body to log (default [`DEFAULT_BODY_LOG_LIMIT`]; 0 logs no bodies).
    pub fn body_log_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
    /// The largest request body buffered (default [`DEFAULT_BODY_BUFFER_LIMIT`], 1 MiB); a larger one is
    /// answered `413` problem+json without calling the inner service.
    pub fn body_buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }
    /// The layer.
    pub fn build(self) -> HttpAuditLayer {
        HttpAuditLayer {
            cfg: Arc::new(HttpConfig {
                audit: AuditConfig::new(self.base.redactor, self.base.service),
                sensitive: self.sensitive,
                body_limit: self.body_limit,
                buffer_limit: self.buffer_limit,
            }),
        }
    }
}

impl<S> Layer<S> for HttpAuditLayer {
    type Service = HttpAudit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HttpAudit { inner, cfg: self.cfg.clone() }
    }
}

/// The service of [`HttpAuditLayer`].
#[derive(Debug, Clone)]
pub struct HttpAudit<S> {
    inner: S,
    cfg: Arc<HttpConfig>,
}

/// What HTTP mode keeps of a request when only failures are recorded (see [`Held`]): the body is the buffered
/// one, shared.
struct Sent {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpConfig {
    /// A request as its audit event writes it: method, redacted URI, headers, body.
    fn request(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> String {
        let mut out = format!("{method} {}", self.audit.redactor.redact(&uri.to_string()));
        self.headers(&mut out, headers);
        self.body(&mut out, body);
        out
    }

    fn request_of(&self, sent: &Sent) -> String {
        self.request(&sent.method, &sent.uri, &sent.headers, &sent.body)
    }

    fn headers(&self, out: &mut String, headers: &HeaderMap) {
        for (name, value) in headers {
            let _ = write!(out, " {name}: ");
            if self.sensitive.contains(name) {
                out.push_str(HEADER_PLACEHOLDER);
            } else {
                out.push_str(&self.audit.redactor.redact(&String::from_utf8_lossy(value.as_bytes())));
            }
            out.push(';');
        }
    }

    fn body(&self, out: &mut String, body: &[u8]) {
        if self.body_limit == 0 || body.is_empty() {
            return;
        }
        // Redact the whole body first, then cut: a cut before redacting could split a card number in two.
        let red = self.audit.redactor.redact_json_bytes(body);
        let text = String::from_utf8_lossy(&red);
        let mut end = text.len().min(self.body_limit);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(" body: ");
        out.push_str(&text[..end]);
        if end < text.len() {
            let _ = write!(out, "…({} bytes)", text.len());
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> Service<Request<B>> for HttpAudit<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that is called (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let cfg = self.cfg.clone();
        Box::pin(async move {
            let start = Instant::now();
            let (parts, body) = req.into_parts();
            let body = match collect_limited(&parts.headers, body, cfg.buffer_limit).await {
                Ok(body) => body,
                Err(BodyError::TooLarge { limit }) => {
                    tracing::warn!(target: "palisade::audit", limit, "request body over the buffer limit: refused");
                    let problem = Problem::new(
                        http::StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "payload too large",
                        format!("the request body exceeds the {limit}-byte limit"),
                    );
                    return Ok(problem.into_response());
                }
                Err(e) => return Err(e.into()),
            };
            // Rendered only for a subscriber that records the event; the duration is measured either way.
            let request = Held::at_call(
                || cfg.request(&parts.method, &parts.uri, &parts.headers, &body),
                || Sent {
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    headers: parts.headers.clone(),
                    body: body.clone(),
                },
            );
            // Records the call as `unknown` if this future is dropped while the inner call runs.
            let mut guard = CancelGuard { cfg: cfg.clone(), request: Some(request), start };
            let result = inner.call(Request::from_parts(parts, Full::new(body))).await.map_err(Into::into);
            let request = guard.request.take().unwrap_or(Held::Nothing);
            // The response's body is buffered whether or not anyone listens: the service answers `Full<Bytes>`.
            let outcome: Result<(http::response::Parts, Bytes), BoxError> = match result {
                Ok(res) => {
                    let (parts, body) = res.into_parts();
                    body.collect().await.map(|b| (parts, b.to_bytes())).map_err(Into::into)
                }
                Err(e) => Err(e),
            };
            let class = match &outcome {
                Ok((parts, _)) => {
                    HttpClassifier::classify_parts(parts.status, &parts.headers, SystemTime::now()).class()
                }
                Err(e) => e.outcome().class(),
            };
            let rendered = || match &outcome {
                Ok((parts, body)) => {
                    let mut out = parts.status.to_string();
                    cfg.headers(&mut out, &parts.headers);
                    cfg.body(&mut out, body);
                    out
                }
                Err(e) => cfg.audit.render(&format_args!("error: {e}")),
            };
            cfg.audit.finish(&request, |s| cfg.request_of(s), rendered, class, start.elapsed());
            outcome.map(|(parts, body)| Response::from_parts(parts, Full::new(body)))
        })
    }
}

struct CancelGuard {
    cfg: Arc<HttpConfig>,
    request: Option<Held<Sent>>,
    start: Instant,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let cfg = &self.cfg;
            cfg.audit.finish(
                &request,
                |s| cfg.request_of(s),
                || crate::layer::CANCELLED.to_owned(),
                palisade_core::OutcomeClass::Unknown,
                self.start.elapsed(),
            );
        }
    }
}
