//! The whole stack in its one safe order: Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit →
//! gateway.
//!
//! [`Stack`] is a single builder that owns the order. It has one setter per position and nothing else that adds a
//! layer: whatever order the setters are called in, [`Stack::service`] wraps the gateway in the same order, and a
//! layer can only go into its own position (each setter accepts only its own layer, built or as its builder). Every
//! position is optional; an empty position costs nothing (it is [`tower_layer::Identity`]).
//!
//! One [`StackStores`] choice (memory, Redis or PostgreSQL) feeds every layer given as a builder that keeps state;
//! a layer given already built keeps the store it was built with. See `docs/stack.md`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use palisade_circuit_breaker::{CircuitBreakerLayer, CircuitBreakerLayerBuilder, ConfigError};
use palisade_core::mode::{Http, Typed};
use palisade_core::{GatewayRequest, GatewayResponse, PaymentError};
use palisade_fraud::{
    FraudEngine, FraudEngineBuilder, FraudLayer, FraudLayerBuilder, MemoryVelocityStore, VelocityStore,
};
use palisade_idempotency::{
    HttpIdempotencyLayer, HttpIdempotencyLayerBuilder, IdempotencyLayer, IdempotencyLayerBuilder, LeaseStore,
    MemoryStore, StoreError,
};
use palisade_rate_limit::{BuildError, RateLimitLayer, RateLimitLayerBuilder};
use palisade_redaction::{AuditLayer, AuditLayerBuilder, HttpAuditLayer, HttpAuditLayerBuilder};
use palisade_retry::{RetryLayer, RetryLayerBuilder};
use tower_layer::{Identity, Layer};

/// Builds the stack Idempotency → Fraud → CircuitBreaker → Retry → RateLimit → Audit → gateway.
///
/// `M` is the mode: [`Typed`] ([`Stack::new`]: a gateway service of [`GatewayRequest`] answering
/// [`GatewayResponse`] or [`PaymentError`]) or [`Http`] ([`Stack::http`]: `http::Request` services, refusals as
/// problem+json). The other parameters are the six positions, [`Absent`] until set.
///
/// Each setter takes its layer built, or its builder (then built by the stack, with the stack's
/// [`stores`](Stack::stores) when set). Calling a setter again replaces that position. In HTTP mode a typed builder
/// is switched with its own `.http()`.
///
/// Putting retry outside idempotency, for instance, cannot be written: there is no method that takes a position,
/// and a retry layer is not accepted where the idempotency layer goes:
///
/// ```compile_fail,E0277
/// use palisade::Stack;
/// use palisade::retry::RetryLayer;
///
/// // the trait bound `RetryLayerBuilder: IdempotencySlot<Typed>` is not satisfied
/// let stack = Stack::new().idempotency(RetryLayer::builder());
/// ```
///
/// The slot traits are sealed, so no other type can be made to fit a position. The [crate docs](crate) have a
/// runnable example; `tests/stack_builder.rs` shows that the order of the setter calls changes nothing.
#[must_use]
pub struct Stack<M = Typed, I = Absent, F = Absent, B = Absent, R = Absent, L = Absent, A = Absent> {
    mode: PhantomData<fn() -> M>,
    stores: Option<StackStores>,
    idempotency: I,
    fraud: F,
    breaker: B,
    retry: R,
    rate_limit: L,
    audit: A,
}

impl<M, I, F, B, R, L, A> fmt::Debug for Stack<M, I, F, B, R, L, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("mode", &std::any::type_name::<M>())
            .field("stores", &self.stores)
            .field("idempotency", &std::any::type_name::<I>())
            .field("fraud", &std::any::type_name::<F>())
            .field("circuit_breaker", &std::any::type_name::<B>())
            .field("retry", &std::any::type_name::<R>())
            .field("rate_limit", &std::any::type_name::<L>())
            .field("audit", &std::any::type_name::<A>())
            .finish()
    }
}

impl Stack {
    /// An empty typed stack (every position [`Absent`]), for services of [`GatewayRequest`].
    pub fn new() -> Self {
        Stack::with_mode()
    }

