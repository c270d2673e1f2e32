//! The `Service`.

use std::task::{Context, Poll};

use palisade_core::Classify;
use palisade_core::mode::Refuse;
use tower_service::Service;

use crate::classify::{DetectRejection, ModeRejections};
use crate::error::CircuitOpen;
use crate::future::{Guard, ResponseFuture};
use crate::keyed::Partition;

/// A service guarded by a circuit breaker. Built by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// `poll_ready` is the inner service's; the breaker decides in `call`, so an open breaker answers at once with
/// the rejection (typed error, or a 503 response in HTTP mode) and never calls the inner service.
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S, C, D, M, P> {
    pub(crate) inner: S,
    pub(crate) classifier: C,
    pub(crate) detector: D,
    pub(crate) mode: M,
    pub(crate) partition: P,
}

impl<S, C, D, M, P, Req, Res, E> Service<Req> for CircuitBreaker<S, C, D, M, P>
where
    S: Service<Req, Response = Res, Error = E>,
    C: Classify<Res, E> + Clone,
    D: DetectRejection<Res, E> + Clone,
    M: Refuse<CircuitOpen, Res, E> + ModeRejections<Res>,
    P: Partition<Req>,
{
    type Response = Res;
    type Error = E;
    type Future = ResponseFuture<S::Future, C, D, Res, E, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.partition.breaker_for(&req).0;
        match breaker.try_acquire() {
            Ok(permit) => {
                let guard = Guard { breaker, permit, done: false };
                ResponseFuture::called(self.inner.call(req), guard, self.classifier.clone(), self.detector.clone())
            }
            Err(r) => ResponseFuture::rejected(self.mode.refuse(CircuitOpen::new(r.state, r.retry_after))),
        }
    }
}
