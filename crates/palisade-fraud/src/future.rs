//! The response future, named (no box) whenever the decision needs no wait: requests that are not screened
//! (captures, refunds), refusals, and screened requests decided at once (a rule set that reads no velocity, or
//! the memory store) are polled without a heap allocation. Only a store that must be awaited (Redis) and the
//! recording of a gateway decline go through a boxed future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::attributes::Attributes;
use crate::engine::FraudEngine;
use crate::mode::FraudMode;
use crate::velocity::Attempt;

/// What a screened call keeps to record a gateway decline (only when the rules read velocity).
pub(crate) struct Watch<M> {
    pub(crate) engine: FraudEngine,
    /// Boxed, so the future stays small (it is moved on every call) when no decline is watched.
    pub(crate) attrs: Box<Attributes>,
    pub(crate) mode: M,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    #[project = Proj]
    enum Inner<F, T, M> {
        Passthrough { #[pin] fut: F },
        Refused { out: Option<T> },
        Called { #[pin] fut: F, watch: Option<Watch<M>> },
        Recording { fut: Boxed<()>, out: Option<T> },
        Screened { fut: Boxed<T> },
    }
}

pin_project! {
    /// The future of [`crate::Fraud`]: the inner future itself for requests that are not screened; for
    /// screened ones decided at once, the refusal or the inner call (then, on a card decline, its recording);
    /// for those that wait on the velocity store, a boxed future doing the round trip, the decision, then the
    /// inner call.
    pub struct ResponseFuture<F, T, M> {
        #[pin]
        inner: Inner<F, T, M>,
    }
}

impl<F, T, M> ResponseFuture<F, T, M> {
    pub(crate) fn passthrough(fut: F) -> Self {
        ResponseFuture { inner: Inner::Passthrough { fut } }
    }
    pub(crate) fn refused(out: T) -> Self {
        ResponseFuture { inner: Inner::Refused { out: Some(out) } }
    }
    pub(crate) fn called(fut: F, watch: Option<Watch<M>>) -> Self {
        ResponseFuture { inner: Inner::Called { fut, watch } }
    }
    pub(crate) fn screened(fut: Boxed<T>) -> Self {
        ResponseFuture { inner: Inner::Screened { fut } }
    }
}

impl<F, Res, E, M> Future for ResponseFuture<F, Result<Res, E>, M>
where
    F: Future<Output = Result<Res, E>>,
    M: FraudMode<Res, E>,
{
    type Output = Result<Res, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        loop {
            let next = match inner.as_mut().project() {
                Proj::Passthrough { fut } => return fut.poll(cx),
                Proj::Screened { fut } => return fut.as_mut().poll(cx),
                Proj::Refused { out } => return Poll::Ready(taken(out)),
                Proj::Recording { fut, out } => {
                    ready!(fut.as_mut().poll(cx));
                    return Poll::Ready(taken(out));
                }
                Proj::Called { fut, watch } => {
                    let out = ready!(fut.poll(cx));
                    match watch.take() {
                        Some(w) if w.mode.is_decline(&out) => {
                            let fut: Boxed<()> = Box::pin(async move {
                                w.engine.record_decline_attempt(&Attempt::from_attributes(&w.attrs)).await;
                            });
                            Inner::Recording { fut, out: Some(out) }
                        }
                        _ => return Poll::Ready(out),
                    }
                }
            };
            inner.set(next);
        }
    }
}

/// The kept answer; polling a finished future is a bug of the caller.
fn taken<T>(out: &mut Option<T>) -> T {
    #[allow(clippy::expect_used)]
    out.take().expect("ResponseFuture polled after completion")
}

impl<F, T, M> std::fmt::Debug for ResponseFuture<F, T, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Passthrough { .. } => "ResponseFuture::Passthrough",
            Inner::Refused { .. } => "ResponseFuture::Refused",
            Inner::Called { .. } => "ResponseFuture::Called",
            Inner::Recording { .. } => "ResponseFuture::Recording",
            Inner::Screened { .. } => "ResponseFuture::Screened",
        })
    }
}
