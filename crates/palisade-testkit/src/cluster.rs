//! A real Redis Cluster for one test: `PALISADE_REDIS_CLUSTER` (a `redis+cluster://host:port,...` URL, which
//! `.ci/redis-cluster` starts and `.ci/run` exports), a connection through the cluster client, a key prefix of
//! the test's own, and what cluster tests need besides: which master holds which keys, and a failover.
//!
//! Tests of one binary run in parallel; a failover would make the others see store errors they do not expect.
//! So every [`RedisClusterTest`] holds a lock on the cluster for its lifetime: shared for [`redis_cluster`],
//! exclusive for [`redis_cluster_exclusive`], which the failover tests take. (Test binaries run one after
//! another under `cargo test`, so the lock need not cross processes.)

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use palisade_store::redis::{RedisConn, RedisConnection, cluster_seeds};
use redis::aio::MultiplexedConnection;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::redis_required;

/// How long a test waits for the cluster to report `cluster_state:ok` on every node, and for a failover to
/// complete: 20 s (a failover takes about a second on loopback; a killed master about two).
pub const CLUSTER_SETTLE: Duration = Duration::from_secs(20);

/// Redis's own limit on a manual failover (`CLUSTER_MF_TIMEOUT`, 5 s) and a little more: a failover not done by then
/// was dropped by Redis and is asked for again.
const MANUAL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(6);

static LOCK: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Held for the test's lifetime (dropping it lets the other cluster tests run).
#[allow(dead_code)]
enum Guard {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// A Redis Cluster for one test.
pub struct RedisClusterTest {
    /// The `redis+cluster://` URL that answered.
    pub url: String,
    /// The seed node URLs (`redis://host:port`), one per node of the URL.
    pub seeds: Vec<String>,
    /// A connection through the cluster client, already established.
    pub conn: RedisConnection,
    /// The test's own key prefix, `palisade-test:{name}:{uuid}:`.
    pub prefix: String,
    guard: Guard,
}

impl std::fmt::Debug for RedisClusterTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let exclusive = matches!(self.guard, Guard::Exclusive(_));
        f.debug_struct("RedisClusterTest")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("exclusive", &exclusive)
            .finish()
    }
}

/// A node of the cluster, as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// `host:port`.
    pub addr: String,
    /// The master it replicates, for a replica.
    pub master_of: Option<String>,
    /// True for a master that serves slots.
    pub serves_slots: bool,
}

impl RedisClusterTest {
    /// A key under this test's prefix.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The cluster connection.
    ///
    /// # Panics
    /// When the cluster cannot be reached any more.
    pub async fn conn(&self) -> RedisConn {
        self.conn.get().await.unwrap_or_else(|e| panic!("the cluster at {} went away: {e}", self.url))
    }

    /// The cluster's nodes as the first seed that answers sees them.
    ///
    /// # Panics
    /// When no seed answers.
    pub async fn nodes(&self) -> Vec<ClusterNode> {
        self.try_nodes().await.unwrap_or_else(|| panic!("no node of {} answers CLUSTER NODES", self.url))
    }

