//! `palisade`: command-line tools for payments engineers.
//!
//! - `palisade redact`: scrub card numbers, CVVs and track data from a stream (stdin → stdout).
//! - `palisade webhook sign|verify`: sign or verify a webhook body (stdin) under Stripe, Standard Webhooks or
//!   GitHub schemes.
//! - `palisade recon`: reconcile an internal ledger with a gateway report (JSON lines of discrepancies; exit
//!   0 clean, 1 discrepancies, 2 bad input).
//! - `palisade saga list|show|retry-compensation`: inspect the sagas in a Redis or PostgreSQL saga log, and hand a
//!   saga whose compensation failed back to the application's recovery worker.
//! - `palisade sim serve`: the simulated gateway as a Stripe-like JSON API over HTTP, with seeded faults.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod output;
mod recon;
mod redact;
mod saga;
mod sim;
mod webhook;

#[derive(Parser)]
#[command(name = "palisade", version, about = "Tools that keep calls against money safe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scrub card data from stdin to stdout.
    Redact(redact::Args),
    /// Sign or verify webhooks.
    #[command(subcommand)]
    Webhook(webhook::Command),
    /// Reconcile an internal ledger with a gateway report.
    Recon(Box<recon::Args>),
    /// Inspect sagas in a Redis or PostgreSQL saga log; retry a failed compensation.
    Saga(saga::Args),
    /// Serve the simulated payment gateway over HTTP, with seeded faults.
    #[command(subcommand)]
    Sim(sim::Command),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Usage errors exit 2 (clap's convention); --help and --version exit 0.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Redact(args) => redact::run(args),
        Command::Webhook(cmd) => webhook::run(cmd),
        Command::Recon(args) => recon::run(*args),
        Command::Saga(args) => saga::run(args),
        Command::Sim(cmd) => sim::run(cmd),
    }
}
