//! `RedisStore`: one Lua script per atomic operation, Redis server time for leases, hash-tagged keys.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::{Script, Value};

use super::{Claim, FencingToken, Fingerprint, Hold, LeaseStore, Payload, Record, StoreError, StoreFuture};
use crate::redis::{RedisConn, RedisConnection};

/// Default key prefix: `palisade:lease:`, so the records are easy to find and to keep apart from other data.
/// The layers' keys are disjoint below it (idempotency `k:…` / `s…`, webhook deliveries `webhook:…`), so one
/// store serves both.
pub const DEFAULT_REDIS_PREFIX: &str = "palisade:lease:";

// One string per record, so a script reads it with one GET and writes it with one SET (the TTL in the same call):
// - in flight: `i` ‖ fingerprint (32 bytes) ‖ token ‖ `:` ‖ lease ms [‖ `/` ‖ attempt]. The lease ends
//   token / 1000 + lease ms (server clock, ms); a renewal moves it by rewriting lease ms; a released claim has
//   lease ms `0` and no attempt. The attempt (a random number per claim) lets `abandon` undo a claim whose
//   answer never reached the layer.
// - completed: `d` ‖ fingerprint (32 bytes) ‖ stored response.
// The fencing token is max(previous + 1, server time in µs) in decimal: strictly increasing for the key while
// the record lives, and still greater than any earlier token after the record expired (as long as the server
// clock does not jump back). Numbers stay below 2^53, exact in Lua's doubles.
// Each script call and each `redis.call` in it costs Redis far more than a plain command, so the scripts make as
// few of both as the atomic step allows; a completed record goes back whole and the client compares its
// fingerprint. Redis 6.0 or later (`KEEPTTL`); Redis 5 and later replicate scripts by effects, which is what
// makes writes after TIME legal.

// KEYS[1] record; ARGV: fingerprint, lease ms, record TTL ms (at least the lease), attempt.
// Answers: the completed record (bulk), -1 (fingerprint differs), n > 0 (in flight, lease ends in n ms),
// or {token, took_over 0/1} (acquired). A claim whose live lease holds the same attempt is this claim sent
// again (the cluster client resends a command after a dropped connection): it is acquired again, same token.
const CLAIM: &str = "
local v = redis.call('GET', KEYS[1])
if not v then
  local t = redis.call('TIME')
  local tok = t[1] .. string.sub('00000' .. t[2], -6)
  redis.call('SET', KEYS[1], 'i' .. ARGV[1] .. tok .. ':' .. ARGV[2] .. '/' .. ARGV[4], 'PX', ARGV[3])
  return {tok, 0}
end
local st = string.byte(v, 1)
if st == 100 then return v end
if st ~= 105 or #v < 35 then return redis.error_reply('not a lease record') end
if string.sub(v, 2, 33) ~= ARGV[1] then return -1 end
local sep = string.find(v, ':', 34, true)
if not sep then return redis.error_reply('not a lease record') end
local prev = tonumber(string.sub(v, 34, sep - 1))
local slash = string.find(v, '/', sep + 1, true)
local lease = tonumber(string.sub(v, sep + 1, (slash or 0) - 1))
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
if lease > 0 then
  local rem = math.floor(prev / 1000) + lease - math.floor(now_us / 1000)
  if rem > 0 then
    if slash and string.sub(v, slash + 1) == ARGV[4] then return {string.sub(v, 34, sep - 1), 0} end
    return rem
  end
end
local tok = string.format('%.0f', math.max(prev + 1, now_us))
redis.call('SET', KEYS[1], 'i' .. ARGV[1] .. tok .. ':' .. ARGV[2] .. '/' .. ARGV[4], 'PX', ARGV[3])
return {tok, 1}
";

