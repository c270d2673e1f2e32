//! [`HttpGateway`]: the gateway `Service` over HTTP/1.1, for a simulator (or anything speaking its JSON API) in
//! another process. It classifies what the socket does, so the layers above read the right outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use palisade_core::{GatewayKeyed, GatewayRequest, GatewayResponse, PaymentError, parse_retry_after};

use super::MAX_BODY_BYTES;
use super::wire::{ErrorEnvelope, PaymentBody, encode};

/// How long a call may take, unless set: 10 s (connect, send, answer and body together).
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadline of a call whose timeout does not fit in an `Instant`: 30 years from now, as tokio's own
/// "far future" (a sleep that long never ends in practice, and adding it to `now` cannot overflow).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A base URL [`HttpGateway::new`] cannot use. Its message never repeats credentials the URL held (they are
/// written `***`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBaseUrl {
    kind: InvalidBaseUrlKind,
    message: String,
}

/// Why [`HttpGateway::new`] refused a base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidBaseUrlKind {
    /// Not a URL at all.
    Unparsable,
    /// Not `http://` (no scheme, or another one: only plain HTTP is spoken).
    NotHttp,
    /// No host.
    NoHost,
    /// A query (`?…`), which cannot prefix the routes.
    Query,
    /// Credentials (`user:password@` or `user@`): the simulator's API takes none, and they must not go out in
    /// the `Host` header of every request.
    Credentials,
}

impl InvalidBaseUrl {
    fn new(kind: InvalidBaseUrlKind, base_url: &str, why: impl fmt::Display) -> Self {
        InvalidBaseUrl { kind, message: format!("{}: {why}", without_credentials(base_url)) }
    }

    /// Why the URL was refused.
    #[must_use]
    pub fn kind(&self) -> InvalidBaseUrlKind {
        self.kind
    }
}

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid gateway base URL: {}", self.message)
    }
}
impl std::error::Error for InvalidBaseUrl {}

/// `url` with anything between `://` and the last `@` written `***`, so an error never repeats a password, even
/// one holding an unescaped `/`, `?` or `#` that ends the authority early (redacting a path's `@` too is harmless).
fn without_credentials(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    match url[start..].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone)]
struct Config {
    host: String,
    port: u16,
    authority: HeaderValue,
    prefix: String,
    timeout: Duration,
}

/// The gateway `Service` over HTTP: `tower::Service<GatewayRequest, Response = GatewayResponse,
/// Error = PaymentError>`, speaking the simulator's JSON API (`docs/sim.md`). Cheap to clone.
///
/// One connection per call, so what the socket did says what happened:
///
/// | the socket | error | outcome |
/// |---|---|---|
/// | connect refused or failed, or timed out connecting; the connection closed before the request was written | `NetworkBeforeSend` | Retriable |
/// | closed after the request was written, without a (whole) answer; no answer within the timeout | `GatewayTimeout` | Unknown |
/// | 2xx with an answer that cannot be read | `GatewayTimeout` | Unknown |
/// | 402 | the decline the body names (`CardDeclined`, `InsufficientFunds`, `FraudBlocked`, `AuthenticationRequired`) | Terminal |
/// | 400 / 422 / other 4xx | `InvalidRequest` / `IdempotencyConflict` / `InvalidRequest` | Terminal |
/// | 409 | `IdempotencyInFlight` with `Retry-After` | Retriable |
/// | 429 | `RateLimited` with `Retry-After` | Retriable |
/// | 408, 425, 503 | `GatewayUnavailable` with `Retry-After` | Retriable |
/// | 504 | `GatewayTimeout` | Unknown |
/// | other 5xx (and 1xx, 3xx) | `GatewayServerError` with the status | Unknown |
///
/// The status decides the outcome; the body's `error` member only fills in details of the same status (a
/// decline code), so a body can never turn a 5xx into a decline. The request's gateway idempotency key is sent
/// as `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct HttpGateway {
    config: Arc<Config>,
}