    /// An empty HTTP stack, for `http::Request` services: every layer in its HTTP mode.
    pub fn http() -> Stack<Http> {
        Stack::with_mode()
    }
}

impl Default for Stack {
    fn default() -> Self {
        Stack::new()
    }
}

impl<M> Stack<M> {
    fn with_mode() -> Self {
        Stack {
            mode: PhantomData,
            stores: None,
            idempotency: Absent,
            fraud: Absent,
            breaker: Absent,
            retry: Absent,
            rate_limit: Absent,
            audit: Absent,
        }
    }
}

impl<M, I, F, B, R, L, A> Stack<M, I, F, B, R, L, A> {
    /// The stores of every layer given as a builder that keeps state (see [`StackStores`]). Without it, each
    /// builder keeps the store it was configured with (its default: memory).
    pub fn stores(mut self, stores: StackStores) -> Self {
        self.stores = Some(stores);
        self
    }

    /// Position 1, outermost: idempotency ([`IdempotencyLayer`] or its builder; HTTP: [`HttpIdempotencyLayer`]
    /// or either builder).
    pub fn idempotency<I2: IdempotencySlot<M>>(self, layer: I2) -> Stack<M, I2, F, B, R, L, A> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: layer,
            fraud: self.fraud,
            breaker: self.breaker,
            retry: self.retry,
            rate_limit: self.rate_limit,
            audit: self.audit,
        }
    }

    /// Position 2: fraud screening ([`FraudLayer`], its builder, or a [`FraudEngineBuilder`], which gets the
    /// stack's velocity store).
    pub fn fraud<F2: FraudSlot<M>>(self, layer: F2) -> Stack<M, I, F2, B, R, L, A> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: self.idempotency,
            fraud: layer,
            breaker: self.breaker,
            retry: self.retry,
            rate_limit: self.rate_limit,
            audit: self.audit,
        }
    }

    /// Position 3: the circuit breaker ([`CircuitBreakerLayer`] or its builder; with Redis stores a builder shares
    /// its trip decision through Redis).
    pub fn circuit_breaker<B2: CircuitBreakerSlot<M>>(self, layer: B2) -> Stack<M, I, F, B2, R, L, A> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: self.idempotency,
            fraud: self.fraud,
            breaker: layer,
            retry: self.retry,
            rate_limit: self.rate_limit,
            audit: self.audit,
        }
    }

    /// Position 4: retry ([`RetryLayer`] or its builder).
    pub fn retry<R2: RetrySlot<M>>(self, layer: R2) -> Stack<M, I, F, B, R2, L, A> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: self.idempotency,
            fraud: self.fraud,
            breaker: self.breaker,
            retry: layer,
            rate_limit: self.rate_limit,
            audit: self.audit,
        }
    }

    /// Position 5: the rate limit ([`RateLimitLayer`] or its builder; with Redis stores a builder keeps its limit
    /// in Redis).
    pub fn rate_limit<L2: RateLimitSlot<M>>(self, layer: L2) -> Stack<M, I, F, B, R, L2, A> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: self.idempotency,
            fraud: self.fraud,
            breaker: self.breaker,
            retry: self.retry,
            rate_limit: layer,
            audit: self.audit,
        }
    }

    /// Position 6, innermost: the audit trail ([`AuditLayer`] or its builder; HTTP: [`HttpAuditLayer`] or either
    /// builder).
    pub fn audit<A2: AuditSlot<M>>(self, layer: A2) -> Stack<M, I, F, B, R, L, A2> {
        Stack {
            mode: PhantomData,
            stores: self.stores,
            idempotency: self.idempotency,
            fraud: self.fraud,
            breaker: self.breaker,
            retry: self.retry,
            rate_limit: self.rate_limit,
            audit: layer,
        }
    }
}