    async fn try_nodes(&self) -> Option<Vec<ClusterNode>> {
        for seed in &self.seeds {
            if let Ok(mut c) = node(seed).await
                && let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut c).await
            {
                return Some(parse_nodes(&text));
            }
        }
        None
    }

    /// The masters that serve slots, by address.
    pub async fn masters(&self) -> Vec<ClusterNode> {
        self.nodes().await.into_iter().filter(|n| n.serves_slots).collect()
    }

    /// How many keys under this test's prefix each master holds, by master address (every master listed).
    ///
    /// # Panics
    /// When a master does not answer.
    pub async fn keys_per_master(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for m in self.masters().await {
            let mut c = node(&format!("redis://{}", m.addr)).await.unwrap_or_else(|e| panic!("{}: {e}", m.addr));
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query_async(&mut c)
                .await
                .unwrap_or_else(|e| panic!("KEYS on {}: {e}", m.addr));
            out.push((m.addr, keys.len()));
        }
        out.sort();
        out
    }

    /// Fails `master` over to its replica with `CLUSTER FAILOVER` (the manual failover: the master stops taking
    /// writes, the replica catches up with it and takes over, nothing acknowledged is lost), then waits until the
    /// replica is a master, the old master its replica, and every node reports `cluster_state:ok`. Returns the
    /// new master's address. Only for an exclusive test ([`redis_cluster_exclusive`]).
    ///
    /// # Panics
    /// When the test is not exclusive, `master` has no replica, or the failover does not complete within
    /// [`CLUSTER_SETTLE`].
    pub async fn failover(&self, master: &ClusterNode) -> String {
        assert!(
            matches!(self.guard, Guard::Exclusive(_)),
            "a failover disturbs every test on the cluster: take it with redis_cluster_exclusive"
        );
        // Right after an earlier failover a node can still report the old master's replica as a master without
        // slots: its view settles within moments, so wait for the replica (up to CLUSTER_SETTLE) before giving up.
        let looked = tokio::time::Instant::now();
        let replica = loop {
            let nodes = self.nodes().await;
            if let Some(r) = nodes.iter().find(|n| n.master_of.as_deref() == Some(master.id.as_str())) {
                break r.clone();
            }
            assert!(looked.elapsed() < CLUSTER_SETTLE, "master {} has no replica: {nodes:?}", master.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut c = node(&format!("redis://{}", replica.addr)).await.unwrap_or_else(|e| panic!("{e}"));
        let _: () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on {}: {e}", replica.addr));
        let done = async {
            let mut asked = tokio::time::Instant::now();
            loop {
                let promoted = role(&replica.addr).await.as_deref() == Some("master");
                if promoted && role(&master.addr).await.as_deref() == Some("slave") && self.all_ok().await {
                    return;
                }
                // Redis drops a manual failover it could not finish in 5 s (CLUSTER_MF_TIMEOUT) without a word to
                // the client: seen in CI when asked 0.4 s after the node had turned replica in an earlier test's
                // failover ("Manual failover timed out" in its log). Ask again.
                if !promoted && asked.elapsed() > MANUAL_FAILOVER_TIMEOUT {
                    let again: redis::RedisResult<()> = redis::cmd("CLUSTER").arg("FAILOVER").query_async(&mut c).await;
                    if let Err(e) = again {
                        eprintln!("CLUSTER FAILOVER on {} again: {e}", replica.addr);
                    }
                    asked = tokio::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(CLUSTER_SETTLE, done).await.is_err() {
            panic!("the failover of {} to {} did not complete within {CLUSTER_SETTLE:?}", master.addr, replica.addr);
        }
        replica.addr
    }

    /// Holds every write sent to `master` for `ms` milliseconds (`CLIENT PAUSE <ms> WRITE`): a master that
    /// stops answering, for requests that time out, without losing anything it acknowledged. Ends early with
    /// [`RedisClusterTest::unpause`]. Only for an exclusive test ([`redis_cluster_exclusive`]).
    ///
    /// # Panics
    /// When the test is not exclusive or the node refuses.
    pub async fn pause_writes(&self, master: &ClusterNode, ms: u64) {
        self.node_command(&master.addr, redis::cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE")).await;
    }

    /// Ends a [`RedisClusterTest::pause_writes`] at once.
    ///
    /// # Panics
    /// When the test is not exclusive or the node refuses.
    pub async fn unpause(&self, node: &ClusterNode) {
        self.node_command(&node.addr, redis::cmd("CLIENT").arg("UNPAUSE")).await;
    }

    async fn node_command(&self, addr: &str, cmd: &redis::Cmd) {
        assert!(
            matches!(self.guard, Guard::Exclusive(_)),
            "pausing a node disturbs every test on the cluster: take it with redis_cluster_exclusive"
        );
        let mut c = node(&format!("redis://{addr}")).await.unwrap_or_else(|e| panic!("{addr}: {e}"));
        let _: () = cmd.query_async(&mut c).await.unwrap_or_else(|e| panic!("{addr}: {e}"));
    }

    /// True when every node of the cluster answers and reports `cluster_state:ok`.
    pub async fn all_ok(&self) -> bool {
        let Some(nodes) = self.try_nodes().await else { return false };
        for n in &nodes {
            let Ok(mut c) = node(&format!("redis://{}", n.addr)).await else { return false };
            let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut c).await else { return false };
            if !info.contains("cluster_state:ok") {
                return false;
            }
        }
        !nodes.is_empty()
    }

    /// Deletes every key under this test's prefix, on every master.
    pub async fn cleanup(&self) {
        self.delete_matching(&format!("{}*", self.prefix)).await;
    }

    /// Deletes every key that matches `pattern` (a `KEYS` pattern), on every master: for keys a test could not
    /// put under its prefix (a store's default prefix, with the test's run id in the key).
    pub async fn delete_matching(&self, pattern: &str) {
        for m in self.masters().await {
            let Ok(mut c) = node(&format!("redis://{}", m.addr)).await else { continue };
            let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query_async(&mut c).await.unwrap_or_default();
            for k in keys {
                let _: Result<(), _> = redis::cmd("DEL").arg(k).query_async(&mut c).await;
            }
        }
    }
}

/// A plain connection to one node (not through the cluster client), with a 2 s bound.
async fn node(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    client.get_multiplexed_async_connection_with_config(&cfg).await
}

/// `master` or `slave`, as the node at `addr` says (`ROLE`).
async fn role(addr: &str) -> Option<String> {
    let mut c = node(&format!("redis://{addr}")).await.ok()?;
    let v: redis::Value = redis::cmd("ROLE").query_async(&mut c).await.ok()?;
    match v {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (id, addr, flags, master) = (f.first()?, f.get(1)?, f.get(2)?, f.get(3)?);
            if flags.contains("fail") || flags.contains("handshake") || flags.contains("noaddr") {
                return None;
            }
            let addr = addr.split('@').next()?.to_owned();
            let is_master = flags.split(',').any(|x| x == "master");
            Some(ClusterNode {
                id: (*id).to_owned(),
                addr,
                master_of: (!is_master && *master != "-").then(|| (*master).to_owned()),
                serves_slots: is_master && f.len() > 8,
            })
        })
        .collect()
}

/// A cluster connection for the test `name` (holding the cluster shared: failover tests wait for it), or `None`
/// (after a loud SKIPPED message) when `PALISADE_REDIS_CLUSTER` is not set.
///
/// # Panics
/// When `PALISADE_REDIS_CLUSTER` is set but the cluster cannot be reached or is not `cluster_state:ok` within
/// [`CLUSTER_SETTLE`], and `PALISADE_REQUIRE_REDIS=1`. Without it, that is a skip too.
pub async fn redis_cluster(name: &str) -> Option<RedisClusterTest> {
    let guard = Guard::Shared(LOCK.clone().read_owned().await);
    open(name, guard).await
}

/// As [`redis_cluster`], holding the cluster exclusively: no other cluster test of this process runs meanwhile,
/// so this one may fail a master over.
pub async fn redis_cluster_exclusive(name: &str) -> Option<RedisClusterTest> {
    let guard = Guard::Exclusive(LOCK.clone().write_owned().await);
    open(name, guard).await
}

async fn open(name: &str, guard: Guard) -> Option<RedisClusterTest> {
    let Ok(url) = std::env::var("PALISADE_REDIS_CLUSTER") else {
        eprintln!(
            "\n!!!!! SKIPPED {name}: no Redis Cluster (set PALISADE_REDIS_CLUSTER=redis+cluster://host:port,...; \
             .ci/redis-cluster starts one) !!!!!\n"
        );
        return None;
    };
    let refuse = |why: String| {
        if redis_required() {
            panic!("PALISADE_REQUIRE_REDIS=1 but the Redis Cluster at {url} {why}: test {name} cannot run");
        }
        eprintln!("\n!!!!! SKIPPED {name}: the Redis Cluster at {url} {why} !!!!!\n");
    };
    let seeds = match cluster_seeds(&url) {
        Some(Ok(seeds)) => seeds,
        Some(Err(e)) => panic!("PALISADE_REDIS_CLUSTER={url}: {e}"),
        None => panic!("PALISADE_REDIS_CLUSTER={url} is not a redis+cluster:// URL"),
    };
    let conn = match RedisConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            refuse(format!("does not answer ({e})"));
            return None;
        }
    };
    let prefix = format!("palisade-test:{name}:{}:", uuid::Uuid::new_v4().simple());
    let t = RedisClusterTest { url: url.clone(), seeds, conn, prefix, guard };
    let settle = async {
        while !t.all_ok().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(CLUSTER_SETTLE, settle).await.is_err() {
        refuse(format!("is not cluster_state:ok on every node after {CLUSTER_SETTLE:?}"));
        return None;
    }
    Some(t)
}
