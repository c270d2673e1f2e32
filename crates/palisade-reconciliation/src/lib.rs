//! Reconciliation: an internal ledger against a gateway's report, exact to the minor unit, every difference
//! explained.
//!
//! Even with idempotency and verified webhooks, the two sides drift: a webhook acked but never persisted, a
//! refund made in the gateway's dashboard, a double charge. A [`Reconciler`] reads both sides as [`Source`]s
//! (the canonical CSV, Stripe's itemized balance report, Adyen's settlement details, or your own), joins them on
//! the payment id and returns a [`Report`]: the matched count, every [`Discrepancy`] by [`Kind`], the records
//! still [`Kind::Pending`] within the lag, and per-currency totals. Handlers registered per kind run as
//! discrepancies are found.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use palisade_reconciliation::{CanonicalCsv, Kind, Reconciler};
//!
//! let ledger = "id,amount,currency,status,created_at\n\
//!               ch_1,12.34,USD,succeeded,2024-05-01T10:00:00Z\n\
//!               ch_2,500,JPY,captured,2024-05-01T11:00:00Z\n\
//!               ch_3,9.99,USD,succeeded,2024-05-01T12:00:00Z\n";
//! let gateway = "id,created_at,status,currency,amount,fee\n\
//!                ch_1,2024-05-01T10:00:01Z,paid,usd,12.34,0.66\n\
//!                ch_2,2024-05-01T11:00:01Z,succeeded,jpy,600,0\n";
//!
//! let paged = Arc::new(Mutex::new(Vec::new()));
//! let pager = paged.clone();
//! let reconciler = Reconciler::builder()
//!     .as_of(1_714_608_000) // 2024-05-02T00:00:00Z
//!     .lag(std::time::Duration::from_secs(6 * 3600))
//!     .on(Kind::MissingGateway, move |d| pager.lock().unwrap().push(d.id.to_string()))
//!     .build();
//! let report = reconciler.reconcile(
//!     CanonicalCsv::from_reader("ledger.csv", ledger.as_bytes())?,
//!     CanonicalCsv::from_reader("gateway.csv", gateway.as_bytes())?,
//! )?;
//!
//! assert_eq!(report.matched, 1); // ch_1: `paid` and `succeeded` are one status; 12.34 USD on both sides
//! assert_eq!(report.count(Kind::AmountMismatch), 1); // ch_2: 500 JPY against 600 JPY
//! assert_eq!(report.count(Kind::MissingGateway), 1); // ch_3: more than 6 h before the cut-off
//! assert_eq!(*paged.lock().unwrap(), ["ch_3"]);
//! # Ok::<(), palisade_reconciliation::Error>(())
//! ```
//!
//! Amounts are read into minor units exactly as [`palisade_core::Money::parse`] reads them (`12.345` USD is
//! refused, never rounded) and compared as integers. Memory is per record, not per row of text: a 48-byte slot
//! and the id's bytes; per-currency totals are summed in `i128`, so they cannot overflow.

#![warn(missing_docs)]

pub mod amount;
mod config;
mod engine;
mod error;
mod record;
mod report;
pub mod source;
pub mod timestamp;

pub use config::{Reconciler, ReconcilerBuilder, defaults};
pub use error::{Error, Problem, RowError};
pub use record::{Record, RecordRef, Status, StatusMap};
pub use report::{Discrepancy, Kind, Report, SideSummary, Summary, Totals};
pub use source::{AdyenSettlement, CanonicalCsv, Source, StripeBalance};
