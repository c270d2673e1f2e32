//! Redis-wide limits (feature `redis`): every instance of a service shares one limit per key.
//!
//! - **One Lua script, one round trip** per decision (`EVALSHA`, reloaded on `NOSCRIPT`): the same GCRA rule
//!   as the local limiters, on **Redis server time** (`redis.call('TIME')`), so the clocks of the instances never
//!   matter. Resolution is one microsecond (Lua numbers are doubles; microseconds since 1970 fit exactly).
//! - One key per limiter and limit key, `{prefix}{<key>}:<name>:tat` (the limiter's
//!   [`name`](crate::RateLimitLayerBuilder::name)), hash-tagged so it works on Redis Cluster, holding the TAT; it
//!   expires exactly when the key goes idle, so Redis memory is bounded by the active keys (the same lossless
//!   eviction argument as [`crate::KeyedRateLimiter`]).
//! - Unreachable Redis: [`palisade_core::FailurePolicy`] — fail closed by default
//!   ([`crate::RateLimitError::StoreUnavailable`], HTTP 503), fail open on request; in shadow mode never refused
//!   (recorded as `shadow_store_unavailable`). The connection is opened lazily and re-tried on the next decision,
//!   so a service starts even while Redis is down.
//! - Optional local cache ([`RedisStore::local_cache`]): a key Redis refused is refused locally until the time
//!   Redis gave, sparing a round trip per refused request. It can only refuse what Redis would refuse: a key's
//!   TAT never moves backwards, and the cached instant is computed from the time the request was *sent*.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use palisade_store::redis::{RedisConn, RedisConnection, redis_key, redis_unavailable};
use tokio::time::Instant;

pub use crate::defaults::{DEFAULT_PREFIX, DEFAULT_RECONNECT_INTERVAL};
use crate::error::{BuildError, RateLimitError, RateLimited};
use crate::gcra::{Admitted, Gcra, Quota};

/// The GCRA script. KEYS[1] = the TAT key; ARGV = interval µs, capacity µs, cost.
/// Returns {admitted (1/0), remaining or retry_after µs, reset µs (admitted) or TAT − now µs (refused)}.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local inc = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat + inc - now
if ahead > capacity then
  return {0, ahead - capacity, tat - now}
end
if inc > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', tat + inc), 'PX', math.ceil(ahead / 1000) + 1)
end
return {1, math.floor((capacity - ahead) / interval), ahead}
";

/// How a key is written into a Redis key name. Implemented for the usual key types; map anything else to a
/// `String` in your key function. Never use a raw card number: Redis keys are visible to anyone with access.
pub trait RedisKey {
    /// The key's text (placed inside the hash tag; `%`, `{` and `}` are percent-escaped).
    fn redis_key(&self) -> Cow<'_, str>;
}

