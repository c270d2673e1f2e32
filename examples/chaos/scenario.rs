//! The chaos scenario of issue 23, shared by the chaos example (`examples/chaos/main.rs`) and its test
//! (`tests/chaos.rs`): a faulty gateway, K checkout servers on one store killed with SIGKILL and restarted, and
//! clients that retry; then what really happened to the money, checked order by order.
//!
//! - **The gateway**: the HTTP simulator ([`SimServer`]) in this process on a loopback port, with seeded faults
//!   (lost responses after the commit, timeouts, 5xx, 429, 503) and latency. Its ledger is the truth.
//! - **The servers**: K processes of `examples/server` (`--gateway` the simulator, the same store, `--instance`
//!   names `chaos-0`…), each with its saga recovery worker.
//! - **The clients**: N checkouts at bounded concurrency, each `POST /v1/checkouts` with its own
//!   `Idempotency-Key`, retried with the same key (backoff, `Retry-After`) after errors, timeouts, 409 in flight
//!   and 5xx; some (seeded) also send an impatient duplicate to another instance. The mix (seeded): cards that
//!   pay, declines, fraud blocks, out-of-stock orders, shipments the carrier refuses.
//! - **The kills**: at seeded points of the run (a share of the checkouts answered, then a few ms), an instance
//!   gets SIGKILL and is started again under the **same name** after a seeded downtime. The name is only a label
//!   in the saga log: a dead instance's sagas are taken over when their lease ends, by whichever recovery worker
//!   comes first (the restarted one or a peer), never because a name came back.
//! - **The checks** ([`Report::violations`]), after waiting (bounded) for every saga to end: no order authorized
//!   or captured twice; every checkout a client saw succeed (201) completed and captured exactly once, for its
//!   amount; every other one either completed (captured once) or compensated (authorization voided, or capture
//!   refunded in full), or never reached the gateway; no saga left `running`, `compensating` or
//!   `failed_compensation`; no two different final answers for one key; the servers' view of each payment (the
//!   saga log, and the payment notes the compensations write: voided or refunded, and which authorization)
//!   reconciled with `palisade-reconciliation` against the simulator's ledger, by authorization id: clean.
//!
//! What is seeded: the checkouts, the faults drawn per gateway request, the duplicates, the kill points and
//! downtimes. What is not: the order in which concurrent requests reach the simulator (so which request gets
//! which fault), and process scheduling. A failing seed shows the same kinds of trouble when run again, not the
//! same request by request history.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Cursor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use palisade::core::Operation;
use palisade::idempotency::{LeaseStore, PostgresStore, Record, RedisStore};
use palisade::reconciliation::{CanonicalCsv, Kind, Reconciler};
use palisade::sim::{HttpFault, LedgerEntry, SimServer};
use palisade_saga::{Event, PostgresLog, RedisLog, SagaLog, SagaRecord, SagaState};
use palisade_testkit::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

use crate::server_process;

/// Where the servers keep their state (idempotency records, stock holds, the saga log).
#[derive(Debug, Clone)]
pub enum Store {
    /// One Redis: `--redis URL --redis-prefix PREFIX`.
    Redis {
        /// The URL.
        url: String,
        /// This run's key prefix.
        prefix: String,
    },
    /// Redis Cluster, through the server's `--redis` URL (`redis+cluster://host:port,host:port`).
    RedisCluster {
        /// The URL.
        url: String,
        /// This run's key prefix.
        prefix: String,
    },
    /// PostgreSQL: `--postgres URL --postgres-prefix PREFIX` (`schema.palisade_`: a schema of the run's own).
    Postgres {
        /// The URL.
        url: String,
        /// This run's table prefix.
        prefix: String,
    },
}

impl Store {
    /// `redis`, `redis-cluster` or `postgres`.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Redis { .. } => "redis",
            Store::RedisCluster { .. } => "redis-cluster",
            Store::Postgres { .. } => "postgres",
        }
    }

    fn server_args(&self) -> Vec<String> {
        match self {
            Store::Redis { url, prefix } | Store::RedisCluster { url, prefix } => {
                vec!["--redis".into(), url.clone(), "--redis-prefix".into(), prefix.clone()]
            }
            Store::Postgres { url, prefix } => {
                vec!["--postgres".into(), url.clone(), "--postgres-prefix".into(), prefix.clone()]
            }
        }
    }

    /// The servers' idempotency store (where examples/server keeps stock holds and payment notes), as it opens it.
    fn lease_store(&self) -> anyhow::Result<Arc<dyn LeaseStore>> {
        Ok(match self {
            Store::Redis { url, prefix } | Store::RedisCluster { url, prefix } => {
                Arc::new(RedisStore::open(url)?.with_prefix(prefix.clone()))
            }
            Store::Postgres { url, prefix } => Arc::new(PostgresStore::new(checker_pool(url)?).with_prefix(prefix)?),
        })
    }

    /// The saga log the servers write, as examples/server opens it.
    async fn saga_log(&self) -> anyhow::Result<Arc<dyn SagaLog>> {
        Ok(match self {
            Store::Redis { url, prefix } | Store::RedisCluster { url, prefix } => {
                Arc::new(RedisLog::open(url)?.with_prefix(format!("{prefix}saga:")))
            }
            Store::Postgres { url, prefix } => {
                let log = PostgresLog::new(checker_pool(url)?).with_prefix(prefix)?;
                log.migrate().await?;
                Arc::new(log)
            }
        })
    }
}

