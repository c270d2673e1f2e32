//! The Redis velocity store (feature `redis`): every instance counts the same attempts.
//!
//! - **One Lua script, one round trip** per decision (`EVALSHA`, reloaded on `NOSCRIPT`): it records the
//!   attempt under every subject of the charge and reads all 36 velocity attributes, atomically, on **Redis
//!   server time** (`TIME`), so the instances' clocks never matter.
//! - Per subject value three keys: a sorted set of attempts scored by time, a hash of their amounts
//!   (`<currency>:<minor>`), a sorted set of declines. An attempt is named by a hash of its idempotency key, its
//!   subjects' values, its amount and its currency (as the memory store tells attempts apart); `ZADD NX`: one
//!   already present adds nothing, so a retry counts once, and the same key with another amount is another
//!   attempt. Entries older than a day are trimmed on every touch and every key expires a day
//!   after its last write, so memory is bounded by the last day's traffic.
//! - Per attempt with an idempotency key, one more key: its **snapshot**, what its decision read, kept a day. A
//!   retry returns it (for the measures it holds), so it is decided on the velocity its first decision saw.
//! - Subject values are hashed (SHA-256, truncated) into the key: no email, IP or card fingerprint is readable
//!   in Redis.
//! - **Hash tags.** The keys of one script must live in one Redis Cluster slot, and one decision touches keys of
//!   several subjects (its card, its email, its IP) that other decisions share with other cards. No tag per
//!   subject can satisfy both, so every key of a store carries the same tag, `{<namespace>}`: a store is one
//!   slot. To spread load over a cluster, give independent traffic (merchants, regions) namespaces of their own
//!   with [`RedisVelocityStore::namespace`]; velocity is then counted per namespace.
//! - Amount sums are exact up to 2^53 minor units per window (Lua numbers), ninety trillion dollars. Above that
//!   they are rounded, and they **saturate**: the script never returns more than [`SUM_CAP`] (2^63 - 1024, the
//!   largest double below 2^63, which Redis turns into an integer exactly), and the store reads [`SUM_CAP`] or
//!   more as `i64::MAX`, as the memory store saturates. (A Lua number of 2^63 or more would reach the client
//!   as `i64::MIN`: a sum no `amount_per_*` rule matches, for a day.)

use palisade_store::redis::{RedisConnection, redis_key};
use sha2::{Digest, Sha256};

use super::{Attempt, BoxFuture, VelocityStore};
use crate::attributes::{Measure, Subject, Velocity, VelocityCounts, VelocitySet, Window};
use crate::defaults::{DEFAULT_NAMESPACE, DEFAULT_PREFIX, MAX_VELOCITY_WINDOW, VELOCITY_WINDOWS};
use crate::error::VelocityError;

/// The most an amount sum reads from the script: 2^63 - 1024, the largest double below 2^63 (doubles are 1024
/// apart there), so Redis converts it to an integer exactly. A sum at or above it reads as `i64::MAX`.
pub(crate) const SUM_CAP: i64 = i64::MAX - 1023;

// The cap is a double exactly, and the next double up is 2^63, out of `i64`'s range.
const _: () = assert!(SUM_CAP as f64 as i128 == SUM_CAP as i128);
const _: () = assert!((SUM_CAP as f64) < 9_223_372_036_854_775_808.0);

/// KEYS: per present subject, (attempts zset, amounts hash, declines zset), then for an attempt with an id its
/// snapshot key. ARGV: window ms ×3, attempt id, currency, amount minor, then which measures to read (`1`/`0`
/// for attempts, amount, declines: the rest read 0). Returns per subject: attempts ×3, amount ×3, declines ×3
/// (windows 10m, 1h, 24h); an amount sum is at most [`SUM_CAP`] (`cap`: Lua reads the literal as that double).
/// The snapshot (MessagePack: the measures read, `1`/`0` each, then the values) is what a new attempt's decision
/// read; a retry returns it for the measures it holds.
const RECORD: &str = r"
local cap = 9223372036854774784
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])}
local maxw = w[3]
local id, cur, amt = ARGV[4], ARGV[5], ARGV[6]
local reads = ARGV[7] .. ARGV[8] .. ARGV[9]
local r_att, r_amt, r_dec = ARGV[7] == '1', ARGV[8] == '1', ARGV[9] == '1'
local horizon = '(' .. (now - maxw)
local n = #KEYS
local snapkey = nil
if n % 3 == 1 then
  snapkey = KEYS[n]
  n = n - 1
