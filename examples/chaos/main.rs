//! Issue 23's chaos run: checkouts through K instances of examples/server on one store, against an HTTP
//! simulator that loses responses, times out, fails and throttles, while instances are killed with SIGKILL and
//! restarted; then the money is checked order by order against the simulator's ledger (scenario.rs says what,
//! docs/reliability.md what it proves and what not).
//!
//! ```text
//! cargo run --release --example chaos -- [--seed S] [--checkouts N] [--instances K] [--store redis|postgres|redis-cluster]
//!                                        [--concurrency C] [--kills-per-instance M] [--outages O] [--no-faults] [--load]
//!                                        [--gateway-rate N] [--keep]
//! ```
//!
//! Stores: `redis` at `PALISADE_REDIS_URL` (default `redis://127.0.0.1:6379`), `postgres` at
//! `PALISADE_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), `redis-cluster` at
//! `PALISADE_REDIS_CLUSTER` (a `redis+cluster://host:port,host:port` URL). Each run works under a key prefix or
//! schema of its own, removed at the end unless `--keep`. Prints the figures; exits 1 on any violation, 2 when
//! the run could not happen.

mod scenario;
#[allow(dead_code)]
#[path = "../../tests/support/server_process.rs"]
mod server_process;

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use scenario::{Config, Store};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreKind {
    Redis,
    Postgres,
    RedisCluster,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "chaos", about = "Palisade's chaos run: checkouts, faults, SIGKILLs, and the money checked")]
struct Args {
    /// Seeds the checkouts, the faults, the duplicates and the kills.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many checkouts.
    #[arg(long, default_value_t = 10_000)]
    checkouts: usize,
    /// How many server instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Where the servers keep their state.
    #[arg(long, value_enum, default_value = "redis")]
    store: StoreKind,
    /// Checkouts in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// SIGKILLs per instance over the run (each followed by a restart).
    #[arg(long, default_value_t = 3)]
    kills_per_instance: usize,
    /// Gateway outages over the run (bursts of failing requests that open the circuit breakers).
    #[arg(long, default_value_t = 2)]
    outages: usize,
    /// No simulator faults (latency only, no outages).
    #[arg(long)]
    no_faults: bool,
    /// Load mode (issue 23's Load): no faults, outages, kills or duplicates, no gateway latency; the figure is the
    /// checkouts per second at `--concurrency`, all the checks still run.
    #[arg(long)]
    load: bool,
    /// Gateway calls per second each instance may make (the servers' `--gateway-rate`; their default, 1,000, when
    /// absent). `--load` runs compare setups at equal limits by raising it.
    #[arg(long)]
    gateway_rate: Option<u32>,
    /// Keep the run's keys or schema in the store afterwards.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: the run could not happen: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let run_id = format!("{}_{}", args.seed, std::process::id());
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let store = match args.store {
        StoreKind::Redis => Store::Redis {
            url: env("PALISADE_REDIS_URL", "redis://127.0.0.1:6379"),
            prefix: format!("palisade-chaos:{run_id}:"),
        },
        StoreKind::Postgres => Store::Postgres {
            url: env("PALISADE_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
            prefix: format!("palisade_chaos_{run_id}.palisade_"),
        },
        StoreKind::RedisCluster => {
            let Ok(url) = std::env::var("PALISADE_REDIS_CLUSTER") else {
                anyhow::bail!("--store redis-cluster needs PALISADE_REDIS_CLUSTER (a redis+cluster://host:port,… URL)");
            };
            Store::RedisCluster { url, prefix: format!("palisade-chaos:{run_id}:") }
        }
    };
    // The server in this binary's profile: a release chaos run drives release servers.
    let release = !cfg!(debug_assertions);
    let server = tokio::task::spawn_blocking(move || server_process::example_binary("server", release)).await?;
    let mut config = Config::new(args.seed, args.checkouts, args.instances, store.clone(), server);
    config.concurrency = args.concurrency;
    config.kills = args.kills_per_instance * config.instances;
    config.progress = true;
    config.outages = args.outages;
    config.gateway_rate = args.gateway_rate;
    if args.no_faults || args.load {
        config.faults.clear();
        config.outages = 0;
    }
    if args.load {
        config.kills = 0;
        config.duplicates = 0.0;
        config.latency = std::time::Duration::ZERO;
    }
    eprintln!(
        "chaos: seed {}, {} checkouts, {} instances on {}, {} kills; server logs in {}",
        config.seed,
        config.checkouts,
        config.instances,
        store.name(),
        config.kills,
        config.logs.display()
    );
    let report = scenario::run(config).await;
    if !args.keep {
        scenario::remove(&store).await;
    }
    let report = report?;
    println!("{report}");
    Ok(report.violations.is_empty())
}