/// The checker's PostgreSQL pool: the stores' options, but waiting up to 30 s for a free connection instead of 2 s.
/// After the run the checker reads every order's records, 64 at a time, on a machine still busy with the servers;
/// the stores' 2 s (a payment request should not hang on an exhausted pool) once failed the check there with
/// "pool timed out" though nothing was wrong with the charges.
fn checker_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    Ok(palisade_store::postgres::pool_options().acquire_timeout(Duration::from_secs(30)).connect_lazy(url)?)
}

/// A chaos run's settings. [`Config::new`] gives the defaults the example and the test use.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seeds the checkouts, the faults, the duplicates and the kills.
    pub seed: u64,
    /// How many checkouts.
    pub checkouts: usize,
    /// How many server instances.
    pub instances: usize,
    /// Checkouts in flight at once.
    pub concurrency: usize,
    /// SIGKILLs over the run (each followed by a restart).
    pub kills: usize,
    /// The store.
    pub store: Store,
    /// The server binary (examples/server).
    pub server: PathBuf,
    /// Fault rates of the simulator, per gateway request, drawn in this order.
    pub faults: Vec<(HttpFault, f64)>,
    /// The simulator's latency per operation.
    pub latency: Duration,
    /// Gateway outages over the run: at seeded points, the next [`OUTAGE_REQUESTS`] gateway requests all fail
    /// (lost responses, 500s, 503s, a few timeouts), enough to open the instances' circuit breakers.
    pub outages: usize,
    /// Share of checkouts that also send an impatient duplicate to another instance.
    pub duplicates: f64,
    /// How long a client waits for an answer before it gives up on that attempt and retries.
    pub client_timeout: Duration,
    /// The servers' `--gateway-timeout-ms`.
    pub gateway_timeout: Duration,
    /// The servers' `--gateway-rate` (gateway calls per second per instance); the server's default when `None`.
    pub gateway_rate: Option<u32>,
    /// How long a client keeps retrying one checkout.
    pub give_up: Duration,
    /// How long to wait, after the clients are done, for every saga to end.
    pub settle: Duration,
    /// Where the servers' standard error goes (one file per instance).
    pub logs: PathBuf,
    /// Print progress to stderr.
    pub progress: bool,
}

/// The default fault rates: 3 % lost responses (the operation commits, the answer never comes), 1 % timeouts, 3 %
/// 500s, 3 % 429s, 2 % 503s: about one gateway request in eight fails.
pub const DEFAULT_FAULTS: [(HttpFault, f64); 5] = [
    (HttpFault::LostResponse, 0.03),
    (HttpFault::Timeout, 0.01),
    (HttpFault::Error5xx, 0.03),
    (HttpFault::RateLimited, 0.03),
    (HttpFault::Refused, 0.02),
];

/// Gateway requests an outage fails: 150, about fifty per instance of three, past the breakers' minimum of
/// twenty calls at a failure rate well over half.
pub const OUTAGE_REQUESTS: usize = 150;

impl Config {
    /// The defaults: concurrency 50, one kill per instance, [`DEFAULT_FAULTS`], 5 ms gateway latency, 5 %
    /// duplicates, clients that wait 3 s per attempt and 180 s per checkout, a 1 s gateway timeout, 120 s to settle.
    pub fn new(seed: u64, checkouts: usize, instances: usize, store: Store, server: PathBuf) -> Config {
        let logs = format!("palisade-chaos-{seed}-{}-{}", store.name(), std::process::id());
        Config {
            seed,
            checkouts,
            instances: instances.max(1),
            concurrency: 50,
            kills: instances.max(1),
            store,
            server,
            faults: DEFAULT_FAULTS.to_vec(),
            latency: Duration::from_millis(5),
            outages: 0,
            duplicates: 0.05,
            client_timeout: Duration::from_secs(3),
            gateway_timeout: Duration::from_secs(1),
            gateway_rate: None,
            give_up: Duration::from_secs(180),
            settle: Duration::from_secs(120),
            logs: std::env::temp_dir().join(logs),
            progress: false,
        }
    }
}

/// What one checkout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A card that pays.
    Pays,
    /// `tok_chargeDeclined`: 402 at the authorization.
    Declined,
    /// A blocklisted email: 402 `fraud_blocked` before any gateway call.
    FraudBlocked,
    /// An out-of-stock sku: compensated before any gateway call.
    OutOfStock,
    /// The carrier refuses the shipment: captured, then refunded.
    ShipmentRefused,
}

/// One checkout of the run.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// Its order id (the saga id).
    pub order_id: String,
    /// Its `Idempotency-Key`.
    pub key: String,
    /// Its amount in cents (USD).
    pub cents: i64,
    /// What it is.
    pub shape: Shape,
    /// Whether it also sends an impatient duplicate.
    pub duplicate: bool,
}

impl Checkout {
    /// Checkout `i` of the run seeded `seed`.
    pub fn nth(seed: u64, i: usize) -> Checkout {
        let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let shape = match rng.below(100) {
            0..4 => Shape::Declined,
            4..6 => Shape::FraudBlocked,
            6..8 => Shape::OutOfStock,
            8..11 => Shape::ShipmentRefused,
            _ => Shape::Pays,
        };
        Checkout {
            order_id: format!("chaos-{seed}-{i}"),
            key: format!("ck-{seed}-{i}"),
            cents: 100 + rng.below(49_900) as i64,
            shape,
            duplicate: false,
        }
    }

