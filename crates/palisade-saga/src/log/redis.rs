//! `RedisLog`: each saga in a hash and a list under one hash tag, one Lua script per operation, Redis server time
//! for leases.
//!
//! # Layout
//!
//! Saga `id` lives in two keys that share the hash tag `{id}` (escaped by `palisade_store::redis::redis_key`),
//! so every script touches one Redis Cluster slot:
//!
//! - `<prefix>{id}:saga`, a hash: `name`, `context` (JSON), `state` ([`SagaState::as_str`]), `owner` (absent
//!   when none), `token` (decimal) and `until` (the end of the owner's lease, server time in ms; `0` once
//!   terminal).
//! - `<prefix>{id}:events`, a list of the saga's events as JSON, oldest first.
//!
//! Fencing tokens are `max(previous + 1, server time in µs)`, as in the lease store: strictly increasing per
//! saga, and greater than any token handed out before on this server (as long as its clock does not jump back).
//! They stay below 2^53, exact in Lua's numbers.
//!
//! # One round trip per operation
//!
//! `create`, `append`, `renew`, `take_over` and `get` are each one script call (EVALSHA, reloaded on NOSCRIPT).
//! `append`, the operation behind every transition, is exactly one command. `create` and a `take_over` of a
//! given state (a hand retry, which makes a terminal saga live again) send, in the same pipeline (one round
//! trip), a second small script on the index keys first.
//!
//! # The index
//!
//! `orphans` and `list` must find sagas without knowing their ids, and keys of different sagas live in different
//! Cluster slots, so a script on one saga cannot update a shared index atomically. The index is two sorted sets
//! of their own, both under the hash tag `{index}` (one slot): `<prefix>{index}:all` (every saga id, score 0,
//! so ids come out in byte order, as from the memory log) and `<prefix>{index}:live` (a **superset** of the
//! sagas that are not terminal, scored by the server time, in ms, at which each id was added).
//!
//! - An id is added to both **before** the script that makes its saga live (create, take-over of a given
//!   state), in the same pipeline: a connection lost between the two commands leaves an extra entry, never a
//!   live saga missing from the index.
//! - Nothing removes an entry in the write path (a fenced terminal append must not drop a saga another owner
//!   now runs). `orphans` reads each listed saga's hash and answers only from it (so the index may hold more
//!   than it should, never less), and drops the entries of terminal sagas whose entry is older than
//!   [`INDEX_GRACE`], only if their score did not change since it read them: an entry re-added by a hand retry
//!   meanwhile stays. The grace covers the instant between the index write and the script in the same
//!   pipeline, during which a re-activated saga still reads terminal.
//! - Consequences: `orphans` (and `orphans_after`, a page of them by id) costs one round trip per [`SCAN_CHUNK`]
//!   entries of `live` (running sagas and terminal ones younger than the grace): it reads all of them, since the
//!   index is not in id order; plus one to drop; `list` one per chunk of `all` it reads (it reads until `limit`
//!   sagas matched). Both read each saga's hash, not the index, for its state: neither answers
//!   from a stale index. Neither is a consistent snapshot across sagas (nor is `list` on any backend).

use std::sync::Arc;
use std::time::Duration;

use redis::{Script, Value};

use super::{ContextJson, SagaLog, StoreError, StoreFuture};
use crate::model::{Event, Name, SagaRecord, SagaState, SagaSummary};
use palisade_store::redis::{RedisConn, RedisConnection, redis_key};

/// Default key prefix: `palisade:saga:`.
pub const DEFAULT_REDIS_PREFIX: &str = "palisade:saga:";

/// How long an entry of the `live` index stays after its saga went terminal (60 s): see the module docs.
pub const INDEX_GRACE: Duration = Duration::from_secs(60);

/// Index entries (or sagas) read per round trip by `orphans` and `list`: 200.
pub const SCAN_CHUNK: usize = 200;

