//! `palisade sim serve`: the simulated gateway as a Stripe-like JSON API over HTTP, with seeded faults on the wire.
//!
//! ```text
//! palisade sim serve [--addr 127.0.0.1:4242] [--seed S] [--latency-ms N] [--fault KIND=RATE]…
//!                    [--timeout-hold-ms N] [--retry-after-secs N]
//! ```
//!
//! Prints `listening on ADDR` on stdout once the socket is bound (with the real port when `--addr` asks for port
//! 0), then serves until killed. Fault kinds: `lost_response`, `timeout`, `error_5xx`, `rate_limited`, `refused`;
//! rates from 0 to 1, drawn in the order given. Routes, JSON shapes and status codes: `docs/sim.md`. Usage
//! errors exit 2; a socket that cannot be bound exits 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use palisade_sim::http::{HttpFault, SimServer};

/// `palisade sim` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Serve the simulated gateway over HTTP (prints `listening on ADDR`, then serves until killed).
    Serve(ServeArgs),
}

/// Arguments of `palisade sim serve`.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the line `listening on ADDR` says which).
    #[arg(long, default_value = "127.0.0.1:4242")]
    addr: String,
    /// Seed of the fault draws: the same seed and request sequence give the same faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Latency of every operation, in milliseconds (the operation commits after it even if the client left).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// A fault and its rate, `KIND=RATE` (0 to 1); repeatable. KIND: lost_response, timeout, error_5xx,
    /// rate_limited, refused.
    #[arg(long = "fault", value_name = "KIND=RATE", value_parser = parse_fault)]
    faults: Vec<(HttpFault, f64)>,
    /// How long a `timeout` fault holds a request before closing the connection, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_hold_ms: u64,
    /// The `Retry-After` of `rate_limited` and `refused`, in seconds.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
}

/// `KIND=RATE`, the rate a number from 0 to 1.
fn parse_fault(s: &str) -> Result<(HttpFault, f64), String> {
    let (kind, rate) = s.split_once('=').ok_or_else(|| format!("`{s}`: expected KIND=RATE, e.g. lost_response=0.1"))?;
    let kind: HttpFault = kind.trim().parse().map_err(|e| format!("{e}"))?;
    let rate: f64 = rate.trim().parse().map_err(|_| format!("`{rate}`: the rate must be a number from 0 to 1"))?;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("`{rate}`: the rate must be from 0 to 1"));
    }
    Ok((kind, rate))
}

pub(crate) fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade sim serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut builder = SimServer::builder()
            .seed(args.seed)
            .latency(Duration::from_millis(args.latency_ms))
            .timeout_hold(Duration::from_millis(args.timeout_hold_ms))
            .retry_after(Duration::from_secs(args.retry_after_secs));
        for (fault, rate) in args.faults {
            builder = builder.fault(fault, rate);
        }
        let server = match builder.bind(args.addr.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("palisade sim serve: cannot listen on {}: {e}", args.addr);
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.local_addr());
        let _ = out.flush();
        drop(out);
        match server.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade sim serve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_flags_parse() {
        assert_eq!(parse_fault("lost_response=0.25"), Ok((HttpFault::LostResponse, 0.25)));
        assert_eq!(parse_fault("rate_limited=1"), Ok((HttpFault::RateLimited, 1.0)));
        for bad in ["lost_response", "bogus=0.1", "timeout=1.5", "timeout=-0.1", "timeout=x"] {
            assert!(parse_fault(bad).is_err(), "{bad}");
        }
    }
}
