//! Redis plumbing every Redis-backed store shares: one connection type for a single server or a Redis Cluster
//! (reconnecting, optionally lazy, failing fast while Redis is down), key building with hash tags, and the
//! mapping of Redis errors to the typed store error.
//!
//! # A single server or a Redis Cluster
//!
//! [`RedisConnection`] talks to one server through a `ConnectionManager`, or to a Redis Cluster through the
//! `redis` crate's async cluster client (`redis::cluster_async::ClusterConnection`), chosen by the URL:
//!
//! | URL | connects to |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]` | one server (the `redis` crate's own URL form) |
//! | `redis+cluster://[user:password@]host:port[,host:port...]` | a Redis Cluster, through the seed nodes listed |
//!
//! The `redis` crate has no URL for a cluster (a `ClusterClient` takes a list of node URLs), so the
//! `redis+cluster://` form is Palisade's own: each comma-separated `host:port` becomes a seed
//! `redis://[user:password@]host:port`, with the same credentials and query for every seed. A few seeds are
//! enough; the client learns the rest of the cluster from them. [`RedisConnection::cluster`] takes the seed URLs
//! as a list instead. `rediss+cluster://` gives `rediss://` seeds (TLS needs one of the `redis` crate's TLS
//! features, which Palisade does not turn on).
//!
//! Either way [`RedisConnection::get`] hands out a [`RedisConn`], which implements
//! `redis::aio::ConnectionLike`, so every store sends the same commands and scripts to both. Scripts run with
//! `Script::invoke_async` on both: EVALSHA is routed by its first key (every key of one script shares a hash
//! tag, see [`redis_key`]), and on NOSCRIPT the cluster client sends `SCRIPT LOAD` to every node, so a node
//! that never saw the script, or a replica promoted after a failover, learns it on first use.
//!
//! A pipeline whose commands live in several slots (the saga log's index write before its script, its reads of
//! many sagas) is refused by the cluster client before anything is sent; [`RedisConn`] then sends its commands
//! one after another, in order, as a single server would run them (not atomically either way; one round trip
//! per command instead of one for all).

use std::sync::Arc;
use std::time::Duration;

use palisade_core::PaymentError;
use palisade_core::store::unavailable;
use redis::aio::ConnectionManager;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// Builds a Redis key `{prefix}{{tag}}:{suffix}`. Every key one atomic operation touches must share the
/// hash tag, so the operation runs on one Redis Cluster slot.
///
/// `%`, `{` and `}` in `tag` are percent-escaped (`%25`, `%7B`, `%7D`): a user value cannot end the hash tag
/// early, and no two tags give the same key (an escape, unlike a replacement, can be read back), so the
/// keys `a{b` and `a(b` are two records, and so are two tenants whose scopes differ only there.
///
/// ```
/// use palisade_store::redis::redis_key;
/// assert_eq!(redis_key("pal:idem:", "tenant-1/key-9", "rec"), "pal:idem:{tenant-1/key-9}:rec");
/// assert_eq!(redis_key("p:", "a{b}%", ""), "p:{a%7Bb%7D%25}");
/// assert_ne!(redis_key("p:", "a{b", ""), redis_key("p:", "a(b", ""));
/// ```
#[must_use]
pub fn redis_key(prefix: &str, tag: &str, suffix: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + tag.len() + suffix.len() + 3);
    k.push_str(prefix);
    k.push('{');
    for c in tag.chars() {
        match c {
            '%' => k.push_str("%25"),
            '{' => k.push_str("%7B"),
            '}' => k.push_str("%7D"),
            c => k.push(c),
        }
    }
    k.push('}');
    if !suffix.is_empty() {
        k.push(':');
        k.push_str(suffix);
    }
    k
}

/// Maps a Redis error into [`PaymentError::StoreUnavailable`], keeping what Redis said.
#[must_use]
pub fn redis_unavailable(err: &redis::RedisError) -> PaymentError {
    unavailable("redis", err)
}

/// How long a [`RedisConnection`] that failed to connect answers `StoreUnavailable` at once before it tries
/// to connect again. One second keeps a request storm during an outage from becoming a connection storm,
/// while a recovered Redis is used again within a second.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// How long opening a connection to one server (or to one cluster node) may take: 2 s. Loopback and LAN
/// connections open in milliseconds; a server that does not answer within two seconds is down for a caller.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one command may wait for its answer, including, on a cluster, every redirect and retry: 2 s. A
/// dead server or master gives a typed [`PaymentError::StoreUnavailable`] within this time instead of holding
/// the request; it is also the longest a request waits while a cluster fails over before it gets that error.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times the cluster client resends a command (after a `MOVED`/`ASK` redirect, `TRYAGAIN`,
/// `CLUSTERDOWN`, a `READONLY` from a demoted master, or a dropped connection), all within
/// [`RESPONSE_TIMEOUT`]: 5, enough to follow a failover's redirects and a reconnect or two, with waits of 10 to
/// 200 ms between them.
pub const CLUSTER_RETRIES: u32 = 5;