// Terminal states, for the scripts: `{terminal}` is replaced by a Lua condition on `st`.
fn terminal_lua() -> String {
    [SagaState::Completed, SagaState::Compensated, SagaState::FailedCompensation]
        .iter()
        .map(|s| format!("st == '{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(" or ")
}

// KEYS[1] hash; ARGV: name, context, owner, lease ms, initial state. The token (bulk), or nil when the saga exists.
const CREATE: &str = "
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tok = string.format('%.0f', now_us)
local untl = string.format('%.0f', math.floor(now_us / 1000) + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'context', ARGV[2], 'state', ARGV[5], 'owner', ARGV[3], 'token', tok, 'until', untl)
return tok
";

// KEYS[1] hash, KEYS[2] events; ARGV: token, event JSON, state, terminal (1/0). 1 when appended, 0 when fenced.
const APPEND: &str = "
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'state', ARGV[3], 'until', '0')
  redis.call('HDEL', KEYS[1], 'owner')
else
  redis.call('HSET', KEYS[1], 'state', ARGV[3])
end
return 1
";

// KEYS[1] hash; ARGV: token, lease ms. 1 when the lease now ends lease ms from now.
const RENEW: &str = "
local v = redis.call('HMGET', KEYS[1], 'token', 'state')
local st = v[2]
if v[1] ~= ARGV[1] or ({terminal}) then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'until', string.format('%.0f', now_ms + tonumber(ARGV[2])))
return 1
";

// KEYS[1] hash; ARGV: owner, lease ms, wanted state ('' for: any live saga whose lease ended). The new token
// (bulk), or nil.
const TAKE_OVER: &str = "
local v = redis.call('HMGET', KEYS[1], 'state', 'token', 'until')
local st = v[1]
if not st then return false end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
if ARGV[3] ~= '' then
  if st ~= ARGV[3] then return false end
elseif ({terminal}) or tonumber(v[3]) > now_ms then
  return false
end
local tok = string.format('%.0f', math.max(tonumber(v[2]) + 1, now_us))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', tok, 'until', string.format('%.0f', now_ms + tonumber(ARGV[2])))
return tok
";

// KEYS[1] hash, KEYS[2] events. nil, or {name, context, state, owner or nil, token, lease ms left, {events}}.
const GET: &str = "
local v = redis.call('HMGET', KEYS[1], 'name', 'context', 'state', 'owner', 'token', 'until')
if not v[3] then return false end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = math.max(tonumber(v[6]) - now_ms, 0)
return {v[1], v[2], v[3], v[4], v[5], string.format('%.0f', left), redis.call('LRANGE', KEYS[2], 0, -1)}
";

// KEYS[1] live index, KEYS[2] all index; ARGV: id. Adds the id to both (live scored by server time, ms).
const INDEX_ADD: &str = "
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 0
";

// KEYS[1] live index; ARGV: pairs of id and the score read with it. Removes each id still at that score.
const INDEX_DROP: &str = "
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
";

#[derive(Debug)]
struct Scripts {
    create: Script,
    append: Script,
    renew: Script,
    take_over: Script,
    get: Script,
    index_add: Script,
    index_drop: Script,
}

impl Scripts {
    fn new() -> Self {
        let terminal = terminal_lua();
        Scripts {
            create: Script::new(CREATE),
            append: Script::new(APPEND),
            renew: Script::new(&RENEW.replace("{terminal}", &terminal)),
            take_over: Script::new(&TAKE_OVER.replace("{terminal}", &terminal)),
            get: Script::new(GET),
            index_add: Script::new(INDEX_ADD),
            index_drop: Script::new(INDEX_DROP),
        }
    }
}

/// A Redis-backed [`SagaLog`], shared by every instance of a service: sagas survive a crashed process (as far
/// as the Redis server keeps its data: use AOF persistence where sagas must survive a Redis restart).
///
/// - Each saga in a hash and a list under one hash tag (Redis Cluster safe); one Lua script per operation (one
///   round trip; an append is exactly one command), sent with EVALSHA and reloaded on NOSCRIPT.
/// - Leases in Redis server time (`TIME`), so instances with skewed clocks agree; fencing tokens
///   `max(previous + 1, server µs)`.
/// - `orphans` and `list` read an index kept beside the sagas (see the module docs for what it costs and why it
///   may hold more than it should but never less).
/// - A reconnecting [`RedisConnection`] (one server or a Redis Cluster): while Redis cannot be reached, every
///   operation returns a [`StoreError`] and the saga stays where its log says, for recovery.
///
/// Needs Redis 5 or later (scripts replicated by effects, so writes after `TIME` are legal). Cheap to clone.
#[derive(Clone)]
pub struct RedisLog {
    conn: RedisConnection,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog").field("prefix", &self.prefix).field("conn", &self.conn).finish()
    }
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn bad_reply(what: &str) -> StoreError {
    StoreError::new(format!("redis: unexpected reply from the saga log ({what})"))
}

