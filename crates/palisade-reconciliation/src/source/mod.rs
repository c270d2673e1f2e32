//! Sources: one small trait, one file per format.
//!
//! A [`Source`] yields records one at a time, borrowing each record's id from its own buffer, so reading a file
//! allocates nothing per row. A format is a file in this module: read rows with [`CsvFile`] (the `csv` crate's
//! `ByteRecord` path), turn fields into a [`RecordRef`] or a precise [`RowError`].

mod adyen;
mod canonical;
mod fold;
mod stripe;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use adyen::AdyenSettlement;
pub use canonical::CanonicalCsv;
pub use stripe::StripeBalance;

use crate::error::{Error, Problem, RowError};
use crate::record::{RecordRef, StatusMap};

/// A stream of records from one side.
///
/// After a row error ([`Error::Row`]) the source is positioned past the bad row: calling
/// [`next_record`](Source::next_record) again goes on with the next one (that is how a reject sink works).
pub trait Source: Send {
    /// The name used in messages (usually the file's path).
    fn name(&self) -> &str;
    /// The next record, `Ok(None)` at the end.
    ///
    /// # Errors
    /// [`Error::Row`] for a malformed row (the next call goes on after it); any other [`Error`] is final.
    fn next_record(&mut self, statuses: &StatusMap) -> Result<Option<RecordRef<'_>>, Error>;
    /// About how many records are left, if the source can tell cheaply (used to size tables up front).
    fn rows_hint(&self) -> Option<u64> {
        None
    }
    /// Rows read and deliberately left out (a payout in an activity report): counted in the summary.
    fn skipped(&self) -> u64 {
        0
    }
    /// Whether the record last returned by [`next_record`](Source::next_record) holds only later activity on a
    /// payment charged before this source begins: a T-1 report's refund, dispute or failure of a charge that was
    /// in an earlier report. Its amount is then that activity's, not the payment's, so it is not compared; its
    /// status is compared as far as the activity implies it (a refund: the ledger's status is `refunded` or
    /// `partially_refunded`; a dispute: `disputed`; a failure: `failed`). `false` (the default): a whole payment.
    fn activity_only(&self) -> bool {
        false
    }
    /// Offers the reconciler's row counter ([`progress`](crate::ReconcilerBuilder::progress)). A source that
    /// adds the rows it reads to it, as it reads them, keeps it and returns `true`; by default (`false`) the
    /// records it yields are counted instead. A folded report reads all its rows before its first record, so it
    /// counts them itself.
    fn count_rows(&mut self, rows: Arc<AtomicU64>) -> bool {
        let _ = rows;
        false
    }
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn next_record(&mut self, statuses: &StatusMap) -> Result<Option<RecordRef<'_>>, Error> {
        (**self).next_record(statuses)
    }
    fn rows_hint(&self) -> Option<u64> {
        (**self).rows_hint()
    }
    fn skipped(&self) -> u64 {
        (**self).skipped()
    }
    fn activity_only(&self) -> bool {
        (**self).activity_only()
    }
    fn count_rows(&mut self, rows: Arc<AtomicU64>) -> bool {
        (**self).count_rows(rows)
    }
}

/// Bytes of the read buffer: large enough that reading is a few big `read` calls.
const READ_BUFFER: usize = 1 << 20;

/// A CSV file with a header, read row by row into one reused `ByteRecord`.
pub struct CsvFile {
    name: Arc<str>,
    reader: csv::Reader<Box<dyn Read + Send>>,
    headers: csv::ByteRecord,
    record: csv::ByteRecord,
    bytes: Option<u64>,
}

