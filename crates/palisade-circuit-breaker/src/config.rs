//! The breaker's configuration: trip rules, open durations, half-open probes (their defaults are in
//! [`defaults`](crate::defaults)).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::backoff::{Backoff, Jitter};
use thiserror::Error;

use crate::defaults::{
    DEFAULT_FAILURE_RATE, DEFAULT_HALF_OPEN_PROBES, DEFAULT_MAX_OPEN_DURATION, DEFAULT_MINIMUM_CALLS,
    DEFAULT_OPEN_DURATION, DEFAULT_OPEN_GROWTH, DEFAULT_SLOW_CALL_THRESHOLD, DEFAULT_TIME_BUCKETS,
    DEFAULT_WINDOW_CALLS,
};
use crate::events::Listener;

/// The `Retry-After` hint given while half-open probes are all in flight: a probe answers within about a second.
pub const HALF_OPEN_RETRY_HINT: Duration = Duration::from_secs(1);

/// Rates are compared in basis points (1/10 000) so that local and Redis decisions agree exactly.
pub(crate) const RATE_SCALE: u64 = 10_000;

/// The sliding window the rate rules look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` calls (Resilience4j `COUNT_BASED`).
    Count(u32),
    /// The calls of the last `length`, kept in `buckets` buckets (Resilience4j `TIME_BASED`). A bucket counts at
    /// most 65 535 calls; past that it keeps the rates of its first 65 535 calls.
    Time {
        /// The window's length.
        length: Duration,
        /// How many buckets it is cut into.
        buckets: u32,
    },
}

impl Window {
    /// A time-based window of `length` in [`DEFAULT_TIME_BUCKETS`] buckets.
    #[must_use]
    pub const fn time(length: Duration) -> Self {
        Window::Time { length, buckets: DEFAULT_TIME_BUCKETS }
    }
}

/// What an inner Palisade layer's own refusal (rate limited, idempotency in flight, another breaker open, store
/// unavailable; see `ErrorKind::is_layer_rejection`) means for this breaker's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LayerRejections {
    /// Not counted at all: the gateway was not asked, so its health is unknown. The default.
    #[default]
    Ignore,
    /// Counted as a failure.
    Failure,
    /// Counted as a success.
    Success,
}

/// A configuration the builder refused.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate outside `(0, 1]`.
    #[error("{what} must be in (0, 1], got {value}; use e.g. 0.5 for 50 %")]
    Rate {
        /// Which rate.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count or duration that must be positive was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// More successes required than probes admitted: the breaker could never close.
    #[error("half_open_successes ({successes}) must not exceed half_open_probes ({probes}), or it never closes")]
    Successes {
        /// Required successes.
        successes: u32,
        /// Admitted probes.
        probes: u32,
    },
    /// No trip rule left.
    #[error("no trip rule: set a failure rate, consecutive failures or a slow-call rate")]
    NoRule,
    /// A shared breaker was built outside a Tokio runtime (its sync task needs one).
    #[error("build a shared (Redis) breaker inside a Tokio runtime: its sync task is spawned there")]
    NoRuntime,
    /// A count above what the state word holds.
    #[error("{what} must be at most {max}")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// The maximum.
        max: u32,
    },
}

/// A validated breaker configuration (shared by every breaker a layer creates).
#[derive(Clone)]
pub(crate) struct Config {
    pub name: Arc<str>,
    pub window: Window,
    pub minimum_calls: u32,
    pub failure_rate_bp: Option<u64>,
    pub consecutive_failures: Option<u32>,
    pub slow_threshold: Option<Duration>,
    pub slow_rate_bp: Option<u64>,
    pub open: Backoff,
    pub half_open_probes: u32,
    pub half_open_successes: u32,
    pub layer_rejections: LayerRejections,
    pub listener: Option<Listener>,
    pub seed: u64,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("window", &self.window)
            .field("minimum_calls", &self.minimum_calls)
            .field("failure_rate_bp", &self.failure_rate_bp)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("slow_threshold", &self.slow_threshold)
            .field("slow_rate_bp", &self.slow_rate_bp)
            .field("open", &self.open)
            .field("half_open_probes", &self.half_open_probes)
            .field("half_open_successes", &self.half_open_successes)
            .field("layer_rejections", &self.layer_rejections)
            .field("listener", &self.listener.is_some())
            .finish()
    }
}

