//! The retry budget: how many retries the whole process may make, shared by every clone of a layer.
//!
//! A budget grants a retry from one of two pools:
//!
//! 1. **A share of recent requests**: every call deposits `ratio` of a retry; deposits live for `window`
//!    (kept in ten slots of `window / 10`). A retry is granted when the live deposits minus the live
//!    withdrawals cover one whole retry.
//! 2. **A floor per second**: a token bucket of `min_per_sec` tokens that refills continuously at
//!    `min_per_sec` per second, so a process with little traffic can still retry.
//!
//! # Why not `tower::retry::budget::TpsBudget`
//!
//! Its arithmetic over-grants (tower issue 857): for a `retry_percent` below 1.0 the cost of a retry is
//! `(1.0 / retry_percent) as isize`, truncated, so `0.6` grants one retry per request instead of 0.6, and `0.3`
//! grants 0.33. Its `withdraw` also reads the balance and subtracts in two steps, so concurrent callers can all
//! see the same last token and all take it. This budget:
//!
//! - counts in millionths of a retry and rounds every deposit **down**, so the ratio is exact to 10⁻⁶ and never
//!   rounds in the caller's favour;
//! - checks and withdraws under one lock, so concurrent withdrawals cannot share a token;
//! - keeps the floor as a real per-second rate (burst of one second's worth), not as `min_per_sec × window`
//!   tokens that can all be spent in the first second of an outage.
//!
//! **The bound** (tested in `tests/budget.rs`): with ratio `r` and floor `f`, the retries granted at any time `t`
//! within the last `window × 9/10` are at most `r ×` (calls deposited in the last `window`) `+ f × ` (elapsed
//! seconds) `+ f`; over any run, retries from the share pool never exceed `r ×` calls.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Retries are counted in millionths, so a ratio like 0.6 or 0.3 is exact to 10⁻⁶.
const UNIT: i64 = 1_000_000;
/// Slots the window is divided into (as in finagle and tower).
const SLOTS: usize = 10;

/// Why a budget could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The ratio is negative, not a number, or above 1000.
    #[error("retry budget ratio must be between 0.0 and 1000.0 retries per call, got {0}")]
    Ratio(f64),
    /// The window is shorter than 10 ms or longer than one hour.
    #[error("retry budget window must be between 10 ms and 1 hour, got {0:?}")]
    Window(Duration),
}

/// A retry budget shared by every clone of a [`RetryLayer`](crate::RetryLayer) (or by several layers, through an
/// `Arc`). See the [module docs](self) for the pools and the bound.
///
/// ```
/// use std::time::Duration;
/// use palisade_retry::RetryBudget;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let budget = RetryBudget::new(0.5, 0, Duration::from_secs(10)).unwrap();
/// for _ in 0..4 { budget.deposit(); }       // four calls ...
/// assert!(budget.withdraw());               // ... fund two retries
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
/// # }
/// ```
pub struct RetryBudget {
    /// Net units per slot (deposits minus share-pool withdrawals).
    slots: [AtomicI64; SLOTS],
    /// Absolute index of the current slot (time since `origin` divided by the slot length). Only moved forward,
    /// under the lock.
    current: AtomicU64,
    /// Serializes rotation and withdrawals; holds the floor bucket.
    floor: Mutex<Floor>,
    origin: Instant,
    /// Units one call deposits: `floor(ratio × UNIT)`.
    deposit_units: i64,
    /// Floor rate, retries per second.
    min_per_sec: u32,
    slot_nanos: u64,
    ratio: f64,
    window: Duration,
}

struct Floor {
    /// Tokens, in units, capped at `min_per_sec × UNIT`.
    tokens: i64,
    refilled: Instant,
}

impl RetryBudget {
    /// Default share of calls that may be retried: 20 %, finagle's and tower's default. An outage can add at most a
    /// fifth to the load the gateway already sees.
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// Default floor: 10 retries per second, so a quiet process (a few calls a minute) can still ride out a blip.
    pub const DEFAULT_MIN_PER_SEC: u32 = 10;
    /// Default window: 10 s of recent calls fund retries; long enough to smooth bursts, short enough that a
    /// busy morning does not fund a retry storm in the afternoon.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