fn text(v: &Value) -> Result<Option<String>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b.clone()).map(Some).map_err(|_| bad_reply("a field is not UTF-8")),
        Value::SimpleString(s) => Ok(Some(s.clone())),
        Value::Int(n) => Ok(Some(n.to_string())),
        _ => Err(bad_reply("a field of an unexpected type")),
    }
}

fn required(v: &Value, what: &str) -> Result<String, StoreError> {
    text(v)?.ok_or_else(|| bad_reply(what))
}

fn number(v: &Value, what: &str) -> Result<u64, StoreError> {
    required(v, what)?.parse().map_err(|_| bad_reply(what))
}

/// Saga `id`'s state, `s`.
fn state(id: &str, s: &str) -> Result<SagaState, StoreError> {
    SagaState::parse(s).ok_or_else(|| super::unreadable("redis", id, format_args!("unknown state {s:?}")))
}

fn token_reply(v: Value) -> Result<Option<u64>, StoreError> {
    match v {
        Value::Nil => Ok(None),
        other => number(&other, "token").map(Some),
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}

impl RedisLog {
    /// A log over an existing connection (a `ConnectionManager`, a cluster connection or a [`RedisConnection`]),
    /// with [`DEFAULT_REDIS_PREFIX`].
    #[must_use]
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        RedisLog { conn: conn.into(), prefix: DEFAULT_REDIS_PREFIX.into(), scripts: Arc::new(Scripts::new()) }
    }

    /// Connects to `url` now: one server, or a Redis Cluster with `redis+cluster://host:port,...`
    /// ([`RedisConnection::connect`]).
    ///
    /// # Errors
    /// [`StoreError`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect(url).await.map_err(store_err)?;
        Ok(RedisLog::new(conn))
    }

    /// A log that connects on first use, so a service can start while Redis is down. While Redis is
    /// unreachable it tries again at most once a second and fails fast in between ([`RedisConnection`]).
    ///
    /// # Errors
    /// [`StoreError`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(RedisLog {
            conn: RedisConnection::open(url).map_err(store_err)?,
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

    /// The key of saga `id`'s hash.
    #[must_use]
    pub fn saga_key(&self, id: &str) -> String {
        redis_key(&self.prefix, id, "saga")
    }

    /// The key of saga `id`'s list of events.
    #[must_use]
    pub fn events_key(&self, id: &str) -> String {
        redis_key(&self.prefix, id, "events")
    }

    fn live_key(&self) -> String {
        redis_key(&self.prefix, "index", "live")
    }

    fn all_key(&self) -> String {
        redis_key(&self.prefix, "index", "all")
    }

    async fn conn(&self) -> Result<RedisConn, StoreError> {
        self.conn.get().await.map_err(store_err)
    }

    /// EVALSHA of `script` on `keys` with `args`, as a command to pipeline.
    fn evalsha(script: &Script, keys: &[String], args: &[&[u8]]) -> redis::Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(script.get_hash()).arg(keys.len()).arg(keys);
        for a in args {
            c.arg(*a);
        }
        c
    }

    /// Adds saga `id` to the index, then runs `script` on it: one pipeline, one round trip. Answers the script's
    /// reply. On NOSCRIPT both scripts are loaded and the pipeline sent again (the index write is idempotent).
    async fn indexed(
        &self,
        conn: &mut RedisConn,
        id: &str,
        script: &Script,
        keys: &[String],
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        let mut pipe = redis::pipe();
        pipe.add_command(Self::evalsha(&self.scripts.index_add, &[self.live_key(), self.all_key()], &[id.as_bytes()]))
            .ignore()
            .add_command(Self::evalsha(script, keys, args));
        let reply: Result<(Value,), _> = pipe.query_async(conn).await;
        match reply {
            Ok((v,)) => Ok(v),
            Err(e) if is_noscript(&e) => {
                self.scripts.index_add.prepare_invoke().load_async(conn).await?;
                script.prepare_invoke().load_async(conn).await?;
                let (v,): (Value,) = pipe.query_async(conn).await?;
                Ok(v)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Server time in ms.
    fn now_ms(time: &(String, String)) -> Result<u64, StoreError> {
        let secs: u64 = time.0.parse().map_err(|_| bad_reply("TIME"))?;
        let micros: u64 = time.1.parse().map_err(|_| bad_reply("TIME"))?;
        Ok(secs * 1000 + micros / 1000)
    }
}

impl SagaLog for RedisLog {
    fn create_shared<'a>(
        &'a self,
        id: &'a Name,
        name: &'a str,
        context: Arc<dyn ContextJson>,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<u64>> {
        let json = match context.to_json() {
            Ok(json) => json,
            Err(e) => return StoreFuture::ready(Err(store_err(e))),
        };
        StoreFuture::new(async move {
            let lease = ms(lease).to_string();
            let mut conn = self.conn().await?;
            let reply = self
                .indexed(
                    &mut conn,
                    id,
                    &self.scripts.create,
                    &[self.saga_key(id)],
                    &[
                        name.as_bytes(),
                        json.as_bytes(),
                        owner.as_bytes(),
                        lease.as_bytes(),
                        SagaState::Running.as_str().as_bytes(),
                    ],
                )
                .await?;
            token_reply(reply)
        })
    }

    fn append_owned<'a>(&'a self, id: &'a str, token: u64, event: Event, state: SagaState) -> StoreFuture<'a, bool> {
        let json = match serde_json::to_vec(&event) {
            Ok(json) => json,
            Err(e) => return StoreFuture::ready(Err(store_err(e))),
        };
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let done: i64 = self
                .scripts
                .append
                .key(self.saga_key(id))
                .key(self.events_key(id))
                .arg(token.to_string())
                .arg(json)
                .arg(state.as_str())
                .arg(if state.is_terminal() { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn renew<'a>(&'a self, id: &'a str, token: u64, lease: Duration) -> StoreFuture<'a, bool> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let done: i64 = self
                .scripts
                .renew
                .key(self.saga_key(id))
                .arg(token.to_string())
                .arg(ms(lease))
                .invoke_async(&mut conn)
                .await?;
            Ok(done == 1)
        })
    }

    fn take_over<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        lease: Duration,
        state: Option<SagaState>,
    ) -> StoreFuture<'a, Option<u64>> {
        StoreFuture::new(async move {
            let lease = ms(lease).to_string();
            let mut conn = self.conn().await?;
            let reply = match state {
                // A live saga whose lease ended is in the index already.
                None => {
                    self.scripts
                        .take_over
                        .key(self.saga_key(id))
                        .arg(owner)
                        .arg(&lease)
                        .arg("")
                        .invoke_async(&mut conn)
                        .await?
                }
                // A terminal saga may become live again: index it first, in the same round trip.
                Some(want) => {
                    self.indexed(
                        &mut conn,
                        id,
                        &self.scripts.take_over,
                        &[self.saga_key(id)],
                        &[owner.as_bytes(), lease.as_bytes(), want.as_str().as_bytes()],
                    )
                    .await?
                }
            };
            token_reply(reply)
        })
    }

    fn orphans<'a>(&'a self, limit: usize) -> StoreFuture<'a, Vec<String>> {
        self.orphans_after(None, limit)
    }

    fn orphans_after<'a>(&'a self, after: Option<&'a str>, limit: usize) -> StoreFuture<'a, Vec<String>> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let live = self.live_key();
            let grace = u64::try_from(INDEX_GRACE.as_millis()).unwrap_or(u64::MAX);
            let (mut found, mut drop) = (Vec::new(), Vec::<(String, String)>::new());
            let mut start = 0usize;
            // The index is in the order ids were added, not by id: every entry is read for the page by id (as a
            // pass found fewer orphans than its limit always did).
            loop {
                let (time, entries): ((String, String), Vec<(String, String)>) = redis::pipe()
                    .cmd("TIME")
                    .cmd("ZRANGE")
                    .arg(&live)
                    .arg(start)
                    .arg(start + SCAN_CHUNK - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await?;
                if entries.is_empty() {
                    break;
                }
                start += entries.len();
                let short = entries.len() < SCAN_CHUNK;
                let now = Self::now_ms(&time)?;
                let mut pipe = redis::pipe();
                for (id, _) in &entries {
                    pipe.cmd("HMGET").arg(self.saga_key(id)).arg("state").arg("until");
                }
                let sagas: Vec<(Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
                for ((id, score), (st, until)) in entries.into_iter().zip(sagas) {
                    let known = st.as_deref().map(SagaState::parse);
                    let live = matches!(known, Some(Some(s)) if !s.is_terminal());
                    // A state this version does not know (a newer version's): neither an orphan here nor dropped
                    // from the index, which the newer version's recovery reads.
                    let unknown = matches!(known, Some(None));
                    if live {
                        let until: u64 = until.as_deref().and_then(|u| u.parse().ok()).unwrap_or(0);
                        if until <= now && after.is_none_or(|after| id.as_str() > after) {
                            found.push(id);
                        }
                    } else if !unknown && score.parse::<f64>().is_ok_and(|s| s + (grace as f64) < now as f64) {
                        // Terminal (or never created: its create's script did not run) for longer than the grace.
                        drop.push((id, score));
                    }
                }
                if short {
                    break;
                }
            }
            if !drop.is_empty() {
                let mut inv = self.scripts.index_drop.key(&live);
                for (id, score) in &drop {
                    inv.arg(id).arg(score);
                }
                // Best effort: the entries are dropped on a later pass if this fails.
                if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                    tracing::debug!(error = %e, "could not drop finished sagas from the saga index");
                }
            }
            Ok(super::page_after(found, None, limit))
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SagaRecord>> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let reply: Value =
                self.scripts.get.key(self.saga_key(id)).key(self.events_key(id)).invoke_async(&mut conn).await?;
            let fields = match reply {
                Value::Nil => return Ok(None),
                Value::Array(f) => f,
                _ => return Err(bad_reply("get")),
            };
            let [name, context, st, owner, token, left, events] = fields.as_slice() else {
                return Err(bad_reply("get"));
            };
            let unreadable = |what: &str, e: serde_json::Error| super::unreadable("redis", id, format!("{what}: {e}"));
            let context = serde_json::from_str(&required(context, "context")?).map_err(|e| unreadable("context", e))?;
            let events = match events {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        serde_json::from_str(&required(e, "event")?)
                            .map_err(|e| unreadable(&format!("event {}", i + 1), e))
                    })
                    .collect::<Result<Vec<Event>, _>>()?,
                _ => return Err(bad_reply("events")),
            };
            Ok(Some(SagaRecord {
                id: id.to_owned(),
                name: required(name, "name")?,
                context,
                state: state(id, &required(st, "state")?)?,
                events,
                owner: text(owner)?,
                token: number(token, "token")?,
                lease_remaining: Duration::from_millis(number(left, "lease")?),
            }))
        })
    }

    fn list<'a>(&'a self, state: Option<SagaState>, limit: usize) -> StoreFuture<'a, Vec<SagaSummary>> {
        StoreFuture::new(async move {
            let mut conn = self.conn().await?;
            let all = self.all_key();
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            while out.len() < limit {
                let from = after.as_ref().map_or_else(|| "-".to_owned(), |a| format!("({a}"));
                let ids: Vec<String> = redis::cmd("ZRANGEBYLEX")
                    .arg(&all)
                    .arg(from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SCAN_CHUNK)
                    .query_async(&mut conn)
                    .await?;
                let Some(last) = ids.last() else { break };
                after = Some(last.clone());
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.cmd("HMGET").arg(self.saga_key(id)).arg("name").arg("state").arg("owner");
                }
                let rows: Vec<(Option<String>, Option<String>, Option<String>)> = pipe.query_async(&mut conn).await?;
                for (id, (name, st, owner)) in ids.iter().zip(rows) {
                    let (Some(name), Some(st)) = (name, st) else { continue };
                    let st = self::state(id, &st)?;
                    if state.is_none_or(|want| want == st) && out.len() < limit {
                        out.push(SagaSummary { id: id.clone(), name, state: st, owner });
                    }
                }
                if ids.len() < SCAN_CHUNK {
                    break;
                }
            }
            Ok(out)
        })
    }
}
