//! Redis plumbing every Redis-backed store shares: one reconnecting connection type, key building with hash tags,
//! and the mapping of Redis errors to the typed store error.

use palisade_core::PaymentError;
use palisade_core::store::unavailable;

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
pub const RECONNECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The Redis connection every Palisade store holds: cheap to clone, reconnecting once established
/// (`ConnectionManager`), and optionally **lazy** — opened on first use, so a service can start while Redis is
/// down and answer "store unavailable" (fail closed) until it is back. While Redis is unreachable, a lazy
/// connection tries again at most once per [`RECONNECT_INTERVAL`] and fails fast in between.
#[derive(Clone)]
pub struct RedisConnection {
    inner: std::sync::Arc<LazyInner>,
}

struct LazyInner {
    url: Option<String>,
    cell: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.inner.cell.initialized() { "connected" } else { "not connected yet" };
        f.debug_struct("RedisConnection").field("state", &state).finish()
    }
}

impl RedisConnection {
    /// Wraps an established connection.
    #[must_use]
    pub fn new(conn: redis::aio::ConnectionManager) -> Self {
        RedisConnection {
            inner: std::sync::Arc::new(LazyInner {
                url: None,
                cell: tokio::sync::OnceCell::new_with(Some(conn)),
                failed_at: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Connects now.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, PaymentError> {
        Ok(RedisConnection::new(connect(url).await?))
    }

    /// A connection opened on first use. Only the URL is checked now.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL cannot be parsed.
    pub fn open(url: &str) -> Result<Self, PaymentError> {
        redis::Client::open(url).map_err(|e| redis_unavailable(&e))?;
        Ok(RedisConnection::lazy(url))
    }

    /// A connection opened on first use, without checking the URL now: a bad URL surfaces as
    /// [`PaymentError::StoreUnavailable`] on every use (prefer [`RedisConnection::open`]).
    #[must_use]
    pub fn lazy(url: &str) -> Self {
        RedisConnection {
            inner: std::sync::Arc::new(LazyInner {
                url: Some(url.to_owned()),
                cell: tokio::sync::OnceCell::new(),
                failed_at: std::sync::Mutex::new(None),
            }),
        }
    }

    /// The connection, opening it if needed.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when Redis cannot be reached (at once, without trying, within
    /// [`RECONNECT_INTERVAL`] of the last failed attempt).
    pub async fn get(&self) -> Result<redis::aio::ConnectionManager, PaymentError> {
        if let Some(c) = self.inner.cell.get() {
            return Ok(c.clone());
        }
        let Some(url) = self.inner.url.as_deref() else {
            return Err(PaymentError::store_unavailable("redis: no connection configured"));
        };
        let recently_failed =
            self.inner.failed_at.lock().map(|g| g.is_some_and(|t| t.elapsed() < RECONNECT_INTERVAL)).unwrap_or(false);
        if recently_failed {
            return Err(PaymentError::store_unavailable(
                "redis: unreachable at the last connection attempt; retrying within a second",
            ));
        }
        match self.inner.cell.get_or_try_init(|| connect(url)).await {
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
}

/// Opens a reconnecting connection (`ConnectionManager`) to `url`, mapped to the typed error.
///
/// # Errors
/// [`PaymentError::StoreUnavailable`] when the URL is invalid or Redis does not answer.
pub async fn connect(url: &str) -> Result<redis::aio::ConnectionManager, PaymentError> {
    let client = redis::Client::open(url).map_err(|e| redis_unavailable(&e))?;
    let cfg = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)))
        .set_number_of_retries(2);
    redis::aio::ConnectionManager::new_with_config(client, cfg).await.map_err(|e| redis_unavailable(&e))
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
