//! A process that runs the checkout saga (reserve → authorize → capture → ship) on a Redis or PostgreSQL saga
//! log, so that it can be killed mid-saga and another process can take the saga over and finish it
//! (`tests/process_kill.rs` does exactly that with SIGKILL).
//!
//! ```text
//! saga_worker (--redis URL | --postgres URL) [--prefix P] --saga-id ID [--mode start|recover]
//!             [--pause-in STEP] [--lease-ms N]
//! ```
//!
//! - `--mode start` (default) starts saga ID and runs it; `--mode recover` runs recovery passes
//!   (`Orchestrator::recover`) until saga ID is finished, taking it over once its owner's lease has ended.
//! - `--pause-in STEP` (reserve, authorize, capture, ship): once that step's effect is done, the process prints
//!   `paused in STEP` and sleeps forever before the step returns, so the log says the step started and not that it
//!   ended: kill the process there.
//! - `--lease-ms N`: the orchestrator's lease (default 500 ms), so a killed owner's saga is free soon.
//!
//! The simulated gateway of the tests lives in the process and dies with it, so this example keeps its "gateway"
//! and "warehouse" effects in the same store as the log instead: each effect (reserve, authorize, capture, ship,
//! and the compensations release, void, refund) is recorded **once per idempotency key** (the step key, or the
//! compensation key), insert-if-absent, as a gateway deduplicates by key; every call is also appended to a list
//! of calls, so a test sees that a step ran twice and acted once.
//!
//! - Redis: hash `{prefix}demo:effects:{saga id}` (field `{op}:{key}`, value the effect's id) and list
//!   `{prefix}demo:calls:{saga id}` (one `op` per call).
//! - PostgreSQL: tables `{prefix}demo_effects (op, key, saga_id, id)` (primary key `(op, key)`) and
//!   `{prefix}demo_calls (n, op, saga_id)`.
//!
//! When the saga ends, the process prints `finished {state}` and exits 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::PaymentError;
use palisade_saga::log::{PostgresLog, RedisLog};
use palisade_saga::{Orchestrator, Saga, SagaLog, SagaState, Step};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

/// The saga's context.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkout {
    order: String,
    sku: String,
    amount: String,
}

/// Where the effects are recorded, deduplicated by key.
#[derive(Clone)]
enum Effects {
    Redis { conn: redis::aio::ConnectionManager, prefix: String },
    Postgres { pool: PgPool, prefix: String },
}

const RECORD_LUA: &str = r"
redis.call('RPUSH', KEYS[2], ARGV[3])
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return ARGV[2] end
return redis.call('HGET', KEYS[1], ARGV[1])
";

fn unavailable(e: impl std::fmt::Display) -> PaymentError {
    PaymentError::StoreUnavailable { message: e.to_string().into() }
}

impl Effects {
    /// Creates the PostgreSQL tables if they are not there.
    async fn migrate(&self) -> Result<(), String> {
        let Effects::Postgres { pool, prefix } = self else { return Ok(()) };
        if let Some((schema, _)) = prefix.split_once('.') {
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {prefix}demo_effects (
                 op TEXT NOT NULL, key TEXT NOT NULL, saga_id TEXT NOT NULL, id TEXT NOT NULL,
                 PRIMARY KEY (op, key));
             CREATE TABLE IF NOT EXISTS {prefix}demo_calls (
                 n BIGSERIAL PRIMARY KEY, op TEXT NOT NULL, saga_id TEXT NOT NULL);"
        );
        sqlx::raw_sql(&ddl).execute(pool).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Records a call of `op` and, unless an effect of `op` under `key` exists already, the effect; returns the
    /// effect's id (the first one's, on a repeat): the answer a gateway gives to a repeated idempotency key.
    async fn record(&self, saga_id: &str, op: &str, key: &str) -> Result<String, PaymentError> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let fresh = format!("{op}_{}_{nanos:x}", std::process::id());
        match self {
            Effects::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                redis::Script::new(RECORD_LUA)
                    .key(format!("{prefix}demo:effects:{saga_id}"))
                    .key(format!("{prefix}demo:calls:{saga_id}"))
                    .arg(format!("{op}:{key}"))
                    .arg(&fresh)
                    .arg(op)
                    .invoke_async::<String>(&mut conn)
                    .await
                    .map_err(unavailable)
            }
            Effects::Postgres { pool, prefix } => {
                let sql = format!(
                    "WITH call AS (INSERT INTO {prefix}demo_calls (op, saga_id) VALUES ($1, $3))
                     INSERT INTO {prefix}demo_effects (op, key, saga_id, id) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (op, key) DO UPDATE SET op = EXCLUDED.op RETURNING id"
                );
                sqlx::query_scalar::<_, String>(&sql)
                    .bind(op)
                    .bind(key)
                    .bind(saga_id)
                    .bind(&fresh)
                    .fetch_one(pool)
                    .await
                    .map_err(unavailable)
            }
        }
    }
}

