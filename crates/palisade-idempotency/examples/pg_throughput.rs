//! Throughput of `PostgresStore` at N concurrent callers (issue 19, "Speed"), to compare with `pgbench` running
//! the same statements (`bench/postgres/run.sh` runs both, alternating).
//!
//! ```text
//! cargo run --release -p palisade-idempotency --features postgres --example pg_throughput -- --clients 50 --seconds 10
//! ```
//!
//! Modes (`--mode`, default `all`, which runs `new`, `replay`, `tx` in turn):
//! - `new`: claim of a fresh key + `complete` (a new request; the claim's INSERT returns the token).
//! - `replay`: claim of a completed key (the claim's INSERT returns nothing, then its SELECT reads the answer).
//! - `tx`: claim of a fresh key, then `pool.begin()`, INSERT one row into `palisade_bench.orders`,
//!   `complete_in` on that transaction, COMMIT (the transactional completion).
//! - `order`: the same writes as `tx` without the transaction: claim, INSERT the order, `complete` (each
//!   statement its own commit), to show what the transaction itself changes.
//!
//! Works in the schema `palisade_bench` (store prefix `palisade_bench.palisade_`); migrates it, and creates the
//! replay rows and the orders table from `bench/postgres/setup.sql` when they are missing (`--reset` always
//! applies that file: empties the table, re-creates the replay rows). Prints one line per mode:
//! `<mode>: <rate> ops/s (<count> in <secs> s, <clients> clients, <errors> errors)`.
//!
//! The pool has `--clients` connections, all opened before the clock starts, and `test_before_acquire(false)`:
//! sqlx's default (`true`, which `PostgresStore::connect` keeps) sends a Sync and waits for the server's answer
//! every time a connection leaves the pool, so every statement of the store costs two round trips. `--ping`
//! measures with that default.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use palisade_store::lease::{Claim, Fingerprint, LeaseStore, Payload, PostgresStore, random_attempt};
use sqlx::postgres::PgPoolOptions;

/// The schema and prefix the benchmark (and `bench/postgres/*.sql`) work in.
const PREFIX: &str = "palisade_bench.palisade_";
/// Fixture shared with pgbench: replay rows `r:1` ..= `r:REPLAY_KEYS`, the orders table.
const SETUP_SQL: &str = include_str!("../../../bench/postgres/setup.sql");
const REPLAY_KEYS: u64 = 100_000;
/// The fingerprint every request uses (`\x5a…` in the pgbench scripts and setup.sql).
const FINGERPRINT: Fingerprint = Fingerprint([0x5a; 32]);
/// The stored answer: 160 bytes, about an encoded small JSON charge with its status and headers.
const RESPONSE_LEN: usize = 160;
const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    New,
    Replay,
    Tx,
    Order,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::New => "new",
            Mode::Replay => "replay",
            Mode::Tx => "tx",
            Mode::Order => "order",
        }
    }
}

struct Args {
    url: String,
    clients: usize,
    seconds: f64,
    modes: Vec<Mode>,
    reset: bool,
    setup_only: bool,
    ping: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: pg_throughput [--url URL] [--clients N] [--seconds S] [--mode new|replay|tx|order|all] [--reset] [--setup-only] [--ping]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        url: std::env::var("PALISADE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
        clients: 50,
        seconds: 10.0,
        modes: vec![Mode::New, Mode::Replay, Mode::Tx],
        reset: false,
        setup_only: false,
        ping: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => a.url = value(),
            "--clients" => a.clients = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--mode" => {
                a.modes = match value().as_str() {
                    "new" => vec![Mode::New],
                    "replay" => vec![Mode::Replay],
                    "tx" => vec![Mode::Tx],
                    "order" => vec![Mode::Order],
                    "all" => vec![Mode::New, Mode::Replay, Mode::Tx, Mode::Order],
                    _ => usage(),
                }
            }
            "--reset" => a.reset = true,
            "--setup-only" => a.setup_only = true,
            "--ping" => a.ping = true,
            _ => usage(),
        }
    }
    if a.clients == 0 || a.seconds <= 0.0 {
        usage()
    }
    a
}

