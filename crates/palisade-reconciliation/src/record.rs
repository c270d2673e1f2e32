//! Records as sources yield them, statuses and the status mapping.

use std::collections::HashMap;
use std::fmt;

use palisade_core::{Currency, Money};
use serde::Serialize;
use serde::ser::SerializeStruct;

use crate::amount::format_minor;
use crate::timestamp::format_rfc3339;

/// A payment's state after normalisation: each side's own status names map onto these (see [`StatusMap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Status {
    /// Money moved: `succeeded`, `captured`, `paid`, `settled`, `completed`, `success`.
    Succeeded,
    /// Authorised, not captured: `authorized`, `authorised`, `requires_capture`.
    Authorized,
    /// Still in flight: `pending`, `processing`, `requires_action`, `received`.
    Pending,
    /// Refused or errored: `failed`, `declined`, `refused`, `error`.
    Failed,
    /// Cancelled before money moved: `canceled`, `cancelled`, `voided`, `void`.
    Canceled,
    /// Fully refunded: `refunded`.
    Refunded,
    /// Partly refunded: `partially_refunded`.
    PartiallyRefunded,
    /// Under dispute or charged back: `disputed`, `chargeback`, `charged_back`.
    Disputed,
}

impl Status {
    /// Every status, in order.
    pub const ALL: [Status; 8] = [
        Status::Succeeded,
        Status::Authorized,
        Status::Pending,
        Status::Failed,
        Status::Canceled,
        Status::Refunded,
        Status::PartiallyRefunded,
        Status::Disputed,
    ];

    /// The canonical name (`succeeded`, `partially_refunded`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Authorized => "authorized",
            Status::Pending => "pending",
            Status::Failed => "failed",
            Status::Canceled => "canceled",
            Status::Refunded => "refunded",
            Status::PartiallyRefunded => "partially_refunded",
            Status::Disputed => "disputed",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Maps the status names found in files onto [`Status`], case-insensitively.
///
/// [`StatusMap::default`] knows the names listed on each [`Status`] variant (Stripe's, Adyen's and the common
/// ledger spellings). [`StatusMap::insert`] adds or overrides a name. A name the map does not know is bad input:
/// the row is refused with the names it knows, so a new status is never silently compared as a string.
#[derive(Debug, Clone)]
pub struct StatusMap {
    names: HashMap<Box<[u8]>, Status, foldhash::fast::FixedState>,
}

/// The default names, each with its [`Status`].
const DEFAULT_NAMES: &[(&str, Status)] = &[
    ("succeeded", Status::Succeeded),
    ("success", Status::Succeeded),
    ("captured", Status::Succeeded),
    ("paid", Status::Succeeded),
    ("settled", Status::Succeeded),
    ("completed", Status::Succeeded),
    ("authorized", Status::Authorized),
    ("authorised", Status::Authorized),
    ("requires_capture", Status::Authorized),
    ("pending", Status::Pending),
    ("processing", Status::Pending),
    ("requires_action", Status::Pending),
    ("received", Status::Pending),
    ("failed", Status::Failed),
    ("declined", Status::Failed),
    ("refused", Status::Failed),
    ("error", Status::Failed),
    ("canceled", Status::Canceled),
    ("cancelled", Status::Canceled),
    ("voided", Status::Canceled),
    ("void", Status::Canceled),
    ("refunded", Status::Refunded),
    ("partially_refunded", Status::PartiallyRefunded),
    ("disputed", Status::Disputed),
    ("chargeback", Status::Disputed),
    ("charged_back", Status::Disputed),
];

impl Default for StatusMap {
    fn default() -> Self {
        let mut map = StatusMap { names: HashMap::default() };
        for (name, status) in DEFAULT_NAMES {
            map.insert(name, *status);
        }
        map
    }
}

impl StatusMap {
    /// A map that knows no names (add them with [`StatusMap::insert`]).
    #[must_use]
    pub fn empty() -> Self {
        StatusMap { names: HashMap::default() }
    }
    /// Maps `name` (any case) to `status`, replacing what it mapped to before.
    pub fn insert(&mut self, name: &str, status: Status) {
        self.names.insert(name.to_ascii_lowercase().into_bytes().into_boxed_slice(), status);
    }
    /// The status `name` maps to (case-insensitive), if any.
    #[inline]
    #[must_use]
    pub fn get(&self, name: &[u8]) -> Option<Status> {
        if let Some(s) = self.names.get(name) {
            return Some(*s);
        }
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.names.get(name.to_ascii_lowercase().as_slice()).copied();
        }
        None
    }
    /// The names known, sorted (for error messages and docs).
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        v.sort();
        v
    }
}

/// One record as a [`Source`](crate::Source) yields it, borrowing its id from the source's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The payment's id, the join key (a charge id, or the merchant reference).
    pub id: &'a str,
    /// The amount in minor units of `currency` (for a gateway report: the gross).
    pub amount: i64,
    /// The currency.
    pub currency: Currency,
    /// The currency of `fee` and `net` (the settlement currency; `currency` unless the gateway converted).
    pub net_currency: Currency,
    /// The normalised status.
    pub status: Status,
    /// When it was created, Unix seconds.
    pub created_at: i64,
    /// The gateway's fee in minor units (0 for ledgers), counted in the per-currency totals.
    pub fee: i64,
    /// What the gateway pays out in minor units (`amount - fee` unless the report says otherwise).
    pub net: i64,
    /// The line in the file where the record starts (for a folded record: its first line).
    pub line: u64,
}

/// One side's record, owned, as a [`Discrepancy`](crate::Discrepancy) carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The amount.
    pub amount: Money,
    /// The normalised status.
    pub status: Status,
    /// When it was created, Unix seconds.
    pub created_at: i64,
    /// The line in its file.
    pub line: u64,
}

impl Record {
    pub(crate) fn new(amount: i64, currency: Currency, status: Status, created_at: i64, line: u64) -> Self {
        Record { amount: Money::from_minor(amount, currency), status, created_at, line }
    }
}

impl Serialize for Record {
    /// `{"line":7,"amount":"12.34","currency":"USD","status":"succeeded","created_at":"2024-05-01T12:00:00Z"}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let currency = self.amount.currency();
        // Every Money fits i64 minor units (palisade-core refuses others on construction).
        let minor = self.amount.to_minor().unwrap_or_default();
        let mut st = s.serialize_struct("Record", 5)?;
        st.serialize_field("line", &self.line)?;
        st.serialize_field("amount", &format_minor(i128::from(minor), currency.exponent()))?;
        st.serialize_field("currency", currency.code())?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("created_at", &format_rfc3339(self.created_at))?;
        st.end()
    }
}
