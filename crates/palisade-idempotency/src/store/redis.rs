//! `RedisStore`: one Lua script per atomic operation, Redis server time for leases, hash-tagged keys.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_core::store::RedisConnection;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{Claim, FencingToken, Fingerprint, IdempotencyStore, Record, StoreFuture};
use crate::error::StoreError;

/// Default key prefix: `palisade:idem:`, so the records are easy to find and to keep apart from other data.
pub const DEFAULT_REDIS_PREFIX: &str = "palisade:idem:";

// Every script reads the clock with TIME, on the Redis server, so leases mean the same thing to every instance
// whatever their own clocks say. Redis 7 replicates scripts by effects; on 5 and 6 the call below turns that on,
// which is what makes writes after TIME legal there.
const PRELUDE: &str = "if redis.replicate_commands then pcall(redis.replicate_commands) end\n\
local t = redis.call('TIME')\n\
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])\n\
local now_ms = math.floor(now_us / 1000)\n";

// KEYS[1] record hash; ARGV: fingerprint, lease ms, ttl ms.
// The fencing token is max(previous + 1, server time in µs): strictly increasing for the key while the record
// lives, and still greater than any earlier token after the record expired (as long as the server clock does
// not jump back). Numbers stay below 2^53, exact in Lua's doubles; '%.0f' prints them without exponent.
const CLAIM: &str = "
local h = redis.call('HMGET', KEYS[1], 'fp', 'st', 'tok', 'lease', 'body')
local tok
local took = '0'
if h[1] then
  if h[1] ~= ARGV[1] then return {'mismatch'} end
  if h[2] == 'd' then return {'completed', h[5]} end
  local lease = tonumber(h[4]) or 0
  if lease > now_ms then return {'inflight', string.format('%.0f', lease - now_ms)} end
  tok = math.max((tonumber(h[3]) or 0) + 1, now_us)
  took = '1'
else
  tok = now_us
end
local lease_ms = tonumber(ARGV[2])
local ttl_ms = math.max(tonumber(ARGV[3]), lease_ms)
local tok_s = string.format('%.0f', tok)
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'st', 'i', 'tok', tok_s, 'lease', string.format('%.0f', now_ms + lease_ms))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
return {'acquired', tok_s, took}
";

// KEYS[1] record hash; ARGV: token, response, ttl ms.
const COMPLETE: &str = "
local h = redis.call('HMGET', KEYS[1], 'st', 'tok')
if h[1] == 'i' and h[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'st', 'd', 'body', ARGV[2])
  redis.call('HDEL', KEYS[1], 'lease')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

// KEYS[1] record hash; ARGV: token. Ends the lease; keeps fingerprint and token.
const RELEASE: &str = "
local h = redis.call('HMGET', KEYS[1], 'st', 'tok')
if h[1] == 'i' and h[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'lease', '0')
  return 1
end
return 0
";

// KEYS[1] record hash.
const GET: &str = "
local h = redis.call('HMGET', KEYS[1], 'fp', 'st', 'tok', 'lease', 'body')
if not h[1] then return {} end
if h[2] == 'd' then return {'completed', h[1], h[5]} end
local rem = math.max((tonumber(h[4]) or 0) - now_ms, 0)
return {'inflight', h[1], h[3], string.format('%.0f', rem)}
";

#[derive(Debug)]
struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    get: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: Script::new(&format!("{PRELUDE}{CLAIM}")),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            get: Script::new(&format!("{PRELUDE}{GET}")),
        }
    }
}

/// A Redis-backed [`IdempotencyStore`], shared by every instance of a service.
///
/// - One Lua script per operation (claim, complete-if-token-matches, release-if-owned, get), sent with EVALSHA
///   and reloaded on NOSCRIPT.
/// - One hash per record at `{prefix}{<scope/key>}`: the hash tag keeps the record on one Cluster slot.
/// - Leases are measured in Redis server time (`TIME`), so instances with skewed clocks agree.
/// - A reconnecting `ConnectionManager`. When Redis cannot be reached, every operation returns a
///   [`StoreError`] and the layer answers 503 without calling the inner service.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("prefix", &self.prefix).field("conn", &self.conn).finish()
    }
}

