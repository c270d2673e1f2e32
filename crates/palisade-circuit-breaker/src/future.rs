//! The response future: a named `pin_project` future, no box, so the closed-state path does not allocate.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::Classify;
use palisade_core::mode::Typed;
use pin_project_lite::pin_project;

use crate::breaker::{Breaker, Permit, Verdict};
use crate::classify::{DetectRejection, ModeRejections, verdict};

/// Holds the permit until the call completes; dropping it early (the caller gave up, a timeout fired) gives a
/// half-open probe slot back, so cancelled probes cannot wedge the breaker half-open.
pub(crate) struct Guard {
    pub(crate) breaker: Arc<Breaker>,
    pub(crate) permit: Permit,
    pub(crate) done: bool,
}

impl Guard {
    fn finish(&mut self, v: Verdict) {
        self.done = true;
        self.breaker.complete(&self.permit, v);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release(&self.permit);
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, D, Res, E> {
        Called { #[pin] fut: F, guard: Guard, classifier: C, detector: D },
        Rejected { result: Option<Result<Res, E>> },
    }
}

pin_project! {
    /// The future of [`CircuitBreaker`](crate::CircuitBreaker): the inner call, recorded when it completes, or the
    /// rejection, ready at once. `M` is the layer's mode ([`Typed`] or [`Http`](palisade_core::mode::Http)).
    pub struct ResponseFuture<F, C, D, Res, E, M = Typed> {
        #[pin]
        kind: Kind<F, C, D, Res, E>,
        mode: PhantomData<fn() -> M>,
    }
}

impl<F, C, D, Res, E, M> ResponseFuture<F, C, D, Res, E, M> {
    pub(crate) fn called(fut: F, guard: Guard, classifier: C, detector: D) -> Self {
        ResponseFuture { kind: Kind::Called { fut, guard, classifier, detector }, mode: PhantomData }
    }
    pub(crate) fn rejected(result: Result<Res, E>) -> Self {
        ResponseFuture { kind: Kind::Rejected { result: Some(result) }, mode: PhantomData }
    }
}

impl<F, C, D, Res, E, M> Future for ResponseFuture<F, C, D, Res, E, M>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    D: DetectRejection<Res, E>,
    M: ModeRejections<Res>,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, guard, classifier, detector } => {
                let result = ready!(fut.poll(cx));
                if !guard.done {
                    let v = verdict::<_, _, _, _, M>(classifier, detector, guard.breaker.cfg.layer_rejections, &result);
                    guard.finish(v);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { result } => match result.take() {
                Some(r) => Poll::Ready(r),
                None => panic!("circuit breaker ResponseFuture polled after completion"),
            },
        }
    }
}
