//! The canonical CSV, for either side: `id,amount,currency,status,created_at`.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::{CsvFile, CurrencyCache, Source, amount, id, timestamp};
use crate::error::{Error, Problem};
use crate::record::{RecordRef, StatusMap};

/// The columns read, in the header's names.
pub const COLUMNS: [&str; 5] = ["id", "amount", "currency", "status", "created_at"];

const TIMESTAMP: &str = "RFC 3339 such as 2024-05-01T12:00:00Z";

/// The canonical CSV: a header naming at least `id,amount,currency,status,created_at` (any order, other columns
/// ignored); `amount` in major units as a decimal string (`12.34`, `500` for JPY), `currency` an ISO 4217 code,
/// `status` a name the [`StatusMap`] knows, `created_at` RFC 3339.
pub struct CanonicalCsv {
    csv: CsvFile,
    cols: [usize; 5],
    currencies: CurrencyCache,
}

impl CanonicalCsv {
    /// Opens `path` and checks its header.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::MissingColumn`], [`Error::DuplicateColumn`], or [`Error::Row`] (line 1) for a
    /// header with a line break in a name.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(CsvFile::open(path)?)
    }

    /// Reads from `reader`, named `name` in messages.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::MissingColumn`], [`Error::DuplicateColumn`], or [`Error::Row`] (line 1) for a
    /// header with a line break in a name.
    pub fn from_reader(name: impl Into<Arc<str>>, reader: impl Read + Send + 'static) -> Result<Self, Error> {
        Self::new(CsvFile::from_reader(name, reader)?)
    }

    fn new(csv: CsvFile) -> Result<Self, Error> {
        let mut cols = [0; 5];
        for (slot, name) in cols.iter_mut().zip(COLUMNS) {
            *slot = csv.column(name, &COLUMNS)?;
        }
        Ok(CanonicalCsv { csv, cols, currencies: CurrencyCache::default() })
    }
}

impl Source for CanonicalCsv {
    fn name(&self) -> &str {
        self.csv.name()
    }

    fn next_record(&mut self, statuses: &StatusMap) -> Result<Option<RecordRef<'_>>, Error> {
        if !self.csv.next_row()? {
            return Ok(None);
        }
        let csv = &self.csv;
        let [c_id, c_amount, c_currency, c_status, c_created] = self.cols;
        let id = id(csv, c_id)?;
        let currency = self.currencies.get(csv, c_currency)?;
        let amount = amount(csv, c_amount, currency)?;
        let raw_status = csv.field(c_status)?;
        let Some(status) = statuses.get(raw_status) else {
            return Err(match std::str::from_utf8(raw_status) {
                Ok(name) => csv.error(
                    c_status,
                    Problem::UnknownStatus { name: name.to_owned(), known: statuses.names().join(", ") },
                ),
                Err(_) => csv.error(c_status, Problem::InvalidUtf8),
            });
        };
        let created_at = timestamp(csv, c_created, false, TIMESTAMP)?;
        Ok(Some(RecordRef {
            id,
            amount,
            currency,
            net_currency: currency,
            status,
            created_at,
            fee: 0,
            net: amount,
            line: csv.line(),
        }))
    }

    fn rows_hint(&self) -> Option<u64> {
        self.csv.rows_hint()
    }
}
