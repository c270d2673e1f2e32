//! Settings both modes share, with their documented defaults.

use std::sync::Arc;
use std::time::Duration;

pub use crate::defaults::{
    DEFAULT_BODY_LIMIT, DEFAULT_IN_FLIGHT_RETRY_AFTER, DEFAULT_LEASE, DEFAULT_TTL, DEFAULT_WAIT,
};
use palisade_store::lease::{LeaseStore, MemoryStore};

/// What to do with a request that carries no idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Execute it without idempotency protection (Stripe's behaviour, and the default): the layer does nothing
    /// for it.
    #[default]
    PassThrough,
    /// Refuse it: [`IdempotencyRejection::KeyMissing`](crate::IdempotencyRejection::KeyMissing), HTTP 400.
    Reject,
}

/// Settings shared by the typed and the HTTP mode.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
    pub(crate) in_flight_retry_after: Duration,
    pub(crate) missing_key: MissingKey,
    pub(crate) renew_leases: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            store: Arc::new(MemoryStore::new()),
            ttl: DEFAULT_TTL,
            lease: DEFAULT_LEASE,
            wait: DEFAULT_WAIT,
            in_flight_retry_after: DEFAULT_IN_FLIGHT_RETRY_AFTER,
            missing_key: MissingKey::PassThrough,
            renew_leases: true,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("wait", &self.wait)
            .field("in_flight_retry_after", &self.in_flight_retry_after)
            .field("missing_key", &self.missing_key)
            .field("renew_leases", &self.renew_leases)
            .finish_non_exhaustive()
    }
}

/// The setters both builders share.
macro_rules! common_setters {
    () => {
        /// The store (default: a fresh [`MemoryStore`](crate::MemoryStore)). Share one store (or one Redis) between
        /// every instance that serves the same keys.
        pub fn store(mut self, store: impl palisade_store::lease::LeaseStore) -> Self {
            self.settings.store = std::sync::Arc::new(store);
            self
        }
        /// How long completed results are kept and replayed (default [`DEFAULT_TTL`](crate::DEFAULT_TTL), 24 h).
        pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
            self.settings.ttl = ttl;
            self
        }
        /// How long a claim protects an executing request between renewals, and so how long a crashed holder
        /// blocks its key (default [`DEFAULT_LEASE`](crate::DEFAULT_LEASE), 10 s). The layer renews it every
        /// third of it while the request runs.
        pub fn lease(mut self, lease: std::time::Duration) -> Self {
            self.settings.lease = lease;
            self
        }
        /// Whether the lease is renewed while a request runs (default `true`). Without renewal a lease must
        /// outlast the inner service's longest execution, or a duplicate takes over a live request (the
        /// gateway key then keeps the gateway from acting twice). Turn it off only to test takeover.
        pub fn renew_leases(mut self, on: bool) -> Self {
            self.settings.renew_leases = on;
            self
        }
        /// Lets a duplicate wait up to `wait` for the in-flight original and replay its result (default
        /// [`DEFAULT_WAIT`](crate::DEFAULT_WAIT): refuse at once with 409).
        pub fn wait_for_in_flight(mut self, wait: std::time::Duration) -> Self {
            self.settings.wait = wait;
            self
        }
        /// The `Retry-After` of an in-flight rejection (default
        /// [`DEFAULT_IN_FLIGHT_RETRY_AFTER`](crate::DEFAULT_IN_FLIGHT_RETRY_AFTER), 1 s).
        pub fn in_flight_retry_after(mut self, d: std::time::Duration) -> Self {
            self.settings.in_flight_retry_after = d;
            self
        }
        /// What to do without a key (default [`MissingKey::PassThrough`](crate::MissingKey::PassThrough)).
        pub fn missing_key(mut self, policy: crate::MissingKey) -> Self {
            self.settings.missing_key = policy;
            self
        }
    };
}
pub(crate) use common_setters;
