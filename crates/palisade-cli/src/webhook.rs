//! `palisade webhook` (being built for the webhook issue).

use std::process::ExitCode;

/// `palisade webhook` subcommands.
#[derive(clap::Subcommand)]
pub(crate) enum Command {}

pub(crate) fn run(cmd: Command) -> ExitCode {
    match cmd {}
}
