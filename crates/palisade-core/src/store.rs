//! What every store-backed layer shares: the policy for an unreachable store, and (behind the `redis` feature)
//! key building, error mapping and script running for Redis stores.
//!
//! Stores themselves live in the crate that needs them (a small async trait of atomic operations, a `Memory…`
//! implementation, a `Redis…` implementation); this module is the part that would otherwise be written four times.

use crate::error::PaymentError;

/// What a layer does when its store cannot be reached.
///
/// The default everywhere money is at stake is [`FailurePolicy::FailClosed`]: refuse the call with a typed
/// error. Losing Redis must never turn into a double charge. Layers that only protect (a circuit breaker, a
/// rate limit a user has chosen to relax) may offer [`FailurePolicy::FailOpen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Refuse the call with [`PaymentError::StoreUnavailable`] (HTTP 503). The inner service is not called.
    #[default]
    FailClosed,
    /// Let the call through as if the store had allowed it, and log a warning.
    FailOpen,
}

/// Maps any store failure into the typed error layers return.
#[must_use]
pub fn unavailable(what: &str, err: &dyn std::fmt::Display) -> PaymentError {
    PaymentError::store_unavailable(format!("{what}: {err}"))
}

#[cfg(feature = "redis")]
pub use redis_support::*;

#[cfg(feature = "redis")]
mod redis_support {
    use super::*;

    /// Builds a Redis key `{prefix}{{tag}}:{suffix}`. Every key one atomic operation touches must share the
    /// hash tag, so the operation runs on one Redis Cluster slot. Braces in `tag` are replaced so a user value
    /// cannot break the slot.
    ///
    /// ```
    /// assert_eq!(palisade_core::store::redis_key("pal:idem:", "tenant-1/key-9", "rec"), "pal:idem:{tenant-1/key-9}:rec");
    /// ```
    #[must_use]
    pub fn redis_key(prefix: &str, tag: &str, suffix: &str) -> String {
        let mut k = String::with_capacity(prefix.len() + tag.len() + suffix.len() + 3);
        k.push_str(prefix);
        k.push('{');
        for c in tag.chars() {
            k.push(match c {
                '{' => '(',
                '}' => ')',
                c => c,
            });
        }
        k.push('}');
        if !suffix.is_empty() {
            k.push(':');
            k.push_str(suffix);
        }
        k
    }

    /// Maps a Redis error into [`PaymentError::StoreUnavailable`], keeping what Redis said.
    #[must_use]
    pub fn redis_unavailable(err: &redis::RedisError) -> PaymentError {
        unavailable("redis", err)
    }

    /// Opens a reconnecting connection (`ConnectionManager`) to `url`, mapped to the typed error.
    ///
    /// # Errors
    /// [`PaymentError::StoreUnavailable`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str) -> Result<redis::aio::ConnectionManager, PaymentError> {
        let client = redis::Client::open(url).map_err(|e| redis_unavailable(&e))?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        redis::aio::ConnectionManager::new_with_config(client, cfg).await.map_err(|e| redis_unavailable(&e))
    }
}
