//! Per-key breakers (per gateway, merchant, host) with bounded memory: at most `max_keys` breakers, idle ones
//! evicted. A breaker that is refusing calls or holds an operator's override is never evicted; the map grows past
//! `max_keys` rather than forget one.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::time::Instant;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::events::State;
use crate::handle::CircuitBreakerHandle;

pub(crate) struct Registry<K> {
    cfg: Arc<Config>,
    map: RwLock<HashMap<K, Arc<Breaker>>>,
    max_keys: usize,
    idle_ns: u64,
    base: Instant,
    last_sweep: AtomicU64,
    /// Shared mode: woken when a key's window looks bad, so the sync task runs early.
    pub(crate) wake: Option<Arc<tokio::sync::Notify>>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// True when forgetting `b` would let calls through that it would refuse, or undo an operator: forced open,
/// forced closed or disabled; half-open; open with open time left. Such a breaker is never evicted. Closed ones, and
/// open ones whose open time is over (the next call would be a probe), may be.
fn holds(b: &Breaker) -> bool {
    match b.state() {
        State::Closed => false,
        State::Open => !b.remaining_open().is_zero(),
        _ => true,
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    pub fn new(cfg: Arc<Config>, max_keys: usize, idle: Duration, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        Registry {
            cfg,
            map: RwLock::new(HashMap::new()),
            max_keys: max_keys.max(1),
            idle_ns: nanos(idle),
            base: Instant::now(),
            last_sweep: AtomicU64::new(0),
            wake,
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    /// The breaker for `key`, created when missing.
    pub fn get(&self, key: &K) -> Arc<Breaker> {
        let now = self.now();
        if let Some(b) = self.map.read().get(key) {
            b.last_used.store(now, Ordering::Relaxed);
            return b.clone();
        }
        let mut map = self.map.write();
        if let Some(b) = map.get(key) {
            b.last_used.store(now, Ordering::Relaxed);
            return b.clone();
        }
        let sweep_due = now.saturating_sub(self.last_sweep.load(Ordering::Relaxed)) >= self.idle_ns / 4;
        if map.len() >= self.max_keys || sweep_due {
            self.last_sweep.store(now, Ordering::Relaxed);
            self.evict_idle_locked(&mut map, now);
        }
        // Still full: drop the least recently used breakers that refuse nothing, down to one below the bound. A
        // breaker that is refusing calls (open with time left, half-open) or holds an operator's override is never
        // dropped: the key's next call would reach the gateway through a fresh closed breaker. With only such
        // breakers left the map grows past `max_keys` until they stop refusing (documented).
        while map.len() >= self.max_keys {
            let victim = map
                .iter()
                .filter(|(_, b)| !holds(b))
                .min_by_key(|(_, b)| b.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            let Some(k) = victim else {
                tracing::warn!(target: "palisade_circuit_breaker", breaker = %self.cfg.name, key = %key,
                    keys = map.len() + 1, max_keys = self.max_keys,
                    "per-key breakers over max_keys: every breaker is open, half-open or set by an operator");
                break;
            };
            map.remove(&k);
            tracing::debug!(target: "palisade_circuit_breaker", breaker = %self.cfg.name, key = %k,
                "per-key breaker evicted: max_keys reached");
        }
        let label: Arc<str> = Arc::from(format!("{}/{key}", self.cfg.name));
        let b = Arc::new(Breaker::new(label, self.cfg.clone(), self.wake.clone()));
        b.last_used.store(now, Ordering::Relaxed);
        map.insert(key.clone(), b.clone());
        b
    }

    /// Drops the breakers idle for the idle timeout that refuse nothing (see [`holds`]).
    fn evict_idle_locked(&self, map: &mut HashMap<K, Arc<Breaker>>, now: u64) -> usize {
        let before = map.len();
        map.retain(|_, b| now.saturating_sub(b.last_used.load(Ordering::Relaxed)) < self.idle_ns || holds(b));
        before - map.len()
    }

    /// Breakers used within `within` (the ones worth syncing with the shared store).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn recent(&self, within: Duration) -> Vec<Arc<Breaker>> {
        let since = self.now().saturating_sub(nanos(within));
        self.map.read().values().filter(|b| b.last_used.load(Ordering::Relaxed) >= since).cloned().collect()
    }

    pub fn evict_idle(&self) -> usize {
        let now = self.now();
        self.evict_idle_locked(&mut self.map.write(), now)
    }
}

/// A handle on a per-key layer's breakers.
pub struct KeyedHandle<K> {
    pub(crate) registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedHandle<K> {
    fn clone(&self) -> Self {
        KeyedHandle { registry: self.registry.clone() }
    }
}

impl<K> fmt::Debug for KeyedHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle").field("breaker", &self.registry.cfg.name).finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> KeyedHandle<K> {
    /// The breaker for `key`, if it exists.
    #[must_use]
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.registry.map.read().get(key).map(|b| CircuitBreakerHandle { breaker: b.clone() })
    }
    /// The breaker for `key`, created when missing (to force one open before any traffic).
    #[must_use]
    pub fn entry(&self, key: &K) -> CircuitBreakerHandle {
        CircuitBreakerHandle { breaker: self.registry.get(key) }
    }
    /// How many per-key breakers exist.
    #[must_use]
    pub fn len(&self) -> usize {
        self.registry.map.read().len()
    }
    /// True when no per-key breaker exists.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The keys that have a breaker.
    #[must_use]
    pub fn keys(&self) -> Vec<K> {
        self.registry.map.read().keys().cloned().collect()
    }
    /// Drops every breaker idle for longer than the idle timeout now (this also happens on its own when new keys
    /// arrive), except those still refusing calls or set by an operator: forced open, forced closed, disabled,
    /// half-open, or open with open time left. Returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        self.registry.evict_idle()
    }
}

#[cfg(feature = "redis")]
impl<K> crate::shared::RecentBreakers for Registry<K>
where
    K: Hash + Eq + Clone + fmt::Display + Send + Sync + 'static,
{
    fn recent(&self, within: Duration) -> Vec<Arc<Breaker>> {
        Registry::recent(self, within)
    }
}

/// A reference to the breaker a request goes through (opaque).
#[doc(hidden)]
pub struct BreakerRef(pub(crate) Arc<Breaker>);

/// Which breaker a request goes through: [`Single`] (one for all) or [`Keyed`] (one per key). Sealed.
pub trait Partition<Req>: sealed::Sealed {
    #[doc(hidden)]
    fn breaker_for(&self, req: &Req) -> BreakerRef;
}

mod sealed {
    pub trait Sealed {}
}

/// One breaker for every request.
#[derive(Clone)]
pub struct Single {
    pub(crate) breaker: Arc<Breaker>,
}

impl fmt::Debug for Single {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Single").field(&self.breaker.label).finish()
    }
}

impl sealed::Sealed for Single {}
impl<Req> Partition<Req> for Single {
    #[inline]
    fn breaker_for(&self, _: &Req) -> BreakerRef {
        BreakerRef(self.breaker.clone())
    }
}

/// One breaker per key, from a key function over the request.
pub struct Keyed<K, F> {
    pub(crate) registry: Arc<Registry<K>>,
    pub(crate) key_fn: Arc<F>,
}

impl<K, F> Clone for Keyed<K, F> {
    fn clone(&self) -> Self {
        Keyed { registry: self.registry.clone(), key_fn: self.key_fn.clone() }
    }
}

impl<K, F> fmt::Debug for Keyed<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed").finish_non_exhaustive()
    }
}

impl<K, F> sealed::Sealed for Keyed<K, F> {}
impl<Req, K, F> Partition<Req> for Keyed<K, F>
where
    F: Fn(&Req) -> K,
    K: Hash + Eq + Clone + fmt::Display,
{
    #[inline]
    fn breaker_for(&self, req: &Req) -> BreakerRef {
        BreakerRef(self.registry.get(&(self.key_fn)(req)))
    }
}