/// The URL scheme of a Redis Cluster: `redis+cluster://host:port[,host:port...]` (see the module docs).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A connection [`RedisConnection::get`] hands out: to one server or to a Redis Cluster. Cheap to clone (both
/// are handles to a shared, multiplexed connection); implements `redis::aio::ConnectionLike`, so commands,
/// pipelines and scripts run on it as on either.
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConn {
    /// One server, through a reconnecting `ConnectionManager`.
    Single(ConnectionManager),
    /// A Redis Cluster, through the `redis` crate's async cluster client (it follows redirects and failovers).
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(c: ConnectionManager) -> Self {
        RedisConn::Single(c)
    }
}

impl From<ClusterConnection> for RedisConn {
    fn from(c: ClusterConnection) -> Self {
        RedisConn::Cluster(c)
    }
}

/// True for the cluster client's refusal of a pipeline that spans slots. That refusal comes before anything is
/// sent (a server's own CROSSSLOT answer to one command of a pipeline comes back inside the replies instead).
fn refused_cross_slot(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot)
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => Box::pin(async move {
                match c.req_packed_commands(pipeline, offset, count).await {
                    // Nothing was sent: run the commands one by one, in order (a transaction cannot span slots).
                    Err(e) if refused_cross_slot(&e) && !pipeline.is_transaction() => {
                        let mut replies = Vec::with_capacity(count);
                        for cmd in pipeline.cmd_iter().skip(offset).take(count) {
                            replies.push(c.req_packed_command(cmd).await?);
                        }
                        Ok(replies)
                    }
                    other => other,
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where a [`RedisConnection`] connects to, checked (parsed) but not connected yet.
#[derive(Clone)]
enum Target {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
    /// A URL that did not parse ([`RedisConnection::lazy`]): every use answers this error.
    Invalid(String),
}

impl Target {
    fn parse(url: &str) -> Result<Target, PaymentError> {
        match cluster_seeds(url) {
            Some(seeds) => Target::seeds(&seeds?),
            None => Ok(Target::Single(redis::Client::open(url).map_err(|e| redis_unavailable(&e))?)),
        }
    }

    fn seeds<S: AsRef<str>>(seeds: &[S]) -> Result<Target, PaymentError> {
        if seeds.is_empty() {
            return Err(PaymentError::store_unavailable("redis: a cluster needs at least one seed node"));
        }
        ClusterClient::builder(seeds.iter().map(AsRef::as_ref))
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map(|c| Target::Cluster(Box::new(c)))
            .map_err(|e| redis_unavailable(&e))
    }

    async fn connect(&self) -> Result<RedisConn, PaymentError> {
        match self {
            Target::Single(client) => Ok(RedisConn::Single(connect_client(client.clone()).await?)),
            Target::Cluster(client) => {
                let connecting = client.get_async_connection();
                // Each node's connection attempt is bounded by CONNECTION_TIMEOUT; this bounds the whole
                // start-up (seeds, CLUSTER SLOTS, the masters) the same way a command is bounded.
                match tokio::time::timeout(CONNECTION_TIMEOUT + RESPONSE_TIMEOUT, connecting).await {
                    Ok(Ok(c)) => Ok(RedisConn::Cluster(c)),
                    Ok(Err(e)) => Err(redis_unavailable(&e)),
                    Err(_) => Err(PaymentError::store_unavailable("redis: the cluster did not answer in time")),
                }
            }
            Target::Invalid(e) => Err(PaymentError::store_unavailable(e.clone())),
        }
    }
}

/// The seed node URLs of a `redis+cluster://` (or `rediss+cluster://`) URL, one `redis://` URL per node; `None`
/// for any other URL.
///
/// ```
/// use palisade_store::redis::cluster_seeds;
/// let seeds = cluster_seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap().unwrap();
/// assert_eq!(seeds, ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
/// assert!(cluster_seeds("redis://127.0.0.1:6379").is_none());
/// ```
///
/// # Errors
/// (Inside the `Some`) [`PaymentError::StoreUnavailable`] when the URL names no node.
pub fn cluster_seeds(url: &str) -> Option<Result<Vec<String>, PaymentError>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        ("redis://", rest)
    } else {
        ("rediss://", url.strip_prefix("rediss+cluster://")?)
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let seeds: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}{userinfo}{h}{tail}")).collect();
    if seeds.is_empty() {
        return Some(Err(PaymentError::store_unavailable(format!(
            "redis: no seed node in the cluster URL (expected {CLUSTER_SCHEME}host:port[,host:port...])"
        ))));
    }
    Some(Ok(seeds))
}

/// The Redis connection every Palisade store holds, to one server or to a Redis Cluster (see the module docs
/// for the URL forms): cheap to clone, reconnecting once established (`ConnectionManager`, or the cluster
/// client, which also follows redirects and failovers), and optionally **lazy** — opened on first use, so a
/// service can start while Redis is down and answer "store unavailable" (fail closed) until it is back. While
/// Redis is unreachable, a lazy connection tries again at most once per [`RECONNECT_INTERVAL`] and fails fast in
/// between. Commands time out after [`RESPONSE_TIMEOUT`] with [`PaymentError::StoreUnavailable`].
///
/// ```no_run
/// use palisade_store::redis::RedisConnection;
/// # fn f() -> Result<(), palisade_core::PaymentError> {
/// let single = RedisConnection::open("redis://127.0.0.1:6379")?;
/// let cluster = RedisConnection::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002")?;
/// let same = RedisConnection::cluster(&["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"])?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<LazyInner>,
}

