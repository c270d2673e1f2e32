//! Shared trip decision through Redis (feature `redis`).
//!
//! Every instance keeps its local breaker as the fast path and, every [`DEFAULT_SYNC_INTERVAL`] (sooner when its
//! own window looks bad), runs one Lua script that
//!
//! 1. stores this instance's window (`calls:failures:slow:time`) in a hash of per-instance counters,
//! 2. sums the counters of all instances that reported recently (Redis server `TIME`, so instance clocks do not
//!    matter), dropping stale ones,
//! 3. opens the shared breaker when the **aggregated** failure or slow-call rate reaches the threshold (with the
//!    minimum number of calls, and optionally a minimum number of reporting instances), clearing the counters,
//! 4. returns the remaining shared open time, which every instance applies locally.
//!
//! One instance whose calls all fail does not open the others: its failures are diluted by everyone's successes.
//! Both keys share the hash tag `{name}`, so the script runs on one Redis Cluster slot: give [`RedisShared`] a
//! cluster connection (`redis+cluster://host:port,...`, see `palisade_store::redis`) to share through a cluster.
//!
//! When Redis cannot be reached the breaker keeps deciding from local state, logs a warning, emits
//! [`Event::SharedUnavailable`](crate::Event::SharedUnavailable) and says so in [`SharedStatus`]: failing open
//! is right here, since a breaker protects the gateway and holds no money.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use palisade_core::PaymentError;
use palisade_store::redis::{RedisConnection, redis_key, redis_unavailable};
use parking_lot::Mutex;
use redis::Script;

use crate::breaker::Breaker;
use crate::config::ConfigError;
use crate::defaults::{DEFAULT_PREFIX, DEFAULT_SYNC_INTERVAL};
use crate::events::{Event, State, emit};

const SYNC_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4] .. ':' .. now)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local calls, fails, slow, n = 0, 0, 0, 0
local stale = tonumber(ARGV[6])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local c, f, s, ts = string.match(all[i + 1], '^(%d+):(%d+):(%d+):(%d+)$')
  if c == nil or now - tonumber(ts) > stale then
    redis.call('HDEL', KEYS[1], all[i])
  else
    calls = calls + tonumber(c)
    fails = fails + tonumber(f)
    slow = slow + tonumber(s)
    n = n + 1
  end
end
local open_until = tonumber(redis.call('HGET', KEYS[2], 'open_until') or '0')
local tripped = 0
if open_until <= now and n >= tonumber(ARGV[11]) and calls > 0 and calls >= tonumber(ARGV[7]) then
  local fbp, sbp = tonumber(ARGV[8]), tonumber(ARGV[9])
  if (fbp > 0 and fails * 10000 >= fbp * calls) or (sbp > 0 and slow * 10000 >= sbp * calls) then
    open_until = now + tonumber(ARGV[10])
    redis.call('HSET', KEYS[2], 'open_until', open_until)
    redis.call('HINCRBY', KEYS[2], 'trips', 1)
    redis.call('DEL', KEYS[1])
    tripped = 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[12])
redis.call('PEXPIRE', KEYS[2], ARGV[12])
local remaining = open_until - now
if remaining < 0 then remaining = 0 end
return {remaining, calls, fails, slow, n, tripped}
";

static SYNC: LazyLock<Script> = LazyLock::new(|| Script::new(SYNC_LUA));

/// What the last sync saw across all instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Aggregate {
    /// Calls in the windows of all reporting instances.
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// Slow calls among them.
    pub slow: u64,
    /// Instances that reported within the staleness limit.
    pub instances: u64,
    /// Remaining shared open time, if the shared breaker is open.
    pub open_for: Option<Duration>,
    /// True when this sync opened the shared breaker.
    pub tripped: bool,
}

/// The breakers one sync task looks after.
pub(crate) trait RecentBreakers: Send + Sync {
    /// Breakers used within `within`.
    fn recent(&self, within: Duration) -> Vec<Arc<Breaker>>;
}

enum Target {
    Single(Weak<Breaker>),
    Keyed(Weak<dyn RecentBreakers>),
}

struct Link {
    conn: RedisConnection,
    instance: String,
    prefix: String,
    stale: Duration,
    min_instances: u32,
    timeout: Duration,
    target: Target,
}

impl Link {
    /// The breakers to sync now; `None` when the layer is gone.
    fn breakers(&self) -> Option<Vec<Arc<Breaker>>> {
        match &self.target {
            Target::Single(w) => w.upgrade().map(|b| vec![b]),
            Target::Keyed(w) => w.upgrade().map(|r| r.recent(self.stale)),
        }
    }
    fn alive(&self) -> bool {
        match &self.target {
            Target::Single(w) => w.strong_count() > 0,
            Target::Keyed(w) => w.strong_count() > 0,
        }
    }
}

