//! `palisade saga list|show|retry-compensation`: inspect the sagas in a Redis or PostgreSQL saga log, and mark a
//! saga whose compensation failed for good to be compensated again.
//!
//! ```text
//! palisade saga list   (--redis URL [--redis-prefix P] | --postgres URL [--postgres-prefix P])
//!                      [--state STATE] [--limit N] [--json]
//! palisade saga show   (--redis … | --postgres …) ID [--json]
//! palisade saga retry-compensation (--redis … | --postgres …) ID
//! ```
//!
//! Exit codes: 0 done; 1 no such saga, or the saga is not in a state that allows the command; 2 a usage error or
//! the store cannot be reached (or stdout cannot be written). A reader that goes away (`palisade saga list | head`)
//! changes nothing: the exit code is the command's.
//!
//! `retry-compensation` cannot run the compensation itself: the compensations are the application's code, which
//! the command does not have. It hands the saga back to the application instead: a saga in `failed_compensation`
//! is taken over (a new fencing token), `compensation_retried` is written and the state set to `compensating`,
//! with the lease already ended. The application's recovery worker (`Orchestrator::recover`, or
//! `Orchestrator::spawn_recovery`), which has the definition registered, finds it as an orphan on its next pass
//! and goes on compensating from the step that failed.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use palisade_saga::log::{PostgresLog, RedisLog};
use palisade_saga::{Event, SagaLog, SagaRecord, SagaState, SagaSummary};
use serde_json::{Value, json};

/// How long connecting to the store may take before the command gives up (exit 2).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write may take.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

const NOT_FOUND: u8 = 1;
const USAGE: u8 = 2;

/// `palisade saga`: the store and the subcommand.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
    /// The Redis saga log's URL (`redis://host:6379/0`). Exactly one of --redis and --postgres.
    #[arg(long, global = true, value_name = "URL")]
    redis: Option<String>,
    /// The Redis key prefix the application's `RedisLog` uses (default `palisade:saga:`).
    #[arg(long, global = true, value_name = "P")]
    redis_prefix: Option<String>,
    /// The PostgreSQL saga log's URL (`postgres://user@host/db`). Exactly one of --redis and --postgres.
    #[arg(long, global = true, value_name = "URL")]
    postgres: Option<String>,
    /// The table prefix the application's `PostgresLog` uses (`schema.palisade_`; default `palisade_`).
    #[arg(long, global = true, value_name = "P")]
    postgres_prefix: Option<String>,
}

