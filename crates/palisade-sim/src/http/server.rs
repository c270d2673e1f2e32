//! [`SimServer`]: the in-process [`GatewaySim`] served as a Stripe-like JSON API over HTTP/1.1, with faults that
//! happen on the socket (a response lost after the commit really closes the connection).

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, ToSocketAddrs};

use palisade_core::{GatewayKeyed, IdempotencyKey, PaymentError, Problem};

use super::wire::{AmountBody, ChargeBody, LedgerRow, PaymentBody, RefundBody, void_request};
use crate::{GatewaySim, Latency};

/// The largest body either side reads: a request at the server, an answer at [`HttpGateway`](super::HttpGateway): 64 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a `timeout` fault holds a request before closing the connection without an answer, unless set:
/// 60 s, longer than any sane client waits.
pub const DEFAULT_TIMEOUT_HOLD: Duration = Duration::from_secs(60);

/// The `Retry-After` of a `rate_limited` or `refused` fault, unless set: 1 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long the server waits for a request's whole body once its head has arrived, unless set: 10 s, ample for
/// [`MAX_BODY_BYTES`] on any link a client would test over, short enough that a client which sends the head and
/// stalls does not hold a connection (and its task) for ever. Past it the answer is `408` and nothing runs.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server waits for a request's head: 5 s (hyper's header read timeout).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A fault the HTTP simulator injects into one request to a gateway operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpFault {
    /// The operation runs (ledger and key store updated), then the connection is closed without a response.
    LostResponse,
    /// Nothing runs; the request is held without an answer for the hold time, then the connection is closed.
    Timeout,
    /// Nothing runs; `500` with a problem+json body (`gateway_server_error`).
    Error5xx,
    /// Nothing runs; `429` with `Retry-After`.
    RateLimited,
    /// Nothing runs; `503` with `Retry-After`, before the body is read (`gateway_unavailable`).
    Refused,
}

impl HttpFault {
    /// Every fault, in the order of [`HttpFault::as_str`]'s names.
    pub const ALL: [HttpFault; 5] =
        [HttpFault::LostResponse, HttpFault::Timeout, HttpFault::Error5xx, HttpFault::RateLimited, HttpFault::Refused];

    /// The name used on the command line and in `POST /v1/_sim/faults`: `lost_response`, `timeout`, `error_5xx`,
    /// `rate_limited`, `refused`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            HttpFault::LostResponse => "lost_response",
            HttpFault::Timeout => "timeout",
            HttpFault::Error5xx => "error_5xx",
            HttpFault::RateLimited => "rate_limited",
            HttpFault::Refused => "refused",
        }
    }
}

impl fmt::Display for HttpFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown fault name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = HttpFault::ALL.iter().map(|f| f.as_str()).collect();
        write!(f, "unknown fault `{}` (expected one of: {})", self.0, names.join(", "))
    }
}
impl std::error::Error for UnknownFault {}

impl FromStr for HttpFault {
    type Err = UnknownFault;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HttpFault::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// Builder for [`SimServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SimServerBuilder {
    seed: u64,
    latency: Option<Duration>,
    rules: Vec<(HttpFault, f64)>,
    timeout_hold: Duration,
    retry_after: Duration,
    body_read_timeout: Duration,
    sim: Option<GatewaySim>,
}