struct LazyInner {
    target: Option<Target>,
    cell: tokio::sync::OnceCell<RedisConn>,
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.inner.cell.initialized() { "connected" } else { "not connected yet" };
        let kind = if self.is_cluster() { "cluster" } else { "single" };
        f.debug_struct("RedisConnection").field("kind", &kind).field("state", &state).finish()
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(c: ConnectionManager) -> Self {
        RedisConnection::new(c)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(c: ClusterConnection) -> Self {
        RedisConnection::new(c)
    }
}

impl From<RedisConn> for RedisConnection {
    fn from(c: RedisConn) -> Self {
        RedisConnection::new(c)
    }
}

impl RedisConnection {
    /// Wraps an established connection: a `ConnectionManager`, a `ClusterConnection` or a [`RedisConn`].
    #[must_use]
    pub fn new(conn: impl Into<RedisConn>) -> Self {
        RedisConnection::with_target(None, tokio::sync::OnceCell::new_with(Some(conn.into())))
    }

    fn with_target(target: Option<Target>, cell: tokio::sync::OnceCell<RedisConn>) -> Self {
        RedisConnection { inner: Arc::new(LazyInner { target, cell, failed_at: std::sync::Mutex::new(None) }) }
    }

    /// Connects now, to one server or (`redis+cluster://`) a cluster.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, PaymentError> {
        let conn = RedisConnection::open(url)?;
        conn.get().await?;
        Ok(conn)
    }

    /// A connection opened on first use, to one server or (`redis+cluster://`) a cluster. Only the URL is
    /// checked now.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, PaymentError> {
        Ok(RedisConnection::with_target(Some(Target::parse(url)?), tokio::sync::OnceCell::new()))
    }

    /// A connection to the Redis Cluster that `seeds` (node URLs, `redis://host:port`) belong to, opened on
    /// first use. Only the URLs are checked now.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when there is no seed or one cannot be parsed.
    pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> Result<Self, PaymentError> {
        Ok(RedisConnection::with_target(Some(Target::seeds(seeds)?), tokio::sync::OnceCell::new()))
    }

    /// A connection opened on first use, without refusing a bad URL now: a bad URL surfaces as
    /// [`PaymentError::StoreUnavailable`] on every use (prefer [`RedisConnection::open`]).
    #[must_use]
    pub fn lazy(url: &str) -> Self {
        let target = Target::parse(url).unwrap_or_else(|e| Target::Invalid(e.to_string()));
        RedisConnection::with_target(Some(target), tokio::sync::OnceCell::new())
    }

    /// The connection, opening it if needed.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when Redis cannot be reached (at once, without trying, within
    /// [`RECONNECT_INTERVAL`] of the last failed attempt).
    pub async fn get(&self) -> Result<RedisConn, PaymentError> {
        if let Some(c) = self.inner.cell.get() {
            return Ok(c.clone());
        }
        let Some(target) = self.inner.target.as_ref() else {
            return Err(PaymentError::store_unavailable("redis: no connection configured"));
        };
        let recently_failed =
            self.inner.failed_at.lock().map(|g| g.is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL)).unwrap_or(false);
        if recently_failed {
            return Err(PaymentError::store_unavailable(
                "redis: unreachable at the last connection attempt; retrying within a second",
            ));
        }
        match self.inner.cell.get_or_try_init(|| target.connect()).await {
            Ok(c) => Ok(c.clone()),
            Err(e) => {
                if let Ok(mut g) = self.inner.failed_at.lock() {
                    *g = Some(tokio::time::Instant::now());
                }
                Err(e)
            }
        }
    }

    /// True once a connection has been established.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.cell.initialized()
    }

    /// True for a Redis Cluster connection (established or configured).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        match self.inner.cell.get() {
            Some(c) => matches!(c, RedisConn::Cluster(_)),
            None => matches!(self.inner.target, Some(Target::Cluster(_))),
        }
    }
}

