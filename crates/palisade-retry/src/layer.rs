//! [`RetryLayer`]: cheap to clone; every clone shares one policy and one budget.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use crate::policy::Policy;
use crate::service::Retry;
use palisade_core::DefaultClassifier;
use palisade_core::mode::Typed;

/// Retries calls whose [`Outcome`](palisade_core::Outcome) allows it, with jittered backoff, `Retry-After`, a
/// deadline and a shared budget, always with the same gateway idempotency key. See the [crate docs](crate).
pub struct RetryLayer<C = DefaultClassifier, M = Typed> {
    pub(crate) policy: Arc<Policy<C, M>>,
}

impl<C, M> RetryLayer<C, M> {
    /// The shared retry budget, if any (to watch it, or to pass to another layer).
    #[must_use]
    pub fn budget(&self) -> Option<&Arc<crate::RetryBudget>> {
        self.policy.budget.as_ref()
    }
}

impl<C, M> Clone for RetryLayer<C, M> {
    fn clone(&self) -> Self {
        RetryLayer { policy: self.policy.clone() }
    }
}

impl<C, M> fmt::Debug for RetryLayer<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RetryLayer");
        self.policy.fmt_fields(&mut d);
        d.finish_non_exhaustive()
    }
}

impl<S, C, M> Layer<S> for RetryLayer<C, M> {
    type Service = Retry<S, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry { inner, policy: self.policy.clone(), shared: None }
    }
}
