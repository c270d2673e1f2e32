//! The response future: no allocation on the hot path (a local decision admits or refuses in `call`).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::gcra::{Admitted, Quota};
use crate::http::Decorate;

/// A boxed future for the slow paths (waiting, Redis round trip).
pub(crate) type Slow<Res, E> = Pin<Box<dyn Future<Output = Result<Res, E>> + Send>>;

pin_project! {
    /// Response future of [`crate::RateLimit`].
    #[project = Proj]
    pub struct ResponseFuture<Fut, Res, E, P> {
        #[pin]
        state: State<Fut, Res, E>,
        _p: PhantomData<fn() -> P>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, Res, E> {
        // Admitted at once: the inner call is running.
        Called { #[pin] fut: Fut, admitted: Option<Admitted>, policy: Option<(Arc<str>, Quota)> },
        // Refused at once.
        Ready { out: Option<Result<Res, E>> },
        // Waiting for capacity or for Redis, then calling.
        Slow { fut: Slow<Res, E> },
    }
}

impl<Fut, Res, E, P> ResponseFuture<Fut, Res, E, P> {
    pub(crate) fn called(fut: Fut, admitted: Option<Admitted>, policy: Option<(Arc<str>, Quota)>) -> Self {
        ResponseFuture { state: State::Called { fut, admitted, policy }, _p: PhantomData }
    }
    pub(crate) fn ready(out: Result<Res, E>) -> Self {
        ResponseFuture { state: State::Ready { out: Some(out) }, _p: PhantomData }
    }
    pub(crate) fn slow(fut: Slow<Res, E>) -> Self {
        ResponseFuture { state: State::Slow { fut }, _p: PhantomData }
    }
}

impl<Fut, Res, E, P> Future for ResponseFuture<Fut, Res, E, P>
where
    Fut: Future<Output = Result<Res, E>>,
    P: Decorate<Res, E>,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut, admitted, policy } => {
                let res = std::task::ready!(fut.poll(cx));
                Poll::Ready(match policy {
                    Some((name, quota)) => P::admitted(name, *quota, res, *admitted),
                    None => res,
                })
            }
            StateProj::Ready { out } => match out.take() {
                Some(out) => Poll::Ready(out),
                None => panic!("ResponseFuture polled after completion"),
            },
            StateProj::Slow { fut } => fut.as_mut().poll(cx),
        }
    }
}
