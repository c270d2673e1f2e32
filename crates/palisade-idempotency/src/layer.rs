//! The typed mode: `IdempotencyLayer` around a gateway `Service<GatewayRequest>` (or any request type that
//! carries a gateway key).

use std::sync::Arc;

use palisade_core::{DefaultClassifier, GatewayKeyed, GatewayRequest, IdempotencyKey};
use sha2::{Digest, Sha256};

use crate::config::{Settings, common_setters};
use crate::engine::Engine;
use crate::service::IdempotencyService;
use crate::store::Fingerprint;

/// What makes two requests "the same request" for the typed mode.
pub trait Fingerprinted {
    /// A digest of everything that must match for a replay; never of the idempotency key itself.
    fn fingerprint(&self) -> Fingerprint;
}

impl Fingerprinted for GatewayRequest {
    /// SHA-256 of the request as JSON without its gateway key: operation, amount, source, order, metadata.
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_json(&self.without_key())
    }
}

impl Fingerprint {
    /// SHA-256 of a value's JSON form.
    #[must_use]
    pub fn of_json<T: serde::Serialize + ?Sized>(value: &T) -> Fingerprint {
        let mut h = HashWriter(Sha256::new());
        // Writing into a hasher cannot fail; a value whose Serialize fails hashes what was written so far.
        let _ = serde_json::to_writer(&mut h, value);
        Fingerprint(h.0.finalize().into())
    }
    /// SHA-256 of bytes.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(bytes).into())
    }
}

struct HashWriter(Sha256);
impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) type KeyFn<Req> = Arc<dyn Fn(&Req) -> Option<IdempotencyKey> + Send + Sync>;
pub(crate) type ScopeFn<Req> = Arc<dyn Fn(&Req) -> Option<String> + Send + Sync>;
pub(crate) type FingerprintFn<Req> = Arc<dyn Fn(&Req) -> Fingerprint + Send + Sync>;

pub(crate) struct Typed<Req> {
    pub(crate) engine: Arc<Engine>,
    pub(crate) key: KeyFn<Req>,
    pub(crate) scope: Option<ScopeFn<Req>>,
    pub(crate) fingerprint: FingerprintFn<Req>,
}

/// Makes a typed service idempotent: one execution per key, whatever the concurrency, across every process
/// sharing the store. See the [crate docs](crate) for the protocol.
///
/// Cheap to clone. Built with [`IdempotencyLayer::builder`].
pub struct IdempotencyLayer<Req = GatewayRequest, C = DefaultClassifier> {
    shared: Arc<Typed<Req>>,
    classifier: C,
}

impl<Req, C: Clone> Clone for IdempotencyLayer<Req, C> {
    fn clone(&self) -> Self {
        IdempotencyLayer { shared: self.shared.clone(), classifier: self.classifier.clone() }
    }
}

impl<Req, C: std::fmt::Debug> std::fmt::Debug for IdempotencyLayer<Req, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("settings", &self.shared.engine.settings)
            .field("scoped", &self.shared.scope.is_some())
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl IdempotencyLayer<GatewayRequest> {
    /// A builder for the typed mode over [`GatewayRequest`]: key from the request's gateway key, no scope,
    /// [`DefaultClassifier`], a fresh [`MemoryStore`](crate::MemoryStore), 24 h TTL, 90 s lease.
    pub fn builder() -> IdempotencyLayerBuilder<GatewayRequest> {
        IdempotencyLayerBuilder::new()
    }
}

impl<S, Req, C: Clone> tower_layer::Layer<S> for IdempotencyLayer<Req, C> {
    type Service = IdempotencyService<S, Req, C>;
    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, self.shared.clone(), self.classifier.clone())
    }
}

/// Builder for [`IdempotencyLayer`] (typed mode). Every setting has a documented default.
#[must_use]
pub struct IdempotencyLayerBuilder<Req, C = DefaultClassifier> {
    settings: Settings,
    key: KeyFn<Req>,
    scope: Option<ScopeFn<Req>>,
    fingerprint: FingerprintFn<Req>,
    classifier: C,
}

impl<Req: GatewayKeyed + Fingerprinted + 'static> Default for IdempotencyLayerBuilder<Req> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req: GatewayKeyed + Fingerprinted + 'static> IdempotencyLayerBuilder<Req> {
    /// Defaults: key = the request's gateway key ([`GatewayKeyed`]), fingerprint = [`Fingerprinted`], no scope,
    /// [`DefaultClassifier`].
    pub fn new() -> Self {
        IdempotencyLayerBuilder {
            settings: Settings::default(),
            key: Arc::new(|r: &Req| r.gateway_key().cloned()),
            scope: None,
            fingerprint: Arc::new(Req::fingerprint),
            classifier: DefaultClassifier,
        }
    }
}

impl<Req: 'static, C> IdempotencyLayerBuilder<Req, C> {
    common_setters!();

    /// Where the idempotency key comes from (default: the request's gateway key). Returning `None` means "no
    /// key" (see [`missing_key`](Self::missing_key)).
    pub fn key(mut self, f: impl Fn(&Req) -> Option<IdempotencyKey> + Send + Sync + 'static) -> Self {
        self.key = Arc::new(f);
        self
    }

    /// The scope (tenant, account, user) a key belongs to: part of the storage key, so equal keys of two scopes
    /// never meet; also mixed into the gateway key. Default: no scope.
    pub fn scope(mut self, f: impl Fn(&Req) -> Option<String> + Send + Sync + 'static) -> Self {
        self.scope = Some(Arc::new(f));
        self
    }

    /// What makes two requests with the same key "the same request" (default: [`Fingerprinted`]).
    pub fn fingerprint(mut self, f: impl Fn(&Req) -> Fingerprint + Send + Sync + 'static) -> Self {
        self.fingerprint = Arc::new(f);
        self
    }

    /// How results are classified into outcomes (default: [`DefaultClassifier`]): Success and Terminal are
    /// stored and replayed, Retriable and Unknown release the key.
    pub fn classifier<C2>(self, classifier: C2) -> IdempotencyLayerBuilder<Req, C2> {
        IdempotencyLayerBuilder {
            settings: self.settings,
            key: self.key,
            scope: self.scope,
            fingerprint: self.fingerprint,
            classifier,
        }
    }

    /// Builds the layer.
    pub fn build(self) -> IdempotencyLayer<Req, C> {
        IdempotencyLayer {
            shared: Arc::new(Typed {
                engine: Engine::new(self.settings),
                key: self.key,
                scope: self.scope,
                fingerprint: self.fingerprint,
            }),
            classifier: self.classifier,
        }
    }
}
