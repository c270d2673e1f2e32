//! The `Layer`: cheap to clone, every clone sharing the breaker(s).

use std::fmt;

use palisade_core::DefaultClassifier;
use palisade_core::mode::Typed;
use tower_layer::Layer;

use crate::classify::PaymentRejections;
use crate::handle::CircuitBreakerHandle;
use crate::keyed::{Keyed, KeyedHandle, Single};
use crate::service::CircuitBreaker;

/// Puts a circuit breaker in front of a service. Clones share the breaker(s).
///
/// Build one with [`CircuitBreakerLayer::builder`]; see the crate docs for the rules.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier, D = PaymentRejections, M = Typed, P = Single> {
    classifier: C,
    detector: D,
    mode: M,
    partition: P,
}

impl<C, D, M, P: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C, D, M, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer").field("partition", &self.partition).finish_non_exhaustive()
    }
}

impl<C, D, M, P> CircuitBreakerLayer<C, D, M, P> {
    pub(crate) fn new(classifier: C, detector: D, mode: M, partition: P) -> Self {
        CircuitBreakerLayer { classifier, detector, mode, partition }
    }
}

impl<C, D, M> CircuitBreakerLayer<C, D, M, Single> {
    /// The handle on this layer's breaker.
    #[must_use]
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle { breaker: self.partition.breaker.clone() }
    }
}

impl<C, D, M, K, F> CircuitBreakerLayer<C, D, M, Keyed<K, F>> {
    /// The handle on this layer's per-key breakers.
    #[must_use]
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle { registry: self.partition.registry.clone() }
    }
}

impl<S, C: Clone, D: Clone, M: Clone, P: Clone> Layer<S> for CircuitBreakerLayer<C, D, M, P> {
    type Service = CircuitBreaker<S, C, D, M, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            classifier: self.classifier.clone(),
            detector: self.detector.clone(),
            mode: self.mode.clone(),
            partition: self.partition.clone(),
        }
    }
}