impl Config {
    /// True when a call's duration matters (slow-call rule or time window).
    pub fn needs_clock(&self) -> bool {
        self.slow_threshold.is_some() || matches!(self.window, Window::Time { .. })
    }
}

/// Settings shared by every builder of this crate (the layer builder wraps one).
#[derive(Clone)]
#[must_use]
pub(crate) struct Settings {
    pub name: Arc<str>,
    pub window: Window,
    pub minimum_calls: u32,
    pub failure_rate: Option<f64>,
    pub consecutive_failures: Option<u32>,
    pub slow_threshold: Option<Duration>,
    pub slow_rate: Option<f64>,
    pub open: Backoff,
    pub half_open_probes: u32,
    pub half_open_successes: Option<u32>,
    pub layer_rejections: LayerRejections,
    pub listener: Option<Listener>,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: Arc::from("gateway"),
            window: Window::Count(DEFAULT_WINDOW_CALLS),
            minimum_calls: DEFAULT_MINIMUM_CALLS,
            failure_rate: Some(DEFAULT_FAILURE_RATE),
            consecutive_failures: None,
            slow_threshold: None,
            slow_rate: None,
            open: Backoff {
                base: DEFAULT_OPEN_DURATION,
                max: DEFAULT_MAX_OPEN_DURATION,
                factor: DEFAULT_OPEN_GROWTH,
                jitter: Jitter::Equal,
            },
            half_open_probes: DEFAULT_HALF_OPEN_PROBES,
            half_open_successes: None,
            layer_rejections: LayerRejections::Ignore,
            listener: None,
            seed: 0x5eed_cafe_f00d_b0a7,
        }
    }
}

fn rate_bp(what: &'static str, r: Option<f64>) -> Result<Option<u64>, ConfigError> {
    match r {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 && v <= 1.0 => {
            // v in (0, 1]: the product is in (0, 10 000], so the cast is exact after rounding.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bp = (v * RATE_SCALE as f64).round() as u64;
            Ok(Some(bp.max(1)))
        }
        Some(value) => Err(ConfigError::Rate { what, value }),
    }
}

/// Largest probe count the state word holds.
pub(crate) const MAX_PROBES: u32 = 0xFFFF;

impl Settings {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let failure_rate_bp = rate_bp("failure_rate", self.failure_rate)?;
        let slow_rate_bp = rate_bp("slow_call_rate", self.slow_rate)?;
        match self.window {
            Window::Count(0) => return Err(ConfigError::Zero("window calls")),
            Window::Count(n) if n > 1 << 20 => {
                return Err(ConfigError::TooLarge { what: "window calls", max: 1 << 20 });
            }
            Window::Time { length, buckets } => {
                if length.is_zero() {
                    return Err(ConfigError::Zero("window length"));
                }
                if buckets == 0 {
                    return Err(ConfigError::Zero("window buckets"));
                }
                if buckets > 1024 {
                    return Err(ConfigError::TooLarge { what: "window buckets", max: 1024 });
                }
            }
            Window::Count(_) => {}
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::Zero("consecutive_failures"));
        }
        if failure_rate_bp.is_none() && self.consecutive_failures.is_none() && slow_rate_bp.is_none() {
            return Err(ConfigError::NoRule);
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::Zero("half_open_probes"));
        }
        if self.half_open_probes > MAX_PROBES {
            return Err(ConfigError::TooLarge { what: "half_open_probes", max: MAX_PROBES });
        }
        let successes = self.half_open_successes.unwrap_or(self.half_open_probes);
        if successes == 0 {
            return Err(ConfigError::Zero("half_open_successes"));
        }
        if successes > self.half_open_probes {
            return Err(ConfigError::Successes { successes, probes: self.half_open_probes });
        }
        if self.open.base.is_zero() {
            return Err(ConfigError::Zero("open duration"));
        }
        let slow_threshold = match (self.slow_rate, self.slow_threshold) {
            (Some(_), t) => Some(t.unwrap_or(DEFAULT_SLOW_CALL_THRESHOLD)),
            (None, t) => t,
        };
        Ok(Config {
            name: self.name.clone(),
            window: self.window,
            minimum_calls: self.minimum_calls.max(1),
            failure_rate_bp,
            consecutive_failures: self.consecutive_failures,
            slow_threshold,
            slow_rate_bp,
            open: self.open,
            half_open_probes: self.half_open_probes,
            half_open_successes: successes,
            layer_rejections: self.layer_rejections,
            listener: self.listener.clone(),
            seed: self.seed,
        })
    }
}
