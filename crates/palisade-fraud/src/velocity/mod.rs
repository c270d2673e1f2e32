//! Velocity: sliding-window counters per (subject, value), recorded and read atomically for one decision.
//!
//! [`VelocityStore::record_attempt`] adds the attempt to the history of each subject the charge has (card,
//! email, IP, customer) and returns every velocity attribute, this attempt included, in one atomic step: with
//! N concurrent attempts on one card, the N answers are 1, 2, ..., N, so a rule
//! `block if attempts_per_card_1h > 3` admits exactly three. An attempt is identified by its idempotency key when it has one, so a retry of
//! the same request adds nothing.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::future::Future;
use std::pin::Pin;

use palisade_core::Currency;

pub use self::memory::MemoryVelocityStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisVelocityStore;
use crate::attributes::{Attributes, Subject, VelocityCounts};
use crate::error::VelocityError;

/// A boxed future, so stores can be shared as `Arc<dyn VelocityStore>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One attempt, as the velocity store sees it.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt id: `k:<idempotency key>`, or `None` for an attempt without one (the store makes a unique id).
    pub id: Option<String>,
    /// The subjects' values, by [`Subject`] order (card, email, IP, customer); `None` when unknown.
    pub subjects: [Option<String>; 4],
    /// The currency.
    pub currency: Currency,
    /// The amount in minor units.
    pub amount_minor: i64,
}

impl Attempt {
    /// The attempt of these attributes. Emails are lower-cased so `A@x.com` and `a@x.com` count together.
    #[must_use]
    pub fn from_attributes(a: &Attributes) -> Self {
        let subjects = Subject::ALL.map(|s| {
            a.subject(s).filter(|v| !v.is_empty()).map(|v| match s {
                Subject::Email => v.trim().to_lowercase(),
                _ => v.to_owned(),
            })
        });
        Attempt {
            id: a.attempt_id.as_ref().map(|k| format!("k:{k}")),
            subjects,
            currency: a.currency(),
            amount_minor: a.amount_minor(),
        }
    }
}

impl std::fmt::Debug for Attempt {
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
    /// this attempt included — atomically for all counters of the decision.
    ///
    /// # Errors
    /// [`VelocityError`] when the store cannot be reached.
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>>;

    /// Records a decline of `attempt` (once per attempt id) under each of its subjects.
    ///
    /// # Errors
    /// [`VelocityError`] when the store cannot be reached.
    fn record_decline<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<(), VelocityError>>;
}

impl<T: VelocityStore + ?Sized> VelocityStore for std::sync::Arc<T> {
    fn record_attempt<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<VelocityCounts, VelocityError>> {
        (**self).record_attempt(attempt)
    }
    fn record_decline<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<(), VelocityError>> {
        (**self).record_decline(attempt)
    }
}
