//! Streaming redaction: [`RedactingWriter`] (`std::io::Write`) and [`AsyncRedactingWriter`]
//! (`tokio::io::AsyncWrite`).
//!
//! A card number may arrive split across two writes (`4242 4242 ` then `4242 4242`). The writers therefore hold
//! back a bounded tail: everything up to the last newline is final (nothing the scanner finds spans a newline),
//! and on a long line everything but the last [`HOLD_BACK`] bytes is final once the cut is moved back out of any
//! finding, digit group run or alphanumeric word. Output equals what the one-shot [`Redactor::redact_bytes`]
//! gives for the whole input, whatever the split — unless a single word or run of digit groups exceeds
//! [`MAX_PENDING`] bytes, where the writer cuts anyway to keep memory bounded.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::redactor::Redactor;
use palisade_core::card::scan::{self, Findings};

/// Bytes of a long line held back until more data shows how they end: more than the longest finding (Track 1,
/// 79 bytes) plus the look-back of a label, so a finding is always seen whole before the cut passes it.
pub const HOLD_BACK: usize = 128;
/// Bytes of already written input kept as context, so a label (`cvv: `) written in one call still marks the
/// value written in the next.
const CONTEXT: usize = 64;
/// The most a writer holds back when no safe cut exists (one enormous word): 64 KiB, far above any log line's
/// word, small enough to keep a stuck writer's memory bounded.
pub const MAX_PENDING: usize = 64 * 1024;

/// The state shared by the sync and async writers: context + pending input.
#[derive(Debug, Clone)]
pub(crate) struct StreamState {
    redactor: Redactor,
    buf: Vec<u8>,
    /// `buf[..ctx]` was already written out (raw context for look-back); `buf[ctx..]` is pending.
    ctx: usize,
    findings: Findings,
}

impl StreamState {
    pub(crate) fn new(redactor: Redactor) -> Self {
        StreamState { redactor, buf: Vec::new(), ctx: 0, findings: Findings::default() }
    }

    /// Takes `data` in and appends whatever output is final to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        // Fast path: nothing pending and no digit anywhere: the data is final as it is.
        if self.buf.len() == self.ctx && !scan::has_digit(data) && !ends_in_word(data) {
            out.extend_from_slice(data);
            self.keep_context_from(data);
            return;
        }
        self.buf.extend_from_slice(data);
        self.drain(false, out);
    }

    /// Appends all pending output to `out` (end of stream).
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        self.drain(true, out);
    }

    fn keep_context_from(&mut self, data: &[u8]) {
        if data.len() >= CONTEXT {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - CONTEXT..]);
        } else {
            self.buf.extend_from_slice(data);
            let excess = self.buf.len().saturating_sub(CONTEXT);
            self.buf.drain(..excess);
        }
        self.ctx = self.buf.len();
    }

    fn drain(&mut self, last: bool, out: &mut Vec<u8>) {
        let b = &self.buf;
        if b.len() == self.ctx {
            return;
        }
        self.findings.list.clear();
        scan::scan(b, self.ctx, self.redactor.rules(), &mut self.findings);
        let cut = if last { b.len() } else { safe_cut(b, self.ctx, &self.findings) };
        if cut <= self.ctx {
            return;
        }
        let done = self.findings.list.partition_point(|f| f.end <= cut);
        self.redactor.render(b, self.ctx, cut, &self.findings.list[..done], out);
        let keep_from = cut.saturating_sub(CONTEXT);
        self.buf.drain(..keep_from);
        self.ctx = cut - keep_from;
    }
}

/// True when `data` ends inside a word that the next write could continue into something the scanner reads.
fn ends_in_word(data: &[u8]) -> bool {
    data.last().is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b';' | b'^'))
}

