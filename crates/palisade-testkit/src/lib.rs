//! Test support shared by Palisade's crates (not published).
//!
//! - [`redis`]: a real Redis connection for a test, with a key prefix of its own so tests run in parallel
//!   against one server. Uses `PALISADE_REDIS_URL` (default `redis://127.0.0.1:6379`); if nothing answers there
//!   it starts a private `redis-server` from `PATH` on a free port; if that is impossible the test prints
//!   `SKIPPED` loudly and returns `None` — or panics when `PALISADE_REQUIRE_REDIS=1` (set by `.ci/run`), so no
//!   Redis test can skip silently in CI.
//! - [`redis_cluster`]: a real Redis Cluster (`PALISADE_REDIS_CLUSTER`, a `redis+cluster://` URL that
//!   `.ci/redis-cluster` starts and `.ci/run` exports), with a key prefix per test, which master holds which
//!   keys, and a failover ([`redis_cluster_exclusive`]). Unset: the test prints `SKIPPED`; set but unreachable:
//!   it fails when `PALISADE_REQUIRE_REDIS=1`.
//! - [`LogCapture`]: a tracing subscriber that writes everything into memory, so tests can assert that no card
//!   number reaches any log output.
//! - [`MetricsCapture`]: a `metrics` recorder that keeps counters and histogram values for assertions.
//! - [`StallProxy`]: a TCP proxy in front of Redis that holds commands on request, for "Redis stalled" tests.
//! - [`charge`] and [`captured`]: a gateway request built in one line, and an instant gateway answer.
//!
//! ```no_run
//! # async fn t() {
//! let Some(r) = palisade_testkit::redis("my_test").await else { return };
//! let key = r.key("counter");
//! # }
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod answer;
mod cluster;
mod gateway;
mod metrics;
mod postgres;
mod rng;
mod spin;
mod stall;
pub use crate::answer::{Answer, AnswerFuture, Call, InstantGateway, TestGateway};
pub use crate::cluster::{CLUSTER_SETTLE, ClusterNode, RedisClusterTest, redis_cluster, redis_cluster_exclusive};
pub use crate::gateway::{ChargeBuilder, captured, charge, stripe_charge};
pub use crate::metrics::{HistogramRecord, MetricsCapture};
pub use crate::postgres::{DEFAULT_POSTGRES_URL, PostgresTest, postgres, postgres_required};
pub use crate::rng::Rng;
pub use crate::spin::{call_spinning, spin};
pub use crate::stall::StallProxy;

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

/// The default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A Redis connection for one test.
#[derive(Clone)]
pub struct RedisTest {
    /// The URL that answered.
    pub url: String,
    /// A client for the URL.
    pub client: redis::Client,
    /// A reconnecting connection.
    pub conn: ConnectionManager,
    /// The test's own key prefix, `palisade-test:{name}:{uuid}:`.
    pub prefix: String,
}

impl std::fmt::Debug for RedisTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTest").field("url", &self.url).field("prefix", &self.prefix).finish()
    }
}

impl RedisTest {
    /// A key under this test's prefix.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    /// Every key under this test's prefix, by `SCAN`: ten thousand keys a command, so no single command walks a
    /// large shared database (as `KEYS` does) for longer than the connection's response timeout.
    ///
    /// # Errors
    /// The error of a `SCAN` that failed.
    pub async fn keys(&self) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix);
        let (mut cursor, mut keys) = (0u64, Vec::new());
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                // SCAN may return a key twice.
                keys.sort_unstable();
                keys.dedup();
                return Ok(keys);
            }
            cursor = next;
        }
    }
    /// Deletes every key under this test's prefix.
    pub async fn cleanup(&self) {
        let keys = self.keys().await.unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut self.conn.clone()).await;
        }
    }
}

static URL: OnceCell<Option<String>> = OnceCell::const_new();

