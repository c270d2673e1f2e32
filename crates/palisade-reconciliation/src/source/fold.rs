//! Folding a gateway's activity rows (charge, refunds, disputes, fees) into one record per payment.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::Currency;

use super::{CsvFile, CurrencyCache};
use crate::error::Error;
use crate::record::{RecordRef, Status};

/// A gateway report read row by row and folded per payment (Stripe's balance report, Adyen's settlement report).
pub(crate) trait FoldRows {
    /// The report.
    fn csv(&mut self) -> &mut CsvFile;

    /// Folds the current row into `folder`. An [`Error::Row`] is kept and reading goes on; any other error ends
    /// the report.
    fn fold_row(&mut self, folder: &mut Folder, currencies: &mut CurrencyCache) -> Result<(), Error>;

    /// Reads and folds every row, adding the rows read to `progress` as it goes. A row that cannot be read or
    /// folded is kept in [`Folder::errors`], reported in its turn by [`next_folded`], and reading goes on.
    fn fold_all(&mut self, progress: Option<&AtomicU64>) -> Result<Folder, Error> {
        let mut folder = Folder::default();
        let mut currencies = CurrencyCache::default();
        let mut rows = 0u64;
        loop {
            let read = self.csv().next_row();
            if let Some(p) = progress {
                let end = matches!(read, Ok(false));
                rows += u64::from(!end);
                if rows == PROGRESS_EVERY || end {
                    p.fetch_add(rows, Ordering::Relaxed);
                    rows = 0;
                }
            }
            match read {
                Ok(true) => {}
                Ok(false) => return Ok(folder),
                Err(e @ Error::Row(_)) => {
                    folder.errors.push_back(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            match self.fold_row(&mut folder, &mut currencies) {
                Ok(()) => {}
                Err(e @ Error::Row(_)) => folder.errors.push_back(e),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Rows between updates of the progress counter.
const PROGRESS_EVERY: u64 = 1 << 16;

/// `Source::next_record` of a folded report: the rows' errors first, then the folded records.
pub(crate) fn next_folded(folder: &mut Option<Folder>) -> Result<Option<RecordRef<'_>>, Error> {
    let Some(folder) = folder.as_mut() else { return Ok(None) };
    if let Some(e) = folder.errors.pop_front() {
        return Err(e);
    }
    Ok(folder.next_record())
}

/// What one activity row does to its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// The charge itself (Stripe `charge`, Adyen `Settled`).
    Charge,
    /// Money back to the customer.
    Refund,
    /// A refund that failed or came back: the money is the merchant's again (Stripe `refund_failure`, Adyen
    /// `RefundedReversed`). Undoes a refund; its amount counts, it makes nothing refunded.
    RefundFailure,
    /// A dispute or chargeback (or its reversal).
    Dispute,
    /// The charge failed after it was counted (Stripe `charge_failure`, a bank debit that bounced).
    Failure,
    /// A fee or adjustment attached to the payment, or the release of the part of an authorisation never captured
    /// (Stripe `partial_capture_reversal`): counts in the amount, fee and net, not in the status.
    Adjustment,
}

/// One payment, folded.
pub(crate) struct Folded {
    id: Box<str>,
    gross: i64,
    fee: i64,
    net: i64,
    currency: Currency,
    net_currency: Currency,
    created_at: i64,
    line: u64,
    charged: bool,
    /// The gross of the refunds less the refund failures: negative when money went back to the customer.
    refunds: i64,
    disputed: bool,
    failed: bool,
    /// The payment reference of its charge row (Adyen's `Psp Reference`), when the report gives one.
    payment: Option<Box<str>>,
    /// The next record with this id: another payment for it (a double charge).
    also: Option<usize>,
}

impl Folded {
    /// The folded status: a failure wins, then a dispute, then a refund (fully refunded when nothing is left);
    /// else succeeded.
    fn status(&self) -> Status {
        let refunded = self.refunds < 0;
        if self.failed {
            Status::Failed
        } else if self.disputed {
            Status::Disputed
        } else if refunded && (self.gross == 0 || !self.charged) {
            Status::Refunded
        } else if refunded {
            Status::PartiallyRefunded
        } else {
            Status::Succeeded
        }
    }
}

/// The rows of one activity report, folded per payment, then yielded in order of first appearance.
#[derive(Default)]
pub(crate) struct Folder {
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    folded: Vec<Folded>,
    /// Row errors met while reading, yielded before the records.
    pub(crate) errors: VecDeque<Error>,
    next: usize,
}

/// One activity row.
pub(crate) struct Row<'a> {
    pub(crate) id: &'a str,
    /// The payment the row belongs to, when the report says (Adyen's `Psp Reference`): tells a second payment
    /// for one id from a second capture of the same payment.
    pub(crate) payment: Option<&'a str>,
    pub(crate) activity: Activity,
    pub(crate) gross: i64,
    pub(crate) fee: i64,
    pub(crate) net: i64,
    pub(crate) currency: Currency,
    pub(crate) net_currency: Currency,
    pub(crate) created_at: i64,
    pub(crate) line: u64,
}

/// A row whose currency is not its payment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CurrencyChange {
    /// The gross currency differs: the payment's is this.
    Gross(Currency),
    /// The net currency (of fee and net) differs: the payment's is this.
    Net(Currency),
}

impl Folder {
    /// Adds a row; `Err` when its gross or net currency is not the one its payment already has.
    ///
    /// A charge row for an id whose payment is already charged is another payment for it (a double charge): it
    /// becomes a record of its own, which the engine reports as `duplicate_gateway`; unless both rows name the
    /// same payment (Adyen's `Psp Reference`: a second capture, an installment). A later row naming one of those
    /// payments folds into it, any other into the first.
    pub(crate) fn add(&mut self, row: &Row<'_>) -> Result<(), CurrencyChange> {
        let i = match self.index.get(row.id) {
            Some(&first) => match self.target(first, row) {
                Some(i) => i,
                None => self.push(row, Some(first)),
            },
            None => {
                let i = self.push(row, None);
                self.index.insert(row.id.into(), i);
                i
            }
        };
        let f = &mut self.folded[i];
        if f.currency != row.currency {
            return Err(CurrencyChange::Gross(f.currency));
        }
        if f.net_currency != row.net_currency {
            return Err(CurrencyChange::Net(f.net_currency));
        }
        // Saturating: an i64 of minor units is beyond any real payment; the totals use i128.
        f.gross = f.gross.saturating_add(row.gross);
        f.fee = f.fee.saturating_add(row.fee);
        f.net = f.net.saturating_add(row.net);
        match row.activity {
            Activity::Charge => {
                if !f.charged {
                    f.created_at = row.created_at;
                    f.payment = row.payment.map(Into::into);
                }
                f.charged = true;
            }
            Activity::Refund | Activity::RefundFailure => f.refunds = f.refunds.saturating_add(row.gross),
            Activity::Dispute => f.disputed = true,
            Activity::Failure => f.failed = true,
            Activity::Adjustment => {}
        }
        Ok(())
    }

    /// The record among those with the row's id (from `first` on) that the row folds into; `None` for a charge
    /// row that is another payment.
    fn target(&self, first: usize, row: &Row<'_>) -> Option<usize> {
        let same_payment = |f: &Folded| row.payment.is_some() && f.payment.as_deref() == row.payment;
        let mut at = Some(first);
        while let Some(i) = at {
            let f = &self.folded[i];
            // Only the first can be uncharged (the others are created by a charge): a charge row completes it.
            if (row.activity == Activity::Charge && !f.charged) || same_payment(f) {
                return Some(i);
            }
            at = f.also;
        }
        (row.activity != Activity::Charge).then_some(first)
    }

    /// A new record for the row's id; `first` is the id's first record when it has one already.
    fn push(&mut self, row: &Row<'_>, first: Option<usize>) -> usize {
        let i = self.folded.len();
        self.folded.push(Folded {
            id: row.id.into(),
            gross: 0,
            fee: 0,
            net: 0,
            currency: row.currency,
            net_currency: row.net_currency,
            created_at: row.created_at,
            line: row.line,
            charged: false,
            refunds: 0,
            disputed: false,
            failed: false,
            payment: None,
            also: None,
        });
        if let Some(mut last) = first {
            while let Some(next) = self.folded[last].also {
                last = next;
            }
            self.folded[last].also = Some(i);
        }
        i
    }

    /// Whether the record last returned by [`next_record`](Self::next_record) has no charge row: only activity
    /// on a payment charged in an earlier report.
    pub(crate) fn last_activity_only(&self) -> bool {
        self.next.checked_sub(1).and_then(|i| self.folded.get(i)).is_some_and(|f| !f.charged)
    }

    /// The next folded record.
    pub(crate) fn next_record(&mut self) -> Option<RecordRef<'_>> {
        let f = self.folded.get(self.next)?;
        self.next += 1;
        Some(RecordRef {
            id: &f.id,
            amount: f.gross,
            currency: f.currency,
            net_currency: f.net_currency,
            status: f.status(),
            created_at: f.created_at,
            fee: f.fee,
            net: f.net,
            line: f.line,
        })
    }

    /// Records left.
    pub(crate) fn remaining(&self) -> u64 {
        (self.folded.len() - self.next) as u64
    }
}