end
local snap = snapkey and redis.call('GET', snapkey)
local out = {}
for i = 1, n, 3 do
  local att, amts, dec = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local old = redis.call('ZRANGEBYSCORE', att, '-inf', horizon)
  for _, o in ipairs(old) do redis.call('HDEL', amts, o) end
  redis.call('ZREMRANGEBYSCORE', att, '-inf', horizon)
  redis.call('ZREMRANGEBYSCORE', dec, '-inf', horizon)
  if redis.call('ZADD', att, 'NX', now, id) == 1 then
    redis.call('HSET', amts, id, cur .. ':' .. amt)
  end
  redis.call('PEXPIRE', att, maxw + 1000)
  redis.call('PEXPIRE', amts, maxw + 1000)
  for j = 1, 3 do out[#out + 1] = r_att and redis.call('ZCOUNT', att, now - w[j], '+inf') or 0 end
  local sums = {0, 0, 0}
  local entries = r_amt and redis.call('ZRANGEBYSCORE', att, now - maxw, '+inf', 'WITHSCORES') or {}
  for k = 1, #entries, 2 do
    local v = redis.call('HGET', amts, entries[k])
    if v then
      local c, a = string.match(v, '^(%u+):(-?%d+)$')
      if c == cur then
        local s = tonumber(entries[k + 1])
        for j = 1, 3 do
          if s >= now - w[j] then sums[j] = math.min(sums[j] + tonumber(a), cap) end
        end
      end
    end
  end
  for j = 1, 3 do out[#out + 1] = sums[j] end
  for j = 1, 3 do out[#out + 1] = r_dec and redis.call('ZCOUNT', dec, now - w[j], '+inf') or 0 end
end
if snap then
  local ok, held, before = pcall(cmsgpack.unpack, snap)
  if ok and type(held) == 'string' and type(before) == 'table' and #before == #out then
    for i = 1, #out do
      local m = math.floor(((i - 1) % 9) / 3) + 1
      if string.sub(held, m, m) == '1' then out[i] = before[i] end
    end
  end
elseif snapkey then
  redis.call('SET', snapkey, cmsgpack.pack(reads, out), 'PX', maxw + 1000)
end
return out
";

/// KEYS: declines zsets. ARGV: max window ms, attempt id.
const DECLINE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxw = tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. (now - maxw))
  redis.call('ZADD', k, 'NX', now, ARGV[2])
  redis.call('PEXPIRE', k, maxw + 1000)
end
return 1
";

/// Velocity history in Redis, shared by every instance that uses the same prefix and namespace.
#[derive(Clone)]
pub struct RedisVelocityStore {
    conn: RedisConnection,
    prefix: String,
    namespace: String,
    record: redis::Script,
    decline: redis::Script,
}

impl std::fmt::Debug for RedisVelocityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisVelocityStore")
            .field("prefix", &self.prefix)
            .field("namespace", &self.namespace)
            .field("conn", &self.conn)
            .finish()
    }
}