/// Opens a reconnecting connection (`ConnectionManager`) to one server at `url`, mapped to the typed error.
/// For either a server or a cluster, use [`RedisConnection::connect`].
///
/// # Errors
/// [`PaymentError::StoreUnavailable`] when the URL is invalid or Redis does not answer.
pub async fn connect(url: &str) -> Result<ConnectionManager, PaymentError> {
    connect_client(redis::Client::open(url).map_err(|e| redis_unavailable(&e))?).await
}

async fn connect_client(client: redis::Client) -> Result<ConnectionManager, PaymentError> {
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, cfg).await.map_err(|e| redis_unavailable(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lazy_connection_fails_closed_then_fails_fast_while_redis_is_down() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conn = RedisConnection::open(&format!("redis://127.0.0.1:{port}")).unwrap();
        let first = conn.get().await.unwrap_err();
        assert_eq!(first.kind(), palisade_core::ErrorKind::StoreUnavailable);
        let second = conn.get().await.unwrap_err();
        assert!(second.to_string().contains("retrying within a second"), "{second}");
        assert!(!conn.is_connected());
    }

    #[test]
    fn bad_urls_are_refused_up_front() {
        assert_eq!(RedisConnection::open("not a url").unwrap_err().kind(), palisade_core::ErrorKind::StoreUnavailable);
    }

    #[test]
    fn cluster_urls_give_one_seed_per_node() {
        let seeds = |url: &str| cluster_seeds(url).map(|r| r.unwrap());
        assert_eq!(seeds("redis://127.0.0.1:6379"), None);
        assert_eq!(
            seeds("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Some(vec!["redis://127.0.0.1:7000".to_owned(), "redis://127.0.0.1:7001".to_owned()])
        );
        assert_eq!(
            seeds("redis+cluster://u:p%40ss@a:1,b:2?protocol=resp3"),
            Some(vec![
                "redis://u:p%40ss@a:1?protocol=resp3".to_owned(),
                "redis://u:p%40ss@b:2?protocol=resp3".to_owned()
            ])
        );
        assert_eq!(seeds("rediss+cluster://a:1"), Some(vec!["rediss://a:1".to_owned()]));
        assert!(cluster_seeds("redis+cluster://").unwrap().is_err());
    }

    #[test]
    fn cluster_urls_are_checked_up_front_and_lazily_refused() {
        let conn = RedisConnection::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert!(conn.is_cluster() && !conn.is_connected());
        assert!(!RedisConnection::open("redis://127.0.0.1:6379").unwrap().is_cluster());
        assert!(RedisConnection::cluster(&["redis://127.0.0.1:7000"]).unwrap().is_cluster());
        let none: [&str; 0] = [];
        assert!(RedisConnection::cluster(&none).is_err());
        assert!(RedisConnection::open("redis+cluster://,").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_a_typed_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conn = RedisConnection::lazy(&format!("redis+cluster://127.0.0.1:{port}"));
        assert_eq!(conn.get().await.unwrap_err().kind(), palisade_core::ErrorKind::StoreUnavailable);
        let again = conn.get().await.unwrap_err();
        assert!(again.to_string().contains("retrying within a second"), "fails fast, as for one server: {again}");
        assert!(conn.is_cluster() && !conn.is_connected());
        let bad = RedisConnection::lazy("redis+cluster://");
        assert_eq!(bad.get().await.unwrap_err().kind(), palisade_core::ErrorKind::StoreUnavailable);
    }

    #[test]
    fn keys_keep_one_hash_tag() {
        assert_eq!(redis_key("p:", "a{b}c", "x"), "p:{a%7Bb%7Dc}:x");
        assert_eq!(redis_key("p:", "t", ""), "p:{t}");
        assert_eq!(redis_key("p:", "100%", ""), "p:{100%25}");
    }

    /// The tag between the first `{` and the `}` after it, as Redis Cluster reads it to pick a slot.
    fn cluster_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')?;
        Some(&key[open + 1..open + 1 + close])
    }

    /// Percent-decoding, the inverse of the escape `redis_key` applies.
    fn unescape(tag: &str) -> String {
        tag.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")
    }

    proptest::proptest! {
        /// Two different tags never give the same key, and the whole tag (escaped) is the slot's hash tag.
        #[test]
        fn distinct_tags_give_distinct_keys_in_one_slot(
            a in "[a-z%{}()]{0,12}",
            b in "[a-z%{}()]{0,12}",
            suffix in proptest::sample::select(vec!["", "tat", "state"]),
        ) {
            let (ka, kb) = (redis_key("pal:", &a, suffix), redis_key("pal:", &b, suffix));
            proptest::prop_assert_eq!(ka == kb, a == b, "{} / {}", ka, kb);
            proptest::prop_assert_eq!(cluster_tag(&ka).map(unescape), Some(a));
        }
    }
}