impl HttpGateway {
    /// A client for the API at `base_url` (`http://127.0.0.1:4242`, optionally with a path prefix). Only plain
    /// `http` is spoken.
    ///
    /// # Errors
    /// When `base_url` is not an `http://host[:port][/prefix]` URL; a URL with credentials (`user:password@`) is
    /// refused ([`InvalidBaseUrlKind::Credentials`]) rather than sent anywhere.
    pub fn new(base_url: &str) -> Result<Self, InvalidBaseUrl> {
        use InvalidBaseUrlKind as Kind;
        let uri: Uri = base_url.parse().map_err(|e| InvalidBaseUrl::new(Kind::Unparsable, base_url, e))?;
        if uri.scheme_str() != Some("http") {
            return Err(InvalidBaseUrl::new(Kind::NotHttp, base_url, "only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| InvalidBaseUrl::new(Kind::NoHost, base_url, "no host"))?;
        if authority.as_str().contains('@') {
            return Err(InvalidBaseUrl::new(
                Kind::Credentials,
                base_url,
                "credentials (user:password@) are refused: the simulator's API takes none and they would be sent \
                 in the Host header; remove them",
            ));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        // `Uri` takes any text after the last `:` as a port; one that is not a number is refused, not read as 80
        // (`http://user:pa/ss@host`, a password with an unescaped `/`, would otherwise go to host `user`). With
        // no credentials, the authority is the host and then `:port`, if any.
        let port = match &authority.as_str()[authority.host().len()..] {
            "" | ":" => 80,
            _ => authority.port_u16().ok_or_else(|| {
                InvalidBaseUrl::new(Kind::Unparsable, base_url, "the port is not a number from 0 to 65535")
            })?,
        };
        if uri.query().is_some() {
            return Err(InvalidBaseUrl::new(Kind::Query, base_url, "a query cannot be part of the base URL"));
        }
        let authority = HeaderValue::from_str(authority.as_str())
            .map_err(|e| InvalidBaseUrl::new(Kind::Unparsable, base_url, e))?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(HttpGateway { config: Arc::new(Config { host, port, authority, prefix, timeout: DEFAULT_CLIENT_TIMEOUT }) })
    }

    /// How long one call may take in all (default [`DEFAULT_CLIENT_TIMEOUT`]). A timeout too long to add to the
    /// clock (`Duration::MAX`) means no deadline in practice: the call waits about 30 years.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).timeout = timeout;
        self
    }

    /// Sends one request and classifies the result (what `Service::call` runs).
    ///
    /// # Errors
    /// See the table on [`HttpGateway`].
    pub async fn send(&self, req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
        let c = &*self.config;
        let now = Instant::now();
        // `Duration::MAX` overflows `Instant`: wait "for ever" instead (30 years, tokio's own far future).
        let deadline = now.checked_add(c.timeout).unwrap_or_else(|| now + FAR_FUTURE);
        let (path, body) = encode(&req)?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", c.prefix))
            .header(header::HOST, c.authority.clone())
            .header(header::ACCEPT, "application/json");
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(key) = req.gateway_key() {
            builder = builder.header(palisade_core::IDEMPOTENCY_KEY, key.header_value().as_ref());
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PaymentError::invalid_request(format!("cannot build the HTTP request: {e}")))?;

        // Before anything is written: every failure here is `NetworkBeforeSend`.
        let stream = match timeout_at(deadline, TcpStream::connect((c.host.as_str(), c.port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(PaymentError::network(format!("connect to {}:{}: {e}", c.host, c.port))),
            Err(_) => return Err(PaymentError::network(format!("connect to {}:{} timed out", c.host, c.port))),
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PaymentError::network(format!("HTTP handshake: {e}")))?;
        // The connection is driven on its own task and torn down (socket closed) when this call ends.
        let driver = AbortOnDrop(tokio::spawn(conn));

        let exchange = async {
            if let Err(e) = sender.ready().await {
                return Err(PaymentError::network(format!("connection closed before the request was sent: {e}")));
            }
            let res = match sender.try_send_request(request).await {
                Ok(res) => res,
                Err(mut e) => {
                    return Err(if e.take_message().is_some() {
                        PaymentError::network(format!("request not sent: {}", e.error()))
                    } else {
                        PaymentError::timeout(format!("connection closed after the request was sent: {}", e.error()))
                    });
                }
            };
            let (parts, body) = res.into_parts();
            // Bounded as the server bounds requests: an endless answer is not buffered. Past the bound, or cut
            // off, the request was sent and may have acted: Unknown.
            let body = Limited::new(body, MAX_BODY_BYTES).collect().await.map_err(|e| {
                if e.is::<LengthLimitError>() {
                    PaymentError::timeout(format!(
                        "the answer (HTTP {}) is larger than {MAX_BODY_BYTES} bytes; not read",
                        parts.status
                    ))
                } else {
                    PaymentError::timeout(format!(
                        "connection closed while reading the answer (HTTP {}): {e}",
                        parts.status
                    ))
                }
            })?;
            Ok((parts.status, parts.headers, body.to_bytes()))
        };
        let result = timeout_at(deadline, exchange).await;
        drop(driver);
        let (status, headers, body) = match result {
            Ok(r) => r?,
            Err(_) => {
                return Err(PaymentError::timeout(format!(
                    "no answer within {} ms after the request was sent",
                    c.timeout.as_millis()
                )));
            }
        };
        classify(status, &headers, &body)
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The result an HTTP answer stands for (the table on [`HttpGateway`]).
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<GatewayResponse, PaymentError> {
    if status.is_success() {
        return serde_json::from_slice::<PaymentBody>(body)
            .map_err(|e| PaymentError::invalid_request(e.to_string()))
            .and_then(PaymentBody::into_response)
            .map_err(|e| PaymentError::timeout(format!("HTTP {status} with an answer that cannot be read: {e}")));
    }
    let retry_after = headers.get(header::RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now()));
    // The body's error, only when it agrees with the status.
    let stated = serde_json::from_slice::<ErrorEnvelope>(body).ok().map(|e| e.error).filter(|e| {
        e.http_status() == status || (matches!(e, PaymentError::GatewayServerError { .. }) && status.is_server_error())
    });
    Err(match status.as_u16() {
        402 => stated.unwrap_or(PaymentError::CardDeclined { code: None }),
        400 => match stated {
            Some(e @ (PaymentError::InvalidRequest { .. } | PaymentError::IdempotencyKeyMissing)) => e,
            _ => PaymentError::invalid_request(format!("gateway answered HTTP {status}")),
        },
        409 => PaymentError::IdempotencyInFlight { retry_after: retry_after.or(stated.and_then(|e| e.retry_after())) },
        422 => PaymentError::IdempotencyConflict,
        429 => PaymentError::RateLimited { retry_after: retry_after.or(stated.and_then(|e| e.retry_after())) },
        // 408: the gateway stopped waiting for the request; 425: it would not risk a replay. Neither acted.
        408 | 425 | 503 => {
            PaymentError::GatewayUnavailable { retry_after: retry_after.or(stated.and_then(|e| e.retry_after())) }
        }
        504 => PaymentError::timeout("gateway answered HTTP 504"),
        401..=499 => PaymentError::invalid_request(format!("gateway answered HTTP {status}")),
        code => {
            let code_text = match stated {
                Some(PaymentError::GatewayServerError { code, .. }) => code,
                _ => None,
            };
            PaymentError::GatewayServerError { status: code, code: code_text }
        }
    })
}

impl tower_service::Service<GatewayRequest> for HttpGateway {
    type Response = GatewayResponse;
    type Error = PaymentError;
    type Future = Pin<Box<dyn Future<Output = Result<GatewayResponse, PaymentError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GatewayRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.send(req).await })
    }
}
