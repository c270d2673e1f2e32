//! An axum charges API over the simulated gateway, with the `HttpIdempotencyLayer` in front of it.
//!
//! ```text
//! cargo run --release --example server -- --addr 127.0.0.1:8080 [--redis redis://127.0.0.1:6379] [--latency-ms 50]
//! cargo run --release --example server -- --postgres postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! - `POST /v1/charges` with `Idempotency-Key` and `{"amount":"12.34","currency":"USD","source":"tok_visa",
//!   "order_id":"o1"}`: authorizes and captures through the simulator; 201 with the charge. A decline is a 402
//!   problem+json, stored and replayed like any final answer. Without a key: 400; same key while the first is
//!   running: 409; same key with another body: 422; body over 64 KiB: 413; idempotency store down: 503.
//!   An optional `X-Account` header scopes the key (two accounts with one key get two charges); a request
//!   without it is unscoped, as before. A real API takes the scope from its authentication, not a header.
//! - `GET /v1/_sim/ledger`: what the simulated gateway really executed, as a JSON array.
//! - `POST /v1/checkouts` with `Idempotency-Key` and `{"order_id":"o1","amount":"12.34","currency":"USD",
//!   "source":"tok_visa","email":"a@example.com","items":[{"sku":"sku_1","qty":1}],"fail_shipment":false}`: the
//!   checkout saga (reserve → authorize → capture → ship) through the whole stack (checkouts.rs): 201 with the
//!   order (its `amount` and `currency` as charged: `"12.30"`, `"USD"`); a decline 402; a fraud block 402
//!   `fraud_blocked` (the email blocklist, and any amount above 10,000.00 USD or EUR); a compensated saga 409; each
//!   stored and replayed. A checkout compensated only because the gateway could not be reached before anything
//!   was authorized is a 503 `gateway_unavailable` with `Retry-After` (not stored): its retry with the same key
//!   runs it again. `order_id` and each `items[].sku` are identifiers, `[A-Za-z0-9_.:-]` (1 to 255 and 1 to
//!   64 characters, not `.` or `..`, no card number): anything else is a 400 that runs nothing.
//! - `GET /v1/orders/{order_id}`: the order's state from the saga log (orders.rs), with the charge id once one was
//!   captured (also when it was refunded since: see orders.rs); 404 when unknown.
//! - `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz` (503 while a store does not answer); SIGTERM
//!   or Ctrl-C stops accepting, finishes the requests in flight, then waits for the checkout sagas still running
//!   (those whose client hung up, those recovered from a dead peer), all within `--shutdown-grace-ms` (default
//!   30 s) of the signal, and exits 0 (ops.rs). A saga still running when the grace ends is logged by order id:
//!   on Redis or PostgreSQL a recovery worker takes it over when its lease ends; on memory it is abandoned.
//! - Orders (the saga log), stock holds and idempotency records live in the chosen store (memory, `--redis`,
//!   `--postgres`), so instances on one store see each other's orders; each runs the saga recovery worker, which
//!   finishes the checkouts of an instance that died. `--instance NAME` names this one in the saga log.
//! - `--gateway URL` sends the checkouts' gateway calls to a simulator in another process (`palisade sim serve`,
//!   through `palisade::sim::HttpGateway`, each call bounded by `--gateway-timeout-ms`, default 10 s); the
//!   in-process simulator otherwise.
//! - `--latency-ms` sets the simulator's latency per gateway call, so concurrent duplicates really overlap.
//! - `--gateway-rate N` sets the checkouts' gateway calls per second (the rate limit layer; default 1,000).
//! - `--bare` serves `POST /v1/checkouts` with no Palisade layer at all: the baseline of bench/http/run.sh, never
//!   for real traffic.
//! - `--redis URL` keeps idempotency records in Redis (shared by every instance), memory otherwise.
//! - `--postgres URL` keeps them in PostgreSQL instead (durable: they survive a restart of the server and of the
//!   database); the tables are created at start (`PostgresStore::migrate`, prefix `--postgres-prefix`), and each
//!   captured charge writes an `orders` row in the same transaction that completes its idempotency record.
//!   `--redis` and `--postgres` exclude each other.
//! - `--header-timeout-ms` (the head, and an idle kept-alive connection), `--body-timeout-ms` (the whole body)
//!   and `--max-connections` bound what slow or half-sent requests can hold (defaults 5 s, 10 s, 1024; see
//!   docs/production-checklist.md).

mod app;
mod charges;
mod checkouts;
mod ledger;
mod ops;
mod orders;
mod serve;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use palisade::idempotency::{LeaseStore, MemoryStore, PostgresStore, RedisStore};
use palisade::sim::{GatewaySim, Latency};
use tower::util::BoxCloneSyncService;

