//! Redis delivery store: one key per event, one Lua script per operation, Redis's own expiry for leases and
//! retention (so instances' clocks never need to agree).
//!
//! Key: `{prefix}{<event id>}`, hash-tagged on the event id, so it lives on one Redis Cluster slot. Value:
//! `p:<token>` while in progress (expiry = lease), `d` when done (expiry = retention).

use std::sync::LazyLock;
use std::time::Duration;

use palisade_core::PaymentError;
use palisade_store::redis::{RedisConnection, connect, redis_key, redis_unavailable};
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Claim, ClaimToken, DeliveryStore};
pub use crate::defaults::DEFAULT_REDIS_PREFIX;

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
if v == 'd' then return {2, 0} end
return {3, redis.call('PTTL', KEYS[1])}
",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if (not v) or v == 'p:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'd', 'PX', ARGV[2])
  return 1
end
return 0
",
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
",
    )
});

/// Deletes the claim if `ARGV[1]` holds it. Also sent whole (EVAL) by `abandon`: see there.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_LUA));

/// Delivery records in Redis, shared by every instance that uses the same prefix. Cheap to clone.
///
/// Scripts run with EVALSHA and are reloaded on NOSCRIPT (the `redis` crate's `Script`). When Redis cannot be
/// reached, operations return [`PaymentError::StoreUnavailable`] and the layer answers 503 without running the
/// handler: the sender retries later, and nothing is processed twice.
#[derive(Clone)]
pub struct RedisDeliveryStore {
    conn: RedisConnection,
    prefix: String,
}

impl std::fmt::Debug for RedisDeliveryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisDeliveryStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisDeliveryStore {
    /// A store on `conn` with [`DEFAULT_REDIS_PREFIX`].
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        RedisDeliveryStore { conn: RedisConnection::new(conn), prefix: DEFAULT_REDIS_PREFIX.to_owned() }
    }

    /// A store that connects to `url` on first use (and retries on later uses while Redis is down), so a
    /// server can start before Redis answers; meanwhile deliveries get 503 and the sender retries.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL is invalid.
    pub fn open(url: &str) -> Result<Self, PaymentError> {
        Ok(RedisDeliveryStore { conn: RedisConnection::open(url)?, prefix: DEFAULT_REDIS_PREFIX.to_owned() })
    }

    /// Connects to `url` (a reconnecting connection).
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, PaymentError> {
        Ok(Self::new(connect(url).await?))
    }

    /// Sets the key prefix (default [`DEFAULT_REDIS_PREFIX`]).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    fn key(&self, event_id: &str) -> String {
        redis_key(&self.prefix, event_id, "")
    }

    async fn conn(&self) -> Result<ConnectionManager, PaymentError> {
        self.conn.get().await
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl DeliveryStore for RedisDeliveryStore {
    async fn claim_as(&self, event_id: &str, lease: Duration, attempt: &ClaimToken) -> Result<Claim, PaymentError> {
        let mut conn = self.conn().await?;
        let (status, pttl): (i64, i64) = CLAIM
            .key(self.key(event_id))
            .arg(attempt.as_str())
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_unavailable(&e))?;
        Ok(match status {
            1 => Claim::Acquired(attempt.clone()),
            2 => Claim::Done,
            // PTTL is -1 only if someone removed the expiry by hand; report a full lease then.
            _ => Claim::InProgress { retry_after: u64::try_from(pttl).map_or(lease, Duration::from_millis) },
        })
    }

    async fn complete(&self, event_id: &str, token: &ClaimToken, retention: Duration) -> Result<bool, PaymentError> {
        let mut conn = self.conn().await?;
        let completed: i64 = COMPLETE
            .key(self.key(event_id))
            .arg(token.as_str())
            .arg(millis(retention))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_unavailable(&e))?;
        Ok(completed == 1)
    }

    async fn renew(&self, event_id: &str, token: &ClaimToken, lease: Duration) -> Result<bool, PaymentError> {
        let mut conn = self.conn().await?;
        let renewed: i64 = RENEW
            .key(self.key(event_id))
            .arg(token.as_str())
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_unavailable(&e))?;
        Ok(renewed == 1)
    }

    async fn release(&self, event_id: &str, token: &ClaimToken) -> Result<bool, PaymentError> {
        let mut conn = self.conn().await?;
        let released: i64 = RELEASE
            .key(self.key(event_id))
            .arg(token.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| redis_unavailable(&e))?;
        Ok(released == 1)
    }

    /// [`release`](DeliveryStore::release)'s script sent whole (EVAL, not EVALSHA), on the connection the claim
    /// went out on, so Redis runs it after that claim. Sent whole because the layer may have stopped waiting
    /// for it too (Redis still stalled): a `NOSCRIPT` answer (a restarted Redis, an empty script cache) would
    /// then never be followed by the reload, and the claim would stay for its whole lease.
    async fn abandon(&self, event_id: &str, attempt: &ClaimToken) -> Result<bool, PaymentError> {
        let mut conn = self.conn().await?;
        let abandoned: i64 = redis::cmd("EVAL")
            .arg(RELEASE_LUA)
            .arg(1)
            .arg(self.key(event_id))
            .arg(attempt.as_str())
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_unavailable(&e))?;
        Ok(abandoned == 1)
    }
}