/// `palisade saga` subcommands.
#[derive(clap::Subcommand)]
enum Command {
    /// List sagas (id, definition, state, owner), optionally only those in one state.
    List {
        /// Only sagas in this state: running, compensating, completed, compensated, failed_compensation.
        #[arg(long)]
        state: Option<String>,
        /// At most this many sagas.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one saga: its state, owner, lease, context and the history of its events. Exit 1 when there is none.
    Show {
        /// The saga's id.
        id: String,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mark a saga in failed_compensation to be compensated again, by the application's recovery worker.
    ///
    /// The command cannot run the compensations itself (they are the application's code). It takes the saga over,
    /// writes `compensation_retried`, sets its state to `compensating` and leaves its lease ended, so the next pass
    /// of the application's recovery worker (`Orchestrator::recover` / `spawn_recovery`, which must have the saga's
    /// definition registered) takes it over as an orphan and goes on compensating from the step that failed. Fix
    /// the cause of the failure first. Exit 1 when the saga does not exist or is not in failed_compensation.
    #[command(name = "retry-compensation")]
    RetryCompensation {
        /// The saga's id.
        id: String,
    },
}

/// A failure, with its exit code.
struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn usage(message: impl Into<String>) -> Fail {
        Fail { code: USAGE, message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> Fail {
        Fail { code: NOT_FOUND, message: message.into() }
    }
}

/// Runs `palisade saga …`.
pub(crate) fn run(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(USAGE);
        }
    };
    match rt.block_on(execute(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn execute(args: Args) -> Result<(), Fail> {
    // Check the command's own arguments before reaching for the store.
    let state = match &args.command {
        Command::List { state: Some(s), .. } => Some(SagaState::parse(s).ok_or_else(|| {
            Fail::usage(format!(
                "unknown state {s:?}; one of running, compensating, completed, compensated, failed_compensation"
            ))
        })?),
        _ => None,
    };
    let log = open(&args).await?;
    match args.command {
        Command::List { limit, json, .. } => list(&*log, state, limit, json).await,
        Command::Show { id, json } => show(&*log, &id, json).await,
        Command::RetryCompensation { id } => retry_compensation(&*log, &id).await,
    }
}

/// Connects to the one store the arguments name.
async fn open(args: &Args) -> Result<Arc<dyn SagaLog>, Fail> {
    let unreachable = |what: &str, e: &dyn std::fmt::Display| Fail::usage(format!("cannot reach {what}: {e}"));
    let timed_out = |what: &str| Fail::usage(format!("cannot reach {what}: no answer within {CONNECT_TIMEOUT:?}"));
    match (&args.redis, &args.postgres) {
        (Some(_), Some(_)) => Err(Fail::usage("give one of --redis and --postgres, not both")),
        (None, None) => Err(Fail::usage("give the saga log's store: --redis URL or --postgres URL")),
        (Some(url), None) => {
            if args.postgres_prefix.is_some() {
                return Err(Fail::usage("--postgres-prefix goes with --postgres, not --redis"));
            }
            let log = match tokio::time::timeout(CONNECT_TIMEOUT, RedisLog::connect(url)).await {
                Ok(Ok(log)) => log,
                Ok(Err(e)) => return Err(unreachable("Redis", &e)),
                Err(_) => return Err(timed_out("Redis")),
            };
            let log = match &args.redis_prefix {
                Some(p) => log.with_prefix(p),
                None => log,
            };
            Ok(Arc::new(log))
        }
        (None, Some(url)) => {
            if args.redis_prefix.is_some() {
                return Err(Fail::usage("--redis-prefix goes with --redis, not --postgres"));
            }
            let log = match tokio::time::timeout(CONNECT_TIMEOUT, PostgresLog::connect(url)).await {
                Ok(Ok(log)) => log,
                Ok(Err(e)) => return Err(unreachable("PostgreSQL", &e)),
                Err(_) => return Err(timed_out("PostgreSQL")),
            };
            let log = match &args.postgres_prefix {
                Some(p) => log.with_prefix(p).map_err(|e| Fail::usage(e.to_string()))?,
                None => log,
            };
            Ok(Arc::new(log))
        }
    }
}

/// Awaits a store operation with [`OP_TIMEOUT`]; a store error or a timeout is exit 2.
async fn op<T>(fut: impl Future<Output = Result<T, palisade_saga::log::StoreError>>) -> Result<T, Fail> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.message().contains("does not exist") => Err(Fail::usage(format!(
            "{e} (is --postgres-prefix the application's? its PostgresLog::migrate creates the tables)"
        ))),
        Ok(Err(e)) => Err(Fail::usage(e.to_string())),
        Err(_) => Err(Fail::usage(format!("the store did not answer within {OP_TIMEOUT:?}"))),
    }
}

async fn list(log: &dyn SagaLog, state: Option<SagaState>, limit: usize, json: bool) -> Result<(), Fail> {
    let sagas = op(log.list(state, limit)).await?;
    print_with(|out| {
        if json {
            let all: Vec<Value> = sagas.iter().map(summary_json).collect();
            return writeln!(out, "{}", Value::Array(all));
        }
        if sagas.is_empty() {
            return match state {
                Some(s) => writeln!(out, "no sagas in state {s}"),
                None => writeln!(out, "no sagas"),
            };
        }
        let width = |f: &dyn Fn(&SagaSummary) -> usize, min: usize| sagas.iter().map(f).max().unwrap_or(0).max(min);
        let (wid, wname, wstate) =
            (width(&|s| s.id.len(), 2), width(&|s| s.name.len(), 4), width(&|s| s.state.as_str().len(), 5));
        writeln!(out, "{:wid$}  {:wname$}  {:wstate$}  OWNER", "ID", "NAME", "STATE")?;
        for s in &sagas {
            let owner = s.owner.as_deref().unwrap_or("-");
            writeln!(out, "{:wid$}  {:wname$}  {:wstate$}  {owner}", s.id, s.name, s.state.as_str())?;
        }
        Ok(())
    })
}

/// Writes the command's output on stdout; a reader that went away (`palisade saga list | head`) is not a failure,
/// and stdout failing otherwise is exit 2, as the other failures of the command's surroundings are.
fn print_with(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Fail> {
    crate::output::print_with(write).map_err(|e| Fail::usage(format!("cannot write to stdout: {e}")))
}

fn summary_json(s: &SagaSummary) -> Value {
    json!({ "id": s.id, "name": s.name, "state": s.state, "owner": s.owner })
}

async fn get(log: &dyn SagaLog, id: &str) -> Result<SagaRecord, Fail> {
    op(log.get(id)).await?.ok_or_else(|| Fail::not_found(format!("no saga with id {id}")))
}

async fn show(log: &dyn SagaLog, id: &str, json: bool) -> Result<(), Fail> {
    let r = get(log, id).await?;
    let lease_ms = u64::try_from(r.lease_remaining.as_millis()).unwrap_or(u64::MAX);
    print_with(|out| {
        if json {
            let v = json!({
                "id": r.id,
                "name": r.name,
                "state": r.state,
                "owner": r.owner,
                "token": r.token,
                "lease_remaining_ms": lease_ms,
                "lease_ended": r.lease_remaining.is_zero(),
                "context": r.context,
                "events": r.events,
            });
            return writeln!(out, "{v}");
        }
        writeln!(out, "saga     {} ({})", r.id, r.name)?;
        writeln!(out, "state    {}", r.state)?;
        match &r.owner {
            Some(o) => writeln!(out, "owner    {o} (token {})", r.token)?,
            None => writeln!(out, "owner    - (token {})", r.token)?,
        }
        let lease = if r.state.is_terminal() {
            "- (finished)".to_owned()
        } else if r.lease_remaining.is_zero() {
            "ended: recovery may take it over".to_owned()
        } else {
            format!("{lease_ms} ms left")
        };
        writeln!(out, "lease    {lease}")?;
        writeln!(out, "context  {}", r.context)?;
        writeln!(out, "history  ({} events)", r.events.len())?;
        for (i, e) in r.events.iter().enumerate() {
            writeln!(out, "  {:>3}  {}", i + 1, describe(e))?;
        }
        Ok(())
    })
}

/// One line for an event.
fn describe(e: &Event) -> String {
    match e {
        Event::StepStarted { step, attempt } => format!("step_started          {step} (attempt {attempt})"),
        Event::StepDone { step, output } => format!("step_done             {step} -> {output}"),
        Event::StepFailed { step, error, outcome, last } => {
            let last = if *last { ", final" } else { "" };
            format!("step_failed           {step}: {error} ({outcome:?}{last})")
        }
        Event::CompensationBegun { reason } => format!("compensation_begun    {reason}"),
        Event::CompensationStarted { step, attempt } => format!("compensation_started  {step} (attempt {attempt})"),
        Event::CompensationDone { step } => format!("compensation_done     {step}"),
        Event::CompensationFailed { step, error, last } => {
            let last = if *last { " (final)" } else { "" };
            format!("compensation_failed   {step}: {error}{last}")
        }
        Event::CompensationRetried => "compensation_retried".to_owned(),
        Event::Restarted { run } => format!("restarted             run {run}"),
        Event::Finished { state } => format!("finished              {state}"),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

async fn retry_compensation(log: &dyn SagaLog, id: &str) -> Result<(), Fail> {
    let want = SagaState::FailedCompensation;
    let owner = format!("palisade-cli-{}", std::process::id());
    // A zero lease: the saga is ours only long enough to write the retry, then any recovery worker may take it.
    let Some(token) = op(log.take_over(id, &owner, Duration::ZERO, Some(want))).await? else {
        let r = get(log, id).await?;
        return Err(Fail::not_found(format!(
            "saga {id} is {}, not {want}: there is no failed compensation to retry",
            r.state
        )));
    };
    if !op(log.append(id, token, &Event::CompensationRetried, SagaState::Compensating)).await? {
        return Err(Fail::not_found(format!(
            "saga {id} was taken over by another owner while being marked; look again"
        )));
    }
    print_with(|out| {
        writeln!(
            out,
            "saga {id} marked for compensation retry: state compensating, lease ended; the application's recovery \
             worker (Orchestrator::recover / spawn_recovery) resumes its compensation on its next pass"
        )
    })
}