#[derive(Default)]
struct StatusCell {
    unavailable: AtomicBool,
    last: Mutex<Option<Aggregate>>,
    link: Mutex<Option<Arc<Link>>>,
}

/// Redis as the shared state of one breaker across the instances of a service. Pass it to
/// [`CircuitBreakerLayerBuilder::shared`](crate::CircuitBreakerLayerBuilder::shared).
///
/// ```no_run
/// use palisade_circuit_breaker::{CircuitBreakerLayer, RedisShared};
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let shared = RedisShared::connect("redis://127.0.0.1:6379").await?.prefix("checkout:cb:");
/// let status = shared.status();
/// let layer = CircuitBreakerLayer::builder().name("stripe").shared(shared).build()?;
/// // ... later: is the breaker deciding with the fleet, or alone?
/// if !status.available() {
///     eprintln!("breaker is local-only: Redis unreachable");
/// }
/// # let _ = layer; Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisShared {
    conn: RedisConnection,
    prefix: String,
    instance: String,
    interval: Duration,
    min_instances: u32,
    status: Arc<StatusCell>,
}

impl std::fmt::Debug for RedisShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisShared")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl RedisShared {
    /// Shared state over a connection (a reconnecting `ConnectionManager`, a cluster connection, or a
    /// [`RedisConnection`], lazy or not, to one server or a Redis Cluster), with a random instance id, prefix
    /// [`DEFAULT_PREFIX`] and sync interval [`DEFAULT_SYNC_INTERVAL`].
    pub fn new(conn: impl Into<RedisConnection>) -> Self {
        RedisShared {
            conn: conn.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            interval: DEFAULT_SYNC_INTERVAL,
            min_instances: 1,
            status: Arc::default(),
        }
    }

    /// Connects to `url` now: one server, or a Redis Cluster with `redis+cluster://host:port,...` (a
    /// reconnecting connection with timeouts, [`RedisConnection::connect`]). For a breaker that starts while
    /// Redis is down, pass [`RedisConnection::open`] to [`RedisShared::new`] instead: it syncs once Redis answers.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when Redis does not answer. A breaker does not need Redis to work:
    /// callers may build a local-only breaker instead.
    pub async fn connect(url: &str) -> Result<Self, PaymentError> {
        Ok(RedisShared::new(RedisConnection::connect(url).await?))
    }
    /// Key prefix (default [`DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// This instance's id among the service's instances (default: a random UUID). Must be unique per instance.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = id.into();
        self
    }
    /// How often to sync (default [`DEFAULT_SYNC_INTERVAL`]). An instance's report counts for three intervals.
    pub fn sync_interval(mut self, d: Duration) -> Self {
        self.interval = d.max(Duration::from_millis(10));
        self
    }
    /// Open the shared breaker only when at least `n` instances reported (a quorum; default 1).
    pub fn min_instances(mut self, n: u32) -> Self {
        self.min_instances = n.max(1);
        self
    }
    /// A status handle: is Redis reachable, what did the last sync see, sync now.
    pub fn status(&self) -> SharedStatus {
        SharedStatus { cell: self.status.clone() }
    }

    pub(crate) fn start_single(self, breaker: &Arc<Breaker>) -> Result<(), ConfigError> {
        let wake = breaker.wake.clone();
        self.start(Target::Single(Arc::downgrade(breaker)), wake)
    }

    pub(crate) fn start_keyed(
        self,
        registry: Arc<dyn RecentBreakers>,
        wake: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<(), ConfigError> {
        self.start(Target::Keyed(Arc::downgrade(&registry)), wake)
    }

    fn start(self, target: Target, wake: Option<Arc<tokio::sync::Notify>>) -> Result<(), ConfigError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let link = Arc::new(Link {
            conn: self.conn,
            instance: self.instance,
            prefix: self.prefix,
            stale: self.interval * 3,
            min_instances: self.min_instances,
            timeout: self.interval.clamp(Duration::from_millis(200), Duration::from_secs(2)),
            target,
        });
        *self.status.link.lock() = Some(link.clone());
        let cell = self.status.clone();
        let interval = self.interval;
        rt.spawn(async move {
            loop {
                match &wake {
                    Some(w) => {
                        let _ = tokio::time::timeout(interval, w.notified()).await;
                    }
                    None => tokio::time::sleep(interval).await,
                }
                if !link.alive() {
                    return; // the layer is gone
                }
                let _ = sync_all(&cell, &link).await;
                // Early syncs are bounded too: at most ten per interval.
                tokio::time::sleep(interval / 10).await;
            }
        });
        Ok(())
    }
}

