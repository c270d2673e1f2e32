//! Every default of the retry layer's builder in one place, each with the reason for its value. They are also
//! re-exported from [`config`](crate::config), where they were always found.
//!
//! The default budget's numbers stay on [`RetryBudget`](crate::RetryBudget) (`RetryBudget::DEFAULT_RATIO`,
//! `DEFAULT_MIN_PER_SEC`, `DEFAULT_WINDOW`): they are the arguments `RetryBudget::default()` gives
//! [`RetryBudget::new`](crate::RetryBudget::new), and a budget is built, and can be shared by several layers,
//! apart from any builder.

use std::time::Duration;

/// Default attempts per call, the first included: 3. Stripe's and Adyen's own client libraries retry twice; a
/// third retry rarely succeeds where two failed and only lengthens the checkout.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Default base delay: 100 ms. The first retry waits up to this long (full jitter), each later one up to twice the
/// previous ceiling; long enough for a dropped connection to be replaced, short against a customer's patience.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);

/// Default floor on a computed delay: none. Full jitter spreads retries from zero on purpose (the AWS analysis
/// behind it shows the spread matters more than a floor); set one if your gateway needs a pause.
pub const DEFAULT_MIN_DELAY: Duration = Duration::ZERO;

/// Default longest wait before a retry: 10 s. A 429 or 503 asking for a few seconds is honoured; a maintenance
/// window asking for minutes is not waited out inside a checkout request: that answer is returned at once (a
/// `Retry-After` is never shortened, so the other side is not called before the time it gave).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Default total deadline: 30 s from the call. No retry starts, and no wait is scheduled, that would end after
/// it: a checkout request must answer before a browser or load balancer gives up (commonly 30–60 s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// Default per-attempt timeout: none. The gateway client knows its own connect and read timeouts (Stripe's
/// libraries use 80 s); a default here would turn slow successes into `Unknown`s. Set one when your client has
/// none.
pub const DEFAULT_ATTEMPT_TIMEOUT: Option<Duration> = None;
