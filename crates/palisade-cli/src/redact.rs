//! `palisade redact` (being built for the redaction issue).

use std::process::ExitCode;

/// Arguments of `palisade redact`.
#[derive(clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> ExitCode {
    eprintln!("palisade redact: not available in this build yet");
    ExitCode::from(2)
}