impl CsvFile {
    /// Opens `path` and reads its header.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be opened or its header read; [`Error::Row`] (line 1, [`Problem::LineBreakInField`])
    /// if a name in the header holds a line break.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let name: Arc<str> = path.display().to_string().into();
        let file = File::open(path).map_err(|source| Error::Io { file: name.clone(), source })?;
        let bytes = file.metadata().ok().map(|m| m.len());
        let mut csv = Self::from_reader(name, file)?;
        csv.bytes = bytes;
        Ok(csv)
    }

    /// Reads CSV from `reader`, named `name` in messages, and reads its header.
    ///
    /// # Errors
    /// [`Error::Io`] if the header cannot be read; [`Error::Row`] (line 1, [`Problem::LineBreakInField`]) if a name
    /// in the header holds a line break.
    pub fn from_reader(name: impl Into<Arc<str>>, reader: impl Read + Send + 'static) -> Result<Self, Error> {
        let name = name.into();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .buffer_capacity(READ_BUFFER)
            .from_reader(Box::new(reader) as Box<dyn Read + Send>);
        let headers = reader.byte_headers().map_err(|e| csv_io(&name, e))?.clone();
        let csv = CsvFile { name, reader, headers, record: csv::ByteRecord::new(), bytes: None };
        // A quote left open in the header swallows rows as one in a row would.
        if let Some(index) = line_break(&csv.headers) {
            return Err(Error::Row(Box::new(RowError {
                file: csv.name.clone(),
                line: 1,
                column: index + 1,
                column_name: String::new(),
                problem: Problem::LineBreakInField,
                row: csv.headers.iter().map(String::from_utf8_lossy).collect::<Vec<_>>().join(","),
            })));
        }
        Ok(csv)
    }

    /// The file's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The index of the column named `column` (exact match, surrounding spaces and a UTF-8 BOM ignored).
    ///
    /// # Errors
    /// [`Error::MissingColumn`], listing `all` as the columns the format reads; [`Error::DuplicateColumn`] when
    /// the header names it twice.
    pub fn column(&self, column: &str, all: &[&str]) -> Result<usize, Error> {
        self.optional(column)?.ok_or_else(|| Error::MissingColumn {
            file: self.name.clone(),
            column: column.to_owned(),
            expected: all.join(","),
        })
    }

    /// The index of the optional column named `column`, if there is one.
    ///
    /// # Errors
    /// [`Error::DuplicateColumn`] when the header names it twice.
    pub fn optional(&self, column: &str) -> Result<Option<usize>, Error> {
        let Some(first) = self.find(column) else { return Ok(None) };
        match self.headers.iter().skip(first + 1).position(|h| header_is(h, column)) {
            None => Ok(Some(first)),
            Some(n) => Err(Error::DuplicateColumn {
                file: self.name.clone(),
                column: column.to_owned(),
                first: first + 1,
                second: first + n + 2,
            }),
        }
    }

    /// The index of the first column named `column`, if there is one (see [`optional`](Self::optional), which
    /// refuses a name given twice).
    #[must_use]
    pub fn find(&self, column: &str) -> Option<usize> {
        self.headers.iter().position(|h| header_is(h, column))
    }

    /// Reads the next row; `Ok(false)` at the end.
    ///
    /// # Errors
    /// [`Error::Row`] with [`Problem::Csv`] for malformed CSV, [`Problem::ExtraFields`] for a row longer than
    /// the header or [`Problem::LineBreakInField`] for a field with a line break (a quote left open); [`Error::Io`]
    /// if reading fails.
    pub fn next_row(&mut self) -> Result<bool, Error> {
        match self.reader.read_byte_record(&mut self.record) {
            // A longer row is refused here (a shorter one at the field it lacks): which field is which is unknown.
            Ok(true) if self.record.len() > self.headers.len() => {
                let (found, expected) = (self.record.len(), self.headers.len());
                Err(self.error(expected, Problem::ExtraFields { found, expected }))
            }
            // The csv crate reads a quote left open as a field running on to the next quote, or to the end of the
            // file (it accepts the end of the file inside quotes): the rows in between would vanish into it. No
            // format here has multi-line fields, so a line break in a field is that, and refused.
            Ok(true) => match line_break(&self.record) {
                Some(index) => Err(self.error(index, Problem::LineBreakInField)),
                None => Ok(true),
            },
            Ok(false) => Ok(false),
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                match e.into_kind() {
                    csv::ErrorKind::Io(source) => Err(Error::Io { file: self.name.clone(), source }),
                    kind => Err(Error::Row(Box::new(RowError {
                        file: self.name.clone(),
                        line,
                        column: 0,
                        column_name: String::new(),
                        problem: Problem::Csv(format!("{kind:?}")),
                        row: String::new(),
                    }))),
                }
            }
        }
    }

    /// The current row.
    #[must_use]
    pub fn row(&self) -> &csv::ByteRecord {
        &self.record
    }

    /// The line where the current row starts.
    #[must_use]
    pub fn line(&self) -> u64 {
        self.record.position().map_or(0, csv::Position::line)
    }

    /// Field `index` of the current row, or a [`Problem::MissingField`] error.
    ///
    /// # Errors
    /// [`Error::Row`] when the row is shorter.
    #[inline]
    pub fn field(&self, index: usize) -> Result<&[u8], Error> {
        match self.record.get(index) {
            Some(f) => Ok(f),
            None => {
                Err(self.error(index, Problem::MissingField { found: self.record.len(), expected: self.headers.len() }))
            }
        }
    }

    /// A row error at column `index` of the current row.
    #[cold]
    #[must_use]
    pub fn error(&self, index: usize, problem: Problem) -> Error {
        let column_name = self.headers.get(index).map(|h| String::from_utf8_lossy(h).into_owned()).unwrap_or_default();
        let row = self.record.iter().map(String::from_utf8_lossy).collect::<Vec<_>>().join(",");
        Error::Row(Box::new(RowError {
            file: self.name.clone(),
            line: self.line(),
            column: index + 1,
            column_name,
            problem,
            row,
        }))
    }

    /// Rows left, estimated from the file's size and the bytes per row so far.
    #[must_use]
    pub fn rows_hint(&self) -> Option<u64> {
        let total = self.bytes?;
        let pos = self.reader.position();
        let (done, rows) = (pos.byte(), pos.record().max(1));
        let per_row = (done / rows).max(16);
        Some(total.saturating_sub(done) / per_row)
    }

    /// Bytes read so far.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// Whether header `h` names `column` (surrounding spaces and a UTF-8 BOM ignored).
