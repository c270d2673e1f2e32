//! [`WebhookLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::FailurePolicy;
use tower_layer::Layer;

pub use crate::defaults::{DEFAULT_BODY_LIMIT, DEFAULT_LEASE, DEFAULT_RETENTION};
use crate::service::{Shared, WebhookService};
use crate::verifier::Verifier;
use palisade_store::lease::LeaseStore;

/// Verifies webhooks on the raw body and (with a store) delivers each event to the handler effectively once.
///
/// The service it builds reads the whole body (bounded: 413 beyond [`body_limit`](WebhookLayerBuilder::body_limit)),
/// verifies it (400 problem+json on failure), and calls the inner service with a `Request<Full<Bytes>>` holding
/// exactly the verified bytes, with [`EventId`](crate::EventId) and [`Verified`](crate::Verified) in the request
/// extensions. Any method but POST gets 405 with `Allow: POST`. With a [`LeaseStore`] (see [`dedup`](WebhookLayerBuilder::dedup)): a duplicate of a
/// running event gets 503 + `Retry-After`, a duplicate of a handled one gets 200 without the handler running; a
/// handler that fails (non-2xx or error) releases its claim so the sender's redelivery runs it again; the claim's
/// lease is renewed while the handler runs.
pub struct WebhookLayer {
    shared: Arc<Shared>,
}

impl Clone for WebhookLayer {
    fn clone(&self) -> Self {
        WebhookLayer { shared: self.shared.clone() }
    }
}

impl fmt::Debug for WebhookLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookLayer")
            .field("verifier", &self.shared.verifier)
            .field("body_limit", &self.shared.body_limit)
            .field("lease", &self.shared.lease)
            .field("retention", &self.shared.retention)
            .field("dedup", &self.shared.store.is_some())
            .field("namespace", &self.shared.namespace)
            .finish_non_exhaustive()
    }
}

impl WebhookLayer {
    /// Starts a layer around `verifier`. Defaults: [`DEFAULT_BODY_LIMIT`], no deduplication, no namespace,
    /// [`DEFAULT_LEASE`], [`DEFAULT_RETENTION`], fail closed when the store is down.
    pub fn builder(verifier: Verifier) -> WebhookLayerBuilder {
        WebhookLayerBuilder {
            verifier,
            store: None,
            body_limit: DEFAULT_BODY_LIMIT,
            lease: DEFAULT_LEASE,
            retention: DEFAULT_RETENTION,
            failure_policy: FailurePolicy::FailClosed,
            namespace: None,
        }
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = WebhookService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WebhookService::new(inner, self.shared.clone())
    }
}

/// Builds a [`WebhookLayer`].
#[must_use]
pub struct WebhookLayerBuilder {
    verifier: Verifier,
    store: Option<Arc<dyn LeaseStore>>,
    body_limit: usize,
    lease: Duration,
    retention: Duration,
    failure_policy: FailurePolicy,
    namespace: Option<String>,
}

impl fmt::Debug for WebhookLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookLayerBuilder").field("verifier", &self.verifier).finish_non_exhaustive()
    }
}

impl WebhookLayerBuilder {
    /// Largest body read (default [`DEFAULT_BODY_LIMIT`]); larger bodies get 413 without being verified.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Deduplicates deliveries in `store` ([`MemoryStore`](crate::MemoryStore), or `RedisStore` with the `redis`
    /// feature) by what the signature covers ([`Verifier::dedup_id`]: the event id, or for GitHub the body's
    /// SHA-256): the lease protocol of `palisade-store`, with the record at `webhook:<id>`, or
    /// `webhook<len>:<namespace>:<id>` with a [`namespace`](Self::namespace) (disjoint from idempotency keys, so
    /// one store can serve both layers).
    pub fn dedup(mut self, store: impl LeaseStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Gives this endpoint's delivery records their own namespace in the store (default: none). Set one on every
    /// webhook layer that shares a store with another: two endpoints receive equal event ids (one Stripe
    /// account's two endpoints both get its `evt_…`; two senders may pick equal ids), and without namespaces the
    /// second endpoint would answer its event as a duplicate of the first's and never run its handler. Use a
    /// stable name per endpoint (`"stripe-eu"`, `"github-ci"`): a record is found only under the namespace it
    /// was written with, so renaming one forgets the events it handled.
    ///
    /// Keys: `webhook<len>:<namespace>:<id>` (`len` is the namespace's length in bytes, so no two namespaces' keys
    /// meet whatever they contain; an empty namespace is a namespace too). Without one, `webhook:<id>`, the key
    /// earlier versions used for every layer, so upgrading finds their records; adding a namespace to a running
    /// endpoint does not (an event handled under the old key and redelivered within the retention runs again).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// How long a claim lasts without renewal before another delivery may take over (default [`DEFAULT_LEASE`]).
    /// The layer renews it every third of it while the handler runs, so it need not cover the handler's running
    /// time: it is how long a crashed holder blocks the event, and the longest `Retry-After` of an "in progress"
    /// answer.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }

    /// How long a handled event is remembered (default [`DEFAULT_RETENTION`]).
    pub fn retention(mut self, d: Duration) -> Self {
        self.retention = d;
        self
    }

    /// What to do when the store cannot be reached (default [`FailurePolicy::FailClosed`]: 503, the sender
    /// retries later). `FailOpen` runs the handler without deduplication.
    pub fn failure_policy(mut self, p: FailurePolicy) -> Self {
        self.failure_policy = p;
        self
    }

    /// Builds the layer.
    pub fn build(self) -> WebhookLayer {
        WebhookLayer {
            shared: Arc::new(Shared {
                verifier: self.verifier,
                store: self.store,
                body_limit: self.body_limit,
                lease: self.lease,
                retention: self.retention,
                failure_policy: self.failure_policy,
                namespace: self.namespace,
            }),
        }
    }
}
