//! Adyen's Settlement details report, folded per merchant reference.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use palisade_core::Currency;

use super::fold::{Activity, FoldRows, Folder, Row, next_folded};
use super::{CsvFile, CurrencyCache, Source, text};
use crate::amount::parse_minor;
use crate::error::{Error, Problem};
use crate::record::{RecordRef, StatusMap};

/// The columns read (the report has more; they are ignored). `TimeZone` is optional (UTC without it); the four
/// fee columns are optional (0 without them) and an empty amount cell is 0.
pub const COLUMNS: [&str; 9] = [
    "Merchant Reference",
    "Creation Date",
    "Type",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
];

/// The fee columns, summed into the record's fee (in the net currency).
pub const FEE_COLUMNS: [&str; 4] = ["Commission (NC)", "Markup (NC)", "Scheme Fees (NC)", "Interchange (NC)"];

const TIMESTAMP: &str = "a date such as 2024-05-01 12:00:00 (in the row's TimeZone)";

/// Time zones as Adyen writes them in the `TimeZone` column, with their offsets in minutes.
const ZONES: &[(&str, i64)] = &[
    ("UTC", 0),
    ("GMT", 0),
    ("WET", 0),
    ("WEST", 60),
    ("BST", 60),
    ("CET", 60),
    ("CEST", 120),
    ("EET", 120),
    ("EEST", 180),
    ("MSK", 180),
    ("IST", 330),
    ("SGT", 480),
    ("HKT", 480),
    ("JST", 540),
    ("AEST", 600),
    ("AEDT", 660),
    ("BRT", -180),
    ("EST", -300),
    ("EDT", -240),
    ("CST", -360),
    ("CDT", -300),
    ("MST", -420),
    ("MDT", -360),
    ("PST", -480),
    ("PDT", -420),
];

/// Adyen's Settlement details report: one row per booking, folded per `Merchant Reference` (the id your ledger
/// knows the payment by).
///
/// | `Type` | folded into |
/// |---|---|
/// | `Settled`, `SettledExternally` | the payment (its time is the record's) |
/// | `Refunded`, `RefundedExternally`, `RefundedReversed` | the payment, status refunded |
/// | `Chargeback`, `ChargebackReversed`, `SecondChargeback` | the payment, status disputed |
/// | anything else (`Fee`, `MerchantPayout`, `DepositCorrection`, ...) | skipped, counted |
///
/// Amount = `Gross Credit (GC)` − `Gross Debit (GC)` in `Gross Currency`; net = `Net Credit (NC)` −
/// `Net Debit (NC)` and fee = the sum of the fee columns, both in `Net Currency`. `Creation Date` is
/// `YYYY-MM-DD HH:MM:SS` in the row's `TimeZone` (UTC, GMT, CET, CEST, PST, ... or an RFC 3339 offset).
pub struct AdyenSettlement {
    csv: CsvFile,
    cols: [usize; 9],
    zone: Option<usize>,
    fees: Vec<usize>,
    folder: Option<Folder>,
    skipped: u64,
}

