//! `palisade webhook sign|verify`: sign or verify a webhook body read from stdin, byte for byte.
//!
//! ```text
//! palisade webhook sign   --scheme stripe|standard|github --secret S [--id ID] [--timestamp T] < body
//! palisade webhook verify --scheme stripe|standard|github --secret S [--secret S2 …] --signature HEADER
//!                         [--id ID] [--timestamp T] [--tolerance SECS] [--now T] < body
//! ```
//!
//! `sign` prints the signature header's value (`t=…,v1=…`, `v1,…` or `sha256=…`). `verify` prints `valid` and
//! exits 0, or prints the failed check's kind on the first line of stderr (`header_missing`, `header_malformed`,
//! `timestamp_malformed`, `too_old`, `too_far_in_future`, `no_signature_matched`, `event_id_ambiguous`), an
//! explanation on the second, and exits 1. Usage errors (unknown scheme, unusable secret, a missing
//! `--id`/`--timestamp` the scheme needs, a `--timestamp` to sign that `verify` would never accept: negative or
//! over 15 digits) exit 2. `--id` and `--timestamp` are used by the schemes that sign them (Standard Webhooks; Stripe's
//! timestamp for `sign`) and ignored by the others. A reader of stdout that goes away (`| head -c0`) changes
//! nothing: the exit code is the result's.

use std::io::{self, Read};
use std::process::ExitCode;
use std::time::Duration;

use palisade_webhook::{
    Clock, GitHub, ManualClock, Message, SecretError, Signer, StandardWebhooks, Stripe, SystemClock, Verifier,
    VerifierBuilder,
};

/// `palisade webhook` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum Command {
    /// Print the signature header value for the body on stdin.
    Sign(SignArgs),
    /// Verify a signature over the body on stdin: prints `valid` (exit 0), or the failed check on stderr (exit 1).
    Verify(VerifyArgs),
}

/// The signature scheme.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SchemeArg {
    /// `Stripe-Signature: t=<unix>,v1=<hex>`; the secret is used as is, `whsec_` included.
    Stripe,
    /// Standard Webhooks v1: `webhook-signature: v1,<base64>` over `{id}.{timestamp}.{body}`; secret `whsec_<base64>`.
    Standard,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
}

/// Arguments of `palisade webhook sign`.
#[derive(clap::Args)]
pub(crate) struct SignArgs {
    /// The signature scheme.
    #[arg(long, value_enum)]
    scheme: SchemeArg,
    /// The signing secret.
    #[arg(long)]
    secret: String,
    /// The message id (required by `standard`).
    #[arg(long)]
    id: Option<String>,
    /// Unix seconds to sign (default: now).
    #[arg(long)]
    timestamp: Option<i64>,
}

/// Arguments of `palisade webhook verify`.
#[derive(clap::Args)]
pub(crate) struct VerifyArgs {
    /// The signature scheme.
    #[arg(long, value_enum)]
    scheme: SchemeArg,
    /// A secret to accept; repeat for rotation (any one matching is enough).
    #[arg(long = "secret", required = true)]
    secrets: Vec<String>,
    /// The signature header's value, exactly as received.
    #[arg(long)]
    signature: String,
    /// The `webhook-id` header's value (`standard`).
    #[arg(long)]
    id: Option<String>,
    /// The `webhook-timestamp` header's value (`standard`), exactly as received.
    #[arg(long)]
    timestamp: Option<String>,
    /// Seconds a timestamp may lie in the past or in the future (default 300).
    #[arg(long, value_name = "SECS")]
    tolerance: Option<u64>,
    /// The current time in Unix seconds (default: the system clock).
    #[arg(long, value_name = "T")]
    now: Option<i64>,
}

const USAGE: u8 = 2;

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(USAGE)
}

/// Prints `line` on stdout and exits 0 (also when the reader went away: the result was made); 1 when stdout
/// cannot be written.
fn print_line(line: impl std::fmt::Display) -> ExitCode {
    match crate::output::print_with(|out| writeln!(out, "{line}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_body() -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    io::stdin().lock().read_to_end(&mut body)?;
    Ok(body)
}

fn signer(scheme: SchemeArg, secret: &str) -> Result<Signer, SecretError> {
    match scheme {
        SchemeArg::Stripe => Signer::new(Stripe, secret),
        SchemeArg::Standard => Signer::new(StandardWebhooks, secret),
        SchemeArg::Github => Signer::new(GitHub, secret),
    }
}

fn verifier(scheme: SchemeArg) -> VerifierBuilder {
    match scheme {
        SchemeArg::Stripe => Verifier::builder(Stripe),
        SchemeArg::Standard => Verifier::builder(StandardWebhooks),
        SchemeArg::Github => Verifier::builder(GitHub),
    }
}

pub(crate) fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::Sign(args) => sign(args),
        Command::Verify(args) => verify(args),
    }
}

fn sign(args: SignArgs) -> ExitCode {
    if matches!(args.scheme, SchemeArg::Standard) && args.id.is_none() {
        return usage("--scheme standard signs a message id: pass --id");
    }
    let signer = match signer(args.scheme, &args.secret) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    // The verifier's rule, checked before the body is read: a bad flag is reported without waiting for stdin.
    let timestamp = args.timestamp.unwrap_or_else(|| SystemClock.now_unix());
    if let Err(e) = Signer::check_timestamp(timestamp) {
        return usage(e);
    }
    let body = match read_body() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading the body from stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    match signer.signature(&Message { id: args.id.as_deref(), timestamp, body: &body }) {
        Ok(sig) => print_line(sig),
        Err(e) => usage(e),
    }
}

fn verify(args: VerifyArgs) -> ExitCode {
    if matches!(args.scheme, SchemeArg::Standard) && (args.id.is_none() || args.timestamp.is_none()) {
        return usage("--scheme standard verifies a message id and timestamp: pass --id and --timestamp");
    }
    let mut builder = args.secrets.iter().fold(verifier(args.scheme), |b, s| b.secret(s.as_str()));
    if let Some(secs) = args.tolerance {
        builder = builder.tolerance(Duration::from_secs(secs));
    }
    if let Some(now) = args.now {
        builder = builder.clock(ManualClock::new(now));
    }
    let verifier = match builder.build() {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let body = match read_body() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: reading the body from stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    match verifier.verify_parts(&args.signature, args.id.as_deref(), args.timestamp.as_deref(), &body) {
        Ok(_) => print_line("valid"),
        Err(e) => {
            eprintln!("{}", e.kind());
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
