//! Errors: a bad file stops the run; a bad row stops it too, unless a reject sink takes it.

use std::fmt;
use std::sync::Arc;

use palisade_core::MoneyError;

/// What went wrong in a reconciliation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: Arc<str>,
        /// The cause.
        source: std::io::Error,
    },
    /// The header lacks a column the format needs.
    #[error("{file}:1: missing column {column:?}: the header must name the columns {expected}")]
    MissingColumn {
        /// The file.
        file: Arc<str>,
        /// The column not found.
        column: String,
        /// Every column the format reads.
        expected: String,
    },
    /// The header names a column the format reads twice: which one is meant is unknown.
    #[error(
        "{file}:1: the header names column {column:?} twice (columns {first} and {second}): keep one, or rename the other"
    )]
    DuplicateColumn {
        /// The file.
        file: Arc<str>,
        /// The column's name.
        column: String,
        /// Where it is first, from 1.
        first: usize,
        /// Where it is again, from 1.
        second: usize,
    },
    /// A row is malformed (see [`RowError`]).
    #[error(transparent)]
    Row(#[from] Box<RowError>),
}

/// A malformed row: where it is, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RowError {
    /// The file.
    pub file: Arc<str>,
    /// The line where the row starts (1 is the header).
    pub line: u64,
    /// The column, from 1.
    pub column: usize,
    /// The column's name in the header.
    pub column_name: String,
    /// What is wrong.
    pub problem: Problem,
    /// The row as read, fields joined by commas (invalid UTF-8 replaced), for a reject file.
    pub row: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: column {}", self.file, self.line, self.column)?;
        // A field past the header's last column has no name.
        if !self.column_name.is_empty() {
            write!(f, " ({})", self.column_name)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for RowError {}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The amount is malformed, finer than the currency's minor unit or out of range.
    #[error("{0}")]
    Amount(MoneyError),
    /// Not a currency code.
    #[error("unknown currency {0:?}: expected an ISO 4217 code such as USD")]
    UnknownCurrency(String),
    /// Not a timestamp.
    #[error("bad timestamp {text:?}: expected {expected}")]
    Timestamp {
        /// The text.
        text: String,
        /// The form expected.
        expected: &'static str,
    },
    /// The field is not UTF-8.
    #[error("invalid UTF-8: expected UTF-8 text")]
    InvalidUtf8,
    /// A status the status mapping does not know.
    #[error("unknown status {name:?}: expected one of {known} (or map it with ReconcilerBuilder::status)")]
    UnknownStatus {
        /// The name.
        name: String,
        /// The names known.
        known: String,
    },
    /// The row is shorter than the header.
    #[error("missing field: the row has {found} fields, the header {expected}")]
    MissingField {
        /// Fields in the row.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// The row is longer than the header (an unquoted `1,234.56` is one): its fields cannot be told apart.
    #[error("extra fields: the row has {found} fields, the header {expected}")]
    ExtraFields {
        /// Fields in the row.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A field holds a line break. None of the formats has multi-line fields, so this is a quote left open (or a
    /// stray pair of quotes): read as CSV allows, the field would run on to the next quote or the end of the file
    /// and swallow the rows in between.
    #[error(
        "line break inside a field: a quote opened in this field is not closed on its line, and would swallow the \
         rows up to the next quote or the end of the file (the format has no multi-line fields: remove the stray \
         quote, or the line break)"
    )]
    LineBreakInField,
    /// An empty id.
    #[error("empty id: expected the payment's id")]
    EmptyId,
    /// A value the format does not allow here.
    #[error("unexpected {text:?}: expected {expected}")]
    Unexpected {
        /// The text.
        text: String,
        /// What the format allows.
        expected: String,
    },
    /// The CSV itself is malformed.
    #[error("malformed CSV: {0}")]
    Csv(String),
}

impl Error {
    /// The row error, when this is one (the run can go on past it with a reject sink).
    #[must_use]
    pub fn as_row(&self) -> Option<&RowError> {
        match self {
            Error::Row(r) => Some(r),
            _ => None,
        }
    }
}
