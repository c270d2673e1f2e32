//! Every default of `palisade-fraud` in one place, each with the reason for its value.

use std::time::Duration;

/// Risk score at or above which a charge goes to manual review when no rule decided more. 65 is where Stripe
/// Radar starts calling risk "elevated": merchants already reason in that scale, so rule files written for it
/// read the same here.
pub const DEFAULT_REVIEW_THRESHOLD: i64 = 65;

/// Risk score at or above which a charge is blocked. 75 is Radar's "highest risk" line, the default block
/// threshold merchants expect; between 65 and 75 a human looks, above 75 nobody should have to.
pub const DEFAULT_BLOCK_THRESHOLD: i64 = 75;

/// The sliding windows every velocity attribute is counted over: ten minutes catches card testing (bursts of
/// small attempts), one hour catches a stolen card being worked, a day catches slow enumeration and spend limits.
pub const VELOCITY_WINDOWS: [Duration; 3] =
    [Duration::from_secs(600), Duration::from_secs(3_600), Duration::from_secs(86_400)];

/// The longest window: velocity history older than this is dropped (memory and Redis alike).
pub const MAX_VELOCITY_WINDOW: Duration = Duration::from_secs(86_400);

/// A card-testing attempt is "small" at or below this many minor units of its currency unless configured:
/// testers probe with 0–2 units of currency (0.50 USD, 1 EUR), far below any real basket.
pub const DEFAULT_CARD_TESTING_SMALL_MINOR: i64 = 200;

/// Small attempts on one card or IP in ten minutes that look like card testing: a customer who mistypes retries
/// two or three times; five small charges in ten minutes is a script.
pub const DEFAULT_CARD_TESTING_SMALL_ATTEMPTS: i64 = 5;

/// Declines on one card or IP in ten minutes that look like card testing: three declines in a row is already
/// more than a real customer tries before giving up or calling the bank.
pub const DEFAULT_CARD_TESTING_DECLINES: i64 = 3;

#[cfg(feature = "redis")]
/// Default Redis key prefix: keys are `palisade:fraud:{<namespace>}:...`, beside the other layers' `palisade:`
/// prefixes, so the layers share one Redis with each other and with the application.
pub const DEFAULT_PREFIX: &str = "palisade:fraud:";

#[cfg(feature = "redis")]
/// Default velocity namespace: the hash tag of every velocity key (see [`crate::RedisVelocityStore`] for why one
/// tag per namespace).
pub const DEFAULT_NAMESPACE: &str = "default";