/// True when the scanner may read `b[p - 1]` and `b[p]` as parts of one token: a cut between them could change
/// the result.
fn joined(b: &[u8], p: usize) -> bool {
    let (x, y) = (b[p - 1], b[p]);
    (x.is_ascii_alphanumeric() && y.is_ascii_alphanumeric())
        || (x.is_ascii_digit() && matches!(y, b' ' | b'-' | b'^' | b'=' | b'?'))
        // Multi-byte separators (U+00A0, U+2009, U+2013, U+2014, `%20`) between digit groups: never cut in or
        // next to one (any non-ASCII byte next to a digit or another non-ASCII byte counts, conservatively).
        || (x.is_ascii_digit() && (y == b'%' || y >= 0x80))
        || (x >= 0x80 && (y >= 0x80 || y.is_ascii_digit()))
        || (matches!(x, b' ' | b'-' | b'+') && y.is_ascii_digit() && p >= 2 && b[p - 2].is_ascii_digit())
        // Escaped separators (`\u{a0}`, `\u00a0`) and `+` between digit groups, and a backslash escape
        // (`\"`, `\n`) between a label and its value.
        || (x.is_ascii_digit() && matches!(y, b'+' | b'\\'))
        || (matches!(x, b'\\' | b'{') && (y.is_ascii_alphanumeric() || matches!(y, b'{' | b'"' | b'\\')))
        || (x.is_ascii_alphanumeric() && matches!(y, b'{' | b'}'))
        || (x == b'}' && y.is_ascii_digit())
        || (matches!(x, b'%' | b';' | b'^' | b'=') && y.is_ascii_alphanumeric())
}

/// The furthest position up to which output is final, given that more bytes may follow.
fn safe_cut(b: &[u8], ctx: usize, f: &Findings) -> usize {
    let len = b.len();
    let after_newline = b[ctx..].iter().rposition(|&c| c == b'\n').map_or(ctx, |i| ctx + i + 1);
    let limit = len.saturating_sub(HOLD_BACK);
    if limit <= after_newline {
        return after_newline;
    }
    let mut cut = limit;
    let mut k = f.list.len();
    loop {
        while k > 0 && f.list[k - 1].start >= cut {
            k -= 1;
        }
        if k > 0 && f.list[k - 1].end > cut {
            cut = f.list[k - 1].start;
            continue;
        }
        if cut > after_newline && joined(b, cut) {
            cut -= 1;
            continue;
        }
        break;
    }
    if cut <= after_newline {
        if len - ctx > MAX_PENDING {
            // One enormous word: cut outside any finding to keep memory bounded.
            let mut forced = limit;
            for x in f.list.iter().rev() {
                if x.start < forced && x.end > forced {
                    forced = x.start;
                }
            }
            return forced.max(after_newline);
        }
        return after_newline;
    }
    cut
}

/// An `io::Write` that redacts everything written through it before passing it to `W`.
///
/// Output is held back only as long as needed to see a card number whole (see the module docs); call
/// [`finish`](Self::finish) (or drop the writer) to write the rest. `flush` writes what is final and flushes `W`.
///
/// ```
/// use std::io::Write;
/// let mut w = palisade_redaction::Redactor::new().writer(Vec::new());
/// w.write_all(b"card 4242 4242 ").unwrap();
/// w.write_all(b"4242 4242\n").unwrap();
/// assert_eq!(w.into_inner().unwrap(), b"card **** **** **** 4242\n");
/// ```
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: Option<W>,
    state: StreamState,
    out: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(redactor: Redactor, inner: W) -> Self {
        RedactingWriter { inner: Some(inner), state: StreamState::new(redactor), out: Vec::new() }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if let Some(w) = self.inner.as_mut()
            && !self.out.is_empty()
        {
            w.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes out everything held back (end of stream). The writer stays usable.
    ///
    /// # Errors
    /// The inner writer's.
    pub fn finish(&mut self) -> io::Result<()> {
        self.state.finish(&mut self.out);
        self.write_out()?;
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }

    /// Finishes and returns the inner writer.
    ///
    /// # Errors
    /// The inner writer's.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.finish()?;
        self.inner.take().ok_or_else(|| io::Error::other("writer already taken"))
    }

    /// The inner writer.
    pub fn get_ref(&self) -> Option<&W> {
        self.inner.as_ref()
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.state.push(data, &mut self.out);
        self.write_out()?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.inner.is_some() {
            // Drop cannot report an error; callers who care call `finish`.
            let _ = self.finish();
        }
    }
}

