//! What a reconciliation finds: discrepancies by kind, pending records, matched count and per-currency totals.

use std::fmt;
use std::time::Duration;

use palisade_core::Currency;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct};

use crate::amount::format_minor;
use crate::record::Record;
use crate::timestamp::format_rfc3339;

/// The kind of a difference between the two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// The gateway has it, the ledger does not: usually a missed webhook.
    MissingInternal,
    /// The ledger has it, the gateway does not: almost always a bug.
    MissingGateway,
    /// Both have it, in one currency, with different amounts.
    AmountMismatch,
    /// Both have it, in different currencies (the amounts are then not compared).
    CurrencyMismatch,
    /// Both have it, with different (normalised) statuses.
    StatusMismatch,
    /// The ledger has the id more than once (one per extra row).
    DuplicateInternal,
    /// The gateway has the id more than once: a double charge (one per extra row).
    DuplicateGateway,
    /// On one side only but created within the lag before the cut-off (or after it): reported, not a
    /// discrepancy; the other side will most likely have it tomorrow.
    Pending,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 8] = [
        Kind::MissingInternal,
        Kind::MissingGateway,
        Kind::AmountMismatch,
        Kind::CurrencyMismatch,
        Kind::StatusMismatch,
        Kind::DuplicateInternal,
        Kind::DuplicateGateway,
        Kind::Pending,
    ];

    /// The name used in output (`missing_internal`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::MissingInternal => "missing_internal",
            Kind::MissingGateway => "missing_gateway",
            Kind::AmountMismatch => "amount_mismatch",
            Kind::CurrencyMismatch => "currency_mismatch",
            Kind::StatusMismatch => "status_mismatch",
            Kind::DuplicateInternal => "duplicate_internal",
            Kind::DuplicateGateway => "duplicate_gateway",
            Kind::Pending => "pending",
        }
    }

    /// True for every kind but [`Kind::Pending`].
    #[must_use]
    pub const fn is_discrepancy(self) -> bool {
        !matches!(self, Kind::Pending)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?}: expected one of {}", Kind::ALL.map(Kind::as_str).join(", ")))
    }
}

/// One difference (or one pending record), with each side's record where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Discrepancy {
    /// The kind.
    pub kind: Kind,
    /// The payment's id.
    pub id: Box<str>,
    /// The ledger's record (for `duplicate_internal`: the extra row).
    pub internal: Option<Record>,
    /// The gateway's record (for `duplicate_gateway`: the extra row).
    pub gateway: Option<Record>,
    /// For duplicates: the first row with this id, the one that was matched.
    pub first: Option<Record>,
}

impl Serialize for Discrepancy {
    /// `{"type":"amount_mismatch","id":"ch_1","internal":{...},"gateway":{...}}`; absent sides are left out.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.kind.as_str())?;
        m.serialize_entry("id", &*self.id)?;
        if let Some(r) = &self.internal {
            m.serialize_entry("internal", r)?;
        }
        if let Some(r) = &self.gateway {
            m.serialize_entry("gateway", r)?;
        }
        if let Some(r) = &self.first {
            m.serialize_entry("first", r)?;
        }
        m.end()
    }
}

/// Per-currency sums in minor units. The ledger's amounts are in `internal`; the gateway's `gross` is in the
/// record's currency, its `fee` and `net` in the settlement currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Totals {
    /// The currency.
    pub currency: Currency,
    /// Sum of the ledger's amounts.
    pub internal: i128,
    /// Sum of the gateway's gross amounts.
    pub gross: i128,
    /// Sum of the gateway's fees.
    pub fee: i128,
    /// Sum of what the gateway pays out.
    pub net: i128,
}

impl Totals {
    pub(crate) fn new(currency: Currency) -> Self {
        Totals { currency, internal: 0, gross: 0, fee: 0, net: 0 }
    }
    /// `internal - gross`: what the ledger has that the gateway does not (negative: the other way round).
    #[must_use]
    pub fn difference(&self) -> i128 {
        self.internal - self.gross
    }
    fn fmt_minor(&self, v: i128) -> String {
        format_minor(v, self.currency.exponent())
    }
}