/// Syncs every breaker of the link; the aggregate is summed over keys for per-key layers.
async fn sync_all(cell: &StatusCell, link: &Link) -> Result<Aggregate, PaymentError> {
    let Some(breakers) = link.breakers() else {
        return Err(PaymentError::store_unavailable("the circuit breaker was dropped"));
    };
    let mut total = Aggregate::default();
    for b in breakers {
        let agg = sync(cell, link, &b).await?;
        total.calls += agg.calls;
        total.failures += agg.failures;
        total.slow += agg.slow;
        total.instances = total.instances.max(agg.instances);
        total.open_for = total.open_for.max(agg.open_for);
        total.tripped |= agg.tripped;
    }
    *cell.last.lock() = Some(total);
    Ok(total)
}

async fn sync(cell: &StatusCell, link: &Link, b: &Breaker) -> Result<Aggregate, PaymentError> {
    let state = b.state();
    let snap = b.snapshot();
    let report = state == State::Closed;
    let open_ms = b.next_open_duration().as_millis().max(1);
    let cfg = &b.cfg;
    let mut inv = SYNC.prepare_invoke();
    inv.key(redis_key(&link.prefix, &b.label, "inst"))
        .key(redis_key(&link.prefix, &b.label, "state"))
        .arg(&link.instance)
        .arg(snap.calls)
        .arg(snap.failures)
        .arg(snap.slow)
        .arg(if report { "1" } else { "0" })
        .arg(link.stale.as_millis().max(1) as u64)
        .arg(cfg.minimum_calls)
        .arg(cfg.failure_rate_bp.unwrap_or(0))
        .arg(cfg.slow_rate_bp.unwrap_or(0))
        .arg(open_ms as u64)
        .arg(link.min_instances)
        .arg((link.stale.as_millis() as u64).max(cfg.open.max.as_millis() as u64) * 2 + 1000);
    let call = async {
        let mut conn = link.conn.get().await?;
        inv.invoke_async::<Vec<i64>>(&mut conn).await.map_err(|e| redis_unavailable(&e))
    };
    let out = match tokio::time::timeout(link.timeout, call).await {
        Ok(Ok(v)) if v.len() == 6 => {
            let n = |i: usize| u64::try_from(v[i]).unwrap_or(0);
            Ok(Aggregate {
                open_for: (v[0] > 0).then(|| Duration::from_millis(n(0))),
                calls: n(1),
                failures: n(2),
                slow: n(3),
                instances: n(4),
                tripped: v[5] == 1,
            })
        }
        Ok(Ok(_)) => Err(PaymentError::store_unavailable("redis: unexpected reply from the breaker sync script")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(PaymentError::store_unavailable("redis: breaker sync timed out")),
    };
    match &out {
        Ok(agg) => {
            if cell.unavailable.swap(false, Ordering::AcqRel) {
                emit(&b.label, &b.keys, cfg.listener.as_ref(), &Event::SharedRecovered);
            }
            if let Some(d) = agg.open_for {
                b.open_shared(d);
            }
        }
        Err(e) => {
            if !cell.unavailable.swap(true, Ordering::AcqRel) {
                emit(&b.label, &b.keys, cfg.listener.as_ref(), &Event::SharedUnavailable { error: e.to_string() });
            }
        }
    }
    out
}

/// The state of a breaker's link to Redis.
#[derive(Clone)]
pub struct SharedStatus {
    cell: Arc<StatusCell>,
}

impl std::fmt::Debug for SharedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStatus").field("available", &self.available()).field("last", &self.last()).finish()
    }
}

impl SharedStatus {
    /// False after a sync failed (the breaker is deciding from local state alone), true again after one works.
    #[must_use]
    pub fn available(&self) -> bool {
        !self.cell.unavailable.load(Ordering::Acquire)
    }
    /// What the last successful sync saw (for a per-key layer: summed over the keys used recently).
    #[must_use]
    pub fn last(&self) -> Option<Aggregate> {
        *self.cell.last.lock()
    }
    /// Syncs now instead of waiting for the interval (tests, shutdown, an operator). A per-key layer syncs every
    /// key used within the last three intervals and returns the aggregates summed over them.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when Redis cannot be reached (the breaker then keeps deciding locally)
    /// or the breaker was not built yet.
    pub async fn sync_now(&self) -> Result<Aggregate, PaymentError> {
        let link = self.cell.link.lock().clone();
        match link {
            Some(link) => sync_all(&self.cell, &link).await,
            None => Err(PaymentError::store_unavailable("build the breaker with .shared(..) before syncing")),
        }
    }
}
