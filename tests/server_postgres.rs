//! Issue 19, against examples/server on PostgreSQL.
//!
//! In process: a charge writes exactly one `orders` row and one idempotency record, in one transaction; a
//! duplicate replays; a transaction dropped between the order row and the record (the test hook
//! `Orders::crash_next_after_insert`) leaves no order and a released claim, so the retry charges once.
//!
//! With real processes (the server binary, built by `cargo build --example server`): a server on PostgreSQL
//! answers a charge, is killed with SIGKILL and started again, and the same key and payload replay the stored
//! charge; the same scenario on a Redis without persistence (`--save '' --appendonly no`), killed and restarted
//! with the server, loses the record and charges again: the documented reason to choose PostgreSQL.
//!
//! Each test works in a schema (or Redis key prefix) of its own. Without PostgreSQL (or redis-server) a test
//! says SKIPPED loudly, or fails when `PALISADE_REQUIRE_POSTGRES=1` (`PALISADE_REQUIRE_REDIS=1`).

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/charges.rs"]
mod charges;
#[path = "../examples/server/ledger.rs"]
mod ledger;

#[path = "support/server_process.rs"]
mod server_process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use palisade::core::IdempotencyKey;
use palisade::idempotency::{LeaseStore, PostgresStore, Record, storage_key};
use palisade::sim::GatewaySim;
use palisade_testkit::PostgresTest;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tower::ServiceExt;

fn body(order: &str) -> String {
    format!(r#"{{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"{order}"}}"#)
}

// ---------------------------------------------------------------------------------------------------------------
// In process.

struct InProcess {
    pg: PostgresTest,
    store: PostgresStore,
    orders: charges::Orders,
    app: Router,
    sim: GatewaySim,
}

async fn in_process(name: &str) -> Option<InProcess> {
    let pg = palisade_testkit::postgres(name).await?;
    let store = PostgresStore::new(pg.pool.clone()).with_prefix(&pg.prefix()).unwrap();
    store.migrate().await.unwrap();
    let orders = charges::Orders::create(store.clone(), Some(&pg.prefix())).await.unwrap();
    assert_eq!(orders.table(), format!("{}.orders", pg.schema));
    let sim = GatewaySim::new();
    let app = app::router_with_orders(sim.clone(), store.clone(), Some(orders.clone()));
    Some(InProcess { pg, store, orders, app, sim })
}

impl InProcess {
    async fn post(&self, key: &str, order: &str) -> (StatusCode, http::HeaderMap, Value) {
        let req = Request::post("/v1/charges")
            .header("Idempotency-Key", key)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body(order)))
            .unwrap();
        let (parts, body) = self.app.clone().oneshot(req).await.unwrap().into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The order rows of `order`: (idempotency key, amount, currency, gateway charge id).
    async fn orders_for(&self, order: &str) -> Vec<(String, String, String, String)> {
        let sql = format!(
            "SELECT idempotency_key, amount::text, currency, gateway_charge_id FROM {} WHERE order_ref = $1",
            self.orders.table()
        );
        sqlx::query_as(&sql).bind(order).fetch_all(&self.pg.pool).await.unwrap()
    }

    async fn record(&self, key: &str) -> Option<Record> {
        self.store.get(&storage_key(None, &IdempotencyKey::new(key).unwrap())).await.unwrap()
    }

    async fn records(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM {}leases", self.pg.prefix());
        sqlx::query_scalar(&sql).fetch_one(&self.pg.pool).await.unwrap()
    }
}

