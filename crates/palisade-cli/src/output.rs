//! Writing to stdout when its reader may go away: `palisade … | head` closes the pipe once it has read what it
//! wanted. That is not a failure (as for `cat` or `grep`), so a command that hits it exits with the code its
//! result warrants, quietly; `println!` would panic instead (exit 101). Every command writes stdout through here.

use std::io::{self, BufWriter, Write};

/// `result`, with a reader that went away (`BrokenPipe`) counted as written.
pub(crate) fn reader_gone_is_ok(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs `write` on a buffered, locked stdout and flushes it. It stops at the first failed write (`?`), and a
/// reader that went away is not an error ([`reader_gone_is_ok`]); any other failure (a full disk) is returned.
pub(crate) fn print_with(write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    reader_gone_is_ok(write(&mut out).and_then(|()| out.flush()))
}
