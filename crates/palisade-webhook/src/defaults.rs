//! Every default of `palisade-webhook` in one place, each with the reason for its value. They are re-exported where
//! they were always found (the crate root and their modules), so either path works.

use std::time::Duration;

/// Default body limit: 2 MiB.
///
/// The same as axum's `DefaultBodyLimit`, so putting this layer in front of a route never refuses a body the
/// route alone would have accepted; payment gateways' events are a few KiB. GitHub payloads can reach 25 MB:
/// raise the limit for GitHub endpoints that receive large pushes.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Default lease of an `IN_PROGRESS` claim: 10 s between renewals.
///
/// The layer renews the lease every third of it while the handler runs (a heartbeat), so a handler that is
/// still running keeps its claim however long it takes, and the sender's own retry of it is answered 503 "in
/// progress". The lease only has to cover the gap a dead process leaves: a crashed holder blocks its event for
/// at most 10 s, then the next redelivery runs the handler. A renewal that fails (a store hiccup) is tried again
/// at the next heartbeat, while a third of the lease is still left: one failed renewal costs nothing, and a store
/// outage shorter than a third of the lease (3.3 s) never loses the claim. Two failed renewals in a row do (the
/// third comes as the lease ends): a redelivery may then run the handler too, and fencing keeps this holder
/// from recording the event over the one that took over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default retention of a `DONE` record: 7 days.
///
/// Longer than senders' automatic retry windows (Stripe retries for up to 3 days) plus room for a manual
/// "resend" from a dashboard, so a late duplicate still finds the record. For GitHub, which signs no timestamp,
/// it is also how long a replay of a captured delivery is refused: after it, the replay runs the handler again.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default tolerance into the past and into the future: 300 s.
///
/// Five minutes is what Stripe's and the Standard Webhooks reference libraries use: wide enough for a sender's
/// queueing delay and ordinary clock skew, narrow enough that a captured request cannot be replayed later.
/// (Replays inside the window are stopped by delivery deduplication.)
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The Redis store's default key prefix (`palisade-store`), under which a delivery's record is `webhook:<id>`
/// (`webhook<len>:<namespace>:<id>` for a layer with a namespace).
#[cfg(feature = "redis")]
pub use palisade_store::lease::DEFAULT_REDIS_PREFIX;