impl<M, I, F, B, R, L, A> Stack<M, I, F, B, R, L, A>
where
    I: IdempotencySlot<M>,
    F: FraudSlot<M>,
    B: CircuitBreakerSlot<M>,
    R: RetrySlot<M>,
    L: RateLimitSlot<M>,
    A: AuditSlot<M>,
{
    /// Builds every layer (with the stack's stores) into one [`StackLayer`], to use as a tower `Layer`.
    ///
    /// # Errors
    /// [`StackError`] when a builder refuses its settings (the breaker's thresholds, a rate limit without a rate).
    /// With Redis stores, the breaker's sync task needs a Tokio runtime.
    #[allow(clippy::type_complexity)]
    pub fn layer(self) -> Result<StackLayer<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer>, StackError> {
        let s = self.stores.as_ref();
        Ok(StackLayer {
            idempotency: self.idempotency.into_layer(s)?,
            fraud: self.fraud.into_layer(s)?,
            breaker: self.breaker.into_layer(s)?,
            retry: self.retry.into_layer(s)?,
            rate_limit: self.rate_limit.into_layer(s)?,
            audit: self.audit.into_layer(s)?,
        })
    }
}

/// The composed service of a [`StackLayer`] around `S`.
pub type StackService<IL, FL, BL, RL, LL, AL, S> = <StackLayer<IL, FL, BL, RL, LL, AL> as Layer<S>>::Service;

impl<I, F, B, R, L, A> Stack<Typed, I, F, B, R, L, A>
where
    I: IdempotencySlot<Typed>,
    F: FraudSlot<Typed>,
    B: CircuitBreakerSlot<Typed>,
    R: RetrySlot<Typed>,
    L: RateLimitSlot<Typed>,
    A: AuditSlot<Typed>,
{
    /// Wraps a typed gateway service in the stack.
    ///
    /// # Errors
    /// As [`layer`](Stack::layer).
    #[allow(clippy::type_complexity)]
    pub fn service<S>(
        self,
        gateway: S,
    ) -> Result<StackService<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer, S>, StackError>
    where
        S: tower_service::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
        StackLayer<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer>: Layer<S>,
        StackService<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer, S>:
            tower_service::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError>,
    {
        Ok(self.layer()?.layer(gateway))
    }
}

impl<I, F, B, R, L, A> Stack<Http, I, F, B, R, L, A>
where
    I: IdempotencySlot<Http>,
    F: FraudSlot<Http>,
    B: CircuitBreakerSlot<Http>,
    R: RetrySlot<Http>,
    L: RateLimitSlot<Http>,
    A: AuditSlot<Http>,
{
    /// Wraps an `http::Request` service (a handler, a gateway client) in the stack.
    ///
    /// # Errors
    /// As [`layer`](Stack::layer).
    #[allow(clippy::type_complexity)]
    pub fn service<S>(
        self,
        inner: S,
    ) -> Result<StackService<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer, S>, StackError>
    where
        StackLayer<I::Layer, F::Layer, B::Layer, R::Layer, L::Layer, A::Layer>: Layer<S>,
    {
        Ok(self.layer()?.layer(inner))
    }
}

/// The six built layers, applied in the fixed order by its `Layer` implementation.
#[derive(Clone, Debug)]
pub struct StackLayer<IL, FL, BL, RL, LL, AL> {
    idempotency: IL,
    fraud: FL,
    breaker: BL,
    retry: RL,
    rate_limit: LL,
    audit: AL,
}

impl<S, IL, FL, BL, RL, LL, AL> Layer<S> for StackLayer<IL, FL, BL, RL, LL, AL>
where
    AL: Layer<S>,
    LL: Layer<AL::Service>,
    RL: Layer<LL::Service>,
    BL: Layer<RL::Service>,
    FL: Layer<BL::Service>,
    IL: Layer<FL::Service>,
{
    type Service = IL::Service;
    fn layer(&self, inner: S) -> Self::Service {
        let s = self.audit.layer(inner);
        let s = self.rate_limit.layer(s);
        let s = self.retry.layer(s);
        let s = self.breaker.layer(s);
        let s = self.fraud.layer(s);
        self.idempotency.layer(s)
    }
}

/// An empty position of a [`Stack`]: no layer there.
#[derive(Clone, Copy, Debug, Default)]
pub struct Absent;