/// An amount sum as the script returned it, read saturating: [`SUM_CAP`] or more is `i64::MAX` (the memory
/// store's saturation), and so is a negative sum, which only a sum that wrapped can be (amounts are recorded at 0
/// or more; a snapshot written before sums were capped may hold one).
fn saturated_sum(v: i64) -> i64 {
    if !(0..SUM_CAP).contains(&v) { i64::MAX } else { v }
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

impl RedisVelocityStore {
    /// A store on `conn` (use [`RedisConnection::lazy`] to start while Redis is down), under
    /// [`DEFAULT_PREFIX`] and [`DEFAULT_NAMESPACE`].
    #[must_use]
    pub fn new(conn: RedisConnection) -> Self {
        RedisVelocityStore {
            conn,
            prefix: DEFAULT_PREFIX.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            record: redis::Script::new(RECORD),
            decline: redis::Script::new(DECLINE),
        }
    }
    /// The key prefix ([`DEFAULT_PREFIX`]).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// The namespace: the hash tag of every key, so one namespace is one Cluster slot ([`DEFAULT_NAMESPACE`]).
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    fn subject_key(&self, s: Subject, value: &str, kind: &str) -> String {
        let digest = Sha256::digest(value.as_bytes());
        let h = hex::encode(&digest[..16]);
        redis_key(&self.prefix, &self.namespace, &format!("{kind}:{}:{h}", s.as_str()))
    }

    /// `k:<hash of the attempt's key>` (its id, subjects, amount and currency, [`Attempt::encode_key`]: the same
    /// id with another card or amount is another attempt, as in the memory store), or a fresh `g:<uuid>` for an
    /// attempt without an id.
    fn id(attempt: &Attempt<'_>) -> String {
        match attempt.id {
            Some(k) => {
                let mut key = Vec::new();
                attempt.encode_key(k, &mut key);
                format!("k:{}", hex::encode(&Sha256::digest(&key)[..16]))
            }
            None => format!("g:{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn record(&self, attempt: &Attempt<'_>, read: VelocitySet) -> Result<VelocityCounts, VelocityError> {
        let present: Vec<(Subject, &str)> =
            Subject::ALL.iter().filter_map(|&s| attempt.subjects[s.index()].as_deref().map(|v| (s, v))).collect();
        if present.is_empty() {
            return Ok(VelocityCounts::default());
        }
        let mut inv = self.record.prepare_invoke();
        for (s, v) in &present {
            inv.key(self.subject_key(*s, v, "a")).key(self.subject_key(*s, v, "m")).key(self.subject_key(*s, v, "d"));
        }
        let id = Self::id(attempt);
        if attempt.id.is_some() {
            inv.key(redis_key(&self.prefix, &self.namespace, &format!("s:{id}")));
        }
        for w in VELOCITY_WINDOWS {
            inv.arg(ms(w));
        }
        inv.arg(id).arg(attempt.currency.code()).arg(attempt.counted_amount());
        for m in Measure::ALL {
            inv.arg(if read.reads_measure(m) { "1" } else { "0" });
        }
        let mut conn = self.conn.get().await.map_err(|e| VelocityError(e.to_string()))?;
        let out: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(|e| VelocityError(e.to_string()))?;
        if out.len() != present.len() * 9 {
            return Err(VelocityError(format!(
                "velocity script returned {} values, expected {}",
                out.len(),
                present.len() * 9
            )));
        }
        let mut counts = VelocityCounts::default();
        for (n, (s, _)) in present.iter().enumerate() {
            let chunk = &out[n * 9..n * 9 + 9];
            for (mi, m) in Measure::ALL.into_iter().enumerate() {
                for (wi, w) in Window::ALL.into_iter().enumerate() {
                    let v = chunk[mi * 3 + wi];
                    let v = if m == Measure::Amount { saturated_sum(v) } else { v };
                    counts.set(Velocity::new(m, *s, w), v);
                }
            }
        }
        Ok(counts)
    }

    async fn decline(&self, attempt: &Attempt<'_>) -> Result<(), VelocityError> {
        let mut inv = self.decline.prepare_invoke();
        let mut any = false;
        for s in Subject::ALL {
            if let Some(v) = attempt.subjects[s.index()].as_deref() {
                inv.key(self.subject_key(s, v, "d"));
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        inv.arg(ms(MAX_VELOCITY_WINDOW)).arg(Self::id(attempt));
        let mut conn = self.conn.get().await.map_err(|e| VelocityError(e.to_string()))?;
        let _: i64 = inv.invoke_async(&mut conn).await.map_err(|e| VelocityError(e.to_string()))?;
        Ok(())
    }
}

impl VelocityStore for RedisVelocityStore {
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        Box::pin(self.record(attempt, VelocitySet::ALL))
    }
    fn record_attempt_reading<'a>(
        &'a self,
        attempt: &'a Attempt<'a>,
        read: VelocitySet,
    ) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        Box::pin(self.record(attempt, read))
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>> {
        Box::pin(self.decline(attempt))
    }
}
