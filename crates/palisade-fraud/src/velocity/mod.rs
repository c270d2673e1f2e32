//! Velocity: sliding-window counters per (subject, value), recorded and read atomically for one decision.
//!
//! [`VelocityStore::record_attempt`] adds the attempt to the history of each subject the charge has (card,
//! email, IP, customer) and returns the velocity attributes, this attempt included, in one atomic step: with
//! N concurrent attempts on one card, the N answers are 1, 2, ..., N, so a rule
//! `block if attempts_per_card_1h > 3` admits exactly three. An attempt is identified by its idempotency key (and
//! its subjects' values, its amount and its currency) when it has one, so a retry of the same request adds
//! nothing, and **reads what its first decision read, as it was then**: a request re-executed after an Unknown
//! outcome (the gateway may have charged it) is not blocked because of attempts that came after it. Only a
//! change of rules or blocklists can decide it otherwise. The same key with another amount or currency is another
//! attempt. The engine asks only for the attributes its rule set reads
//! ([`VelocityStore::record_attempt_reading`]); the attempt is recorded under every subject all the same.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use palisade_core::Currency;

pub use self::memory::MemoryVelocityStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisVelocityStore;
use crate::attributes::{Attributes, Subject, VelocityCounts, VelocitySet};
use crate::error::VelocityError;

/// A boxed future, so stores can be shared as `Arc<dyn VelocityStore>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt, as the velocity store sees it. It borrows from the [`Attributes`] it was made from: building it
/// allocates nothing unless an email needs lower-casing.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The attempt id (the idempotency key), or `None` for an attempt without one (every such attempt is new).
    pub id: Option<&'a str>,
    /// The subjects' values, by [`Subject`] order (card, email, IP, customer); `None` when unknown.
    pub subjects: [Option<Cow<'a, str>>; 4],
    /// The currency.
    pub currency: Currency,
    /// The amount in minor units.
    pub amount_minor: i64,
}

impl<'a> Attempt<'a> {
    /// The attempt of these attributes. Emails are trimmed and lower-cased, and lose the `+tag` of their local
    /// part, so `A@x.com`, `a@x.com` and `a+shop@x.com` count together; IP addresses are written in one form, so `::ffff:203.0.113.7` counts with `203.0.113.7`, and
    /// an IPv6 address counts as its /64 network.
    #[must_use]
    pub fn from_attributes(a: &'a Attributes) -> Self {
        let known = |v: &'a Option<String>| v.as_deref().filter(|v| !v.is_empty());
        // In `Subject` order: card, email, IP, customer.
        let subjects = [
            known(&a.card_fingerprint).map(Cow::Borrowed),
            known(&a.email).map(crate::attributes::email_velocity_form),
            known(&a.ip).map(crate::attributes::ip_velocity_form),
            known(&a.customer_id).map(Cow::Borrowed),
        ];
        Attempt { id: a.attempt_id.as_deref(), subjects, currency: a.currency(), amount_minor: a.amount_minor() }
    }

    /// The value of one subject.
    #[must_use]
    pub fn subject(&self, s: Subject) -> Option<&str> {
        self.subjects[s.index()].as_deref()
    }

    /// Appends the attempt's key to `buf`: its subjects' values and its currency's code, each self-delimiting
    /// ([`encode_subject`]), its amount in minor units (eight bytes), then its id. Two attempts are one (a retry)
    /// when their keys are equal: the same id with another card, another amount or another currency is another
    /// attempt, counted and decided on its own (an idempotency key reused for a different charge must not hide
    /// that charge from velocity, nor reuse the first one's decision). Every store tells attempts apart by it.
    pub(crate) fn encode_key(&self, id: &str, buf: &mut Vec<u8>) {
        for v in &self.subjects {
            encode_subject(buf, v.as_deref());
        }
        encode_subject(buf, Some(self.currency.code()));
        buf.extend_from_slice(&self.amount_minor.to_le_bytes());
        buf.extend_from_slice(id.as_bytes());
    }

    /// The amount velocity adds to `amount_per_*`: the amount in minor units, or 0 for a negative amount. Sums
    /// only grow with attempts, so an attempt of -1,000,000.00 cannot lower a card's 24-hour sum and let the
    /// next large charge through; it still counts as an attempt. Every store records this, never
    /// [`Attempt::amount_minor`] as it is.
    #[must_use]
    pub fn counted_amount(&self) -> i64 {
        self.amount_minor.max(0)
    }
}