/// A [`Stack`] could not build one of its layers.
#[derive(Debug)]
#[non_exhaustive]
pub enum StackError {
    /// The circuit breaker's settings.
    CircuitBreaker(ConfigError),
    /// The rate limit's settings.
    RateLimit(BuildError),
    /// A store could not be opened.
    Store(String),
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackError::CircuitBreaker(e) => write!(f, "circuit breaker: {e}"),
            StackError::RateLimit(e) => write!(f, "rate limit: {e}"),
            StackError::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for StackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StackError::CircuitBreaker(e) => Some(e),
            StackError::RateLimit(e) => Some(e),
            StackError::Store(_) => None,
        }
    }
}

impl From<ConfigError> for StackError {
    fn from(e: ConfigError) -> Self {
        StackError::CircuitBreaker(e)
    }
}

impl From<BuildError> for StackError {
    fn from(e: BuildError) -> Self {
        StackError::RateLimit(e)
    }
}

impl From<StoreError> for StackError {
    fn from(e: StoreError) -> Self {
        StackError::Store(e.to_string())
    }
}

/// Which backend a [`StackStores`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// In this process only.
    Memory,
    /// Redis: idempotency records, fraud velocity counters, the rate limit and the breaker's shared trip decision.
    Redis,
    /// PostgreSQL: idempotency records; the other layers keep their state in memory.
    Postgres,
}

/// One store choice for every layer of a [`Stack`] that keeps state.
///
/// | layer | memory | Redis | PostgreSQL |
/// |---|---|---|---|
/// | idempotency records | [`MemoryStore`] | `RedisStore` (lease) | `PostgresStore` |
/// | fraud velocity counters | one [`MemoryVelocityStore`] | `RedisVelocityStore` | memory (per process) |
/// | circuit breaker | local | local + shared trip decision (`RedisShared`) | local |
/// | rate limit | local | `palisade_rate_limit::redis::RedisStore` | local (per process) |
///
/// PostgreSQL backs only the idempotency records today. Cheap to clone: clones share the stores.
#[derive(Clone)]
pub struct StackStores {
    backend: Backend,
    lease: Arc<dyn LeaseStore>,
    velocity: Arc<dyn VelocityStore>,
    #[cfg(feature = "redis")]
    redis: Option<palisade_store::redis::RedisConnection>,
}

