//! Adyen's Settlement details report, folded per merchant reference.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use palisade_core::Currency;

use super::fold::{Activity, CurrencyChange, FoldRows, Folder, Row, next_folded};
use super::{CsvFile, CurrencyCache, Source, id, text};
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

/// The types folded into a payment, with what each is.
const FOLDED: [(&str, Activity); 19] = [
    ("Settled", Activity::Charge),
    ("SettledExternally", Activity::Charge),
    ("SettledExternallyWithInfo", Activity::Charge),
    ("SettledBulk", Activity::Charge),
    ("SettledInstallment", Activity::Charge),
    ("SettledInstallmentExternallyWithInfo", Activity::Charge),
    ("Refunded", Activity::Refund),
    ("RefundedExternally", Activity::Refund),
    ("RefundedExternallyWithInfo", Activity::Refund),
    ("RefundedBulk", Activity::Refund),
    ("RefundedInstallment", Activity::Refund),
    ("RefundedInstallmentExternallyWithInfo", Activity::Refund),
    ("RefundedReversed", Activity::RefundFailure),
    ("Chargeback", Activity::Dispute),
    ("ChargebackExternally", Activity::Dispute),
    ("ChargebackExternallyWithInfo", Activity::Dispute),
    ("SecondChargeback", Activity::Dispute),
    ("ChargebackReversed", Activity::Dispute),
    ("ChargebackReversedExternallyWithInfo", Activity::Dispute),
];

