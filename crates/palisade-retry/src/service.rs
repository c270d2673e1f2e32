//! [`Retry`]: the service [`RetryLayer`](crate::RetryLayer) produces.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{Classify, GatewayKeyed, IdempotencyKey};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower_service::Service;

use crate::policy::Policy;
use palisade_core::mode::Refuse;

use crate::error::AttemptTimedOut;
use crate::future::ResponseFuture;

/// Retries the inner service `S` by [`Outcome`](palisade_core::Outcome).
///
/// - **Keys:** before the first attempt a request without a gateway idempotency key gets one
///   ([`GatewayKeyed`]); every attempt sends a clone of that same request, so the gateway deduplicates.
/// - **Readiness:** `poll_ready` drives the inner service and `call` sends the first attempt through it. A retry
///   goes through a clone of the inner service (cloned, at the first retry, from a spare clone this service
///   keeps), on which the future calls `poll_ready` again before every retry. Nothing holds a ready slot while
///   it sleeps.
/// - Requests must be `Clone` (one clone is kept for the next attempt) and the inner service `Clone`.
pub struct Retry<S, C, M> {
    pub(crate) inner: S,
    pub(crate) policy: Arc<Policy<C, M>>,
    /// What every call's future shares: the policy and a clone of `inner` made at the first call, from which a
    /// retry clones its service (a call that is not retried clones no service). Dropped when `inner` is handed
    /// out mutably ([`get_mut`](Self::get_mut)), so retries never use a service older than the one the first
    /// attempt went to.
    pub(crate) shared: Option<Arc<Shared<S, C, M>>>,
}

/// What a [`Retry`] service shares with its calls' futures, behind one `Arc` (one reference count a call).
pub(crate) struct Shared<S, C, M> {
    pub(crate) policy: Arc<Policy<C, M>>,
    /// A clone of the inner service, cloned again for each retry.
    pub(crate) spare: Mutex<S>,
}

impl<S, C, M> Retry<S, C, M> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.shared = None;
        &mut self.inner
    }
    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C, M> Clone for Retry<S, C, M> {
    fn clone(&self) -> Self {
        Retry { inner: self.inner.clone(), policy: self.policy.clone(), shared: self.shared.clone() }
    }
}

impl<S: fmt::Debug, C, M> fmt::Debug for Retry<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Retry");
        d.field("inner", &self.inner);
        self.policy.fmt_fields(&mut d);
        d.finish_non_exhaustive()
    }
}

impl<S, C, M, Req> Service<Req> for Retry<S, C, M>
where
    S: Service<Req> + Clone,
    Req: GatewayKeyed + Clone,
    C: Classify<S::Response, S::Error>,
    M: Refuse<AttemptTimedOut, S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut req: Req) -> Self::Future {
        let policy = &self.policy;
        if policy.assign_key && req.gateway_key().is_none() {
            req.set_gateway_key(IdempotencyKey::generate());
        }
        let start = if policy.needs_clock() { Some(Instant::now()) } else { None };
        if let (Some(budget), Some(now)) = (&policy.budget, start) {
            budget.deposit_at(now);
        }
        // One clone kept for the next attempt; none when there is no next attempt.
        let retained = (policy.max_attempts > 1).then(|| req.clone());
        // The first attempt is sent here by the service that was made ready; the future shares the spare clone and
        // clones a service from it only for a retry, which it readies itself (a service is not ready again after a
        // call: the caller polls this one again before its next call, as it would a fresh clone). A call that is
        // not retried clones no service: one reference count instead of a whole service cloned and dropped.
        let shared = match &self.shared {
            Some(shared) => shared.clone(),
            None => {
                let shared = Shared { policy: self.policy.clone(), spare: Mutex::new(self.inner.clone()) };
                self.shared.insert(Arc::new(shared)).clone()
            }
        };
        let future = self.inner.call(req);
        ResponseFuture::new(shared, retained, future, start)
    }
}