pin_project_lite::pin_project! {
    /// A `tokio::io::AsyncWrite` that redacts everything written through it before passing it to `W`.
    ///
    /// Same hold-back rules as [`RedactingWriter`]; `poll_shutdown` writes the held-back tail, then shuts `W`
    /// down.
    #[derive(Debug)]
    pub struct AsyncRedactingWriter<W> {
        #[pin]
        inner: W,
        state: StreamState,
        out: Vec<u8>,
        written: usize,
        finished: bool,
    }
}

impl<W: tokio::io::AsyncWrite> AsyncRedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(redactor: Redactor, inner: W) -> Self {
        AsyncRedactingWriter { inner, state: StreamState::new(redactor), out: Vec::new(), written: 0, finished: false }
    }

    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn poll_write_out(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while *this.written < this.out.len() {
            let n = ready!(this.inner.as_mut().poll_write(cx, &this.out[*this.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *this.written += n;
        }
        this.out.clear();
        *this.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<W: tokio::io::AsyncWrite> tokio::io::AsyncWrite for AsyncRedactingWriter<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        // Earlier output must be out before new data is taken in, so memory stays bounded.
        ready!(self.as_mut().poll_write_out(cx))?;
        let this = self.as_mut().project();
        this.state.push(data, this.out);
        // Try to pass it on now; if the inner writer is not ready, it goes out on the next call.
        let _ = self.poll_write_out(cx)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_write_out(cx))?;
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.finished {
            let this = self.as_mut().project();
            this.state.finish(this.out);
            *this.finished = true;
        }
        ready!(self.as_mut().poll_write_out(cx))?;
        self.project().inner.poll_shutdown(cx)
    }
}

impl Redactor {
    /// A streaming `io::Write` redactor around `inner`.
    pub fn writer<W: Write>(&self, inner: W) -> RedactingWriter<W> {
        RedactingWriter::new(self.clone(), inner)
    }
    /// A streaming `tokio::io::AsyncWrite` redactor around `inner`.
    pub fn async_writer<W: tokio::io::AsyncWrite>(&self, inner: W) -> AsyncRedactingWriter<W> {
        AsyncRedactingWriter::new(self.clone(), inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> Vec<u8> {
        let mut w = Redactor::new().writer(Vec::new());
        for c in chunks {
            w.write_all(c).unwrap_or_else(|e| panic!("{e}"));
        }
        w.into_inner().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_split_of_a_tricky_line_equals_one_shot() {
        let text: &[u8] =
            b"x cvv: 123 pan=4242 4242 4242 4242 t=%B4111111111111111^DOE/J^2512? pin_block=AB12CD34EF567890\n\
            ;4111111111111111=2512101? 12345678901234567890 id_5555555555554444 end";
        let want = Redactor::new().redact_bytes(text).into_owned();
        for i in 0..=text.len() {
            assert_eq!(stream(&[&text[..i], &text[i..]]), want, "split at {i}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(stream(&bytes), want);
    }

    #[test]
    fn long_lines_are_emitted_before_the_end() {
        let mut w = Redactor::new().writer(Vec::new());
        let line = "word 12 ".repeat(100);
        w.write_all(line.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let so_far = w.get_ref().map_or(0, Vec::len);
        assert!(so_far >= line.len() - HOLD_BACK && so_far < line.len(), "{so_far}");
    }

    #[test]
    fn memory_is_bounded_on_an_endless_word() {
        let mut w = Redactor::new().writer(io::sink());
        for _ in 0..100 {
            w.write_all(&[b'a'; 4096]).unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(w.state.buf.len() <= MAX_PENDING + 4096 + CONTEXT, "{}", w.state.buf.len());
    }

    #[tokio::test]
    async fn async_writer_matches_one_shot() {
        use tokio::io::AsyncWriteExt;
        let text = b"a 4242 4242 4242 4242 b\ncvv=123 c";
        let want = Redactor::new().redact_bytes(text).into_owned();
        for i in 0..=text.len() {
            let mut w = Redactor::new().async_writer(Vec::new());
            w.write_all(&text[..i]).await.unwrap_or_else(|e| panic!("{e}"));
            w.write_all(&text[i..]).await.unwrap_or_else(|e| panic!("{e}"));
            w.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(w.into_inner(), want, "split {i}");
        }
    }
}
