//! In-process delivery store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::PaymentError;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Claim, ClaimToken, DeliveryStore};

/// Expired records are swept once every this many claims, so the map stays bounded by the traffic of one
/// retention period without a background task.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug)]
enum State {
    InProgress(ClaimToken),
    Done,
}

#[derive(Debug)]
struct Record {
    state: State,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, Record>,
    claims: u64,
}

/// Delivery records in this process's memory (`tokio::time`, so tests can pause time). Right for one instance;
/// several instances behind a load balancer need [`RedisDeliveryStore`](crate::store::RedisDeliveryStore)
/// (feature `redis`). Cheap to clone; clones share records.
#[derive(Debug, Clone, Default)]
pub struct MemoryDeliveryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryDeliveryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of live records (in progress or done).
    #[must_use]
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.inner.lock().records.values().filter(|r| r.expires > now).count()
    }

    /// True when no record is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeliveryStore for MemoryDeliveryStore {
    async fn claim_as(&self, event_id: &str, lease: Duration, attempt: &ClaimToken) -> Result<Claim, PaymentError> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        g.claims += 1;
        if g.claims.is_multiple_of(SWEEP_EVERY) {
            g.records.retain(|_, r| r.expires > now);
        }
        match g.records.get(event_id) {
            Some(r) if r.expires > now => Ok(match r.state {
                State::Done => Claim::Done,
                State::InProgress(_) => Claim::InProgress { retry_after: r.expires - now },
            }),
            _ => {
                g.records.insert(
                    event_id.to_owned(),
                    Record { state: State::InProgress(attempt.clone()), expires: now + lease },
                );
                Ok(Claim::Acquired(attempt.clone()))
            }
        }
    }

    async fn complete(&self, event_id: &str, token: &ClaimToken, retention: Duration) -> Result<bool, PaymentError> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        let mine_or_free = match g.records.get(event_id) {
            None => true,
            Some(r) if r.expires <= now => true,
            Some(Record { state: State::InProgress(t), .. }) => t == token,
            Some(Record { state: State::Done, .. }) => false,
        };
        if mine_or_free {
            g.records.insert(event_id.to_owned(), Record { state: State::Done, expires: now + retention });
        }
        Ok(mine_or_free)
    }

    async fn renew(&self, event_id: &str, token: &ClaimToken, lease: Duration) -> Result<bool, PaymentError> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        match g.records.get_mut(event_id) {
            Some(r) if r.expires > now && matches!(&r.state, State::InProgress(t) if t == token) => {
                r.expires = now + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, event_id: &str, token: &ClaimToken) -> Result<bool, PaymentError> {
        let now = Instant::now();
        let mut g = self.inner.lock();
        let held = g
            .records
            .get(event_id)
            .is_some_and(|r| r.expires > now && matches!(&r.state, State::InProgress(t) if t == token));
        if held {
            g.records.remove(event_id);
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn claim_complete_release_and_expiry() {
        let s = MemoryDeliveryStore::new();
        let lease = Duration::from_secs(30);
        let Claim::Acquired(t1) = s.claim("e", lease).await.unwrap() else { panic!("first claim acquires") };
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(s.claim("e", lease).await.unwrap(), Claim::InProgress { retry_after: Duration::from_secs(20) });
        // The holder fails: released, so the next delivery acquires.
        assert!(s.release("e", &t1).await.unwrap());
        let Claim::Acquired(t2) = s.claim("e", lease).await.unwrap() else { panic!("released claim is free") };
        // The holder dies: the lease expires, a stale release by the old token does nothing to the new claim.
        tokio::time::advance(lease).await;
        let Claim::Acquired(t3) = s.claim("e", lease).await.unwrap() else { panic!("expired claim is free") };
        assert!(!s.release("e", &t2).await.unwrap(), "a stale token releases nothing");
        assert!(!s.renew("e", &t2, lease).await.unwrap(), "nor renews");
        assert!(!s.complete("e", &t2, lease).await.unwrap(), "nor completes");
        assert!(matches!(s.claim("e", lease).await.unwrap(), Claim::InProgress { .. }));
        assert!(s.complete("e", &t3, Duration::from_secs(3600)).await.unwrap());
        assert_eq!(s.claim("e", lease).await.unwrap(), Claim::Done);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(matches!(s.claim("e", lease).await.unwrap(), Claim::Acquired(_)), "retention ends");
    }
}
