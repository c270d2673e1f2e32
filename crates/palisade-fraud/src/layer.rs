//! The `Layer` and its builder.

use std::marker::PhantomData;
use std::sync::Arc;

use palisade_core::mode::{Http, Typed};
use tower_layer::Layer;

use crate::decision::Assessment;
use crate::engine::FraudEngine;
use crate::mode::{DefaultExtract, ExtractFn};
use crate::service::Fraud;

pub(crate) type OnReview = Arc<dyn Fn(&Assessment) + Send + Sync>;

/// Shared by the layer and every service it made.
pub(crate) struct Config<X> {
    pub(crate) engine: FraudEngine,
    pub(crate) extract: X,
    pub(crate) challenge_url: Option<String>,
    pub(crate) annotate: bool,
    pub(crate) on_review: Option<OnReview>,
}

/// Tower layer that screens charges with a [`FraudEngine`] before they reach the service below.
///
/// - `Block` → the call is refused: [`PaymentError::FraudBlocked`](palisade_core::PaymentError::FraudBlocked)
///   (typed) or a 402 problem+json of type `fraud_blocked` (HTTP). The service below is never called.
/// - `Challenge` → refused with authentication required (402, type `authentication_required`, with a
///   `next_action` member in HTTP mode).
/// - `Review` → passes, with the verdict on the request ([`Annotate`](crate::Annotate)), a tracing event and
///   the `on_review` callback.
/// - `Approve` → passes.
///
/// A card decline from the service below is recorded for the `declines_per_*` attributes.
///
/// Cheap to clone; every clone shares the engine.
pub struct FraudLayer<X = DefaultExtract, M = Typed> {
    pub(crate) config: Arc<Config<X>>,
    pub(crate) mode: M,
}

impl<X, M: Clone> Clone for FraudLayer<X, M> {
    fn clone(&self) -> Self {
        FraudLayer { config: self.config.clone(), mode: self.mode.clone() }
    }
}

impl<X, M: std::fmt::Debug> std::fmt::Debug for FraudLayer<X, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FraudLayer")
            .field("engine", &self.config.engine)
            .field("mode", &self.mode)
            .field("annotate", &self.config.annotate)
            .finish_non_exhaustive()
    }
}

impl FraudLayer {
    /// A typed layer with the default extraction.
    #[must_use]
    pub fn new(engine: FraudEngine) -> Self {
        FraudLayer::builder(engine).build()
    }
    /// A builder: default extraction, typed mode, verdicts annotated, no challenge URL.
    pub fn builder(engine: FraudEngine) -> FraudLayerBuilder {
        FraudLayerBuilder {
            engine,
            extract: DefaultExtract,
            challenge_url: None,
            annotate: true,
            on_review: None,
            _m: PhantomData,
        }
    }
    /// The engine (to reload its rules).
    #[must_use]
    pub fn engine(&self) -> &FraudEngine {
        &self.config.engine
    }
}

/// Builds a [`FraudLayer`].
#[must_use]
pub struct FraudLayerBuilder<X = DefaultExtract, M = Typed> {
    engine: FraudEngine,
    extract: X,
    challenge_url: Option<String>,
    annotate: bool,
    on_review: Option<OnReview>,
    _m: PhantomData<fn() -> M>,
}

impl<X, M> FraudLayerBuilder<X, M> {
    /// Takes the screening context from each request with `f` (`None`: not screened).
    pub fn extract<F>(self, f: F) -> FraudLayerBuilder<ExtractFn<F>, M> {
        FraudLayerBuilder {
            engine: self.engine,
            extract: ExtractFn(f),
            challenge_url: self.challenge_url,
            annotate: self.annotate,
            on_review: self.on_review,
            _m: PhantomData,
        }
    }
    /// HTTP mode: refusals are 402 `application/problem+json` responses.
    pub fn http(self) -> FraudLayerBuilder<X, Http> {
        FraudLayerBuilder {
            engine: self.engine,
            extract: self.extract,
            challenge_url: self.challenge_url,
            annotate: self.annotate,
            on_review: self.on_review,
            _m: PhantomData,
        }
    }
    /// Where a challenged customer is sent (in `challenge_url` / `next_action`).
    pub fn challenge_url(mut self, url: impl Into<String>) -> Self {
        self.challenge_url = Some(url.into());
        self
    }
    /// Whether a `Review` verdict is put on the request (default true; see [`Annotate`](crate::Annotate)).
    pub fn annotate(mut self, on: bool) -> Self {
        self.annotate = on;
        self
    }
    /// Called with every `Review` verdict (to queue the charge for a person).
    pub fn on_review(mut self, f: impl Fn(&Assessment) + Send + Sync + 'static) -> Self {
        self.on_review = Some(Arc::new(f));
        self
    }
    /// The layer.
    #[must_use]
    pub fn build(self) -> FraudLayer<X, M>
    where
        M: Default,
    {
        FraudLayer {
            config: Arc::new(Config {
                engine: self.engine,
                extract: self.extract,
                challenge_url: self.challenge_url,
                annotate: self.annotate,
                on_review: self.on_review,
            }),
            mode: M::default(),
        }
    }
}

impl<S, X, M: Clone> Layer<S> for FraudLayer<X, M> {
    type Service = Fraud<S, X, M>;
    fn layer(&self, inner: S) -> Self::Service {
        Fraud { inner, config: self.config.clone(), mode: self.mode.clone(), rules: self.config.engine.rules_cache() }
    }
}