fn header_is(h: &[u8], column: &str) -> bool {
    let h = h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h);
    h.trim_ascii() == column.as_bytes()
}

/// The first field of `record` holding a line break (`\n` or `\r`), if any.
#[inline]
fn line_break(record: &csv::ByteRecord) -> Option<usize> {
    // Every row passes here: look at all its bytes at once, in chunks without a branch per byte (so the loop
    // vectorises), and at the fields only when there is one.
    let any = record
        .as_slice()
        .chunks(32)
        .any(|chunk| chunk.iter().fold(false, |found, &b| found | (b == b'\n') | (b == b'\r')));
    if !any {
        return None;
    }
    record.iter().position(|f| f.iter().any(|&b| b == b'\n' || b == b'\r'))
}

fn csv_io(name: &Arc<str>, e: csv::Error) -> Error {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Io { file: name.clone(), source },
        kind => Error::Io { file: name.clone(), source: std::io::Error::other(format!("{kind:?}")) },
    }
}

/// Field `index` as an id: UTF-8 text without surrounding spaces (a padded export), not empty.
#[inline]
pub(crate) fn id(csv: &CsvFile, index: usize) -> Result<&str, Error> {
    let id = text(csv, index)?.trim_ascii();
    if id.is_empty() {
        return Err(csv.error(index, Problem::EmptyId));
    }
    Ok(id)
}

/// Field `index` as UTF-8 text, or [`Problem::InvalidUtf8`].
#[inline]
pub(crate) fn text(csv: &CsvFile, index: usize) -> Result<&str, Error> {
    let bytes = csv.field(index)?;
    std::str::from_utf8(bytes).map_err(|_| csv.error(index, Problem::InvalidUtf8))
}

/// A small cache of the currency codes read so far: files repeat a few currencies, and a hit is a compare of
/// three bytes instead of a lookup in the ISO table.
#[derive(Default)]
pub(crate) struct CurrencyCache {
    seen: Vec<([u8; 3], palisade_core::Currency)>,
}

/// Codes remembered; a file with more currencies looks the rest up each time.
const CURRENCY_CACHE: usize = 16;

impl CurrencyCache {
    #[inline]
    pub(crate) fn get(&mut self, csv: &CsvFile, index: usize) -> Result<palisade_core::Currency, Error> {
        let bytes = csv.field(index)?;
        let key = <[u8; 3]>::try_from(bytes).ok();
        if let Some(k) = key
            && let Some((_, cur)) = self.seen.iter().find(|(c, _)| *c == k)
        {
            return Ok(*cur);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| csv.error(index, Problem::InvalidUtf8))?;
        let cur = palisade_core::Currency::from_code(text)
            .map_err(|_| csv.error(index, Problem::UnknownCurrency(text.to_owned())))?;
        if let Some(k) = key
            && self.seen.len() < CURRENCY_CACHE
        {
            self.seen.push((k, cur));
        }
        Ok(cur)
    }
}

/// Field `index` as an amount of `currency` in minor units.
#[inline]
pub(crate) fn amount(csv: &CsvFile, index: usize, currency: palisade_core::Currency) -> Result<i64, Error> {
    let bytes = csv.field(index)?;
    crate::amount::parse_minor(bytes, currency).map_err(|e| csv.error(index, Problem::Amount(e)))
}

/// Field `index` as a timestamp.
#[inline]
pub(crate) fn timestamp(
    csv: &CsvFile,
    index: usize,
    offset_optional: bool,
    expected: &'static str,
) -> Result<i64, Error> {
    let bytes = csv.field(index)?;
    crate::timestamp::parse_rfc3339(bytes, offset_optional).ok_or_else(|| {
        csv.error(index, Problem::Timestamp { text: String::from_utf8_lossy(bytes).into_owned(), expected })
    })
}