async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let attempt = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(_)))
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a private `redis-server` that exits when this test process does. Returns its URL.
async fn start_private_server() -> Option<String> {
    let port = free_port().ok()?;
    let me = std::process::id();
    // A watcher shell kills the server once this process is gone, so no server outlives the tests.
    let script = format!(
        "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 & s=$!; \
         while kill -0 {me} 2>/dev/null; do sleep 1; done; kill $s"
    );
    tokio::process::Command::new("sh").arg("-c").arg(script).kill_on_drop(false).spawn().ok()?;
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..50 {
        if answers(&url).await {
            return Some(url);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn find_url() -> Option<String> {
    let url = std::env::var("PALISADE_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.to_owned());
    if answers(&url).await {
        return Some(url);
    }
    eprintln!("palisade-testkit: nothing answers at {url}; trying a private redis-server from PATH");
    start_private_server().await
}

/// True when `PALISADE_REQUIRE_REDIS=1`: a missing Redis fails the test instead of skipping it.
#[must_use]
pub fn redis_required() -> bool {
    std::env::var("PALISADE_REQUIRE_REDIS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A Redis connection for the test `name`, or `None` (after a loud SKIPPED message) when no Redis can be had.
///
/// # Panics
/// When no Redis can be had and `PALISADE_REQUIRE_REDIS=1`.
pub async fn redis(name: &str) -> Option<RedisTest> {
    let url = URL.get_or_init(find_url).await.clone();
    let Some(url) = url else {
        if redis_required() {
            panic!("PALISADE_REQUIRE_REDIS=1 but no Redis answers and none could be started: test {name} cannot run");
        }
        eprintln!("\n!!!!! SKIPPED {name}: no Redis (set PALISADE_REDIS_URL or put redis-server on PATH) !!!!!\n");
        return None;
    };
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => panic!("invalid Redis URL {url}: {e}"),
    };
    let conn = match ConnectionManager::new(client.clone()).await {
        Ok(c) => c,
        Err(e) => panic!("Redis at {url} answered PING but a connection manager failed: {e}"),
    };
    let prefix = format!("palisade-test:{name}:{}:", uuid::Uuid::new_v4().simple());
    Some(RedisTest { url, client, conn, prefix })
}

/// A URL where nothing listens, for "Redis is down" tests (a port that was free a moment ago).
#[must_use]
pub fn unreachable_redis_url() -> String {
    let port = free_port().unwrap_or(1);
    format!("redis://127.0.0.1:{port}")
}

/// An in-memory log sink: a `MakeWriter` for tracing-subscriber whose contents tests can read.
#[derive(Clone, Default)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for LogCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCapture").field("bytes", &self.buf.lock().map(|b| b.len()).unwrap_or(0)).finish()
    }
}

/// The writer a [`LogCapture`] hands out.
#[derive(Debug)]
pub struct LogCaptureWriter {
    buf: Arc<Mutex<Vec<u8>>>,
}

impl io::Write for LogCaptureWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCaptureWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogCaptureWriter { buf: self.buf.clone() }
    }
}

impl LogCapture {
    /// An empty capture.
    #[must_use]
    pub fn new() -> Self {
        LogCapture::default()
    }
    /// Everything written so far (lossy UTF-8).
    #[must_use]
    pub fn contents(&self) -> String {
        self.buf.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
    /// A subscriber that logs every level, with span fields, into this capture (no ANSI colours).
    #[must_use]
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish()
    }
    /// Runs `f` with this capture as the default subscriber on this thread, and returns what it logged.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::subscriber::with_default(self.subscriber(), f)
    }
}

/// Panics with the offending line when `text` contains something that looks like a card number.
pub fn assert_no_card_numbers(text: &str) {
    for line in text.lines() {
        assert!(!palisade_core::card::contains_card_like(line), "card number in log output: {line}");
    }
}

static INIT: OnceLock<()> = OnceLock::new();

/// Installs a global fmt subscriber honouring `RUST_LOG`-less defaults (warn), once; for tests that want output.
pub fn init_test_logging() {
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::WARN).try_init();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_a_value_through_redis() {
        let Some(r) = redis("testkit_round_trip").await else { return };
        let mut conn = r.conn.clone();
        let key = r.key("greeting");
        let _: () = redis::cmd("SET").arg(&key).arg("hello").arg("EX").arg(60).query_async(&mut conn).await.unwrap();
        let got: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        assert_eq!(got, "hello");
        r.cleanup().await;
        let gone: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
        assert_eq!(gone, None);
    }

    #[tokio::test]
    async fn prefixes_are_unique_per_test() {
        let Some(a) = redis("same").await else { return };
        let Some(b) = redis("same").await else { return };
        assert_ne!(a.prefix, b.prefix);
    }

    #[test]
    fn capture_sees_logs_and_catches_cards() {
        let cap = LogCapture::new();
        cap.run(|| tracing::info!(order = "o1", "hello"));
        assert!(cap.contents().contains("hello"));
        assert!(cap.contents().contains("order=\"o1\""));
        assert_no_card_numbers(&cap.contents());
        let r = std::panic::catch_unwind(|| assert_no_card_numbers("pan 4242424242424242"));
        assert!(r.is_err());
    }
}