impl RedisStore {
    /// A store over an existing connection, with [`DEFAULT_REDIS_PREFIX`].
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        RedisStore {
            conn: RedisConnection::new(conn),
            prefix: DEFAULT_REDIS_PREFIX.into(),
            scripts: Arc::new(Scripts::new()),
        }
    }

    /// Connects to `url` now (reconnecting `ConnectionManager`, via `palisade_core::store::connect`).
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = palisade_core::store::connect(url).await.map_err(|e| StoreError::new(e.to_string()))?;
        Ok(RedisStore::new(conn))
    }

    /// A store that connects on first use, so a service can start while Redis is down (and answer 503
    /// meanwhile). While Redis is unreachable it tries again at most once a second and fails fast in between
    /// ([`palisade_core::store::RedisConnection`]).
    ///
    /// # Errors
    /// [`StoreError`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(RedisStore {
            conn: RedisConnection::open(url).map_err(|e| StoreError::new(e.to_string()))?,
            prefix: DEFAULT_REDIS_PREFIX.into(),
            scripts: Arc::new(Scripts::new()),
        })
    }

    /// Sets the key prefix (default [`DEFAULT_REDIS_PREFIX`]).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// The Redis key of the record for a storage key (see [`storage_key`](crate::storage_key)).
    #[must_use]
    pub fn record_key(&self, storage_key: &str) -> String {
        palisade_core::store::redis_key(&self.prefix, storage_key, "")
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn.get().await.map_err(|e| StoreError::new(e.to_string()))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn text(v: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(v).map_err(|_| StoreError::new("redis script answered a non-UTF-8 field"))
}

fn number(v: &[u8]) -> Result<u64, StoreError> {
    text(v)?.parse().map_err(|_| StoreError::new("redis script answered a malformed number"))
}

fn fingerprint(v: &[u8]) -> Result<Fingerprint, StoreError> {
    let arr: [u8; 32] = v.try_into().map_err(|_| StoreError::new("stored fingerprint is not 32 bytes"))?;
    Ok(Fingerprint(arr))
}

fn bad_reply(reply: &[Vec<u8>]) -> StoreError {
    StoreError::new(format!("unexpected reply from the idempotency script ({} fields)", reply.len()))
}

impl IdempotencyStore for RedisStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
    ) -> StoreFuture<'a, Claim> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let reply: Vec<Vec<u8>> = self
                .scripts
                .claim
                .key(self.record_key(key))
                .arg(&fingerprint.0[..])
                .arg(ms(lease))
                .arg(ms(ttl))
                .invoke_async(&mut conn)
                .await?;
            match reply.first().map(Vec::as_slice) {
                Some(b"acquired") if reply.len() == 3 => Ok(Claim::Acquired {
                    token: FencingToken(number(&reply[1])?),
                    took_over: reply[2].as_slice() == b"1",
                }),
                Some(b"inflight") if reply.len() == 2 => {
                    Ok(Claim::InFlight { lease_remaining: Duration::from_millis(number(&reply[1])?) })
                }
                Some(b"completed") if reply.len() == 2 => {
                    Ok(Claim::Completed { response: Bytes::from(reply.into_iter().nth(1).unwrap_or_default()) })
                }
                Some(b"mismatch") => Ok(Claim::Mismatch),
                _ => Err(bad_reply(&reply)),
            }
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: FencingToken,
        response: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let done: i64 = self
                .scripts
                .complete
                .key(self.record_key(key))
                .arg(token.0.to_string())
                .arg(&response[..])
                .arg(ms(ttl))
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a str, token: FencingToken) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let done: i64 =
                self.scripts.release.key(self.record_key(key)).arg(token.0.to_string()).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let reply: Vec<Vec<u8>> = self.scripts.get.key(self.record_key(key)).invoke_async(&mut conn).await?;
            match reply.first().map(Vec::as_slice) {
                None => Ok(None),
                Some(b"completed") if reply.len() == 3 => {
                    let fp = fingerprint(&reply[1])?;
                    Ok(Some(Record::Completed {
                        fingerprint: fp,
                        response: Bytes::from(reply.into_iter().nth(2).unwrap_or_default()),
                    }))
                }
                Some(b"inflight") if reply.len() == 4 => Ok(Some(Record::InFlight {
                    fingerprint: fingerprint(&reply[1])?,
                    token: FencingToken(number(&reply[2])?),
                    lease_remaining: Duration::from_millis(number(&reply[3])?),
                })),
                _ => Err(bad_reply(&reply)),
            }
        })
    }
}
