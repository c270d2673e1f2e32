//! Every default of `palisade-idempotency` in one place, each with the reason for its value. They are re-exported where
//! they were always found (the crate root and their modules), so either path works.

use std::time::Duration;

use http::{HeaderName, header};

/// Response headers stored and replayed by default: the ones that describe the representation or the created
/// resource. Everything else is dropped; see [`FORBIDDEN_STORED_HEADERS`](crate::FORBIDDEN_STORED_HEADERS).
pub const DEFAULT_STORED_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::LINK,
    header::CACHE_CONTROL,
];

/// How long a completed result is kept and replayed: 24 hours, Stripe's documented retention. Long enough for
/// any client retry loop and for a customer refreshing the next morning; short enough to bound storage.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claim protects an executing request between two renewals: 10 seconds. While the request runs the
/// layer renews the lease every third of it (a heartbeat), so a live holder keeps its key however long the
/// gateway takes (Stripe's SDKs wait up to 80 s), and the lease only has to cover the gap a holder leaves when
/// it dies: a crashed or frozen holder blocks its key for at most 10 s, not minutes. One failed heartbeat costs
/// nothing (the next comes while a third of the lease is left); two in a row, a store outage longer than a third
/// of the lease, let the lease end, and the holder's result is then fenced off if a duplicate took over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How long a duplicate waits for the in-flight original before it is refused: zero. Like Stripe, a duplicate
/// is answered at once with 409 and `Retry-After`; waiting holds a connection and a task per duplicate, so it
/// is opt-in ([`wait_for_in_flight`](crate::IdempotencyLayerBuilder::wait_for_in_flight)).
pub const DEFAULT_WAIT: Duration = Duration::ZERO;

/// The longest `Retry-After` sent with a 409 in-flight rejection: 1 second (less when the lease ends sooner).
/// Payment calls take hundreds of milliseconds to a few seconds; a whole lease would send clients away too long.
pub const DEFAULT_IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The most of a request body the HTTP mode buffers to fingerprint it: 1 MiB. Payment API bodies are a few
/// kilobytes; the limit bounds the memory a request can pin. Larger bodies get 413.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

#[cfg(feature = "redis")]
pub use palisade_store::lease::DEFAULT_REDIS_PREFIX;
/// The store's defaults (`palisade-store`): the memory store's shard count, and (feature `redis`) the Redis key
/// prefix, `palisade:lease:`, under which this layer's keys are `k:<key>` or `s<len>:<scope>:<key>`.
pub use palisade_store::lease::DEFAULT_SHARDS;
