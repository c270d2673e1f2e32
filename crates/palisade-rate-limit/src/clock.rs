//! Where "now" comes from.

/// The clock a limiter reads.
///
/// The default is tokio's clock, so `tokio::time::pause()` / `advance()` drive the limiter in tests. With the
/// `quanta` feature, `ClockSource::Quanta` reads the CPU's time-stamp counter instead (as governor does): a few
/// nanoseconds per read instead of a `clock_gettime`, for limiters on a very hot path — at the price of ignoring
/// tokio's paused time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClockSource {
    /// `tokio::time::Instant` (default): testable under paused time.
    #[default]
    Tokio,
    /// quanta's TSC clock (feature `quanta`): fastest; not affected by `tokio::time::pause()`.
    #[cfg(feature = "quanta")]
    Quanta,
}

/// A started clock: nanoseconds since the limiter was created.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    Tokio(tokio::time::Instant),
    #[cfg(feature = "quanta")]
    Quanta(quanta::Clock, u64),
}

impl Clock {
    pub(crate) fn start(source: ClockSource) -> Self {
        match source {
            ClockSource::Tokio => Clock::Tokio(tokio::time::Instant::now()),
            #[cfg(feature = "quanta")]
            ClockSource::Quanta => {
                let c = quanta::Clock::new();
                let origin = c.raw();
                Clock::Quanta(c, origin)
            }
        }
    }

    /// Nanoseconds since start (u64 covers 584 years).
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match self {
            Clock::Tokio(origin) => tokio::time::Instant::now().saturating_duration_since(*origin).as_nanos() as u64,
            #[cfg(feature = "quanta")]
            Clock::Quanta(c, origin) => c.delta_as_nanos(*origin, c.raw()),
        }
    }
}
