//! The listener: HTTP/1.1 connections with read timeouts and a connection limit, so slow or half-sent requests
//! (slowloris) cannot hold every connection and starve real clients.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long a client may take to send a request's head (request line and headers), from the first byte or
/// from the end of the previous request on a kept-alive connection: 5 s. A real client sends its head in one
/// packet; a connection that dribbles it is closed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's body: 10 s. Charge bodies are a few hundred bytes; a body that
/// does not arrive in 10 s fails the request (400) and frees the connection.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once: 1024. Past it the server stops accepting (new clients wait in the kernel's
/// backlog) instead of running out of file descriptors or memory; each connection holds one task.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`DEFAULT_HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// See [`DEFAULT_BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until the listener fails for good.
///
/// # Errors
/// Only when no connection can be accepted at all; a failed accept (a client that reset, a full descriptor
/// table) is logged and retried.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) -> std::io::Result<()> {
    let app = ServiceBuilder::new().layer(RequestBodyTimeoutLayer::new(limits.body_timeout)).service(app);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        // Acquired before accepting: at the limit, new connections wait in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else { return Ok(()) };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