/// The first byte of a subject with no value in an attempt's key.
pub(crate) const NO_VALUE: u8 = 254;
/// The first byte of a subject whose value is 254 bytes or longer: its length follows in eight bytes.
pub(crate) const LONG_VALUE: u8 = 255;

/// Appends a subject's value to a key, self-delimiting (so no two different attempts encode alike): its length
/// in one byte when below 254 (the common case), else [`LONG_VALUE`] and the length in eight bytes, then the
/// value; [`NO_VALUE`] alone for no value.
pub(crate) fn encode_subject(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(v) = v else {
        buf.push(NO_VALUE);
        return;
    };
    match u8::try_from(v.len()) {
        Ok(n) if n < NO_VALUE => buf.push(n),
        _ => {
            buf.push(LONG_VALUE);
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
        }
    }
    buf.extend_from_slice(v.as_bytes());
}

impl std::fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present: Vec<&str> =
            Subject::ALL.iter().zip(&self.subjects).filter(|(_, v)| v.is_some()).map(|(s, _)| s.as_str()).collect();
        f.debug_struct("Attempt")
            .field("keyed", &self.id.is_some())
            .field("subjects", &present)
            .field("currency", &self.currency)
            .field("amount_minor", &self.amount_minor)
            .finish()
    }
}

/// Where velocity history lives: [`MemoryVelocityStore`] (one process) or `RedisVelocityStore` (feature
/// `redis`, shared by every instance).
pub trait VelocityStore: Send + Sync + 'static {
    /// Records `attempt` under each of its subjects (once per attempt id) and returns every velocity attribute,
    /// this attempt included — atomically for all counters of the decision. For a retry (an attempt id,
    /// subjects, amount and currency already recorded), the attributes its first recording returned, as they
    /// were then.
    ///
    /// # Errors
    /// [`VelocityError`] when the store cannot be reached.
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>>;

    /// [`VelocityStore::record_attempt`] when only the attributes in `read` will be looked at (the engine knows
    /// which ones its rule set reads): the attempt is still recorded under every subject, but the store may
    /// leave the other attributes at 0. The default reads them all.
    ///
    /// # Errors
    /// [`VelocityError`] when the store cannot be reached.
    fn record_attempt_reading<'a>(
        &'a self,
        attempt: &'a Attempt<'a>,
        read: VelocitySet,
    ) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        let _ = read;
        self.record_attempt(attempt)
    }

    /// A store that answers without waiting (the memory store) answers here, and the engine skips the boxed
    /// future; `None` (the default) means "call [`VelocityStore::record_attempt_reading`]".
    fn try_record_attempt(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
    ) -> Option<Result<VelocityCounts, VelocityError>> {
        let _ = (attempt, read);
        None
    }

    /// [`VelocityStore::try_record_attempt`] into `counts` (the attributes in `read` are written, the others
    /// left as they are), so the counters are not copied on their way to the engine. The default calls
    /// [`VelocityStore::try_record_attempt`].
    fn try_record_attempt_into(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
        counts: &mut VelocityCounts,
    ) -> Option<Result<(), VelocityError>> {
        Some(self.try_record_attempt(attempt, read)?.map(|c| *counts = c))
    }

    /// Records a decline of `attempt` (once per attempt id) under each of its subjects.
    ///
    /// # Errors
    /// [`VelocityError`] when the store cannot be reached.
    fn record_decline<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>>;
}

impl<T: VelocityStore + ?Sized> VelocityStore for std::sync::Arc<T> {
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        (**self).record_attempt(attempt)
    }
    fn record_attempt_reading<'a>(
        &'a self,
        attempt: &'a Attempt<'a>,
        read: VelocitySet,
    ) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        (**self).record_attempt_reading(attempt, read)
    }
    fn try_record_attempt(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
    ) -> Option<Result<VelocityCounts, VelocityError>> {
        (**self).try_record_attempt(attempt, read)
    }
    fn try_record_attempt_into(
        &self,
        attempt: &Attempt<'_>,
        read: VelocitySet,
        counts: &mut VelocityCounts,
    ) -> Option<Result<(), VelocityError>> {
        (**self).try_record_attempt_into(attempt, read, counts)
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt<'a>) -> BoxFuture<'a, Result<(), VelocityError>> {
        (**self).record_decline(attempt)
    }
}