/// Command-line interface. Other tools drive this server: keep these flags stable.
#[derive(Debug, Parser)]
#[command(name = "server", about = "Palisade example: an idempotent charges API over the simulated gateway")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Redis URL for the idempotency store (in memory when absent).
    #[arg(long)]
    redis: Option<String>,
    /// Key prefix for the idempotency and webhook delivery records in Redis (one store serves both: their keys
    /// are disjoint).
    #[arg(long, default_value = palisade::idempotency::defaults::DEFAULT_REDIS_PREFIX)]
    redis_prefix: String,
    /// PostgreSQL URL for the idempotency and webhook delivery records, and the `orders` table (durable).
    #[arg(long, conflicts_with = "redis")]
    postgres: Option<String>,
    /// Table prefix of the PostgreSQL store (default `palisade_`); `schema.palisade_` puts the store's tables and
    /// `orders` in `schema`.
    #[arg(long, requires = "postgres")]
    postgres_prefix: Option<String>,
    /// Simulated gateway latency per call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Longest time a client may take to send a request's head, in milliseconds (slow clients are cut off); also
    /// how long a kept-alive connection may sit idle.
    #[arg(long, default_value_t = serve::DEFAULT_HEADER_TIMEOUT.as_millis() as u64)]
    header_timeout_ms: u64,
    /// Longest time a client may take to send a request's whole body after its head, in milliseconds.
    #[arg(long, default_value_t = serve::DEFAULT_BODY_TIMEOUT.as_millis() as u64)]
    body_timeout_ms: u64,
    /// Most connections served at once; more wait in the listen backlog.
    #[arg(long, default_value_t = serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// This instance's name in the saga log (the owner of the checkouts it runs); default `<host>-<pid>`. Two
    /// live instances must not share one.
    #[arg(long)]
    instance: Option<String>,
    /// Base URL of a simulated gateway served over HTTP (`palisade sim serve --addr ...`), for the checkouts'
    /// gateway calls. When absent they go to the in-process simulator, which `POST /v1/charges` and
    /// `GET /v1/_sim/ledger` always use.
    #[arg(long)]
    gateway: Option<String>,
    /// How long one call to the `--gateway` simulator may take (connect, send and answer), in milliseconds; past
    /// it the call's outcome is unknown and it is retried under the same gateway key.
    #[arg(long, default_value_t = 10_000, requires = "gateway")]
    gateway_timeout_ms: u64,
    /// Gateway calls per second this instance's checkouts may make (the stack's rate limit layer).
    #[arg(long, default_value_t = checkouts::DEFAULT_GATEWAY_RATE, value_parser = clap::value_parser!(u32).range(1..))]
    gateway_rate: u32,
    /// How long a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight and then for the checkout sagas still
    /// running, in milliseconds from the signal, before the process exits anyway.
    #[arg(long, default_value_t = ops::SHUTDOWN_GRACE.as_millis() as u64)]
    shutdown_grace_ms: u64,
    /// Benchmark baseline (bench/http/run.sh): `POST /v1/checkouts` runs the same checkout saga with no Palisade
    /// layer — no idempotency, fraud screen, circuit breaker, retry, rate limit or audit. Never for real traffic.
    #[arg(long)]
    bare: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).init();
    let args = Args::parse();
    let _ = ops::metrics_handle();
    let sim = GatewaySim::builder().latency(Latency::fixed(Duration::from_millis(args.latency_ms))).build();
    // One store for the idempotency records and the webhook deliveries.
    let (store, store_name, orders, pg): (Arc<dyn LeaseStore>, String, _, _) = match (&args.redis, &args.postgres) {
        // Connects lazily and reconnects: the server starts even while Redis is down, answering 503 meanwhile.
        (Some(url), _) => (
            Arc::new(RedisStore::open(url)?.with_prefix(args.redis_prefix.clone())),
            format!("Redis at {url}"),
            None,
            None,
        ),
        (None, Some(url)) => {
            let (store, orders) = postgres(url, args.postgres_prefix.as_deref()).await?;
            (Arc::new(store.clone()), format!("PostgreSQL at {}", redact_password(url)), Some(orders), Some(store))
        }
        (None, None) => (Arc::new(MemoryStore::new()), "memory".to_owned(), None, None),
    };
    let app = match orders {
        Some(orders) => app::router_with_orders(sim.clone(), store.clone(), Some(orders)),
        None => app::router(sim.clone(), store.clone()),
    };
    // webhook routes are merged here
    let app = app.merge(webhooks::router(store.clone())?);
    let log = saga_log(&args, pg.as_ref()).await?;
    let instance = args.instance.clone().unwrap_or_else(default_instance);
    let gateway = match (&args.gateway, args.bare) {
        (Some(url), bare) => {
            let http = palisade::sim::HttpGateway::new(url)
                .map_err(|e| anyhow::anyhow!("invalid --gateway URL: {e}"))?
                .timeout(Duration::from_millis(args.gateway_timeout_ms));
            if bare {
                checkouts::Gateway::bare(BoxCloneSyncService::new(http))
            } else {
                checkouts::gateway_stack_at(http, args.gateway_rate)?
            }
        }
        (None, true) => checkouts::Gateway::bare(BoxCloneSyncService::new(sim.clone())),
        (None, false) => checkouts::gateway_stack_at(sim.clone(), args.gateway_rate)?,
    };
    let shop = checkouts::Shop::new(gateway, checkouts::Inventory::new(store.clone()), log.clone(), &instance);
    let recovery = shop.orchestrator().spawn_recovery(RECOVERY_EVERY);
    let app = app
        .merge(if args.bare {
            checkouts::bare_router(shop.clone())
        } else {
            checkouts::router(shop.clone(), store.clone())
        })
        .merge(orders::router(shop.orchestrator().clone()))
        .merge(ops::router(ops::Readiness { store, log }));
    let app = ops::with_fallbacks(app);

    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let gateway_name = args.gateway.as_deref().unwrap_or("the in-process simulator");
    println!(
        "palisade server listening on http://{} (idempotency store: {store_name}; checkouts' gateway: {gateway_name})",
        listener.local_addr()?
    );
    let limits = serve::Limits {
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_connections: args.max_connections,
    };
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let deadline = ops::serve_until(listener, app, limits, ops::shutdown_signal(), grace).await?;
    // The sagas still running (checkouts whose client hung up, recovered ones) run on their own tasks, which
    // returning from main would drop mid-step: wait for them within the grace; the recovery worker takes none over
    // from here on.
    let durable = args.redis.is_some() || args.postgres.is_some();
    wait_for_sagas(&shop, recovery, deadline, durable).await;
    println!("palisade server {instance} stopped");
    Ok(())
}

