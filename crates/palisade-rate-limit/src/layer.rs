//! The `Layer`: cheap to clone, every clone sharing one limiter.

use std::hash::Hash;
use std::sync::Arc;

use palisade_core::mode::Typed;
use tower_layer::Layer;

use crate::config::{Global, UnitCost};
use crate::gcra::Quota;
use crate::service::{Backend, Inner, RateLimit};

/// Tower layer that rate limits the services it wraps. Build it with [`RateLimitLayer::builder`].
///
/// Cloning the layer, or any service it made, shares one limiter: a cap of 5 per second stays 5 per second
/// however many clones axum or a `Buffer` makes.
pub struct RateLimitLayer<K: Hash + Eq = (), F = Global, C = UnitCost, P = Typed> {
    pub(crate) inner: Arc<Inner<K, F, C, P>>,
}

impl<K: Hash + Eq, F, C, P> RateLimitLayer<K, F, C, P> {
    /// The quota.
    #[must_use]
    pub fn quota(&self) -> Quota {
        self.inner.quota
    }

    /// Keys tracked by a keyed local limiter (1 for a global one; 0 for Redis, which keeps no local state).
    #[must_use]
    pub fn tracked_keys(&self) -> usize
    where
        K: Clone,
    {
        match &self.inner.backend {
            Backend::Direct(_) => 1,
            Backend::Keyed(k) => k.len(),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => 0,
        }
    }
}

impl<K: Hash + Eq, F, C, P> Clone for RateLimitLayer<K, F, C, P> {
    fn clone(&self) -> Self {
        RateLimitLayer { inner: self.inner.clone() }
    }
}

impl<K: Hash + Eq, F, C, P> std::fmt::Debug for RateLimitLayer<K, F, C, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("name", &self.inner.name)
            .field("quota", &self.inner.quota)
            .field("on_limit", &self.inner.on_limit)
            .field("shadow", &self.inner.shadow)
            .finish_non_exhaustive()
    }
}

impl<S, K: Hash + Eq, F, C, P> Layer<S> for RateLimitLayer<K, F, C, P> {
    type Service = RateLimit<S, K, F, C, P>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.inner.clone())
    }
}