    /// A budget that lets `ratio` retries per call (0.2 = one retry per five calls) over the last `window`, plus
    /// `min_per_sec` retries per second whatever the traffic.
    ///
    /// # Errors
    /// [`BudgetError`] for a ratio outside `0.0..=1000.0` or a window outside 10 ms..=1 h.
    pub fn new(ratio: f64, min_per_sec: u32, window: Duration) -> Result<Self, BudgetError> {
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(BudgetError::Ratio(ratio));
        }
        if window < Duration::from_millis(10) || window > Duration::from_secs(3600) {
            return Err(BudgetError::Window(window));
        }
        // Rounded down: a budget must never grant more than it was configured for.
        let deposit_units = (ratio * UNIT as f64).floor() as i64;
        let now = Instant::now();
        Ok(RetryBudget {
            slots: Default::default(),
            current: AtomicU64::new(0),
            floor: Mutex::new(Floor { tokens: i64::from(min_per_sec) * UNIT, refilled: now }),
            origin: now,
            deposit_units,
            min_per_sec,
            // The window is at most an hour, so this fits; u64 keeps the per-call division cheap (u128 division is
            // a software routine).
            slot_nanos: u64::try_from(window.as_nanos() / SLOTS as u128).unwrap_or(u64::MAX).max(1),
            ratio,
            window,
        })
    }

    /// Records one call (the layer does this once per call, not per attempt).
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    pub(crate) fn deposit_at(&self, now: Instant) {
        if self.deposit_units == 0 {
            return;
        }
        let nanos = self.nanos_since_origin(now);
        let cur = self.current.load(Ordering::SeqCst);
        // Inside the current slot (a multiplication and two compares, no division on the per-call path)?
        let start = cur.saturating_mul(self.slot_nanos);
        let abs = if nanos >= start && nanos - start < self.slot_nanos { cur } else { nanos / self.slot_nanos };
        if abs == cur {
            // Fast path, no lock: add to the current slot, then check that no rotation moved past it meanwhile. A
            // rotation publishes the new `current` before it clears slots, so a deposit that may have landed in a
            // cleared (reused) slot always sees the change and takes itself back. A deposit that races a rotation
            // is dropped, never counted late: the budget can only under-grant.
            let slot = &self.slots[index(abs)];
            slot.fetch_add(self.deposit_units, Ordering::SeqCst);
            if self.current.load(Ordering::SeqCst) != cur {
                slot.fetch_sub(self.deposit_units, Ordering::SeqCst);
            }
            return;
        }
        let _rotating = self.floor.lock();
        let cur = self.rotate(abs);
        // `abs` is the current slot, or an older one still live (this call read the clock before another moved
        // the window on): credit the slot the call belongs to.
        if abs + SLOTS as u64 > cur {
            self.slots[index(abs)].fetch_add(self.deposit_units, Ordering::SeqCst);
        }
    }

    /// Takes one retry from the budget; `false` when both pools are empty.
    #[must_use]
    pub fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }

    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let mut floor = self.floor.lock();
        let cur = self.rotate(self.slot_of(now));
        // Check and take under one lock: two callers can never both take the last retry (lock-free deposits
        // racing this only add).
        if self.share() >= UNIT {
            self.slots[index(cur)].fetch_sub(UNIT, Ordering::SeqCst);
            return true;
        }
        floor.refill(now, self.min_per_sec);
        if floor.tokens >= UNIT {
            floor.tokens -= UNIT;
            return true;
        }
        false
    }

    /// Whole retries the budget would grant right now (share pool plus floor), without taking any.
    #[must_use]
    pub fn available(&self) -> u64 {
        let now = Instant::now();
        let mut floor = self.floor.lock();
        self.rotate(self.slot_of(now));
        floor.refill(now, self.min_per_sec);
        let share = self.share().max(0) / UNIT;
        let floor = floor.tokens.max(0) / UNIT;
        u64::try_from(share + floor).unwrap_or(0)
    }

    /// The configured ratio.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
    /// The configured floor, retries per second.
    #[must_use]
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }
    /// The configured window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    fn slot_of(&self, now: Instant) -> u64 {
        self.nanos_since_origin(now) / self.slot_nanos
    }

    fn nanos_since_origin(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.origin);
        // Whole seconds and nanoseconds separately: no u128 arithmetic on the per-call path. Saturates after
        // 584 years.
        d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
    }

    fn share(&self) -> i64 {
        self.slots.iter().map(|s| s.load(Ordering::SeqCst)).sum()
    }

    /// Moves the window on to slot `abs` if it is ahead, clearing expired slots; returns the current slot. Only
    /// called with the lock held.
    fn rotate(&self, abs: u64) -> u64 {
        let cur = self.current.load(Ordering::SeqCst);
        if abs <= cur {
            return cur;
        }
        // Publish first, clear second (see `deposit_at`).
        self.current.store(abs, Ordering::SeqCst);
        for k in 1..=(abs - cur).min(SLOTS as u64) {
            self.slots[index(cur + k)].store(0, Ordering::SeqCst);
        }
        abs
    }
}

fn index(abs: u64) -> usize {
    (abs % SLOTS as u64) as usize
}

impl Default for RetryBudget {
    /// [`DEFAULT_RATIO`](Self::DEFAULT_RATIO), [`DEFAULT_MIN_PER_SEC`](Self::DEFAULT_MIN_PER_SEC),
    /// [`DEFAULT_WINDOW`](Self::DEFAULT_WINDOW).
    fn default() -> Self {
        let now = Instant::now();
        RetryBudget {
            slots: Default::default(),
            current: AtomicU64::new(0),
            floor: Mutex::new(Floor { tokens: i64::from(Self::DEFAULT_MIN_PER_SEC) * UNIT, refilled: now }),
            origin: now,
            deposit_units: (Self::DEFAULT_RATIO * UNIT as f64).floor() as i64,
            min_per_sec: Self::DEFAULT_MIN_PER_SEC,
            slot_nanos: Self::DEFAULT_WINDOW.as_secs() * 1_000_000_000 / SLOTS as u64,
            ratio: Self::DEFAULT_RATIO,
            window: Self::DEFAULT_WINDOW,
        }
    }
}

impl Floor {
    fn refill(&mut self, now: Instant, min_per_sec: u32) {
        let cap = i64::from(min_per_sec) * UNIT;
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        // Rounded down, like deposits.
        let add = elapsed.saturating_mul(u128::from(min_per_sec)).saturating_mul(UNIT as u128) / 1_000_000_000;
        let add = i64::try_from(add).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_add(add).min(cap);
        self.refilled = now;
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}