impl SimServerBuilder {
    /// Seed of the fault draws (and of the simulator it builds); default 0. The same seed and the same sequence
    /// of operation requests give the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// A fixed latency per operation (the simulator's own latency: the operation commits after it even when the
    /// client has gone).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
    /// Injects `fault` into a request with probability `rate` (clamped to 0.0..=1.0; a rate that is not a finite
    /// number, NaN or ±∞, counts as 0: the rule never fires). Rules are drawn in the order added, one draw each,
    /// until one fires.
    pub fn fault(mut self, fault: HttpFault, rate: f64) -> Self {
        self.rules.push((fault, crate::faults::probability(rate)));
        self
    }
    /// How long a `timeout` fault holds a request (default [`DEFAULT_TIMEOUT_HOLD`]).
    pub fn timeout_hold(mut self, hold: Duration) -> Self {
        self.timeout_hold = hold;
        self
    }
    /// The `Retry-After` of `rate_limited` and `refused` (default [`DEFAULT_RETRY_AFTER`]; sent in whole seconds,
    /// rounded up).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }
    /// How long a request's body may take to arrive once its head has (default [`DEFAULT_BODY_READ_TIMEOUT`]).
    /// Past it the server answers `408` problem+json, closes the connection and runs nothing.
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }
    /// Serves this simulator instead of a fresh one (its scripted faults and outages apply too: see
    /// `docs/sim.md`).
    pub fn sim(mut self, sim: GatewaySim) -> Self {
        self.sim = Some(sim);
        self
    }
    /// Binds the listener (`127.0.0.1:0` picks a free port: read it back with [`SimServer::local_addr`]).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sim = match self.sim {
            Some(sim) => {
                if let Some(l) = self.latency {
                    sim.set_latency(Latency::fixed(l));
                }
                sim
            }
            None => {
                GatewaySim::builder().seed(self.seed).latency(Latency::fixed(self.latency.unwrap_or_default())).build()
            }
        };
        let shared = Arc::new(Shared {
            sim,
            faults: Mutex::new(Faults {
                rng: StdRng::seed_from_u64(self.seed),
                rules: self.rules,
                script: VecDeque::new(),
                injected: [0; HttpFault::ALL.len()],
            }),
            timeout_hold: self.timeout_hold,
            retry_after: self.retry_after,
            body_read_timeout: self.body_read_timeout,
        });
        Ok(SimServer { listener, handle: SimHandle { addr, shared } })
    }
}

#[derive(Debug)]
struct Faults {
    rng: StdRng,
    rules: Vec<(HttpFault, f64)>,
    script: VecDeque<Option<HttpFault>>,
    /// How many of each fault were injected, in the order of [`HttpFault::ALL`].
    injected: [u64; HttpFault::ALL.len()],
}

impl Faults {
    fn next(&mut self) -> Option<HttpFault> {
        let fault = match self.script.pop_front() {
            Some(f) => f,
            None => {
                let rng = &mut self.rng;
                self.rules.iter().find(|&&(_, rate)| rng.random_bool(rate)).map(|&(f, _)| f)
            }
        };
        if let Some(i) = fault.and_then(|f| HttpFault::ALL.iter().position(|&k| k == f)) {
            self.injected[i] += 1;
        }
        fault
    }
}

#[derive(Debug)]
struct Shared {
    sim: GatewaySim,
    faults: Mutex<Faults>,
    timeout_hold: Duration,
    retry_after: Duration,
    body_read_timeout: Duration,
}

/// A bound simulator server; [`SimServer::run`] serves it.
#[derive(Debug)]
pub struct SimServer {
    listener: TcpListener,
    handle: SimHandle,
}

/// A handle on a running (or bound) simulator server: its address, its simulator and its fault script.
#[derive(Debug, Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl SimHandle {
    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://ADDR`, for [`HttpGateway::new`](crate::HttpGateway::new).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// The simulator behind the server (its ledger is what `GET /v1/_sim/ledger` shows).
    #[must_use]
    pub fn sim(&self) -> &GatewaySim {
        &self.shared.sim
    }
    /// The next operation requests get these faults, in order (`None`: no fault), before the random rules apply.
    pub fn script(&self, faults: impl IntoIterator<Item = Option<HttpFault>>) {
        self.shared.faults.lock().script.extend(faults);
    }
    /// How many requests got each fault so far (scripted or drawn), in the order of [`HttpFault::ALL`].
    #[must_use]
    pub fn injected(&self) -> [(HttpFault, u64); HttpFault::ALL.len()] {
        let counts = self.shared.faults.lock().injected;
        let mut out = [(HttpFault::LostResponse, 0); HttpFault::ALL.len()];
        for ((slot, fault), n) in out.iter_mut().zip(HttpFault::ALL).zip(counts) {
            *slot = (fault, n);
        }
        out
    }
}

