//! `palisade redact`: scrub card numbers, CVVs, PINs and track data from stdin to stdout.
//!
//! Streaming (constant memory, any input size), byte-transparent (non-UTF-8 bytes pass through untouched), and
//! line-prompt: each complete line is written as soon as it is read, so `tail -f app.log | palisade redact`
//! works. Exit 0 on success (also when the reader goes away: `palisade redact < big.log | head`), 1 on an I/O
//! error, 2 on a usage error.

use std::io::{self, BufWriter, Read, Write};
use std::process::ExitCode;

use palisade_redaction::{PanFormat, Redactor, TokenKey};

/// Arguments of `palisade redact`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How card numbers are written: `mask` keeps the last four (************4242), `bin-last4` the first six
    /// and last four, `full` writes [REDACTED_PAN], `token` a keyed HMAC token that correlates one card across
    /// lines.
    #[arg(long, value_enum, default_value_t = Mode::Mask)]
    mode: Mode,
    /// The environment variable holding the secret key for `--mode token` (at least 32 random bytes).
    #[arg(long, value_name = "VAR", default_value = "PALISADE_TOKEN_KEY")]
    token_key_env: String,
}

/// The PAN output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Mode {
    /// Every digit but the last four becomes `*`.
    Mask,
    /// The first six and last four digits stay.
    BinLast4,
    /// `[REDACTED_PAN]`.
    Full,
    /// `[PAN_TOKEN:…]`, HMAC-SHA256 under the key in `--token-key-env`.
    Token,
}

/// Read size: 64 KiB, large enough to amortise system calls, small enough to keep memory flat.
const CHUNK: usize = 64 * 1024;

pub(crate) fn run(args: Args) -> ExitCode {
    let format = match args.mode {
        Mode::Mask => PanFormat::Mask,
        Mode::BinLast4 => PanFormat::BinLast4,
        Mode::Full => PanFormat::Full,
        Mode::Token => {
            let Some(key) = std::env::var_os(&args.token_key_env) else {
                eprintln!(
                    "palisade redact: --mode token needs a secret key in the environment variable {}; \
                     set it (e.g. export {}=$(openssl rand -hex 32)) or pass --token-key-env VAR",
                    args.token_key_env, args.token_key_env
                );
                return ExitCode::from(2);
            };
            match TokenKey::new(key.as_encoded_bytes()) {
                Ok(k) => PanFormat::Token(k),
                Err(e) => {
                    eprintln!("palisade redact: {}: {e}", args.token_key_env);
                    return ExitCode::from(2);
                }
            }
        }
    };
    let redactor = Redactor::builder().pan_format(format).build();
    match crate::output::reader_gone_is_ok(pump(&redactor, io::stdin().lock(), io::stdout().lock())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade redact: {e}");
            ExitCode::from(1)
        }
    }
}

fn pump(redactor: &Redactor, mut input: impl Read, output: impl Write) -> io::Result<()> {
    let mut w = redactor.writer(BufWriter::with_capacity(CHUNK, output));
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        // Pass finished lines on now, so a pipe from `tail -f` is not held up by buffering.
        w.flush()?;
    }
    w.finish()
}
