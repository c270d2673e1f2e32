//! Stripe's itemized balance change report (`balance_change_from_activity.itemized.*`), folded per charge.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use std::sync::atomic::AtomicU64;

use super::fold::{Activity, CurrencyChange, FoldRows, Folder, Row, next_folded};
use super::{CsvFile, CurrencyCache, Source, amount, id, text, timestamp};
use crate::error::{Error, Problem};
use crate::record::{RecordRef, StatusMap};

/// The columns read. `charge_id` is optional: without it a charge row is keyed by its `source_id`, and refund or
/// dispute rows cannot be folded (they are refused).
pub const COLUMNS: [&str; 7] = ["created_utc", "currency", "gross", "fee", "net", "reporting_category", "source_id"];

const TIMESTAMP: &str = "a UTC time such as 2024-05-01 12:00:00";

/// The categories folded into a charge.
const FOLDED: [&str; 10] = [
    "charge",
    "payment",
    "refund",
    "refund_failure",
    "partial_capture_reversal",
    "dispute",
    "dispute_reversal",
    "charge_failure",
    "fee",
    "other_adjustment",
];

/// The categories skipped (and counted): balance movements that are not a charge's money (payouts, transfers,
/// Connect and Issuing, top-ups, reserves, advances, tax on Stripe's fees, Climate).
const SKIPPED: [&str; 22] = [
    "advance",
    "advance_funding",
    "anticipation_repayment",
    "climate_order_purchase",
    "climate_order_refund",
    "connect_collection_transfer",
    "connect_reserved_funds",
    "contribution",
    "issuing_authorization_hold",
    "issuing_authorization_release",
    "issuing_dispute",
    "issuing_transaction",
    "payout",
    "payout_reversal",
    "platform_earning",
    "platform_earning_refund",
    "risk_reserved_funds",
    "tax",
    "topup",
    "topup_reversal",
    "transfer",
    "transfer_reversal",
];

/// Stripe's itemized balance change from activity report: one row per balance transaction, folded per charge.
///
/// | `reporting_category` | folded into | key |
/// |---|---|---|
/// | `charge`, `payment` | the charge (its time is the record's); a second one for a charge is a duplicate | `charge_id`, else `source_id` |
/// | `refund` | the charge, status refunded | `charge_id` |
/// | `refund_failure` | the charge: undoes a refund (the money is back) | `charge_id` |
/// | `partial_capture_reversal` | the charge: the part never captured, off its amount (not a refund) | `charge_id` |
/// | `dispute`, `dispute_reversal` | the charge, status disputed | `charge_id` |
/// | `charge_failure` | the charge, status failed | `charge_id` |
/// | `fee`, `other_adjustment` with a `charge_id` | the charge (its fee and net, its amount if `gross` moves) | `charge_id` |
/// | a `fee` or `other_adjustment` without charge; `advance`, `advance_funding`, `anticipation_repayment`, `climate_order_purchase`, `climate_order_refund`, `connect_collection_transfer`, `connect_reserved_funds`, `contribution`, `issuing_authorization_hold`, `issuing_authorization_release`, `issuing_dispute`, `issuing_transaction`, `payout`, `payout_reversal`, `platform_earning`, `platform_earning_refund`, `risk_reserved_funds`, `tax`, `topup`, `topup_reversal`, `transfer`, `transfer_reversal` (not a charge's money) | skipped, counted | |
/// | any other category | refused (a row error): it may move a charge's money | |
///
/// The folded record's amount is the sum of `gross` (the charge less what was not captured, refunds, disputes
/// and failures); its fee and net are the sums of `fee` and `net`; its status is `failed` if the charge failed,
/// else `disputed` if disputed, else `refunded` when refunds (less refund failures) left nothing (or only refunds
/// are in the report), `partially_refunded` when they left something, else `succeeded`. A charge with rows but
/// no charge row in the report (the charge was in an earlier one) is compared for what its rows imply (see
/// [`Source::activity_only`]). Amounts are major units as decimal strings (`10.00`, `-2.50`), currencies in
/// lower case (`usd`), `created_utc` is `YYYY-MM-DD HH:MM:SS` in UTC.
pub struct StripeBalance {
    csv: CsvFile,
    cols: [usize; 7],
    charge_id: Option<usize>,
    folder: Option<Folder>,
    skipped: u64,
    progress: Option<Arc<AtomicU64>>,
}

impl StripeBalance {
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
        let mut cols = [0; 7];
        for (slot, name) in cols.iter_mut().zip(COLUMNS) {
            *slot = csv.column(name, &COLUMNS)?;
        }
        let charge_id = csv.optional("charge_id")?;
        Ok(StripeBalance { csv, cols, charge_id, folder: None, skipped: 0, progress: None })
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
        // `account`: without a charge_id the row is the account's, not a charge's (a Radar fee), and skipped.
        let (activity, account) = match category {
            "charge" | "payment" => (Activity::Charge, false),
            "refund" => (Activity::Refund, false),
            "refund_failure" => (Activity::RefundFailure, false),
            // The release of the part of an authorisation never captured: off the charge's amount, not a refund.
            "partial_capture_reversal" => (Activity::Adjustment, false),
            "dispute" | "dispute_reversal" => (Activity::Dispute, false),
            "charge_failure" => (Activity::Failure, false),
            "fee" | "other_adjustment" => (Activity::Adjustment, true),
            c if SKIPPED.contains(&c) => {
                self.skipped += 1;
                return Ok(());
            }
            // A category this reader does not know may move a charge's money: refused, never skipped unseen.
            _ => {
                return Err(csv.error(
                    c_category,
                    Problem::Unexpected {
                        text: category.to_owned(),
                        expected: format!(
                            "a known reporting_category: folded {}; skipped {}",
                            FOLDED.join(", "),
                            SKIPPED.join(", ")
                        ),
                    },
                ));
            }
        };
        let charge = match self.charge_id {
            Some(c) => text(csv, c)?.trim_ascii(),
            None => "",
        };
        let id = match (activity, charge) {
            (Activity::Charge, "") => id(csv, c_source)?,
            (_, "") if account => {
                self.skipped += 1;
                return Ok(());
            }
            (_, "") => {
                return Err(csv.error(
                    self.charge_id.unwrap_or(c_category),
                    Problem::Unexpected {
                        text: category.to_owned(),
                        expected: "a charge_id for a refund, dispute or failure row (include the charge_id column)"
                            .into(),
                    },
                ));
            }
            (_, charge) => charge,
        };
        let currency = currencies.get(csv, c_currency)?;
        let row = Row {
            id,
            // Stripe writes one charge row per charge (the part not captured is a partial_capture_reversal): a
            // second is a duplicate.
            payment: None,
            activity,
            gross: amount(csv, c_gross, currency)?,
            fee: amount(csv, c_fee, currency)?,
            net: amount(csv, c_net, currency)?,
            currency,
            net_currency: currency,
            created_at: timestamp(csv, c_created, true, TIMESTAMP)?,
            line: csv.line(),
        };
        folder.add(&row).map_err(|(CurrencyChange::Gross(first) | CurrencyChange::Net(first))| {
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
