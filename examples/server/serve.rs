//! The listener: HTTP/1.1 connections with read timeouts and a connection limit, so slow or half-sent requests
//! (slowloris) cannot hold every connection and starve real clients.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceBuilder;

/// How long a client may take to send a request's head (request line and headers), counted from when the server
/// starts waiting for it: the accept, or the end of the previous response on a kept-alive connection: 5 s. So it
/// is also the idle keep-alive timeout. A real client sends its head in one packet, right after connecting or
/// when it reuses a connection; a connection that dribbles its head, or sits idle, is closed.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's whole body, counted from the end of its head: 10 s. A deadline
/// for the body, not for each read, so a client sending a byte at a time is cut off too. Charge bodies are a few
/// hundred bytes; a body that has not arrived by then fails the request (400) and frees the connection. Only
/// reading the body is bounded: a charge already sent to the gateway is never cut off halfway.
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
    let body_timeout = limits.body_timeout;
    let app = ServiceBuilder::new()
        .map_request(move |req: Request<hyper::body::Incoming>| {
            req.map(|body| Body::new(DeadlineBody::new(Body::new(body), body_timeout)))
        })
        .service(app);
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

/// A request body that must arrive whole within a deadline, set when the body is wrapped (the end of the head).
/// tower-http's `RequestBodyTimeout` bounds each wait between chunks instead, which a client sending a byte at a
/// time never trips. Data that has already arrived is handed out even after the deadline, so a handler that reads
/// the body late is not failed by it.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), expired: false }
    }
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyDeadlineExceeded;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(axum::Error::new(BodyDeadlineExceeded))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