/// The step to pause in, if any.
#[derive(Clone)]
struct World {
    effects: Effects,
    pause_in: Option<String>,
}

impl World {
    async fn effect(&self, saga_id: &str, step: &str, op: &str, key: &str) -> Result<String, PaymentError> {
        let id = self.effects.record(saga_id, op, key).await?;
        if self.pause_in.as_deref() == Some(step) {
            println!("paused in {step}");
            std::future::pending::<()>().await;
        }
        Ok(id)
    }
}

/// reserve → authorize → capture → ship; release, void (only when not captured), refund.
fn checkout_saga(world: &World) -> Saga<Checkout> {
    let w = world.clone();
    let reserve = Step::<Checkout>::new("reserve", move |cx| {
        let w = w.clone();
        async move { w.effect(cx.saga_id(), "reserve", "reserve", cx.key().as_str()).await }
    });
    let w = world.clone();
    let reserve = reserve.compensate(move |cx, _hold| {
        let w = w.clone();
        async move { w.effects.record(cx.saga_id(), "release", cx.compensation_key().as_str()).await.map(|_| ()) }
    });

    let w = world.clone();
    let authorize = Step::<Checkout>::new("authorize", move |cx| {
        let w = w.clone();
        async move { w.effect(cx.saga_id(), "authorize", "authorize", cx.key().as_str()).await }
    });
    let w = world.clone();
    let authorize = authorize.compensate(move |cx, _auth| {
        let w = w.clone();
        async move {
            if cx.output::<String>("capture").is_some() {
                // Captured: the capture's refund undoes the payment; a captured authorization cannot be voided.
                return Ok(());
            }
            w.effects.record(cx.saga_id(), "void", cx.compensation_key().as_str()).await.map(|_| ())
        }
    });

    let w = world.clone();
    let capture = Step::<Checkout>::new("capture", move |cx| {
        let w = w.clone();
        async move {
            let _auth: String =
                cx.output("authorize").ok_or_else(|| PaymentError::invalid_request("no authorization"))?;
            w.effect(cx.saga_id(), "capture", "capture", cx.key().as_str()).await
        }
    });
    let w = world.clone();
    let capture = capture.compensate(move |cx, _payment| {
        let w = w.clone();
        async move { w.effects.record(cx.saga_id(), "refund", cx.compensation_key().as_str()).await.map(|_| ()) }
    });

    let w = world.clone();
    let ship = Step::<Checkout>::new("ship", move |cx| {
        let w = w.clone();
        async move { w.effect(cx.saga_id(), "ship", "ship", cx.key().as_str()).await }
    });

    Saga::builder("checkout")
        .step(reserve.attempts(3))
        .step(authorize.attempts(3))
        .step(capture.attempts(3))
        .step(ship.attempts(2))
        .build()
        .unwrap_or_else(|e| unreachable!("the checkout saga is valid: {e}"))
}