impl fmt::Debug for StackStores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackStores").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl StackStores {
    /// Everything in this process: one [`MemoryStore`] for idempotency records and one
    /// [`MemoryVelocityStore`] for fraud counters; breaker and rate limit keep their own local state.
    pub fn memory() -> Self {
        StackStores::memory_with(MemoryStore::new())
    }

    /// In memory, with the idempotency records in `lease` (a [`MemoryStore`] with chosen shards, say).
    pub fn memory_with(lease: impl LeaseStore) -> Self {
        StackStores {
            backend: Backend::Memory,
            lease: Arc::new(lease),
            velocity: Arc::new(MemoryVelocityStore::new()),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Connects to Redis at `url` once; every layer's Redis store shares the connection (each under its own
    /// default key prefix). `url` names one server (`redis://host:port`) or a Redis Cluster
    /// (`redis+cluster://host:port,host:port,...`, see `palisade_store::redis`).
    ///
    /// # Errors
    /// [`StackError::Store`] when the URL is invalid or Redis does not answer.
    #[cfg(feature = "redis")]
    pub async fn redis(url: &str) -> Result<Self, StackError> {
        let conn =
            palisade_store::redis::RedisConnection::connect(url).await.map_err(|e| StackError::Store(e.to_string()))?;
        Ok(StackStores::redis_connection(conn))
    }

    /// Every layer's Redis store on a connection: an open `ConnectionManager` or cluster connection, or a
    /// `palisade_store::redis::RedisConnection` (lazy or not, to one server or a cluster).
    #[cfg(feature = "redis")]
    pub fn redis_connection(conn: impl Into<palisade_store::redis::RedisConnection>) -> Self {
        let conn = conn.into();
        let velocity = palisade_fraud::RedisVelocityStore::new(conn.clone());
        StackStores {
            backend: Backend::Redis,
            lease: Arc::new(palisade_idempotency::RedisStore::new(conn.clone())),
            velocity: Arc::new(velocity),
            redis: Some(conn),
        }
    }

    /// Connects to PostgreSQL at `url` and applies the idempotency schema. Only the idempotency records live
    /// there; fraud counters, the breaker and the rate limit stay in memory.
    ///
    /// # Errors
    /// [`StackError::Store`] when the server does not answer or refuses the schema.
    #[cfg(feature = "postgres")]
    pub async fn postgres(url: &str) -> Result<Self, StackError> {
        let store = palisade_idempotency::PostgresStore::connect(url).await?;
        store.migrate().await?;
        Ok(StackStores::postgres_store(store))
    }

    /// Idempotency records in `store` (migrated by the caller); the rest in memory.
    #[cfg(feature = "postgres")]
    pub fn postgres_store(store: palisade_idempotency::PostgresStore) -> Self {
        StackStores { backend: Backend::Postgres, ..StackStores::memory_with(store) }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The idempotency records' store (to use it elsewhere, e.g. for webhooks).
    pub fn lease_store(&self) -> Arc<dyn LeaseStore> {
        self.lease.clone()
    }

    /// The fraud velocity store (for an engine built outside the stack).
    pub fn velocity_store(&self) -> Arc<dyn VelocityStore> {
        self.velocity.clone()
    }
}

mod sealed {
    /// Only the layers of each position fill it.
    pub trait Sealed {}
}
use sealed::Sealed;

macro_rules! slot_trait {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Sealed: implemented by [`Absent`] and by this position's layers and builders only.
        pub trait $name<M>: Sealed {
            /// The built layer.
            type Layer;
            /// Builds the layer, with `stores` when the stack has them and `self` is a builder.
            ///
            /// # Errors
            /// The builder's own refusal.
            fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError>;
        }

        impl<M> $name<M> for Absent {
            type Layer = Identity;
            fn into_layer(self, _: Option<&StackStores>) -> Result<Identity, StackError> {
                Ok(Identity::new())
            }
        }
    };
}

slot_trait!(
    /// What goes into a [`Stack`]'s idempotency position.
    IdempotencySlot
);
slot_trait!(
    /// What goes into a [`Stack`]'s fraud position.
    FraudSlot
);
slot_trait!(
    /// What goes into a [`Stack`]'s circuit breaker position.
    CircuitBreakerSlot
);
slot_trait!(
    /// What goes into a [`Stack`]'s retry position.
    RetrySlot
);
slot_trait!(
    /// What goes into a [`Stack`]'s rate limit position.
    RateLimitSlot
);
slot_trait!(
    /// What goes into a [`Stack`]'s audit position.
    AuditSlot
);

impl Sealed for Absent {}

// Idempotency.
impl<Req, C> Sealed for IdempotencyLayer<Req, C> {}
impl<Req, C> Sealed for IdempotencyLayerBuilder<Req, C> {}
impl Sealed for HttpIdempotencyLayer {}
impl Sealed for HttpIdempotencyLayerBuilder {}

impl<Req, C> IdempotencySlot<Typed> for IdempotencyLayer<Req, C> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<Req: 'static, C> IdempotencySlot<Typed> for IdempotencyLayerBuilder<Req, C> {
    type Layer = IdempotencyLayer<Req, C>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(match stores {
            Some(s) => self.store(s.lease.clone()).build(),
            None => self.build(),
        })
    }
}

impl IdempotencySlot<Http> for HttpIdempotencyLayer {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl IdempotencySlot<Http> for HttpIdempotencyLayerBuilder {
    type Layer = HttpIdempotencyLayer;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(match stores {
            Some(s) => self.store(s.lease.clone()).build(),
            None => self.build(),
        })
    }
}

impl<Req: 'static, C> IdempotencySlot<Http> for IdempotencyLayerBuilder<Req, C> {
    type Layer = HttpIdempotencyLayer;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        IdempotencySlot::<Http>::into_layer(self.http(), stores)
    }
}