#[tokio::test]
async fn a_charge_on_postgres_writes_one_order_and_one_record_and_duplicates_replay() {
    let Some(t) = in_process("server_pg_charge").await else { return };
    let (status, headers, charge) = t.post("k-pg-1", "o-pg-1").await;
    assert_eq!(status, StatusCode::CREATED, "{charge}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = charge["id"].as_str().unwrap().to_owned();
    assert_eq!(headers[header::LOCATION], format!("/v1/charges/{id}"));
    assert_eq!(
        t.orders_for("o-pg-1").await,
        vec![("k-pg-1".to_owned(), "12.34".to_owned(), "USD".to_owned(), id.clone())],
        "one order row, with the charge's key, amount and gateway id"
    );
    assert!(matches!(t.record("k-pg-1").await, Some(Record::Done { .. })), "the record is done");
    assert_eq!(t.records().await, 1, "one idempotency record");

    // A duplicate replays the stored answer: same status, Location and body; no second order, no second charge.
    let (status, again, replayed) = t.post("k-pg-1", "o-pg-1").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["idempotent-replayed"], "true");
    assert_eq!(again[header::LOCATION], headers[header::LOCATION]);
    assert_eq!(replayed, charge);
    assert_eq!(t.orders_for("o-pg-1").await.len(), 1);
    assert_eq!(t.records().await, 1);
    assert_eq!(t.sim.charges_for("o-pg-1").len(), 1, "charged once");
    t.pg.cleanup().await;
}

#[tokio::test]
async fn a_transaction_killed_between_the_order_and_the_record_leaves_no_order_and_a_released_claim() {
    let Some(t) = in_process("server_pg_killed_tx").await else { return };
    t.orders.crash_next_after_insert();
    let (status, _, problem) = t.post("k-pg-2", "o-pg-2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(t.orders_for("o-pg-2").await.is_empty(), "the order row rolled back");
    match t.record("k-pg-2").await {
        Some(Record::Held { lease_remaining, .. }) => {
            assert_eq!(lease_remaining, Duration::ZERO, "released: a retry executes at once")
        }
        other => panic!("the claim must be released, neither completed nor left held: {other:?}"),
    }

    // The retry executes (not a replay, not a 409), and the order and the record commit together. The gateway
    // deduplicates on the same gateway key, so the charge made before the crash is not made twice.
    let (status, headers, charge) = t.post("k-pg-2", "o-pg-2").await;
    assert_eq!(status, StatusCode::CREATED, "{charge}");
    assert!(headers.get("idempotent-replayed").is_none());
    let id = charge["id"].as_str().unwrap().to_owned();
    assert_eq!(t.orders_for("o-pg-2").await.len(), 1);
    assert_eq!(t.orders_for("o-pg-2").await[0].3, id);
    assert!(matches!(t.record("k-pg-2").await, Some(Record::Done { .. })));
    assert_eq!(t.sim.charges_for("o-pg-2").len(), 1, "authorized once, before and after the crash");

    let (status, headers, replayed) = t.post("k-pg-2", "o-pg-2").await;
    assert_eq!((status, &headers["idempotent-replayed"]), (StatusCode::CREATED, &"true".parse().unwrap()));
    assert_eq!(replayed, charge);
    assert_eq!(t.orders_for("o-pg-2").await.len(), 1, "one order");
    t.pg.cleanup().await;
}

/// The router without orders (what the server runs on memory and Redis) on a PostgreSQL store: the handler
/// writes no order, and the layer stores the answer after the handler, as before the orders table existed.
#[tokio::test]
async fn without_orders_the_layer_stores_the_answer_after_the_handler() {
    let Some(t) = in_process("server_pg_no_orders").await else { return };
    let plain = InProcess { app: app::router(t.sim.clone(), t.store.clone()), ..t };
    let (status, _, charge) = plain.post("k-pg-3", "o-pg-3").await;
    assert_eq!(status, StatusCode::CREATED, "{charge}");
    assert!(plain.orders_for("o-pg-3").await.is_empty(), "no order row without orders");
    assert!(matches!(plain.record("k-pg-3").await, Some(Record::Done { .. })));
    let (_, headers, replayed) = plain.post("k-pg-3", "o-pg-3").await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replayed, charge);
    plain.pg.cleanup().await;
}

// ---------------------------------------------------------------------------------------------------------------
// Real processes.

/// A running server process; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts the server on a free port with `args`, and waits (up to 60 s) for its "listening on" line.
    async fn start(args: &[&str]) -> Server {
        let (child, addr) = server_process::start_server(args, "whsec_server_postgres_test").await;
        Server { child, addr }
    }

    /// SIGKILL: no shutdown, no flushing, nothing in memory survives.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// A response, read from a `Connection: close` exchange.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
}

async fn http(addr: SocketAddr, head: &str, body: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{head}\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.expect("answered").unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: serde_json::from_str(body).unwrap_or(Value::Null) }
}