/// Waits (until `deadline`) for the sagas still running, the shop's checkouts and those its recovery worker
/// resumed (which takes no saga over from now on), and names each one still running then: on Redis or PostgreSQL
/// (`durable`) its lease ends and a recovery worker on the same store takes it over; on memory it is abandoned.
async fn wait_for_sagas(
    shop: &checkouts::Shop,
    recovery: palisade_saga::Recovery,
    deadline: tokio::time::Instant,
    durable: bool,
) {
    let running = shop.running_sagas().len();
    if running > 0 {
        tracing::warn!(sagas = running, "shutting down: waiting for the checkout sagas still running");
    }
    let (recovered, own) = tokio::join!(recovery.shutdown(deadline), shop.wait_for_sagas(deadline));
    for id in own.into_iter().chain(recovered) {
        if durable {
            tracing::warn!(
                order_id = %id,
                "shutdown grace ended with this checkout saga still running: it stops where the saga log says, and a \
                 saga recovery worker on the same store (another instance, or this one restarted) takes it over when \
                 its lease ends"
            );
        } else {
            tracing::error!(
                order_id = %id,
                "shutdown grace ended with this checkout saga still running: it is abandoned. On the memory store \
                 its order, stock hold and saga log end with this process, and nothing undoes what the gateway \
                 authorized or captured for it: reconcile it against the gateway"
            );
        }
    }
}

/// How often the saga recovery worker looks for checkouts whose instance died.
const RECOVERY_EVERY: Duration = Duration::from_secs(1);

/// `<host>-<pid>`.
fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The saga log on the chosen store: memory, Redis (prefix `<--redis-prefix>saga:`) or PostgreSQL (the
/// `--postgres-prefix` tables, migrated here). On PostgreSQL it shares the store's pool (`pg`, given exactly when
/// the store is PostgreSQL): one pool per instance, so two instances and their restarts stay well inside the
/// server's connection limit.
async fn saga_log(args: &Args, pg: Option<&PostgresStore>) -> anyhow::Result<Arc<dyn palisade_saga::SagaLog>> {
    use palisade_saga::{MemoryLog, PostgresLog, RedisLog};
    Ok(match (&args.redis, pg) {
        (Some(url), _) => Arc::new(RedisLog::open(url)?.with_prefix(format!("{}saga:", args.redis_prefix))),
        (None, Some(pg)) => {
            let mut log = PostgresLog::new(pg.pool().clone());
            if let Some(p) = &args.postgres_prefix {
                log = log.with_prefix(p)?;
            }
            log.migrate().await.with_context(|| {
                let url = args.postgres.as_deref().unwrap_or_default();
                format!("could not create the saga log's tables in PostgreSQL at {}", redact_password(url))
            })?;
            Arc::new(log)
        }
        (None, None) => Arc::new(MemoryLog::new()),
    })
}

/// The PostgreSQL store (a lazy pool) with its tables migrated, and the `orders` table. Unlike Redis, the server
/// does not start while PostgreSQL is unreachable: the schema must be in place before the first request.
async fn postgres(url: &str, prefix: Option<&str>) -> anyhow::Result<(PostgresStore, charges::Orders)> {
    let shown = redact_password(url);
    let mut store = PostgresStore::open(url).with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
    if let Some(p) = prefix {
        store = store.with_prefix(p)?;
    }
    store.migrate().await.with_context(|| {
        format!(
            "could not create the idempotency tables in PostgreSQL at {shown} (is it running, may this user CREATE?)"
        )
    })?;
    let orders = charges::Orders::create(store.clone(), prefix).await?;
    Ok((store, orders))
}

/// `url` with its password, if any, replaced by `***`, for messages.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