// Fraud.
impl<X, M> Sealed for FraudLayer<X, M> {}
impl<X, M> Sealed for FraudLayerBuilder<X, M> {}
impl Sealed for FraudEngineBuilder {}
impl Sealed for FraudEngine {}

impl<X> FraudSlot<Typed> for FraudLayer<X, Typed> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<X> FraudSlot<Http> for FraudLayer<X, Http> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<X> FraudSlot<Typed> for FraudLayerBuilder<X, Typed> {
    type Layer = FraudLayer<X, Typed>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl<X> FraudSlot<Http> for FraudLayerBuilder<X, Http> {
    type Layer = FraudLayer<X, Http>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl<X> FraudSlot<Http> for FraudLayerBuilder<X, Typed> {
    type Layer = FraudLayer<X, Http>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.http().build())
    }
}

fn engine(builder: FraudEngineBuilder, stores: Option<&StackStores>) -> FraudEngine {
    match stores {
        Some(s) => builder.shared_velocity_store(s.velocity.clone()).build(),
        None => builder.build(),
    }
}

impl FraudSlot<Typed> for FraudEngineBuilder {
    type Layer = FraudLayer;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(FraudLayer::new(engine(self, stores)))
    }
}

impl FraudSlot<Http> for FraudEngineBuilder {
    type Layer = FraudLayer<palisade_fraud::DefaultExtract, Http>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(FraudLayer::builder(engine(self, stores)).http().build())
    }
}

impl FraudSlot<Typed> for FraudEngine {
    type Layer = FraudLayer;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(FraudLayer::new(self))
    }
}

impl FraudSlot<Http> for FraudEngine {
    type Layer = FraudLayer<palisade_fraud::DefaultExtract, Http>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(FraudLayer::builder(self).http().build())
    }
}

// Circuit breaker.
impl<C, D, M, P> Sealed for CircuitBreakerLayer<C, D, M, P> {}
impl<C, D, M> Sealed for CircuitBreakerLayerBuilder<C, D, M> {}

impl<C, D, P> CircuitBreakerSlot<Typed> for CircuitBreakerLayer<C, D, Typed, P> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<C, D, P> CircuitBreakerSlot<Http> for CircuitBreakerLayer<C, D, Http, P> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

#[cfg_attr(not(feature = "redis"), allow(clippy::unnecessary_wraps))]
fn breaker<C, D, M>(
    b: CircuitBreakerLayerBuilder<C, D, M>,
    stores: Option<&StackStores>,
) -> Result<CircuitBreakerLayer<C, D, M>, StackError> {
    #[cfg(feature = "redis")]
    if let Some(conn) = stores.and_then(|s| s.redis.clone()) {
        return Ok(b.shared(palisade_circuit_breaker::RedisShared::new(conn)).build()?);
    }
    let _ = stores;
    Ok(b.build()?)
}

impl<C, D> CircuitBreakerSlot<Typed> for CircuitBreakerLayerBuilder<C, D, Typed> {
    type Layer = CircuitBreakerLayer<C, D, Typed>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        breaker(self, stores)
    }
}

impl<C, D> CircuitBreakerSlot<Http> for CircuitBreakerLayerBuilder<C, D, Http> {
    type Layer = CircuitBreakerLayer<C, D, Http>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        breaker(self, stores)
    }
}

impl<C, D> CircuitBreakerSlot<Http> for CircuitBreakerLayerBuilder<C, D, Typed> {
    type Layer = CircuitBreakerLayer<palisade_core::HttpClassifier, D, Http>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        breaker(self.http(), stores)
    }
}

// Retry.
impl<C, M> Sealed for RetryLayer<C, M> {}
impl<C, M> Sealed for RetryLayerBuilder<C, M> {}

