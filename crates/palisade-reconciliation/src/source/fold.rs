//! Folding a gateway's activity rows (charge, refunds, disputes, fees) into one record per payment.

use std::collections::{HashMap, VecDeque};

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

    /// Reads and folds every row. A row that cannot be read or folded is kept in [`Folder::errors`], reported in
    /// its turn by [`next_folded`], and reading goes on.
    fn fold_all(&mut self) -> Result<Folder, Error> {
        let mut folder = Folder::default();
        let mut currencies = CurrencyCache::default();
        loop {
            match self.csv().next_row() {
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
    /// Money back to the customer (or a reversal of one).
    Refund,
    /// A dispute or chargeback (or its reversal).
    Dispute,
    /// A fee or adjustment attached to the payment: counts in fee and net, not in the amount's status.
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
    refunded: bool,
    disputed: bool,
}

impl Folded {
    /// The folded status: a dispute wins; then a refund (fully refunded when nothing is left); else succeeded.
    fn status(&self) -> Status {
        if self.disputed {
            Status::Disputed
        } else if self.refunded && (self.gross == 0 || !self.charged) {
            Status::Refunded
        } else if self.refunded {
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
    pub(crate) activity: Activity,
    pub(crate) gross: i64,
    pub(crate) fee: i64,
    pub(crate) net: i64,
    pub(crate) currency: Currency,
    pub(crate) net_currency: Currency,
    pub(crate) created_at: i64,
    pub(crate) line: u64,
}

impl Folder {
    /// Adds a row; `Err` with the currency the payment already has when the row's differs.
    pub(crate) fn add(&mut self, row: &Row<'_>) -> Result<(), Currency> {
        let i = match self.index.get(row.id) {
            Some(&i) => i,
            None => {
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
                    refunded: false,
                    disputed: false,
                });
                self.index.insert(row.id.into(), self.folded.len() - 1);
                self.folded.len() - 1
            }
        };
        let f = &mut self.folded[i];
        if f.currency != row.currency {
            return Err(f.currency);
        }
        // Saturating: an i64 of minor units is beyond any real payment; the totals use i128.
        f.gross = f.gross.saturating_add(row.gross);
        f.fee = f.fee.saturating_add(row.fee);
        f.net = f.net.saturating_add(row.net);
        match row.activity {
            Activity::Charge => {
                if !f.charged {
                    f.created_at = row.created_at;
                }
                f.charged = true;
            }
            Activity::Refund => f.refunded = true,
            Activity::Dispute => f.disputed = true,
            Activity::Adjustment => {}
        }
        Ok(())
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