impl AdyenSettlement {
    /// Opens `path` and checks its header.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::MissingColumn`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(CsvFile::open(path)?)
    }

    /// Reads from `reader`, named `name` in messages.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::MissingColumn`].
    pub fn from_reader(name: impl Into<Arc<str>>, reader: impl Read + Send + 'static) -> Result<Self, Error> {
        Self::new(CsvFile::from_reader(name, reader)?)
    }

    fn new(csv: CsvFile) -> Result<Self, Error> {
        let mut cols = [0; 9];
        for (slot, name) in cols.iter_mut().zip(COLUMNS) {
            *slot = csv.column(name, &COLUMNS)?;
        }
        let zone = csv.find("TimeZone");
        let fees = FEE_COLUMNS.iter().filter_map(|c| csv.find(c)).collect();
        Ok(AdyenSettlement { csv, cols, zone, fees, folder: None, skipped: 0 })
    }

    /// An amount cell: empty is 0.
    fn cell(&self, index: usize, currency: Currency) -> Result<i64, Error> {
        let bytes = self.csv.field(index)?;
        if bytes.trim_ascii().is_empty() {
            return Ok(0);
        }
        parse_minor(bytes, currency).map_err(|e| self.csv.error(index, Problem::Amount(e)))
    }

    fn created_at(&self, index: usize) -> Result<i64, Error> {
        let csv = &self.csv;
        let bytes = csv.field(index)?;
        let bad = || {
            csv.error(
                index,
                Problem::Timestamp { text: String::from_utf8_lossy(bytes).into_owned(), expected: TIMESTAMP },
            )
        };
        let local = crate::timestamp::parse_rfc3339(bytes, true).ok_or_else(bad)?;
        let Some(z) = self.zone else { return Ok(local) };
        let zone = text(csv, z)?.trim();
        if zone.is_empty() || bytes.len() > 19 {
            // No zone given, or the date carries its own offset.
            return Ok(local);
        }
        match ZONES.iter().find(|(name, _)| name.eq_ignore_ascii_case(zone)) {
            Some((_, minutes)) => Ok(local - minutes * 60),
            None => Err(csv.error(
                z,
                Problem::Unexpected {
                    text: zone.to_owned(),
                    expected: format!(
                        "one of the time zones {}",
                        ZONES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                },
            )),
        }
    }
}

impl FoldRows for AdyenSettlement {
    fn csv(&mut self) -> &mut CsvFile {
        &mut self.csv
    }

    fn fold_row(&mut self, folder: &mut Folder, currencies: &mut CurrencyCache) -> Result<(), Error> {
        let [c_ref, c_created, c_type, c_gc, c_gdebit, c_gcredit, c_nc, c_ndebit, c_ncredit] = self.cols;
        let kind = text(&self.csv, c_type)?;
        let activity = match kind {
            "Settled" | "SettledExternally" => Activity::Charge,
            "Refunded" | "RefundedExternally" | "RefundedReversed" => Activity::Refund,
            "Chargeback" | "ChargebackReversed" | "SecondChargeback" => Activity::Dispute,
            _ => {
                self.skipped += 1;
                return Ok(());
            }
        };
        let id = text(&self.csv, c_ref)?;
        if id.is_empty() {
            return Err(self.csv.error(c_ref, Problem::EmptyId));
        }
        let currency = currencies.get(&self.csv, c_gc)?;
        let net_currency = currencies.get(&self.csv, c_nc)?;
        let gross = self.cell(c_gcredit, currency)?.saturating_sub(self.cell(c_gdebit, currency)?);
        let net = self.cell(c_ncredit, net_currency)?.saturating_sub(self.cell(c_ndebit, net_currency)?);
        let mut fee = 0i64;
        for &c in &self.fees {
            fee = fee.saturating_add(self.cell(c, net_currency)?);
        }
        let row = Row {
            id,
            activity,
            gross,
            fee,
            net,
            currency,
            net_currency,
            created_at: self.created_at(c_created)?,
            line: self.csv.line(),
        };
        folder.add(&row).map_err(|first| {
            self.csv.error(
                c_gc,
                Problem::Unexpected {
                    text: currency.code().to_owned(),
                    expected: format!("{first} (the currency of {id}'s earlier rows)"),
                },
            )
        })
    }
}

impl Source for AdyenSettlement {
    fn name(&self) -> &str {
        self.csv.name()
    }

    fn next_record(&mut self, _statuses: &StatusMap) -> Result<Option<RecordRef<'_>>, Error> {
        if self.folder.is_none() {
            self.folder = Some(self.fold_all()?);
        }
        next_folded(&mut self.folder)
    }

    fn rows_hint(&self) -> Option<u64> {
        self.folder.as_ref().map(Folder::remaining)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }
}
