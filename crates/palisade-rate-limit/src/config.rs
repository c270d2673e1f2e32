//! The vocabulary the builder, the layer and the service share: what to do over the limit, how a request is keyed
//! and what it costs. Depends on nothing else in the crate.

use std::time::Duration;

/// What the layer does with a request that is over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnLimit {
    /// Refuse at once with [`crate::RateLimited`] (HTTP 429 in HTTP mode). The default: an API should tell its
    /// client to come back, not hold a connection.
    #[default]
    Reject,
    /// Hold the request until it fits, up to `max_wait`; refuse it if it would have to wait longer.
    /// Waiters spend capacity only at the instant they are admitted, so a cancelled waiter spends nothing.
    Wait {
        /// Longest time a request may be held.
        max_wait: Duration,
    },
}

/// Extracts the key a request is limited by.
pub trait KeyFn<Req> {
    /// The key type.
    type Key;
    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

/// The key function of a layer without `key_by`: one limit shared by every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Global;

impl<Req> KeyFn<Req> for Global {
    type Key = ();
    #[inline]
    fn key(&self, _: &Req) {}
}

impl<Req, K, F: Fn(&Req) -> K> KeyFn<Req> for F {
    type Key = K;
    #[inline]
    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// Computes how many units a request spends.
pub trait CostFn<Req> {
    /// The cost of `req`.
    fn cost(&self, req: &Req) -> u32;
}

/// Every request costs one unit (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCost;

impl<Req> CostFn<Req> for UnitCost {
    #[inline]
    fn cost(&self, _: &Req) -> u32 {
        1
    }
}

impl<Req, F: Fn(&Req) -> u32> CostFn<Req> for F {
    #[inline]
    fn cost(&self, req: &Req) -> u32 {
        self(req)
    }
}