impl SimServer {
    /// A builder.
    pub fn builder() -> SimServerBuilder {
        SimServerBuilder {
            seed: 0,
            latency: None,
            rules: Vec::new(),
            timeout_hold: DEFAULT_TIMEOUT_HOLD,
            retry_after: DEFAULT_RETRY_AFTER,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            sim: None,
        }
    }
    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }
    /// A handle (address, simulator, fault script) that outlives [`SimServer::run`]'s future.
    #[must_use]
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }
    /// Serves connections until the future is dropped. Each connection runs on its own task.
    ///
    /// # Errors
    /// Never in practice: a failed accept is logged and retried.
    pub async fn run(self) -> std::io::Result<()> {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "sim server: accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = self.handle.shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { shared.handle(req).await }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                // A service error (`Abort`) ends the connection here: the socket is closed, nothing is written.
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "sim server: connection closed");
                }
            });
        }
    }
    /// Spawns [`SimServer::run`] on the current runtime; the task ends when aborted.
    pub fn spawn(self) -> (SimHandle, tokio::task::JoinHandle<std::io::Result<()>>) {
        let handle = self.handle();
        (handle, tokio::spawn(self.run()))
    }
}

/// Returned by the service to make hyper drop the connection without writing a response.
#[derive(Debug)]
struct Abort(&'static str);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection closed without a response: {}", self.0)
    }
}
impl std::error::Error for Abort {}

type Res = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Res {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A problem+json answer for `err` with an `error` member holding the error itself (`{"kind": …}`), and
/// `Retry-After` when it has one.
fn error_response(err: &PaymentError) -> Res {
    problem_response(err, None)
}

/// [`error_response`] with `status` instead of the error's own, in the status line and in the body's `status`
/// member alike (RFC 9457 §3.1.4): a 404 for a missing route, a 408 for a body that did not arrive.
fn problem_response(err: &PaymentError, status: Option<StatusCode>) -> Res {
    let mut problem = Problem::from_error(err);
    // A server error keeps its own status (500, 502, 504), not the 502 a `Problem` gives every one of them.
    problem.status = status.unwrap_or(match err {
        PaymentError::GatewayServerError { status: s, .. } => {
            StatusCode::from_u16(*s).ok().filter(StatusCode::is_server_error).unwrap_or(problem.status)
        }
        _ => problem.status,
    });
    let headers = std::mem::take(&mut problem.headers);
    let mut doc = serde_json::to_value(&problem).unwrap_or_default();
    if let (Some(map), Ok(e)) = (doc.as_object_mut(), serde_json::to_value(err)) {
        map.insert("error".to_owned(), e);
    }
    let mut res = json_response(problem.status, serde_json::to_vec(&doc).unwrap_or_default());
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(palisade_core::problem::PROBLEM_JSON));
    res.headers_mut().extend(headers);
    res
}

