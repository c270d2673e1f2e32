//! The response future: requests that are not screened (captures, refunds) pass through without a box.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

pin_project! {
    #[project = Proj]
    enum Inner<F, T> {
        Passthrough { #[pin] fut: F },
        Screened { fut: Pin<Box<dyn Future<Output = T> + Send>> },
    }
}

pin_project! {
    /// The future of [`crate::Fraud`]: the inner future itself for requests that are not screened; for
    /// screened ones, the store round trip, the decision, then the inner call.
    pub struct ResponseFuture<F, T> {
        #[pin]
        inner: Inner<F, T>,
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn passthrough(fut: F) -> Self {
        ResponseFuture { inner: Inner::Passthrough { fut } }
    }
    pub(crate) fn screened(fut: Pin<Box<dyn Future<Output = T> + Send>>) -> Self {
        ResponseFuture { inner: Inner::Screened { fut } }
    }
}

impl<F, Res, E> Future for ResponseFuture<F, Result<Res, E>>
where
    F: Future<Output = Result<Res, E>>,
{
    type Output = Result<Res, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            Proj::Passthrough { fut } => fut.poll(cx),
            Proj::Screened { fut } => fut.as_mut().poll(cx),
        }
    }
}

impl<F, T> std::fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner {
            Inner::Passthrough { .. } => f.write_str("ResponseFuture::Passthrough"),
            Inner::Screened { .. } => f.write_str("ResponseFuture::Screened"),
        }
    }
}