impl Serialize for Totals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Totals", 6)?;
        st.serialize_field("currency", self.currency.code())?;
        st.serialize_field("internal", &self.fmt_minor(self.internal))?;
        st.serialize_field("gateway_gross", &self.fmt_minor(self.gross))?;
        st.serialize_field("gateway_fee", &self.fmt_minor(self.fee))?;
        st.serialize_field("gateway_net", &self.fmt_minor(self.net))?;
        st.serialize_field("difference", &self.fmt_minor(self.difference()))?;
        st.end()
    }
}

/// What was read from one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SideSummary {
    /// Records read (for a folded gateway report: payments after folding).
    pub records: u64,
    /// Rows refused as malformed and handed to the reject sink.
    pub rejected: u64,
    /// Rows deliberately left out (payouts and the like in an activity report).
    pub skipped: u64,
}

/// The result of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Ids on both sides with no difference.
    pub matched: u64,
    /// Every discrepancy, sorted by id, then kind, then line.
    pub discrepancies: Vec<Discrepancy>,
    /// Records on one side only within the lag window, sorted by id.
    pub pending: Vec<Discrepancy>,
    /// Per-currency sums, sorted by currency code.
    pub totals: Vec<Totals>,
    /// The ledger side.
    pub internal: SideSummary,
    /// The gateway side.
    pub gateway: SideSummary,
    /// The cut-off used, Unix seconds.
    pub as_of: i64,
    /// The lag used.
    pub lag: Duration,
}

impl Report {
    /// How many of `kind` were found.
    #[must_use]
    pub fn count(&self, kind: Kind) -> u64 {
        if kind == Kind::Pending {
            return self.pending.len() as u64;
        }
        self.discrepancies.iter().filter(|d| d.kind == kind).count() as u64
    }
    /// True when there is no discrepancy (pending records and rejected rows aside).
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
    /// The summary: counts, totals and what was read, without the discrepancies themselves. Prints as text
    /// (`Display`) and serializes as JSON.
    #[must_use]
    pub fn summary(&self) -> Summary<'_> {
        Summary { report: self }
    }
}

/// A [`Report`]'s summary, for people (`Display`) and programs (`Serialize`).
#[derive(Debug, Clone, Copy)]
pub struct Summary<'a> {
    report: &'a Report,
}

impl Serialize for Summary<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Counts<'a>(&'a Report);
        impl Serialize for Counts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(Kind::ALL.len()))?;
                for k in Kind::ALL {
                    m.serialize_entry(k.as_str(), &self.0.count(k))?;
                }
                m.end()
            }
        }
        let r = self.report;
        let mut st = s.serialize_struct("Summary", 9)?;
        st.serialize_field("matched", &r.matched)?;
        st.serialize_field("discrepancies", &r.discrepancies.len())?;
        st.serialize_field("by_type", &Counts(r))?;
        st.serialize_field("totals", &r.totals)?;
        st.serialize_field("internal", &r.internal)?;
        st.serialize_field("gateway", &r.gateway)?;
        st.serialize_field("as_of", &format_rfc3339(r.as_of))?;
        st.serialize_field("lag_seconds", &r.lag.as_secs())?;
        st.end()
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        writeln!(
            f,
            "reconciled as of {} (lag {}s): {} matched, {} discrepancies, {} pending",
            format_rfc3339(r.as_of),
            r.lag.as_secs(),
            r.matched,
            r.discrepancies.len(),
            r.pending.len()
        )?;
        for k in Kind::ALL.into_iter().filter(|k| k.is_discrepancy()) {
            let n = r.count(k);
            if n > 0 {
                writeln!(f, "  {:<20}{n}", k.as_str())?;
            }
        }
        for (side, s) in [("internal", r.internal), ("gateway", r.gateway)] {
            write!(f, "  {side}: {} records", s.records)?;
            if s.rejected > 0 {
                write!(f, ", {} rows rejected", s.rejected)?;
            }
            if s.skipped > 0 {
                write!(f, ", {} rows skipped", s.skipped)?;
            }
            writeln!(f)?;
        }
        for t in &r.totals {
            writeln!(
                f,
                "  {}: internal {}, gateway gross {}, fees {}, net {}, difference {}",
                t.currency,
                t.fmt_minor(t.internal),
                t.fmt_minor(t.gross),
                t.fmt_minor(t.fee),
                t.fmt_minor(t.net),
                t.fmt_minor(t.difference())
            )?;
        }
        Ok(())
    }
}
