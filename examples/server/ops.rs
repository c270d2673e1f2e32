//! What operations needs from the server: `GET /metrics` (Prometheus text, from everything recorded through the
//! `metrics` facade: the layers' `palisade_*` counters, the saga's, the checkouts'), `GET /healthz` (the process is
//! up), `GET /readyz` (the stores answer), and a graceful shutdown on SIGTERM and Ctrl-C.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http_body::{Frame, SizeHint};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use palisade::core::{PaymentError, Problem};
use palisade::idempotency::LeaseStore;
use palisade_saga::SagaLog;
use serde_json::json;
use tokio::net::TcpListener;

use crate::serve;

/// How long `/readyz` waits for each store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a shutdown waits, from the signal, for the requests in flight and then the checkout sagas still
/// running before it exits anyway (`--shutdown-grace-ms`): 30 s, Kubernetes' default
/// `terminationGracePeriodSeconds`, after which the process is killed regardless. A checkout of four steps takes
/// well under a second when the gateway is healthy; one waiting out a `Retry-After` or an open breaker may not end
/// in time, and is then left to the saga recovery of another instance (see `main.rs`).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The process's Prometheus recorder, installed on first use (one per process: the `metrics` facade has one
/// global recorder). When another recorder was installed first, a handle that renders nothing.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new().install_recorder().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a metrics recorder was installed already; /metrics will be empty");
                PrometheusBuilder::new().build_recorder().handle()
            })
        })
        .clone()
}

/// What `/readyz` asks: the idempotency store (which also holds the inventory) and the saga log.
#[derive(Clone)]
pub struct Readiness {
    /// The idempotency and inventory store.
    pub store: Arc<dyn LeaseStore>,
    /// The saga log (the orders).
    pub log: Arc<dyn SagaLog>,
}

/// `GET /metrics`, `GET /healthz` and `GET /readyz`.
pub fn router(readiness: Readiness) -> Router {
    let metrics = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready).with_state(readiness))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    metrics.run_upkeep();
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics.render())
                }
            }),
        )
}

/// The server's answers for requests no route takes, set on the whole app once every route is merged (a method
/// fallback covers only the routes registered before it): any other path is a 404 problem+json (`not_found`),
/// another method on a known path a 405 problem+json (`method_not_allowed`) with axum's `Allow` header, like
/// every other error the server answers.
pub fn with_fallbacks(app: Router) -> Router {
    app.fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
        "this route does not take that method",
    )
    .into_response::<Body>()
}

/// The path is not echoed: it is whatever the client sent.
async fn not_found() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not_found", "not found", "no such route").into_response::<Body>()
}

async fn ready(State(r): State<Readiness>) -> Response {
    let store = async {
        match tokio::time::timeout(READY_TIMEOUT, r.store.get("palisade:readyz")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("idempotency store: {e}")),
            Err(_) => Err("idempotency store: no answer".to_owned()),
        }
    };
    let log = async {
        match tokio::time::timeout(READY_TIMEOUT, r.log.get("palisade-readyz")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("saga log: {e}")),
            Err(_) => Err("saga log: no answer".to_owned()),
        }
    };
    let (store, log) = tokio::join!(store, log);
    let failed: Vec<String> = [store, log].into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let err = PaymentError::store_unavailable(format!("not ready: {}", failed.join("; ")));
        Problem::from_error(&err).into_response::<Body>()
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Serves `app` like [`serve::serve`] until `shutdown` resolves, then shuts down gracefully: stops accepting
/// (the listener is closed), answers requests that arrive on kept-alive connections 503 with
/// `Connection: close`, waits (at most `grace` from the signal) until every request in flight has been answered
/// and its body sent, and returns the end of the grace, which whatever else the shutdown waits for (the checkout
/// sagas still running: `Shop::wait_for_sagas`) shares. The idempotency layer completes or releases each of those
/// requests' claims as they end, so no key is left held for a lease.
///
/// Only HTTP requests are counted here: a checkout whose client hung up runs on without a request, so the caller
/// must wait for the sagas after this returns.
///
/// # Errors
/// As [`serve::serve`].
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    limits: serve::Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<tokio::time::Instant> {
    let drain = Drain::default();
    let app = app.layer(middleware::from_fn_with_state(drain.clone(), track));
    tokio::select! {
        served = serve::serve(listener, app, limits) => return served.map(|()| tokio::time::Instant::now()),
        () = shutdown => {}
    }
    let deadline = tokio::time::Instant::now() + grace;
    // The serve future (and with it the listener) is gone: no new connection is accepted. The connections'
    // tasks go on, so requests in flight finish.
    drain.inner.draining.store(true, Ordering::SeqCst);
    let in_flight = drain.in_flight();
    tracing::warn!(in_flight, "shutting down: no new connections; finishing the requests in flight");
    while drain.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if drain.in_flight() > 0 {
        tracing::warn!(in_flight = drain.in_flight(), "shutdown grace ended with requests still in flight");
    }
    // A moment for the last responses' bytes to leave the socket buffers.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(deadline)
}

/// Counts the requests in flight, and refuses new ones once draining.
#[derive(Clone, Default)]
struct Drain {
    inner: Arc<DrainInner>,
}

#[derive(Default)]
struct DrainInner {
    in_flight: AtomicUsize,
    draining: AtomicBool,
}

impl Drain {
    fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }
}

/// One request in flight, until its response body has been sent (or dropped).
struct InFlight(Arc<DrainInner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn track(State(drain): State<Drain>, req: Request, next: Next) -> Response {
    if drain.inner.draining.load(Ordering::SeqCst) {
        let p = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting down",
            "this instance is shutting down; retry (on another instance)",
        );
        let mut res = p.with_retry_after(Duration::from_secs(1)).into_response::<Body>();
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    drain.inner.in_flight.fetch_add(1, Ordering::SeqCst);
    let guard = InFlight(drain.inner.clone());
    let mut res = next.run(req).await;
    if drain.inner.draining.load(Ordering::SeqCst) {
        // Finished during the drain: the client should not send another request on this connection.
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res.map(|body| Body::new(GuardedBody { inner: body, _guard: guard }))
}

/// A response body that keeps its request counted as in flight until it is sent.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