async fn post_charge(addr: SocketAddr, key: &str, order: &str) -> Answer {
    let head = format!("POST /v1/charges HTTP/1.1\r\nIdempotency-Key: {key}\r\nContent-Type: application/json");
    http(addr, &head, &body(order)).await
}

/// What the server's (in-process, so per-process) simulated gateway executed for `order`.
async fn ledger_for(addr: SocketAddr, order: &str) -> Vec<Value> {
    let ledger = http(addr, "GET /v1/_sim/ledger HTTP/1.1", "").await;
    assert_eq!(ledger.status, 200);
    ledger.body.as_array().unwrap().iter().filter(|e| e["order_id"] == order).cloned().collect()
}

#[tokio::test]
async fn a_server_on_postgres_killed_with_sigkill_replays_the_charge_after_restart() {
    let Some(pg) = palisade_testkit::postgres("server_pg_durability").await else { return };
    let prefix = pg.prefix();
    let args = ["--postgres", pg.url.as_str(), "--postgres-prefix", prefix.as_str()];

    let first = Server::start(&args).await;
    let charged = post_charge(first.addr, "k-durable", "o-durable").await;
    assert_eq!(charged.status, 201, "{charged:?}");
    assert_eq!(ledger_for(first.addr, "o-durable").await.len(), 2, "authorized and captured");
    first.kill().await;

    let second = Server::start(&args).await;
    let again = post_charge(second.addr, "k-durable", "o-durable").await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(again.headers.get("idempotent-replayed").map(String::as_str), Some("true"), "{again:?}");
    assert_eq!(again.body, charged.body, "the stored charge, same id");
    assert_eq!(again.headers.get("location"), charged.headers.get("location"));
    // The new process's simulated gateway starts empty: the replay never reached it.
    assert!(ledger_for(second.addr, "o-durable").await.is_empty(), "replayed, not executed again");
    let orders: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.orders WHERE order_ref = $1", pg.schema))
        .bind("o-durable")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(orders, 1, "one order row");
    second.kill().await;
    pg.cleanup().await;
}

/// A private `redis-server` without persistence, as most caches run; killed with SIGKILL on drop.
struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    /// `None` (after a loud SKIPPED, or a panic when `PALISADE_REQUIRE_REDIS=1`) when redis-server cannot run.
    async fn start(port: u16) -> Option<PrivateRedis> {
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if palisade_testkit::redis_required() => panic!("PALISADE_REQUIRE_REDIS=1 but redis-server: {e}"),
            Err(e) => {
                eprintln!("\n!!!!! SKIPPED server_redis_restart: no redis-server on PATH ({e}) !!!!!\n");
                return None;
            }
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ping = async {
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            if ping.await.is_ok() {
                return Some(PrivateRedis { child });
            }
            assert!(tokio::time::Instant::now() < deadline, "redis-server on port {port} does not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

#[tokio::test]
async fn a_server_on_redis_without_persistence_charges_again_after_both_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(redis) = PrivateRedis::start(port).await else { return };
    let url = format!("redis://127.0.0.1:{port}");
    let args = ["--redis", url.as_str()];

    let first = Server::start(&args).await;
    let charged = post_charge(first.addr, "k-volatile", "o-volatile").await;
    assert_eq!(charged.status, 201, "{charged:?}");
    first.kill().await;
    redis.kill().await;

    let redis = PrivateRedis::start(port).await.expect("redis-server ran a moment ago");
    let second = Server::start(&args).await;
    let again = post_charge(second.addr, "k-volatile", "o-volatile").await;
    assert_eq!(again.status, 201, "{again:?}");
    assert!(!again.headers.contains_key("idempotent-replayed"), "the record is lost: executed again, {again:?}");
    assert_eq!(ledger_for(second.addr, "o-volatile").await.len(), 2, "the gateway was called again");
    second.kill().await;
    redis.kill().await;
}

#[tokio::test]
async fn redis_and_postgres_together_are_refused() {
    let bin = tokio::task::spawn_blocking(server_process::server_binary).await.unwrap();
    let out = Command::new(bin)
        .args(["--redis", "redis://127.0.0.1:1", "--postgres", "postgres://postgres@127.0.0.1:1/postgres"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
