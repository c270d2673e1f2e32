//! `palisade recon`: reconcile an internal ledger with a gateway report.
//!
//! ```text
//! palisade recon --internal FILE --gateway FILE [--gateway-format canonical|stripe-balance|adyen-settlement]
//!                [--as-of TIME] [--lag DURATION] [--out FILE] [--summary-json FILE] [--reject FILE]
//! ```
//!
//! Discrepancies go out as JSON lines (to `--out` or stdout), then the pending records (`"type":"pending"`);
//! each line has `type`, `id` and the records of the sides that have the id, amounts as decimal strings. The
//! summary goes to stderr (and as JSON to `--summary-json`). Exit codes follow `diff`: 0 when the two sides
//! agree, 1 when there is any discrepancy (or a row was rejected with `--reject`), 2 on bad input or usage; a
//! reader of stdout that goes away (`| head -1`) changes nothing. A progress bar with rows/s shows on stderr
//! when it is a terminal.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_reconciliation::{
    AdyenSettlement, CanonicalCsv, Error, Reconciler, Report, RowError, Source, StripeBalance,
};

/// Exit code for bad input or usage.
const BAD_INPUT: u8 = 2;

/// Arguments of `palisade recon`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The internal ledger, canonical CSV: id,amount,currency,status,created_at (any order, more columns ignored).
    #[arg(long, value_name = "FILE")]
    internal: PathBuf,
    /// The gateway's report.
    #[arg(long, value_name = "FILE")]
    gateway: PathBuf,
    /// The gateway report's format.
    #[arg(long, value_enum, default_value_t = Format::Canonical)]
    gateway_format: Format,
    /// The cut-off, RFC 3339 (2024-05-02T00:00:00Z) or a date (midnight UTC). Default: the latest created_at on
    /// either side.
    #[arg(long, value_name = "TIME", value_parser = parse_as_of)]
    as_of: Option<i64>,
    /// How long before the cut-off a record on one side only is pending rather than missing: 24h, 90m, 1d12h,
    /// 3600s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "24h")]
    lag: Duration,
    /// Write the discrepancies (JSON lines) here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write the summary as JSON here.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// Write malformed rows here (JSON lines with file, line, column and reason) and go on, instead of stopping
    /// at the first one.
    #[arg(long, value_name = "FILE")]
    reject: Option<PathBuf>,
}

/// A gateway report format.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    /// The canonical CSV, like the ledger.
    Canonical,
    /// Stripe's itemized balance change from activity report, folded per charge.
    StripeBalance,
    /// Adyen's Settlement details report, folded per merchant reference.
    AdyenSettlement,
}

fn parse_as_of(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Some(unix) = palisade_reconciliation::timestamp::parse_rfc3339(t.as_bytes(), false) {
        return Ok(unix);
    }
    if t.len() == 10
        && let Some(unix) =
            palisade_reconciliation::timestamp::parse_rfc3339(format!("{t}T00:00:00Z").as_bytes(), false)
    {
        return Ok(unix);
    }
    Err(format!("{text:?}: expected RFC 3339 such as 2024-05-02T00:00:00Z, or a date such as 2024-05-02"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?}: expected a duration such as 24h, 90m, 1d12h or 3600s");
    let mut secs: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.trim().chars() {
        if let Some(d) = c.to_digit(10) {
            number =
                Some(number.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(u64::from(d))).ok_or_else(bad)?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        secs = n.checked_mul(unit).and_then(|s| secs.checked_add(s)).ok_or_else(bad)?;
    }
    if number.is_some() || text.trim().is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

fn open_gateway(args: &Args) -> Result<Box<dyn Source>, Error> {
    Ok(match args.gateway_format {
        Format::Canonical => Box::new(CanonicalCsv::open(&args.gateway)?),
        Format::StripeBalance => Box::new(StripeBalance::open(&args.gateway)?),
        Format::AdyenSettlement => Box::new(AdyenSettlement::open(&args.gateway)?),
    })
}

fn create(path: &PathBuf) -> Result<BufWriter<File>, String> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 16, f))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub(crate) fn run(args: Args) -> ExitCode {
    match reconcile(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("palisade recon: {msg}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

fn reconcile(args: &Args) -> Result<ExitCode, String> {
    // Open everything first, so a bad path fails before any work.
    let internal = CanonicalCsv::open(&args.internal).map_err(|e| e.to_string())?;
    let gateway = open_gateway(args).map_err(|e| e.to_string())?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(create(p)?),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    };
    let summary_file = args.summary_json.as_ref().map(|p| create(p).map(|w| (p, w))).transpose()?;

    let mut builder = Reconciler::builder().lag(args.lag);
    if let Some(t) = args.as_of {
        builder = builder.as_of(t);
    }
    let reject_error = Arc::new(Mutex::new(None::<String>));
    if let Some(path) = &args.reject {
        let sink = Mutex::new(create(path)?);
        let (path, failed) = (path.display().to_string(), reject_error.clone());
        builder = builder.reject(move |e: &RowError| {
            let line = serde_json::json!({
                "file": &*e.file, "line": e.line, "column": e.column, "column_name": e.column_name,
                "reason": e.problem.to_string(), "row": e.row,
            });
            let mut w = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(err) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                failed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert(format!("cannot write {path}: {err}"));
            }
        });
    }
    let rows = Arc::new(AtomicU64::new(0));
    let progress = io::stderr().is_terminal().then(|| Progress::start(rows.clone()));
    let result = builder.progress(rows).build().reconcile(internal, gateway);
    if let Some(p) = progress {
        p.finish();
    }
    let report = result.map_err(|e| e.to_string())?;
    if let Some(e) = reject_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        return Err(e);
    }

    // A reader that went away (`palisade recon … | head`) had what it wanted: the exit code stays the report's.
    crate::output::reader_gone_is_ok(write_lines(&mut out, &report))
        .map_err(|e| format!("cannot write the discrepancies: {e}"))?;
    eprint!("{}", report.summary());
    if let Some((path, mut w)) = summary_file {
        serde_json::to_writer_pretty(&mut w, &report.summary())
            .map_err(io::Error::from)
            .and_then(|()| writeln!(w))
            .and_then(|()| w.flush())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let rejected = report.internal.rejected + report.gateway.rejected;
    Ok(if report.is_clean() && rejected == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn write_lines(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    for d in report.discrepancies.iter().chain(&report.pending) {
        serde_json::to_writer(&mut *out, d)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A progress bar on stderr, fed by the reconciler's row counter: refreshed every 100 ms until `finish` (a message
/// on a channel, so the bar ends at once instead of at its next tick).
struct Progress {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Progress {
    fn start(rows: Arc<AtomicU64>) -> Self {
        let (done, stop) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed} {human_pos} rows read ({per_sec})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_millis(100)) {
                bar.set_position(rows.load(Ordering::Relaxed));
            }
            bar.set_position(rows.load(Ordering::Relaxed));
            bar.finish_and_clear();
        });
        Progress { done, thread }
    }
    fn finish(self) {
        // A closed channel ends the loop too, so a failed send needs nothing more.
        let _ = self.done.send(());
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_reconciliation::defaults;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(defaults::LAG));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "24", "h", "1x", "-1h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cut_offs() {
        assert_eq!(parse_as_of("2024-05-02T00:00:00Z"), Ok(1_714_608_000));
        assert_eq!(parse_as_of("2024-05-02"), Ok(1_714_608_000));
        assert!(parse_as_of("yesterday").is_err());
    }
}