/// The types skipped (and counted): bookings that are not a payment's money (payouts, fees and costs booked on
/// their own rows, deposits, invoices, corrections, transfers).
const SKIPPED: [&str; 17] = [
    "Fee",
    "MiscCosts",
    "PaymentCost",
    "AuthorisationSchemeFee",
    "MerchantPayout",
    "MerchantPayin",
    "MerchantPayinReversed",
    "PaidOut",
    "PaidOutReversed",
    "BankInstructionReturned",
    "InternalCompanyPayout",
    "DepositCorrection",
    "ReserveAdjustment",
    "InvoiceDeduction",
    "MatchedStatement",
    "ManualCorrected",
    "Balancetransfer",
];

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
/// | `Settled`, `SettledExternally`, `SettledExternallyWithInfo`, `SettledBulk`, `SettledInstallment`, `SettledInstallmentExternallyWithInfo` | the payment (its time is the record's) |
/// | `Refunded`, `RefundedExternally`, `RefundedExternallyWithInfo`, `RefundedBulk`, `RefundedInstallment`, `RefundedInstallmentExternallyWithInfo` | the payment, status refunded |
/// | `RefundedReversed` | the payment: undoes a refund (the money is back) |
/// | `Chargeback`, `ChargebackExternally`, `ChargebackExternallyWithInfo`, `SecondChargeback`, `ChargebackReversed`, `ChargebackReversedExternallyWithInfo` | the payment, status disputed |
/// | `Fee`, `MiscCosts`, `PaymentCost`, `AuthorisationSchemeFee`, `MerchantPayout`, `MerchantPayin`, `MerchantPayinReversed`, `PaidOut`, `PaidOutReversed`, `BankInstructionReturned`, `InternalCompanyPayout`, `DepositCorrection`, `ReserveAdjustment`, `InvoiceDeduction`, `MatchedStatement`, `ManualCorrected`, `Balancetransfer` (not a payment's money) | skipped, counted |
/// | any other type | refused (a row error): it may move a payment's money |
///
/// A settled row for a merchant reference already settled is a second payment for it (a double charge, reported
/// `duplicate_gateway`), unless both rows carry the same `Psp Reference` (a second capture or an installment of
/// one payment). Amount = `Gross Credit (GC)` − `Gross Debit (GC)` in `Gross Currency`; net = `Net Credit (NC)` −
/// `Net Debit (NC)` and fee = the sum of the fee columns, both in `Net Currency` (one gross and one net currency
/// per payment). `Creation Date` is `YYYY-MM-DD HH:MM:SS[.fraction]` in the row's `TimeZone` (UTC, GMT, CET,
/// CEST, PST, ...), unless it carries its own RFC 3339 offset.
pub struct AdyenSettlement {
    csv: CsvFile,
    cols: [usize; 9],
    zone: Option<usize>,
    psp: Option<usize>,
    fees: Vec<usize>,
    folder: Option<Folder>,
    skipped: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl AdyenSettlement {
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
        let mut cols = [0; 9];
        for (slot, name) in cols.iter_mut().zip(COLUMNS) {
            *slot = csv.column(name, &COLUMNS)?;
        }
        let zone = csv.optional("TimeZone")?;
        let psp = csv.optional("Psp Reference")?;
        let mut fees = Vec::new();
        for c in FEE_COLUMNS {
            fees.extend(csv.optional(c)?);
        }
        Ok(AdyenSettlement { csv, cols, zone, psp, fees, folder: None, skipped: 0, progress: None })
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
        if zone.is_empty() || has_offset(bytes) {
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

/// Whether a date `parse_rfc3339` accepted carries its own offset: something after the seconds and their
/// fraction (`2024-05-01 12:00:00.500` has none).
fn has_offset(date: &[u8]) -> bool {
    let rest = date.get(19..).unwrap_or_default();
    let rest = match rest.split_first() {
        Some((b'.', fraction)) => &fraction[fraction.iter().take_while(|c| c.is_ascii_digit()).count()..],
        _ => rest,
    };
    !rest.is_empty()
}

impl FoldRows for AdyenSettlement {
    fn csv(&mut self) -> &mut CsvFile {
        &mut self.csv
    }

    fn fold_row(&mut self, folder: &mut Folder, currencies: &mut CurrencyCache) -> Result<(), Error> {
        let [c_ref, c_created, c_type, c_gc, c_gdebit, c_gcredit, c_nc, c_ndebit, c_ncredit] = self.cols;
        let kind = text(&self.csv, c_type)?;
        let activity = match FOLDED.iter().find(|(name, _)| *name == kind) {
            Some(&(_, activity)) => activity,
            None if SKIPPED.contains(&kind) => {
                self.skipped += 1;
                return Ok(());
            }
            // A type this reader does not know may move a payment's money: refused, never skipped unseen.
            None => {
                return Err(self.csv.error(
                    c_type,
                    Problem::Unexpected {
                        text: kind.to_owned(),
                        expected: format!(
                            "a known Type: folded {}; skipped {}",
                            FOLDED.map(|(name, _)| name).join(", "),
                            SKIPPED.join(", ")
                        ),
                    },
                ));
            }
        };
        let id = id(&self.csv, c_ref)?;
        let payment = match self.psp {
            Some(c) => Some(text(&self.csv, c)?.trim_ascii()).filter(|p| !p.is_empty()),
            None => None,
        };
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
            payment,
            activity,
            gross,
            fee,
            net,
            currency,
            net_currency,
            created_at: self.created_at(c_created)?,
            line: self.csv.line(),
        };
        folder.add(&row).map_err(|change| {
            let (column, found, first, which) = match change {
                CurrencyChange::Gross(first) => (c_gc, currency, first, "gross"),
                CurrencyChange::Net(first) => (c_nc, net_currency, first, "net"),
            };
            self.csv.error(
                column,
                Problem::Unexpected {
                    text: found.code().to_owned(),
                    expected: format!("{first} (the {which} currency of {id}'s earlier rows)"),
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
            let progress = self.progress.clone();
            self.folder = Some(self.fold_all(progress.as_deref())?);
        }
        next_folded(&mut self.folder)
    }

    fn rows_hint(&self) -> Option<u64> {
        self.folder.as_ref().map(Folder::remaining)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn activity_only(&self) -> bool {
        self.folder.as_ref().is_some_and(Folder::last_activity_only)
    }

    fn count_rows(&mut self, rows: Arc<AtomicU64>) -> bool {
        self.progress = Some(rows);
        true
    }
}