struct Args {
    redis: Option<String>,
    postgres: Option<String>,
    prefix: Option<String>,
    saga_id: String,
    recover: bool,
    pause_in: Option<String>,
    lease: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut redis, mut postgres, mut prefix, mut saga_id, mut pause_in) = (None, None, None, None, None);
    let (mut recover, mut lease) = (false, Duration::from_millis(500));
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis" => redis = Some(value()?),
            "--postgres" => postgres = Some(value()?),
            "--prefix" => prefix = Some(value()?),
            "--saga-id" => saga_id = Some(value()?),
            "--pause-in" => pause_in = Some(value()?),
            "--mode" => {
                recover = match value()?.as_str() {
                    "start" => false,
                    "recover" => true,
                    other => return Err(format!("--mode is start or recover, not {other}")),
                }
            }
            "--lease-ms" => {
                let v = value()?;
                lease = Duration::from_millis(v.parse().map_err(|_| format!("--lease-ms {v}: not a number"))?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if redis.is_some() == postgres.is_some() {
        return Err("give exactly one of --redis URL and --postgres URL".into());
    }
    let saga_id = saga_id.ok_or("--saga-id is required")?;
    Ok(Args { redis, postgres, prefix, saga_id, recover, pause_in, lease })
}

async fn open(args: &Args) -> Result<(Arc<dyn SagaLog>, Effects), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    if let Some(url) = &args.redis {
        let prefix = args.prefix.clone().unwrap_or_else(|| palisade_saga::log::DEFAULT_REDIS_PREFIX.to_owned());
        let log = RedisLog::connect(url).await.map_err(|x| e(&x))?.with_prefix(&prefix);
        let client = redis::Client::open(url.as_str()).map_err(|x| e(&x))?;
        let conn = client.get_connection_manager().await.map_err(|x| e(&x))?;
        return Ok((Arc::new(log), Effects::Redis { conn, prefix }));
    }
    let url = args.postgres.as_deref().unwrap_or_default();
    let prefix = args.prefix.clone().unwrap_or_else(|| palisade_saga::log::DEFAULT_POSTGRES_PREFIX.to_owned());
    let log = PostgresLog::connect(url).await.map_err(|x| e(&x))?.with_prefix(&prefix).map_err(|x| e(&x))?;
    log.migrate().await.map_err(|x| e(&x))?;
    let effects = Effects::Postgres { pool: log.pool().clone(), prefix };
    effects.migrate().await?;
    Ok((Arc::new(log), effects))
}

async fn run(args: Args) -> Result<SagaState, String> {
    let (log, effects) = open(&args).await?;
    let world = World { effects, pause_in: args.pause_in.clone() };
    let owner = format!("saga-worker-{}", std::process::id());
    let orchestrator = Orchestrator::builder(log.clone()).owner(owner).lease(args.lease).build();
    let saga = orchestrator.register(checkout_saga(&world));
    let id = args.saga_id.as_str();
    if !args.recover {
        let ctx = Checkout { order: id.to_owned(), sku: "mug".into(), amount: "25.00".into() };
        let report = orchestrator.start(&saga, id, ctx).await.map_err(|e| e.to_string())?;
        return Ok(report.state);
    }
    // A recovery worker: passes until this saga is finished (taken over once its dead owner's lease ends).
    loop {
        for report in orchestrator.recover().await.map_err(|e| e.to_string())? {
            match report {
                Ok(r) if r.id == id => return Ok(r.state),
                Ok(_) => {}
                Err(e) => eprintln!("saga_worker: a recovered saga stopped: {e}"),
            }
        }
        match log.get(id).await.map_err(|e| e.to_string())? {
            None => return Err(format!("no saga with id {id}")),
            // Someone else finished it.
            Some(r) if r.state.is_terminal() => return Ok(r.state),
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("saga_worker: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("saga_worker: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(state) => {
            println!("finished {state}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("saga_worker: {e}");
            ExitCode::FAILURE
        }
    }
}