    fn amount(&self) -> String {
        format!("{}.{:02}", self.cents / 100, self.cents % 100)
    }

    fn body(&self) -> String {
        let source = if self.shape == Shape::Declined { "tok_chargeDeclined" } else { "tok_visa" };
        let email = if self.shape == Shape::FraudBlocked { "fraud@example.com" } else { "buyer@example.com" };
        let sku = if self.shape == Shape::OutOfStock { "sku_out_of_stock" } else { "sku_1" };
        json!({
            "order_id": self.order_id, "amount": self.amount(), "currency": "USD", "source": source, "email": email,
            "items": [{"sku": sku, "qty": 1}], "fail_shipment": self.shape == Shape::ShipmentRefused,
        })
        .to_string()
    }
}

/// What the clients saw of one checkout.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Final answers (status, problem type or `""`, body), the main request's and the duplicate's.
    pub answers: Vec<(u16, String, Value)>,
    /// Requests sent for it (attempts, the duplicate included).
    pub requests: u64,
    /// The client gave up before a final answer.
    pub gave_up: bool,
}

impl Seen {
    /// A client saw 201.
    pub fn succeeded(&self) -> bool {
        self.answers.iter().any(|a| a.0 == 201)
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The store's name.
    pub store: String,
    /// Instances.
    pub instances: usize,
    /// Checkouts.
    pub checkouts: usize,
    /// The final answer each checkout got (the first, when its duplicate got one too), by kind (`201`,
    /// `402 card_declined`, …, `gave up`).
    pub answers: BTreeMap<String, usize>,
    /// HTTP requests the clients sent.
    pub requests: u64,
    /// Requests beyond the first of each checkout, duplicates not counted.
    pub retries: u64,
    /// Impatient duplicates sent to another instance.
    pub duplicates: u64,
    /// Requests that found no instance listening (a killed one) or timed out on the client side.
    pub connection_errors: u64,
    /// Faults the simulator injected, by kind.
    pub faults: Vec<(HttpFault, u64)>,
    /// Operation requests that reached the simulator's gateway (faults that commit nothing excluded).
    pub gateway_calls: u64,
    /// SIGKILLs sent.
    pub kills: usize,
    /// Sagas taken over by a recovery worker (from the instances' `/metrics`, read before each kill and at the
    /// end: a take-over in the last instant before a kill is not counted).
    pub recoveries: u64,
    /// Sagas by state at the end.
    pub sagas: BTreeMap<String, usize>,
    /// The simulator's ledger by operation.
    pub ledger: BTreeMap<String, usize>,
    /// Payments (authorizations) reconciled without difference.
    pub reconciled: u64,
    /// Reconciliation discrepancies by kind.
    pub discrepancies: BTreeMap<String, u64>,
    /// How long the clients took.
    pub clients_time: Duration,
    /// How long the sagas took to end after the clients were done.
    pub settle_time: Duration,
    /// The whole run.
    pub wall_time: Duration,
    /// Where the servers' logs are.
    pub logs: PathBuf,
    /// Every broken promise, one line each.
    pub violations: Vec<String>,
}

impl Report {
    /// Duplicate charges found (orders authorized or captured more than once).
    pub fn duplicate_charges(&self) -> usize {
        self.violations.iter().filter(|v| v.contains("duplicate")).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |m: &BTreeMap<String, usize>| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>();
        writeln!(f, "chaos run: seed {}, store {}, {} instances", self.seed, self.store, self.instances)?;
        writeln!(f, "  checkouts           {}", self.checkouts)?;
        writeln!(f, "  answers             {}", list(&self.answers).join(", "))?;
        writeln!(
            f,
            "  client requests     {} ({} retries, {} duplicates sent, {} connection errors or client timeouts)",
            self.requests, self.retries, self.duplicates, self.connection_errors
        )?;
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let injected: u64 = self.faults.iter().map(|f| f.1).sum();
        writeln!(f, "  faults injected     {injected} ({})", faults.join(", "))?;
        writeln!(f, "  gateway calls       {} (operation requests that reached the simulator)", self.gateway_calls)?;
        writeln!(f, "  kills               {} (SIGKILL, each followed by a restart)", self.kills)?;
        writeln!(f, "  recoveries          {} (sagas taken over by a recovery worker)", self.recoveries)?;
        writeln!(f, "  sagas               {}", list(&self.sagas).join(", "))?;
        writeln!(f, "  gateway ledger      {}", list(&self.ledger).join(", "))?;
        let disc: Vec<String> = self.discrepancies.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        writeln!(
            f,
            "  reconciliation      {} payments matched, {} discrepancies{}",
            self.reconciled,
            self.discrepancies.values().sum::<u64>(),
            if disc.is_empty() { String::new() } else { format!(" ({})", disc.join(", ")) }
        )?;
        writeln!(f, "  duplicate charges   {}", self.duplicate_charges())?;
        writeln!(f, "  violations          {}", self.violations.len())?;
        for v in self.violations.iter().take(50) {
            writeln!(f, "    - {v}")?;
        }
        if self.violations.len() > 50 {
            writeln!(f, "    … and {} more", self.violations.len() - 50)?;
        }
        writeln!(
            f,
            "  throughput          {:.0} checkouts/s (answered, over the clients' time)",
            self.checkouts as f64 / self.clients_time.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "  wall time           {:.1} s (clients {:.1} s, sagas settled {:.1} s later)",
            self.wall_time.as_secs_f64(),
            self.clients_time.as_secs_f64(),
            self.settle_time.as_secs_f64()
        )?;
        write!(f, "  server logs         {}", self.logs.display())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The instances.

/// The server instances: their current addresses (none while one is down) and processes.
struct Instances {
    config: Arc<Config>,
    gateway: String,
    addrs: Vec<RwLock<Option<SocketAddr>>>,
    children: tokio::sync::Mutex<Vec<Option<Child>>>,
    recoveries: AtomicU64,
}

impl Instances {
    fn name(i: usize) -> String {
        format!("chaos-{i}")
    }

    async fn start(config: Arc<Config>, gateway: String) -> anyhow::Result<Arc<Instances>> {
        std::fs::create_dir_all(&config.logs)
            .with_context(|| format!("cannot create the log directory {}", config.logs.display()))?;
        let me = Arc::new(Instances {
            addrs: (0..config.instances).map(|_| RwLock::new(None)).collect(),
            children: tokio::sync::Mutex::new((0..config.instances).map(|_| None).collect()),
            recoveries: AtomicU64::new(0),
            config,
            gateway,
        });
        // One at a time: the first migrates the PostgreSQL tables while the others would wait on its lock.
        for i in 0..me.config.instances {
            me.spawn(i).await?;
        }
        Ok(me)
    }

    async fn spawn(&self, i: usize) -> anyhow::Result<()> {
        let name = Instances::name(i);
        let log = self.config.logs.join(format!("{name}.log"));
        let mut args = self.config.store.server_args();
        let timeout = self.config.gateway_timeout.as_millis().to_string();
        args.extend(["--instance".into(), name.clone(), "--gateway".into(), self.gateway.clone()]);
        args.extend(["--gateway-timeout-ms".into(), timeout]);
        if let Some(rate) = self.config.gateway_rate {
            args.extend(["--gateway-rate".into(), rate.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (child, addr) = server_process::spawn_server(&self.config.server, &args, "whsec_chaos", Some(&log))
            .await
            .with_context(|| format!("instance {name}"))?;
        self.children.lock().await[i] = Some(child);
        *self.addrs[i].write().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        Ok(())
    }

    fn addr(&self, i: usize) -> Option<SocketAddr> {
        *self.addrs[i].read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the instance's `palisade_saga_events_total{event="taken_over"}` into the running total; what it
    /// counted before is subtracted by the caller through `seen`.
    async fn scrape_recoveries(&self, i: usize) -> Option<u64> {
        let addr = self.addr(i)?;
        let res = request(addr, "GET", "/metrics", &[], "", Duration::from_secs(2)).await.ok()?;
        let text = String::from_utf8_lossy(&res.body).into_owned();
        Some(
            text.lines()
                .filter(|l| l.starts_with("palisade_saga_events_total") && l.contains("event=\"taken_over\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .map(|v| v as u64)
                .sum(),
        )
    }

    /// SIGKILL, then a restart under the same name after `downtime`.
    async fn kill_and_restart(&self, i: usize, downtime: Duration) -> anyhow::Result<()> {
        if let Some(n) = self.scrape_recoveries(i).await {
            self.recoveries.fetch_add(n, Ordering::Relaxed);
        }
        *self.addrs[i].write().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(mut child) = self.children.lock().await[i].take() {
            child.start_kill().context("SIGKILL")?;
            let _ = child.wait().await;
        }
        tokio::time::sleep(downtime).await;
        self.spawn(i).await
    }

    /// Reads every live instance's take-overs, then stops them all.
    async fn stop(&self) {
        for i in 0..self.config.instances {
            if let Some(n) = self.scrape_recoveries(i).await {
                self.recoveries.fetch_add(n, Ordering::Relaxed);
            }
        }
        for child in self.children.lock().await.iter_mut().flatten() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP/1.1, one connection per request (what a client that gives up and comes back does anyway).

/// An answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem type without its `urn:palisade:problem:` prefix, `""` when none.
    fn problem(&self) -> String {
        let doc = self.json();
        let t = doc["type"].as_str().unwrap_or_default();
        t.rsplit(':').next().unwrap_or_default().to_owned()
    }
}

/// Sends one request and reads the whole answer within `timeout`.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nhost: chaos\r\nconnection: close\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw =
        tokio::time::timeout(timeout, exchange).await.map_err(|_| anyhow::anyhow!("no answer in {timeout:?}"))??;
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the connection closed before a whole head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok());
    let status: u16 = status.context("a status line")?;
    let (mut retry_after, mut chunked, mut length) = (None, false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "retry-after" => retry_after = value.parse().ok().map(Duration::from_secs),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => length = value.parse::<usize>().ok(),
            _ => {}
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).context("a chunked body")?;
    } else if let Some(n) = length {
        anyhow::ensure!(body.len() >= n, "the connection closed before the whole body");
        body.truncate(n);
    }
    Ok(Answer { status, retry_after, body })
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).ok()?.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The clients.

/// Counters the clients share.
#[derive(Default)]
struct Traffic {
    requests: AtomicU64,
    retries: AtomicU64,
    duplicates: AtomicU64,
    connection_errors: AtomicU64,
    answered: AtomicUsize,
}

/// What a client does with an answer.
enum Verdict {
    Final,
    Retry(Option<Duration>),
}

fn verdict(a: &Answer) -> Verdict {
    match (a.status, a.problem().as_str()) {
        (201 | 402, _) | (409, "checkout_compensated" | "order_exists") => Verdict::Final,
        // The client's requests are valid: these are final (and checked as violations).
        (400 | 404 | 413 | 422, _) => Verdict::Final,
        // 409 in flight or in progress, 429, 5xx: the same request later.
        _ => Verdict::Retry(a.retry_after),
    }
}

async fn run_checkout(c: Checkout, instances: &Instances, traffic: &Traffic, config: &Config, seed: u64) -> Seen {
    let k = config.instances;
    let mut rng = Rng::new(seed);
    let primary = rng.below(k as u64) as usize;
    let body = c.body();
    let headers = [("idempotency-key", c.key.as_str())];
    let seen = Mutex::new(Seen::default());
    let record = |a: &Answer| {
        seen.lock().unwrap_or_else(|e| e.into_inner()).answers.push((a.status, a.problem(), a.json()));
    };
    let impatience = Duration::from_millis(rng.below(30));
    let duplicate = async {
        if !c.duplicate || k < 2 {
            return;
        }
        // Impatient: a few ms after the first, to another instance, with the same key.
        tokio::time::sleep(impatience).await;
        let Some(addr) = instances.addr((primary + 1) % k) else { return };
        traffic.duplicates.fetch_add(1, Ordering::Relaxed);
        traffic.requests.fetch_add(1, Ordering::Relaxed);
        seen.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
        if let Ok(a) = request(addr, "POST", "/v1/checkouts", &headers, &body, config.client_timeout).await
            && matches!(verdict(&a), Verdict::Final)
        {
            record(&a);
        }
    };
    let main = async {
        let started = Instant::now();
        let mut target = primary;
        for attempt in 0u32.. {
            if started.elapsed() > config.give_up {
                seen.lock().unwrap_or_else(|e| e.into_inner()).gave_up = true;
                return;
            }
            if attempt > 0 {
                traffic.retries.fetch_add(1, Ordering::Relaxed);
            }
            traffic.requests.fetch_add(1, Ordering::Relaxed);
            seen.lock().unwrap_or_else(|e| e.into_inner()).requests += 1;
            let hint = match instances.addr(target) {
                None => {
                    target = (target + 1) % k;
                    None
                }
                Some(addr) => {
                    match request(addr, "POST", "/v1/checkouts", &headers, &body, config.client_timeout).await {
                        Ok(a) => match verdict(&a) {
                            Verdict::Final => {
                                record(&a);
                                return;
                            }
                            Verdict::Retry(hint) => hint,
                        },
                        Err(_) => {
                            traffic.connection_errors.fetch_add(1, Ordering::Relaxed);
                            // A killed instance refuses connections: the next attempt goes to another.
                            target = (target + 1) % k;
                            None
                        }
                    }
                }
            };
            let backoff = Duration::from_millis(50 << attempt.min(5)).min(Duration::from_secs(2));
            let jittered = backoff / 2 + Duration::from_millis(rng.below(backoff.as_millis() as u64 / 2 + 1));
            tokio::time::sleep(hint.map_or(jittered, |h| h.max(jittered))).await;
        }
    };
    tokio::join!(main, duplicate);
    traffic.answered.fetch_add(1, Ordering::Relaxed);
    seen.into_inner().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------------------------
// The run.

/// Runs the scenario and checks what happened. `Err` only when the run itself could not happen (a store or
/// server that does not start); broken promises are [`Report::violations`].
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let wall = Instant::now();
    let config = Arc::new(config);
    let mut sim = SimServer::builder()
        .seed(config.seed)
        .latency(config.latency)
        // A held request outlasts the servers' gateway timeout, so theirs fires (Unknown) as with a real hang.
        .timeout_hold(config.gateway_timeout * 3);
    for &(fault, rate) in &config.faults {
        sim = sim.fault(fault, rate);
    }
    let (sim, sim_task) = sim.bind("127.0.0.1:0").await.context("binding the simulator")?.spawn();
    let log = config.store.saga_log().await.context("opening the saga log")?;
    let instances = Instances::start(config.clone(), sim.base_url()).await?;

    let checkouts: Vec<Checkout> = {
        let mut rng = Rng::new(config.seed);
        (0..config.checkouts)
            .map(|i| {
                let mut c = Checkout::nth(config.seed, i);
                c.duplicate = (rng.below(10_000) as f64) < config.duplicates * 10_000.0;
                c
            })
            .collect()
    };
    let traffic = Arc::new(Traffic::default());

    // The kills: at seeded points (a share of the checkouts answered), one at a time.
    let killer = {
        let (instances, traffic, config) = (instances.clone(), traffic.clone(), config.clone());
        let mut rng = Rng::new(config.seed ^ 0x6b11);
        let mut plan: Vec<(usize, usize, Duration, Duration)> = (0..config.kills)
            .map(|_| {
                let at = config.checkouts * (5 + rng.below(80) as usize) / 100;
                let who = rng.below(config.instances as u64) as usize;
                (at, who, Duration::from_millis(rng.below(50)), Duration::from_millis(200 + rng.below(1_300)))
            })
            .collect();
        plan.sort_by_key(|p| p.0);
        tokio::spawn(async move {
            let mut kills = 0;
            for (at, who, jitter, downtime) in plan {
                while traffic.answered.load(Ordering::Relaxed) < at {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(jitter).await;
                if config.progress {
                    eprintln!("chaos: SIGKILL {} after {at} checkouts; restart in {downtime:?}", Instances::name(who));
                }
                instances.kill_and_restart(who, downtime).await?;
                kills += 1;
            }
            Ok::<usize, anyhow::Error>(kills)
        })
    };

    // The outages: at seeded points, a burst of failing gateway requests.
    let outages = {
        let (sim, traffic, config) = (sim.clone(), traffic.clone(), config.clone());
        let mut rng = Rng::new(config.seed ^ 0x07a6e);
        let mut plan: Vec<usize> =
            (0..config.outages).map(|_| config.checkouts * (10 + rng.below(70) as usize) / 100).collect();
        plan.sort_unstable();
        tokio::spawn(async move {
            for at in plan {
                while traffic.answered.load(Ordering::Relaxed) < at {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if config.progress {
                    eprintln!("chaos: gateway outage after {at} checkouts ({OUTAGE_REQUESTS} failing requests)");
                }
                sim.script((0..OUTAGE_REQUESTS).map(|_| {
                    Some(match rng.below(20) {
                        0..7 => HttpFault::LostResponse,
                        7..14 => HttpFault::Error5xx,
                        14..19 => HttpFault::Refused,
                        _ => HttpFault::Timeout,
                    })
                }));
            }
        })
    };

    // The clients: `concurrency` workers over the checkouts.
    let next = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Vec<Mutex<Seen>>> = Arc::new((0..checkouts.len()).map(|_| Mutex::new(Seen::default())).collect());
    let checkouts = Arc::new(checkouts);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency.max(1) {
        let (next, seen, checkouts, instances, traffic, config) =
            (next.clone(), seen.clone(), checkouts.clone(), instances.clone(), traffic.clone(), config.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = checkouts.get(i) else { return };
                let s = run_checkout(c.clone(), &instances, &traffic, &config, config.seed ^ ((i as u64) << 20)).await;
                *seen[i].lock().unwrap_or_else(|e| e.into_inner()) = s;
            }
        });
    }
    let progress = {
        let (traffic, config) = (traffic.clone(), config.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if config.progress {
                    let done = traffic.answered.load(Ordering::Relaxed);
                    eprintln!("chaos: {done}/{} checkouts answered", config.checkouts);
                }
            }
        })
    };
    while let Some(r) = workers.join_next().await {
        r.context("a client task panicked")?;
    }
    let clients_time = wall.elapsed();
    let kills = killer.await.context("the killer task panicked")??;
    outages.abort();
    progress.abort();

    // Every saga ends: recovery finishes what the killed instances left (bounded).
    let settle = Instant::now();
    let ids: Vec<String> = checkouts.iter().map(|c| c.order_id.clone()).collect();
    let mut records = read_sagas(&log, &ids).await?;
    while records.values().any(|r| matches!(r.state, SagaState::Running | SagaState::Compensating))
        && settle.elapsed() < config.settle
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        records = read_sagas(&log, &ids).await?;
    }
    let settle_time = settle.elapsed();
    instances.stop().await;
    let ledger = sim.sim().ledger();
    sim_task.abort();

    let seen: Vec<Seen> = Arc::try_unwrap(seen)
        .map_or_else(|_| Vec::new(), |v| v.into_iter().map(|m| m.into_inner().unwrap_or_default()).collect());
    let mut report = Report {
        seed: config.seed,
        store: config.store.name().to_owned(),
        instances: config.instances,
        checkouts: config.checkouts,
        requests: traffic.requests.load(Ordering::Relaxed),
        retries: traffic.retries.load(Ordering::Relaxed),
        duplicates: traffic.duplicates.load(Ordering::Relaxed),
        connection_errors: traffic.connection_errors.load(Ordering::Relaxed),
        faults: sim.injected().to_vec(),
        gateway_calls: sim.sim().calls(),
        kills,
        recoveries: instances.recoveries.load(Ordering::Relaxed),
        clients_time,
        settle_time,
        logs: config.logs.clone(),
        ..Report::default()
    };
    let notes = read_notes(config.store.lease_store()?, &records).await?;
    check(&mut report, &checkouts, &seen, &records, &notes, &ledger)?;
    report.wall_time = wall.elapsed();
    Ok(report)
}

/// Removes what a run left in `store` (its keys, or its schema); errors are printed, not returned.
pub async fn remove(store: &Store) {
    let result = async {
        match store {
            Store::Redis { url, prefix } => {
                let mut conn = redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    if !keys.is_empty() {
                        redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            // Its keys stay (the saga log's have no TTL): SCAN would have to visit every master; see
            // docs/reliability.md for the command.
            Store::RedisCluster { .. } => {}
            Store::Postgres { url, prefix } => {
                let schema = prefix.split('.').next().unwrap_or_default();
                let pool = sqlx::PgPool::connect(url).await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await?;
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    if let Err(e) = result.await {
        eprintln!("chaos: could not remove the run's data from {}: {e:#}", store.name());
    }
}

/// Every order's saga record (absent: never started).
async fn read_sagas(log: &Arc<dyn SagaLog>, ids: &[String]) -> anyhow::Result<HashMap<String, SagaRecord>> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let mut reads = tokio::task::JoinSet::new();
        for id in chunk {
            let (log, id) = (log.clone(), id.clone());
            reads.spawn(async move { log.get(&id).await.map(|r| (id, r)) });
        }
        while let Some(r) = reads.join_next().await {
            let (id, record) = r?.context("reading the saga log")?;
            if let Some(record) = record {
                out.insert(id, record);
            }
        }
    }
    Ok(out)
}

/// The payment notes examples/server's compensations write (`voided:<auth>`, `refunded:<auth>`, `none`), for the
/// compensated orders.
async fn read_notes(
    store: Arc<dyn LeaseStore>,
    records: &HashMap<String, SagaRecord>,
) -> anyhow::Result<HashMap<String, String>> {
    let ids: Vec<String> =
        records.values().filter(|r| r.state == SagaState::Compensated).map(|r| r.id.clone()).collect();
    let mut out = HashMap::new();
    for chunk in ids.chunks(64) {
        let mut reads = tokio::task::JoinSet::new();
        for id in chunk {
            let (store, id) = (store.clone(), id.clone());
            reads.spawn(async move { store.get(&format!("inventory:payment:{id}")).await.map(|r| (id, r)) });
        }
        while let Some(r) = reads.join_next().await {
            if let (id, Some(Record::Done { response, .. })) = r?.context("reading the payment notes")? {
                out.insert(id, String::from_utf8_lossy(&response.to_bytes()).into_owned());
            }
        }
    }
    Ok(out)
}

/// The outputs of a saga's completed steps, in its latest run (a restarted saga's runs before it were compensated).
fn outputs(record: &SagaRecord) -> HashMap<&str, &Value> {
    let latest = record.events.iter().rposition(|e| matches!(e, Event::Restarted { .. })).map_or(0, |i| i + 1);
    record.events[latest..]
        .iter()
        .filter_map(|e| match e {
            Event::StepDone { step, output } => Some((step.as_str(), output)),
            _ => None,
        })
        .collect()
}

fn minor(entry: &LedgerEntry) -> i64 {
    entry.amount.to_minor().unwrap_or_default()
}

/// The checks; fills the report's figures and violations.
fn check(
    report: &mut Report,
    checkouts: &[Checkout],
    seen: &[Seen],
    records: &HashMap<String, SagaRecord>,
    notes: &HashMap<String, String>,
    ledger: &[LedgerEntry],
) -> anyhow::Result<()> {
    let v = &mut report.violations;
    let mut by_order: HashMap<&str, Vec<&LedgerEntry>> = HashMap::new();
    for e in ledger {
        *report.ledger.entry(e.operation.to_string()).or_default() += 1;
        by_order.entry(e.order_id.as_str()).or_default().push(e);
    }
    let known: std::collections::HashSet<&str> = checkouts.iter().map(|c| c.order_id.as_str()).collect();
    for order in by_order.keys().filter(|o| !known.contains(*o)) {
        v.push(format!("{order}: gateway operations for an order no client sent"));
    }
    // The two sides of the reconciliation, by authorization id: the servers' view (saga log and payment notes)
    // and the gateway's (ledger).
    let mut internal = String::from("id,amount,currency,status,created_at\n");
    let mut gateway = internal.clone();
    const AT: &str = "2026-01-01T00:00:00Z";

    for (c, s) in checkouts.iter().zip(seen) {
        let o = c.order_id.as_str();
        let entries = by_order.get(o).map(Vec::as_slice).unwrap_or_default();
        let of = |op: Operation| entries.iter().filter(move |e| e.operation == op).copied().collect::<Vec<_>>();
        let (auths, caps, voids, refunds, charges) = (
            of(Operation::Authorize),
            of(Operation::Capture),
            of(Operation::Void),
            of(Operation::Refund),
            of(Operation::Charge),
        );

        // What the clients saw.
        if let Some((status, problem, _)) = s.answers.first() {
            let kind = if problem.is_empty() { status.to_string() } else { format!("{status} {problem}") };
            *report.answers.entry(kind).or_default() += 1;
        } else if s.gave_up {
            *report.answers.entry("gave up".into()).or_default() += 1;
        }
        let mut finals: Vec<(u16, &str)> = s.answers.iter().map(|a| (a.0, a.1.as_str())).collect();
        finals.dedup();
        if finals.len() > 1 {
            v.push(format!("{o}: different final answers for one key: {finals:?}"));
        }
        for (status, problem, _) in &s.answers {
            if matches!(status, 400 | 404 | 413 | 422) || (*status == 409 && problem == "order_exists") {
                v.push(format!("{o}: a valid retry was refused: {status} {problem}"));
            }
        }

        // Money at the gateway.
        if auths.len() > 1 {
            v.push(format!(
                "{o}: duplicate charge: {} authorizations ({:?})",
                auths.len(),
                auths.iter().map(|e| &e.gateway_key).collect::<Vec<_>>()
            ));
        }
        if caps.len() > 1 {
            v.push(format!("{o}: duplicate charge: captured {} times", caps.len()));
        }
        if !charges.is_empty() {
            v.push(format!("{o}: {} direct charges (checkouts authorize and capture)", charges.len()));
        }
        let captured: i64 = caps.iter().map(|e| minor(e)).sum();
        let refunded: i64 = refunds.iter().map(|e| minor(e)).sum();
        if matches!(c.shape, Shape::Declined | Shape::FraudBlocked | Shape::OutOfStock) && !entries.is_empty() {
            v.push(format!("{o}: a {:?} checkout moved money at the gateway: {entries:?}", c.shape));
        }

        // The saga.
        let record = records.get(o);
        let state = record.map_or("never started", |r| r.state.as_str());
        *report.sagas.entry(state.to_owned()).or_default() += 1;
        let Some(record) = record else {
            if !entries.is_empty() || s.succeeded() {
                v.push(format!(
                    "{o}: no saga, but {} gateway operations, client saw success: {}",
                    entries.len(),
                    s.succeeded()
                ));
            }
            continue;
        };
        let out = outputs(record);
        match record.state {
            SagaState::Completed => {
                let auth = out.get("authorize").and_then(|v| v.as_str());
                if auths.len() != 1 || caps.len() != 1 || !voids.is_empty() || !refunds.is_empty() {
                    v.push(format!(
                        "{o}: completed, but the gateway has {} authorizations, {} captures, {} voids, {} refunds",
                        auths.len(),
                        caps.len(),
                        voids.len(),
                        refunds.len()
                    ));
                } else if Some(caps[0].payment_id.as_str()) != auth || captured != c.cents {
                    v.push(format!("{o}: completed with authorization {auth:?} for {} cents, but the gateway captured {} for {} cents", c.cents, caps[0].payment_id, captured));
                }
                if c.shape != Shape::Pays {
                    v.push(format!("{o}: a {:?} checkout completed", c.shape));
                }
            }
            SagaState::Compensated => {
                if s.succeeded() {
                    v.push(format!("{o}: a client saw 201, but the saga was compensated"));
                }
                if !caps.is_empty() && (refunded != captured || !voids.is_empty()) {
                    v.push(format!(
                        "{o}: compensated, but captured {captured} cents and refunded {refunded} ({} voids)",
                        voids.len()
                    ));
                } else if caps.is_empty() && !auths.is_empty() && voids.len() != auths.len() {
                    v.push(format!(
                        "{o}: compensated, but its authorization was never voided (lost charge hold): {entries:?}"
                    ));
                }
            }
            other => v.push(format!("{o}: saga {other} after {:?} of waiting", report.settle_time)),
        }
        if s.succeeded() && record.state != SagaState::Completed {
            v.push(format!("{o}: a client saw 201, but the saga is {}", record.state));
        }
        for (status, _, body) in &s.answers {
            if *status == 201 && body["charge_id"].as_str() != caps.first().map(|e| e.payment_id.as_str()) {
                v.push(format!(
                    "{o}: the client's 201 names charge {}, the gateway captured {:?}",
                    body["charge_id"],
                    caps.first().map(|e| &e.payment_id)
                ));
            }
        }

        // The servers' view, by authorization: a completed order's was captured; a compensated order's payment
        // note says what its compensation did (and names an authorization whose answer was lost).
        let auth = out.get("authorize").and_then(|v| v.as_str());
        let (id, status) = match (record.state, notes.get(o).map(String::as_str)) {
            (SagaState::Completed, _) => (auth.map(str::to_owned), "succeeded"),
            (SagaState::Compensated, Some(note)) => match note.split_once(':') {
                Some(("voided", a)) => (Some(a.to_owned()), "canceled"),
                Some(("refunded", a)) => (Some(a.to_owned()), "refunded"),
                _ => (None, ""),
            },
            (SagaState::Compensated, None) => {
                if auth.is_some() {
                    v.push(format!("{o}: compensated after an authorization, with no payment note"));
                }
                (None, "")
            }
            _ => (None, ""),
        };
        if let Some(id) = id {
            internal.push_str(&format!("{id},{},USD,{status},{AT}\n", c.amount()));
        }
    }
    // The gateway's view: one row per authorization, with where its money ended.
    for e in ledger.iter().filter(|e| e.operation == Operation::Authorize) {
        let on = |op: Operation| ledger.iter().filter(move |x| x.operation == op && x.payment_id == e.payment_id);
        let captured: i64 = on(Operation::Capture).map(minor).sum();
        let refunded: i64 = on(Operation::Refund).map(minor).sum();
        let status = if on(Operation::Void).next().is_some() {
            "canceled"
        } else if captured > 0 && refunded == captured {
            "refunded"
        } else if captured > 0 && refunded > 0 {
            "partially_refunded"
        } else if captured > 0 {
            "succeeded"
        } else {
            "authorized"
        };
        let amount = if captured > 0 { captured } else { minor(e) };
        gateway.push_str(&format!("{},{}.{:02},USD,{status},{AT}\n", e.payment_id, amount / 100, amount % 100));
    }
    let recon = Reconciler::builder().as_of(1_798_761_600).lag(Duration::ZERO).build().reconcile(
        CanonicalCsv::from_reader("servers (saga log, payment notes)", Cursor::new(internal.into_bytes()))?,
        CanonicalCsv::from_reader("simulator (ledger)", Cursor::new(gateway.into_bytes()))?,
    )?;
    report.reconciled = recon.matched;
    for d in &recon.discrepancies {
        *report.discrepancies.entry(d.kind.to_string()).or_default() += 1;
        if d.kind != Kind::Pending {
            report.violations.push(format!(
                "{}: reconciliation: {}",
                d.id,
                serde_json::to_string(d).unwrap_or_default()
            ));
        }
    }
    Ok(())
}