impl<C> RetrySlot<Typed> for RetryLayer<C, Typed> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<C> RetrySlot<Http> for RetryLayer<C, Http> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<C> RetrySlot<Typed> for RetryLayerBuilder<C, Typed> {
    type Layer = RetryLayer<C, Typed>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl<C> RetrySlot<Http> for RetryLayerBuilder<C, Http> {
    type Layer = RetryLayer<C, Http>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl<C> RetrySlot<Http> for RetryLayerBuilder<C, Typed> {
    type Layer = RetryLayer<palisade_core::HttpClassifier, Http>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.http().build())
    }
}

// Rate limit.
impl<K: std::hash::Hash + Eq, F, C, P> Sealed for RateLimitLayer<K, F, C, P> {}
impl<K, F, C, P> Sealed for RateLimitLayerBuilder<K, F, C, P> {}

/// A rate-limit key the stack can keep in any of its stores (with the `redis` feature: one Redis can hold).
#[cfg(feature = "redis")]
pub trait RateKey: palisade_rate_limit::redis::RedisKey + std::hash::Hash + Eq + Clone + Send + Sync + 'static {}
#[cfg(feature = "redis")]
impl<T: palisade_rate_limit::redis::RedisKey + std::hash::Hash + Eq + Clone + Send + Sync + 'static> RateKey for T {}
/// A rate-limit key the stack can keep in any of its stores (with the `redis` feature: one Redis can hold).
#[cfg(not(feature = "redis"))]
pub trait RateKey: std::hash::Hash + Eq + Clone + Send + Sync + 'static {}
#[cfg(not(feature = "redis"))]
impl<T: std::hash::Hash + Eq + Clone + Send + Sync + 'static> RateKey for T {}

fn rate_limit<K: RateKey, F, C, P>(
    b: RateLimitLayerBuilder<K, F, C, P>,
    stores: Option<&StackStores>,
) -> Result<RateLimitLayer<K, F, C, P>, StackError> {
    #[cfg(feature = "redis")]
    if let Some(conn) = stores.and_then(|s| s.redis.clone()) {
        return Ok(b.redis(palisade_rate_limit::redis::RedisStore::new(conn)).build()?);
    }
    let _ = stores;
    Ok(b.build()?)
}

impl<K: std::hash::Hash + Eq, F, C> RateLimitSlot<Typed> for RateLimitLayer<K, F, C, Typed> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<K: std::hash::Hash + Eq, F, C> RateLimitSlot<Http> for RateLimitLayer<K, F, C, Http> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<K: RateKey, F, C> RateLimitSlot<Typed> for RateLimitLayerBuilder<K, F, C, Typed> {
    type Layer = RateLimitLayer<K, F, C, Typed>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        rate_limit(self, stores)
    }
}

impl<K: RateKey, F, C> RateLimitSlot<Http> for RateLimitLayerBuilder<K, F, C, Http> {
    type Layer = RateLimitLayer<K, F, C, Http>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        rate_limit(self, stores)
    }
}

impl<K: RateKey, F, C> RateLimitSlot<Http> for RateLimitLayerBuilder<K, F, C, Typed> {
    type Layer = RateLimitLayer<K, F, C, Http>;
    fn into_layer(self, stores: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        rate_limit(self.http(), stores)
    }
}

// Audit.
impl<C> Sealed for AuditLayer<C> {}
impl<C> Sealed for AuditLayerBuilder<C> {}
impl Sealed for HttpAuditLayer {}
impl Sealed for HttpAuditLayerBuilder {}

impl<C> AuditSlot<Typed> for AuditLayer<C> {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl<C> AuditSlot<Typed> for AuditLayerBuilder<C> {
    type Layer = AuditLayer<C>;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl AuditSlot<Http> for HttpAuditLayer {
    type Layer = Self;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self, StackError> {
        Ok(self)
    }
}

impl AuditSlot<Http> for HttpAuditLayerBuilder {
    type Layer = HttpAuditLayer;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.build())
    }
}

impl<C> AuditSlot<Http> for AuditLayerBuilder<C> {
    type Layer = HttpAuditLayer;
    fn into_layer(self, _: Option<&StackStores>) -> Result<Self::Layer, StackError> {
        Ok(self.http().build())
    }
}