// KEYS[1] record; ARGV: token, response, TTL ms. 1 when the token holds the claim and the record is now completed.
const COMPLETE: &str = "
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 105 and string.sub(v, 34, 34 + #ARGV[1]) == ARGV[1] .. ':' then
  redis.call('SET', KEYS[1], 'd' .. string.sub(v, 2, 33) .. ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

// KEYS[1] record; ARGV: token. Ends the lease (lease ms 0); keeps fingerprint, token and TTL.
const RELEASE: &str = "
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 105 and string.sub(v, 34, 34 + #ARGV[1]) == ARGV[1] .. ':' then
  redis.call('SET', KEYS[1], string.sub(v, 1, 34 + #ARGV[1]) .. '0', 'KEEPTTL')
  return 1
end
return 0
";

// KEYS[1] record. Answers nil (no record), the completed record (bulk), or {in-flight record, lease ms left}.
const GET: &str = "
local v = redis.call('GET', KEYS[1])
if not v then return false end
if string.byte(v, 1) == 100 then return v end
local sep = string.byte(v, 1) == 105 and string.find(v, ':', 34, true)
if not sep then return redis.error_reply('not a lease record') end
local slash = string.find(v, '/', sep + 1, true)
local lease = tonumber(string.sub(v, sep + 1, (slash or 0) - 1))
local rem = 0
if lease > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  rem = math.max(math.floor(tonumber(string.sub(v, 34, sep - 1)) / 1000) + lease - now_ms, 0)
end
return {v, rem}
";

// KEYS[1] record; ARGV: token, lease ms. Moves the end of a live lease held by the token to now + lease (and
// the record's TTL with it when shorter); 1 when it did. Never earlier than it was: a token stamped ahead of this
// server's clock (a clock stepped back, a failover to a replica whose clock is behind) would otherwise write a
// lease of 0 or less, which reads as released, and a duplicate would take over a live holder.
const RENEW: &str = "
local v = redis.call('GET', KEYS[1])
if not (v and string.byte(v, 1) == 105 and string.sub(v, 34, 34 + #ARGV[1]) == ARGV[1] .. ':') then return 0 end
local sep = 34 + #ARGV[1]
local slash = string.find(v, '/', sep + 1, true)
local lease = tonumber(string.sub(v, sep + 1, (slash or 0) - 1))
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tok_ms = math.floor(tonumber(ARGV[1]) / 1000)
if lease == 0 or tok_ms + lease <= now_ms then return 0 end
local tail = ''
if slash then tail = string.sub(v, slash) end
redis.call('SET', KEYS[1], string.sub(v, 1, sep) .. string.format('%.0f', math.max(lease, now_ms - tok_ms + tonumber(ARGV[2]))) .. tail, 'KEEPTTL')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

// KEYS[1] record; ARGV: token. Deletes a claim held by the token (its request did nothing); 1 when it did.
const FORGET: &str = "
local v = redis.call('GET', KEYS[1])
if v and string.byte(v, 1) == 105 and string.sub(v, 34, 34 + #ARGV[1]) == ARGV[1] .. ':' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

// KEYS[1] record; ARGV: attempt. Ends the lease of a claim still held by the attempt (as RELEASE does: the
// fingerprint stays, so only the same request takes the key over); 1 when it did.
const ABANDON: &str = "
local v = redis.call('GET', KEYS[1])
if not (v and string.byte(v, 1) == 105 and string.sub(v, -(#ARGV[1] + 1)) == '/' .. ARGV[1]) then return 0 end
local sep = string.find(v, ':', 34, true)
if not sep then return 0 end
redis.call('SET', KEYS[1], string.sub(v, 1, sep) .. '0', 'KEEPTTL')
return 1
";

#[derive(Debug)]
struct Scripts {
    claim: Script,
    complete: Script,
    release: Script,
    get: Script,
    renew: Script,
    forget: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: Script::new(CLAIM),
            complete: Script::new(COMPLETE),
            release: Script::new(RELEASE),
            get: Script::new(GET),
            renew: Script::new(RENEW),
            forget: Script::new(FORGET),
        }
    }
}

/// A Redis-backed [`LeaseStore`], shared by every instance of a service.
///
/// - One Lua script per operation (claim, complete-if-token-matches, release-if-owned, get), sent with EVALSHA
///   and reloaded on NOSCRIPT.
/// - One string per record at `{prefix}{<scope/key>}` (state byte, fingerprint, then token and lease or the
///   stored response), read with one GET and written with one SET per script; the hash tag keeps the record on
///   one Cluster slot. Needs Redis 6.0 or later (`SET ... KEEPTTL`).
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
    /// A store over an existing connection (a `ConnectionManager`, a cluster connection, or a
    /// [`RedisConnection`], lazy or not), with [`DEFAULT_REDIS_PREFIX`].
    #[must_use]
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        RedisStore { conn: conn.into(), prefix: DEFAULT_REDIS_PREFIX.into(), scripts: Arc::new(Scripts::new()) }
    }

    /// Connects to `url` now: one server, or a cluster with `redis+cluster://host:port,...` (see
    /// [`crate::redis`]).
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect(url).await.map_err(|e| StoreError::new(e.to_string()))?;
        Ok(RedisStore::new(conn))
    }

    /// A store that connects on first use (to one server, or a cluster with `redis+cluster://host:port,...`),
    /// so a service can start while Redis is down (and answer 503 meanwhile). While Redis is unreachable it tries again at most once a second and fails fast in between
    /// ([`RedisConnection`]).
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

    /// The Redis key of the record for a storage key.
    #[must_use]
    pub fn record_key(&self, storage_key: &str) -> String {
        crate::redis::redis_key(&self.prefix, storage_key, "")
    }

    async fn conn(&self) -> Result<RedisConn, StoreError> {
        self.conn.get().await.map_err(|e| StoreError::new(e.to_string()))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn text(v: &[u8]) -> Result<&str, StoreError> {
    std::str::from_utf8(v).map_err(|_| StoreError::new("redis record holds a non-UTF-8 number"))
}

fn number(v: &[u8]) -> Result<u64, StoreError> {
    text(v)?.parse().map_err(|_| StoreError::new("redis record holds a malformed number"))
}

fn lease_ms(n: i64) -> Duration {
    Duration::from_millis(u64::try_from(n).unwrap_or(0))
}

fn bad_reply(reply: &Value) -> StoreError {
    let kind = match reply {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a string",
        Value::Array(_) => "an array",
        _ => "another type",
    };
    StoreError::new(format!("unexpected reply from the lease script ({kind})"))
}

/// A record as stored: a state byte (`i` in flight, `d` completed), the 32-byte fingerprint, then the state's
/// fields (see the comment on the scripts).
struct Stored {
    raw: Vec<u8>,
}

impl Stored {
    fn new(raw: Vec<u8>, state: u8) -> Result<Self, StoreError> {
        if raw.len() < 33 || raw[0] != state {
            return Err(StoreError::new("redis record is not in the expected format"));
        }
        Ok(Stored { raw })
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut fp = [0u8; 32];
        fp.copy_from_slice(&self.raw[1..33]);
        Fingerprint(fp)
    }

    /// A completed record's response, without copying it.
    fn into_response(self) -> Bytes {
        Bytes::from(self.raw).slice(33..)
    }

    /// An in-flight record's token.
    fn token(&self) -> Result<FencingToken, StoreError> {
        let rest = &self.raw[33..];
        let end = rest.iter().position(|&b| b == b':').ok_or_else(|| StoreError::new("redis record has no lease"))?;
        Ok(FencingToken(number(&rest[..end])?))
    }
}

impl LeaseStore for RedisStore {
    fn claim_as<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
        lease: Duration,
        ttl: Duration,
        attempt: u64,
    ) -> StoreFuture<'a, Claim> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let reply: Value = self
                .scripts
                .claim
                .key(self.record_key(key))
                .arg(&fingerprint.0[..])
                .arg(ms(lease))
                .arg(ms(ttl.max(lease)))
                .arg(attempt)
                .invoke_async(&mut conn)
                .await?;
            match reply {
                Value::BulkString(raw) => {
                    let record = Stored::new(raw, b'd')?;
                    if record.fingerprint() == *fingerprint {
                        Ok(Claim::Done { response: Payload::Bytes(record.into_response()) })
                    } else {
                        Ok(Claim::Mismatch)
                    }
                }
                Value::Int(-1) => Ok(Claim::Mismatch),
                Value::Int(n) if n > 0 => Ok(Claim::Held { lease_remaining: lease_ms(n) }),
                Value::Array(fields) => match fields.as_slice() {
                    [Value::BulkString(token), Value::Int(took_over)] => Ok(Claim::Acquired {
                        hold: Hold::new(key, FencingToken(number(token)?)),
                        took_over: *took_over == 1,
                    }),
                    _ => Err(bad_reply(&Value::Array(fields))),
                },
                other => Err(bad_reply(&other)),
            }
        })
    }

    fn complete<'a>(&'a self, hold: &'a Hold, response: Payload, ttl: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let (key, token) = (hold.key_or_err()?, hold.token());
            let response = response.to_bytes();
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

    fn release<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let (key, token) = (hold.key_or_err()?, hold.token());
            let mut conn = self.conn().await?;
            let done: i64 =
                self.scripts.release.key(self.record_key(key)).arg(token.0.to_string()).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }

    fn renew<'a>(&'a self, hold: &'a Hold, lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let (key, token) = (hold.key_or_err()?, hold.token());
            let mut conn = self.conn().await?;
            let done: i64 = self
                .scripts
                .renew
                .key(self.record_key(key))
                .arg(token.0.to_string())
                .arg(ms(lease))
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn forget<'a>(&'a self, hold: &'a Hold) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let (key, token) = (hold.key_or_err()?, hold.token());
            let mut conn = self.conn().await?;
            let done: i64 =
                self.scripts.forget.key(self.record_key(key)).arg(token.0.to_string()).invoke_async(&mut conn).await?;
            Ok(done == 1)
        })
    }

    fn abandon<'a>(&'a self, key: &'a str, attempt: u64) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            // Sent whole (EVAL), not by its SHA: nobody may be waiting for the answer to reload a script Redis
            // forgot, and the undo must not be refused for a reason the claim did not have.
            let done: i64 = redis::cmd("EVAL")
                .arg(ABANDON)
                .arg(1)
                .arg(self.record_key(key))
                .arg(attempt)
                .query_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Record>> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let reply: Value = self.scripts.get.key(self.record_key(key)).invoke_async(&mut conn).await?;
            match reply {
                Value::Nil => Ok(None),
                Value::BulkString(raw) => {
                    let record = Stored::new(raw, b'd')?;
                    Ok(Some(Record::Done {
                        fingerprint: record.fingerprint(),
                        response: Payload::Bytes(record.into_response()),
                    }))
                }
                Value::Array(mut fields) => match fields.as_mut_slice() {
                    [Value::BulkString(raw), Value::Int(left)] => {
                        let left = lease_ms(*left);
                        let record = Stored::new(std::mem::take(raw), b'i')?;
                        Ok(Some(Record::Held {
                            fingerprint: record.fingerprint(),
                            token: record.token()?,
                            lease_remaining: left,
                        }))
                    }
                    _ => Err(bad_reply(&Value::Array(fields))),
                },
                other => Err(bad_reply(&other)),
            }
        })
    }
}