impl RedisKey for () {
    fn redis_key(&self) -> Cow<'_, str> {
        Cow::Borrowed("global")
    }
}
impl RedisKey for String {
    fn redis_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
impl RedisKey for &'static str {
    fn redis_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
impl RedisKey for Arc<str> {
    fn redis_key(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
macro_rules! display_key {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn redis_key(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
display_key!(u32, u64, i64, u128, std::net::IpAddr);

/// Where and how the Redis backend keeps its state.
#[derive(Clone)]
pub struct RedisStore {
    /// Shared, lazily opened, reconnect-throttled: while Redis is down, decisions fail fast instead of each
    /// waiting for its own connection attempt.
    conn: RedisConnection,
    prefix: String,
    local_cache: bool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("local_cache", &self.local_cache)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on a connection: an open `ConnectionManager` or cluster connection, or a
    /// [`RedisConnection`] (lazy or not, to one server or a Redis Cluster).
    #[must_use]
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        RedisStore { conn: conn.into(), prefix: DEFAULT_PREFIX.to_owned(), local_cache: false }
    }

    /// A store that connects to `url` on first use (and again after a failed attempt), so a service can start
    /// while Redis is down; decisions meanwhile follow the failure policy. `url` names one server
    /// (`redis://host:port`) or a Redis Cluster (`redis+cluster://host:port,host:port,...`, see
    /// `palisade_store::redis`).
    #[must_use]
    pub fn from_url(url: &str) -> Self {
        RedisStore { conn: RedisConnection::lazy(url), prefix: DEFAULT_PREFIX.to_owned(), local_cache: false }
    }

    /// Key prefix (default [`DEFAULT_PREFIX`]).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Cache keys Redis refused until their retry time, refusing them locally (default off: with it on, a
    /// refused client costs no Redis round trip, but shadow mode and per-request metrics from Redis see less).
    #[must_use]
    pub fn local_cache(mut self, on: bool) -> Self {
        self.local_cache = on;
        self
    }

    async fn connection(&self) -> Result<RedisConn, RateLimitError> {
        self.conn.get().await.map_err(RateLimitError::StoreUnavailable)
    }
}

pub(crate) struct RedisBackendConfig<K> {
    store: RedisStore,
    /// `None` after `key_by` changed the key type.
    key_name: Option<fn(&K) -> Cow<'_, str>>,
}

impl<K> RedisBackendConfig<K> {
    /// The backend of a builder whose key type is `K`.
    pub(crate) fn new(store: RedisStore) -> Self
    where
        K: RedisKey,
    {
        RedisBackendConfig { store, key_name: Some(<K as RedisKey>::redis_key) }
    }

    pub(crate) fn rekeyed<K2>(self) -> RedisBackendConfig<K2> {
        RedisBackendConfig { store: self.store, key_name: None }
    }
}

/// The Redis backend of a layer.
pub(crate) struct RedisBackend<K> {
    store: RedisStore,
    key_name: fn(&K) -> Cow<'_, str>,
    /// What follows a key's tag: `<limiter name>:tat`, so two limiters sharing a Redis and a prefix keep apart.
    suffix: String,
    quota: Quota,
    /// Parameters in microseconds.
    gcra: Gcra,
    script: redis::Script,
    origin: Instant,
    /// Key name → TAT as nanoseconds since `origin` on the local clock (only for refused keys).
    cache: Option<DashMap<String, u64>>,
    cache_len: AtomicUsize,
    max_keys: usize,
}

impl<K> RedisBackend<K> {
    pub(crate) fn new(
        cfg: RedisBackendConfig<K>,
        name: &str,
        quota: Quota,
        max_keys: usize,
    ) -> Result<Self, BuildError> {
        let key_name = cfg.key_name.ok_or(BuildError::RedisBeforeKeyBy)?;
        let cache = cfg.store.local_cache.then(DashMap::new);
        Ok(RedisBackend {
            key_name,
            suffix: format!("{name}:tat"),
            store: cfg.store,
            quota,
            gcra: quota.gcra().micros(quota.burst()),
            script: redis::Script::new(SCRIPT),
            origin: Instant::now(),
            cache,
            cache_len: AtomicUsize::new(0),
            max_keys,
        })
    }

    fn local_nanos(&self) -> u64 {
        Instant::now().saturating_duration_since(self.origin).as_nanos() as u64
    }

    pub(crate) async fn check(&self, key: &K, cost: u32, shadow: bool) -> Result<Admitted, RateLimitError> {
        let inc = self.gcra.interval.saturating_mul(u64::from(cost));
        if inc > self.gcra.capacity {
            return Err(RateLimitError::CostExceedsBurst { cost, burst: self.quota.burst() });
        }
        let name = redis_key(&self.store.prefix, &(self.key_name)(key), &self.suffix);
        let sent = self.local_nanos();
        let cache = self.cache.as_ref().filter(|_| !shadow);
        if let Some(cache) = cache
            && let Some(tat) = cache.get(&name).map(|t| *t)
        {
            // Refused iff tat + cost − capacity > now (all on the local clock, in ns).
            let until = tat.saturating_add(inc * 1_000).saturating_sub(self.gcra.capacity * 1_000);
            if until > sent {
                return Err(RateLimited::new(Duration::from_nanos(until - sent), self.quota).into());
            }
            if cache.remove(&name).is_some() {
                self.cache_len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let mut conn = self.store.connection().await?;
        let reply: (i64, i64, i64) = self
            .script
            .key(&name)
            .arg(self.gcra.interval)
            .arg(self.gcra.capacity)
            .arg(cost)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| RateLimitError::StoreUnavailable(redis_unavailable(&e)))?;
        let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
        match reply {
            (1, remaining, reset) => {
                let remaining = remaining.clamp(0, i64::from(u32::MAX)) as u64;
                Ok(Admitted::new(remaining, 1, micros(reset).as_nanos() as u64))
            }
            (_, retry_after, tat_ahead) => {
                if let Some(cache) = cache {
                    self.remember(cache, name, sent + micros(tat_ahead).as_nanos() as u64);
                }
                Err(RateLimited::new(micros(retry_after), self.quota).into())
            }
        }
    }

    fn remember(&self, cache: &DashMap<String, u64>, name: String, tat: u64) {
        if self.cache_len.load(Ordering::Relaxed) >= self.max_keys {
            // Full: drop the entries whose TAT has passed; if none did, skip caching (Redis stays authoritative).
            let now = self.local_nanos();
            let mut removed = 0;
            cache.retain(|_, t| {
                let keep = *t > now;
                removed += usize::from(!keep);
                keep
            });
            self.cache_len.fetch_sub(removed, Ordering::Relaxed);
            if self.cache_len.load(Ordering::Relaxed) >= self.max_keys {
                return;
            }
        }
        if cache.insert(name, tat).is_none() {
            self.cache_len.fetch_add(1, Ordering::Relaxed);
        }
    }
}
