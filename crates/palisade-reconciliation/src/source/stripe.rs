//! Stripe's itemized balance change report (`balance_change_from_activity.itemized.*`), folded per charge.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use super::fold::{Activity, FoldRows, Folder, Row, next_folded};
use super::{CsvFile, CurrencyCache, Source, amount, text, timestamp};
use crate::error::{Error, Problem};
use crate::record::{RecordRef, StatusMap};

/// The columns read. `charge_id` is optional: without it a charge row is keyed by its `source_id`, and refund or
/// dispute rows cannot be folded (they are refused).
pub const COLUMNS: [&str; 7] = ["created_utc", "currency", "gross", "fee", "net", "reporting_category", "source_id"];

const TIMESTAMP: &str = "a UTC time such as 2024-05-01 12:00:00";

/// Stripe's itemized balance change from activity report: one row per balance transaction, folded per charge.
///
/// | `reporting_category` | folded into | key |
/// |---|---|---|
/// | `charge`, `payment` | the charge (its time is the record's) | `charge_id`, else `source_id` |
/// | `refund`, `refund_failure`, `partial_capture_reversal` | the charge, status refunded | `charge_id` |
/// | `dispute`, `dispute_reversal` | the charge, status disputed | `charge_id` |
/// | `fee` with a `charge_id` | the charge's fee and net only | `charge_id` |
/// | anything else (`payout`, `transfer`, a `fee` without charge, ...) | skipped, counted | |
///
/// The folded record's amount is the sum of `gross` (the charge less refunds and disputes); its fee and net are
/// the sums of `fee` and `net`; its status is `disputed` if disputed, `refunded` when nothing is left (or only
/// refunds are in the report), `partially_refunded` when something is, else `succeeded`. Amounts are major
/// units as decimal strings (`10.00`, `-2.50`), currencies in lower case (`usd`), `created_utc` is
/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub struct StripeBalance {
    csv: CsvFile,
    cols: [usize; 7],
    charge_id: Option<usize>,
    folder: Option<Folder>,
    skipped: u64,
}

impl StripeBalance {
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
        let mut cols = [0; 7];
        for (slot, name) in cols.iter_mut().zip(COLUMNS) {
            *slot = csv.column(name, &COLUMNS)?;
        }
        let charge_id = csv.find("charge_id");
        Ok(StripeBalance { csv, cols, charge_id, folder: None, skipped: 0 })
    }
}

impl FoldRows for StripeBalance {
    fn csv(&mut self) -> &mut CsvFile {
        &mut self.csv
    }

    fn fold_row(&mut self, folder: &mut Folder, currencies: &mut CurrencyCache) -> Result<(), Error> {
        let csv = &self.csv;
        let [c_created, c_currency, c_gross, c_fee, c_net, c_category, c_source] = self.cols;
        let category = text(csv, c_category)?;
        let activity = match category {
            "charge" | "payment" => Activity::Charge,
            "refund" | "refund_failure" | "partial_capture_reversal" => Activity::Refund,
            "dispute" | "dispute_reversal" => Activity::Dispute,
            "fee" => Activity::Adjustment,
            _ => {
                self.skipped += 1;
                return Ok(());
            }
        };
        let charge = match self.charge_id {
            Some(c) => text(csv, c)?,
            None => "",
        };
        let id = match (activity, charge) {
            (Activity::Charge, "") => text(csv, c_source)?,
            (Activity::Adjustment, "") => {
                self.skipped += 1;
                return Ok(());
            }
            (_, "") => {
                return Err(csv.error(
                    self.charge_id.unwrap_or(c_category),
                    Problem::Unexpected {
                        text: category.to_owned(),
                        expected: "a charge_id for a refund or dispute row (include the charge_id column)".into(),
                    },
                ));
            }
            (_, charge) => charge,
        };
        if id.is_empty() {
            return Err(csv.error(c_source, Problem::EmptyId));
        }
        let currency = currencies.get(csv, c_currency)?;
        let row = Row {
            id,
            activity,
            gross: amount(csv, c_gross, currency)?,
            fee: amount(csv, c_fee, currency)?,
            net: amount(csv, c_net, currency)?,
            currency,
            net_currency: currency,
            created_at: timestamp(csv, c_created, true, TIMESTAMP)?,
            line: csv.line(),
        };
        folder.add(&row).map_err(|first| {
            csv.error(
                c_currency,
                Problem::Unexpected {
                    text: currency.code().to_ascii_lowercase(),
                    expected: format!(
                        "{} (the currency of charge {id}'s earlier rows)",
                        first.code().to_ascii_lowercase()
                    ),
                },
            )
        })
    }
}

impl Source for StripeBalance {
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