/// Runs setup.sql statement by statement (it holds VACUUM, which may not run inside the implicit transaction
/// of a multi-statement query).
async fn apply_setup(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let sql: String = SETUP_SQL.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        sqlx::raw_sql(stmt).execute(pool).await?;
    }
    Ok(())
}

/// One caller's loop for one mode until `until`; returns (operations done, errors).
async fn caller(store: PostgresStore, mode: Mode, client: usize, until: Instant, done: Arc<AtomicU64>) -> u64 {
    let response = Payload::Bytes(Bytes::from(vec![0xab_u8; RESPONSE_LEN]));
    let mut errors = 0;
    let mut n: u64 = 0;
    let mut rng = random_attempt() | 1;
    while Instant::now() < until {
        // xorshift64: a cheap per-caller random sequence.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ok = match mode {
            Mode::Replay => {
                let key = format!("r:{}", rng % REPLAY_KEYS + 1);
                matches!(store.claim(&key, &FINGERPRINT, LEASE, TTL).await, Ok(Claim::Done { .. }))
            }
            Mode::New | Mode::Tx | Mode::Order => {
                let key = format!("n:{client}:{rng}");
                match store.claim(&key, &FINGERPRINT, LEASE, TTL).await {
                    Ok(Claim::Acquired { hold, .. }) => match mode {
                        Mode::New => matches!(store.complete(&hold, response.clone(), TTL).await, Ok(true)),
                        Mode::Tx => async {
                            let mut tx = store.pool().begin().await?;
                            sqlx::query("INSERT INTO palisade_bench.orders (key, amount) VALUES ($1, $2)")
                                .bind(&key)
                                .bind(1000_i64)
                                .execute(&mut *tx)
                                .await?;
                            let completed = store
                                .complete_in(&mut tx, &hold, response.clone(), TTL)
                                .await
                                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                            tx.commit().await?;
                            Ok::<bool, sqlx::Error>(completed)
                        }
                        .await
                        .unwrap_or(false),
                        _ => {
                            let order = sqlx::query("INSERT INTO palisade_bench.orders (key, amount) VALUES ($1, $2)")
                                .bind(&key)
                                .bind(1000_i64)
                                .execute(store.pool())
                                .await;
                            order.is_ok() && matches!(store.complete(&hold, response.clone(), TTL).await, Ok(true))
                        }
                    },
                    _ => false,
                }
            }
        };
        if ok {
            n += 1;
        } else {
            errors += 1;
        }
    }
    done.fetch_add(n, Ordering::Relaxed);
    errors
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args();
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(a.clients).unwrap_or(u32::MAX))
        .min_connections(u32::try_from(a.clients).unwrap_or(u32::MAX))
        .acquire_timeout(Duration::from_secs(10))
        // sqlx's default (true) pings every connection it hands out: one more round trip per statement here.
        .test_before_acquire(a.ping)
        .connect(&a.url)
        .await?;
    let store = PostgresStore::new(pool.clone()).with_prefix(PREFIX)?;
    store.migrate().await?;
    let present: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM palisade_bench.palisade_leases WHERE key LIKE 'r:%' AND done
         AND EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'palisade_bench' AND tablename = 'orders')",
    )
    .fetch_one(&pool)
    .await?;
    if a.reset || present < i64::try_from(REPLAY_KEYS).unwrap_or(i64::MAX) {
        apply_setup(&pool).await?;
    }
    if a.setup_only {
        return Ok(());
    }
    // Open every connection before the clock starts (pgbench, too, reports its rate without connection time).
    let mut held = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        held.push(pool.acquire().await?);
    }
    drop(held);

    for mode in a.modes {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(a.seconds);
        let tasks: Vec<_> = (0..a.clients)
            .map(|client| tokio::spawn(caller(store.clone(), mode, client, until, done.clone())))
            .collect();
        let mut errors = 0;
        for t in tasks {
            errors += t.await?;
        }
        let secs = start.elapsed().as_secs_f64();
        let count = done.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let rate = count as f64 / secs;
        println!("{}: {rate:.0} ops/s ({count} in {secs:.2} s, {} clients, {errors} errors)", mode.name(), a.clients);
    }
    Ok(())
}