/// Which operation a request names.
enum Route<'a> {
    Charge,
    Authorize,
    Capture(&'a str),
    Void(&'a str),
    Refund,
}

impl Shared {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Res, Abort> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let route = match (req.method(), segments.as_slice()) {
            (&Method::GET, ["v1", "_sim", "ledger"]) => return Ok(self.ledger()),
            (&Method::POST, ["v1", "_sim", "faults"]) => return Ok(self.script_faults(req).await),
            (&Method::POST, ["v1", "charges"]) => Route::Charge,
            (&Method::POST, ["v1", "authorizations"]) => Route::Authorize,
            (&Method::POST, ["v1", "authorizations", id, "capture"]) => Route::Capture(id),
            (&Method::POST, ["v1", "authorizations", id, "void"]) => Route::Void(id),
            (&Method::POST, ["v1", "refunds"]) => Route::Refund,
            _ => {
                let err = PaymentError::invalid_request(format!("no route for {path}"));
                return Ok(problem_response(&err, Some(StatusCode::NOT_FOUND)));
            }
        };
        // One draw per operation request, in arrival order, before anything else: the fault sequence depends
        // only on the seed and the sequence of requests.
        let fault = self.faults.lock().next();
        match fault {
            Some(HttpFault::Refused) => {
                return Ok(error_response(&PaymentError::GatewayUnavailable { retry_after: Some(self.retry_after) }));
            }
            Some(HttpFault::RateLimited) => {
                return Ok(error_response(&PaymentError::RateLimited { retry_after: Some(self.retry_after) }));
            }
            Some(HttpFault::Error5xx) => {
                let code = Some(palisade_core::GatewayCode::new("api_error"));
                return Ok(error_response(&PaymentError::GatewayServerError { status: 500, code }));
            }
            _ => {}
        }
        let key = match req.headers().get(palisade_core::IDEMPOTENCY_KEY).map(|v| v.to_str().map(IdempotencyKey::parse))
        {
            None => None,
            Some(Ok(Ok(key))) => Some(key),
            Some(Ok(Err(e))) => {
                return Ok(error_response(&PaymentError::invalid_request(format!("Idempotency-Key: {e}"))));
            }
            Some(Err(_)) => return Ok(error_response(&PaymentError::invalid_request("Idempotency-Key is not text"))),
        };
        let body = match self.read_body(req.into_body()).await {
            Ok(b) => b,
            Err(res) => return Ok(res),
        };
        let parsed = match route {
            Route::Charge => parse::<ChargeBody>(&body).and_then(|b| b.into_request(false)),
            Route::Authorize => parse::<ChargeBody>(&body).and_then(|b| b.into_request(true)),
            Route::Capture(id) => {
                if body.iter().all(u8::is_ascii_whitespace) {
                    AmountBody::default().into_capture(id)
                } else {
                    parse::<AmountBody>(&body).and_then(|b| b.into_capture(id))
                }
            }
            Route::Void(id) => Ok(void_request(id)),
            Route::Refund => parse::<RefundBody>(&body).and_then(RefundBody::into_request),
        };
        let mut request = match parsed {
            Ok(r) => r,
            Err(e) => return Ok(error_response(&e)),
        };
        if let Some(key) = key {
            request.set_gateway_key(key);
        }
        if fault == Some(HttpFault::Timeout) {
            tokio::time::sleep(self.timeout_hold).await;
            return Err(Abort("timeout fault"));
        }
        let result = self.sim.handle(request).await;
        if fault == Some(HttpFault::LostResponse) {
            return Err(Abort("lost_response fault"));
        }
        Ok(match result {
            Ok(r) => {
                json_response(StatusCode::OK, serde_json::to_vec(&PaymentBody::from_response(&r)).unwrap_or_default())
            }
            // The simulator's own "response lost" (a fault scripted on the `GatewaySim`): lose it on the wire too.
            Err(PaymentError::GatewayTimeout { .. }) => return Err(Abort("simulator timed out")),
            // The simulator's own refusal before reading: nothing done, say so with a 503.
            Err(PaymentError::NetworkBeforeSend { .. }) => {
                error_response(&PaymentError::GatewayUnavailable { retry_after: None })
            }
            Err(e) => error_response(&e),
        })
    }

    /// The request's body, at most [`MAX_BODY_BYTES`] (else a 400) and within the body-read timeout (else a
    /// 408 that closes the connection: the rest of the body is never read, so the connection cannot serve
    /// another request).
    async fn read_body(&self, body: Incoming) -> Result<Bytes, Res> {
        match tokio::time::timeout(self.body_read_timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) => Err(error_response(&PaymentError::invalid_request(format!("request body: {e}")))),
            Err(_) => {
                let err = PaymentError::invalid_request(format!(
                    "the request body did not arrive within {} ms; nothing was done: send it again, whole",
                    self.body_read_timeout.as_millis()
                ));
                let mut res = problem_response(&err, Some(StatusCode::REQUEST_TIMEOUT));
                res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                Err(res)
            }
        }
    }

    fn ledger(&self) -> Res {
        let rows: Vec<LedgerRow> = self.sim.ledger().iter().map(LedgerRow::from).collect();
        json_response(StatusCode::OK, serde_json::to_vec(&rows).unwrap_or_default())
    }

    /// `POST /v1/_sim/faults` with `["lost_response", "none", …]`: the next operation requests get these faults.
    async fn script_faults(&self, req: Request<Incoming>) -> Res {
        let body = match self.read_body(req.into_body()).await {
            Ok(b) => b,
            Err(res) => return res,
        };
        let names: Vec<String> = match parse(&body) {
            Ok(n) => n,
            Err(e) => return error_response(&e),
        };
        let mut faults = Vec::with_capacity(names.len());
        for name in names {
            match name.as_str() {
                "none" => faults.push(None),
                other => match other.parse::<HttpFault>() {
                    Ok(f) => faults.push(Some(f)),
                    Err(e) => return error_response(&PaymentError::invalid_request(e.to_string())),
                },
            }
        }
        self.faults.lock().script.extend(faults);
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::NO_CONTENT;
        res
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PaymentError> {
    serde_json::from_slice(body).map_err(|e| PaymentError::invalid_request(format!("request body: {e}")))
}
