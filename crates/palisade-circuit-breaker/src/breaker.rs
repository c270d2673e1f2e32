//! The state machine. One `AtomicU64` holds the state, the generation and the half-open probe counters, so that
//!
//! - a closed-state call is admitted with one atomic load, and recorded with a few atomic read-modify-writes on
//!   the sliding window (no lock, no allocation);
//! - a half-open probe is admitted with one compare-and-swap that checks the probe limit and raises the count in
//!   the same step: no interleaving of any number of callers admits more than the limit;
//! - a result recorded for an earlier generation (a call admitted before the breaker opened and answered after)
//!   is ignored.
//!
//! Transitions are rare and take a small mutex, so that the open time, the window reset and the new state are
//! published together and exactly one event is emitted per transition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{Config, RATE_SCALE};
use crate::events::{CallKeys, Event, Reason, State, emit};
use crate::window::{CALL, FAILED, SLOW, SlidingWindow, Snapshot};

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const DISABLED: u64 = 5;

const STATE_MASK: u64 = 0x7;
const ADMITTED_SHIFT: u32 = 4;
const SUCCEEDED_SHIFT: u32 = 20;
const COUNT_MASK: u64 = 0xFFFF;
const GEN_SHIFT: u32 = 36;
const GEN_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;

#[inline]
fn st(w: u64) -> u64 {
    w & STATE_MASK
}
#[inline]
fn generation(w: u64) -> u64 {
    w >> GEN_SHIFT
}
#[inline]
fn admitted(w: u64) -> u64 {
    (w >> ADMITTED_SHIFT) & COUNT_MASK
}
#[inline]
fn succeeded(w: u64) -> u64 {
    (w >> SUCCEEDED_SHIFT) & COUNT_MASK
}
fn word(state: u64, generation: u64) -> u64 {
    ((generation & GEN_MASK) << GEN_SHIFT) | state
}
fn to_state(s: u64) -> State {
    match s {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        FORCED_CLOSED => State::ForcedClosed,
        _ => State::Disabled,
    }
}
fn from_state(s: State) -> u64 {
    match s {
        State::Closed => CLOSED,
        State::Open => OPEN,
        State::HalfOpen => HALF_OPEN,
        State::ForcedOpen => FORCED_OPEN,
        State::ForcedClosed => FORCED_CLOSED,
        State::Disabled => DISABLED,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a call's result means for this breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    Ignore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermitKind {
    /// Closed (or forced closed): the result is counted in the window.
    Counted,
    /// Half-open probe: holds one of the limited probe slots until it completes or is dropped.
    Probe,
    /// Disabled: nothing is recorded.
    Untracked,
}

/// Leave to call the inner service, carrying what is needed to record the result.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    generation: u64,
    pub(crate) kind: PermitKind,
    start: Option<Instant>,
}

/// A rejected call: the remaining open time, if there is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rejected {
    pub state: State,
    pub retry_after: Option<Duration>,
}

pub(crate) struct Breaker {
    pub(crate) label: Arc<str>,
    /// The per-call counters' keys, made with the label.
    pub(crate) keys: CallKeys,
    pub(crate) cfg: Arc<Config>,
    word: AtomicU64,
    /// Nanoseconds since `base` at which the open state ends.
    open_until: AtomicU64,
    window: SlidingWindow,
    consecutive: AtomicU32,
    /// Trips since the breaker last closed from half-open: the exponent of the growing open duration.
    trips: AtomicU32,
    previous_open: AtomicU64,
    rng: AtomicU64,
    base: Instant,
    /// Nanoseconds since `base` of the last call (per-key idle eviction).
    pub(crate) last_used: AtomicU64,
    transition: Mutex<()>,
    /// Woken when the local window looks like tripping, so a shared-state sync runs early.
    pub(crate) wake: Option<Arc<tokio::sync::Notify>>,
    /// Cached from the config: a call's start time is needed (slow-call rule or time window).
    needs_clock: bool,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("label", &self.label).field("state", &self.state()).finish_non_exhaustive()
    }
}

impl Breaker {
    pub(crate) fn new(label: Arc<str>, cfg: Arc<Config>, wake: Option<Arc<tokio::sync::Notify>>) -> Self {
        let window = SlidingWindow::new(cfg.window);
        let seed = cfg.seed ^ fxhash(label.as_bytes());
        Breaker {
            keys: CallKeys::new(&label),
            label,
            word: AtomicU64::new(word(CLOSED, 0)),
            open_until: AtomicU64::new(0),
            window,
            consecutive: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            previous_open: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
            base: Instant::now(),
            last_used: AtomicU64::new(0),
            transition: Mutex::new(()),
            wake,
            needs_clock: cfg.needs_clock(),
            cfg,
        }
    }

    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    pub(crate) fn state(&self) -> State {
        to_state(st(self.word.load(Ordering::Acquire)))
    }

    /// Remaining open time (zero when not open).
    pub(crate) fn remaining_open(&self) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.now_ns()))
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let now = if matches!(self.window, SlidingWindow::Time(_)) { self.now_ns() } else { 0 };
        self.window.snapshot(now)
    }

    /// Admits a call or rejects it. The closed-state path is one atomic load (plus a clock read when the
    /// slow-call rule or a time window needs the call's start).
    #[inline]
    pub(crate) fn try_acquire(&self) -> Result<Permit, Rejected> {
        loop {
            let w = self.word.load(Ordering::Acquire);
            match st(w) {
                CLOSED | FORCED_CLOSED => {
                    let start = if self.needs_clock { Some(Instant::now()) } else { None };
                    return Ok(Permit { generation: generation(w), kind: PermitKind::Counted, start });
                }
                DISABLED => return Ok(Permit { generation: generation(w), kind: PermitKind::Untracked, start: None }),
                FORCED_OPEN => return Err(self.reject(State::ForcedOpen, None)),
                OPEN => {
                    let now = self.now_ns();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(State::Open, Some(Duration::from_nanos(until - now))));
                    }
                    self.transition(Some(generation(w)), &[OPEN], HALF_OPEN, Reason::OpenTimeElapsed, None);
                }
                HALF_OPEN => {
                    if admitted(w) >= u64::from(self.cfg.half_open_probes) {
                        return Err(self.reject(State::HalfOpen, Some(crate::config::HALF_OPEN_RETRY_HINT)));
                    }
                    // Raising the count in the same CAS that checked it: never more probes than the limit.
                    if self
                        .word
                        .compare_exchange(w, w + (1 << ADMITTED_SHIFT), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        let start = if self.needs_clock { Some(Instant::now()) } else { None };
                        return Ok(Permit { generation: generation(w), kind: PermitKind::Probe, start });
                    }
                }
                _ => return Ok(Permit { generation: generation(w), kind: PermitKind::Untracked, start: None }),
            }
        }
    }

    fn reject(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        emit(&self.label, &self.keys, self.cfg.listener.as_ref(), &Event::Rejected { state, retry_after });
        Rejected { state, retry_after }
    }

    /// Records a completed call.
    #[inline]
    pub(crate) fn complete(&self, permit: &Permit, verdict: Verdict) {
        if permit.kind == PermitKind::Untracked {
            return;
        }
        // One clock read per completion serves both the slow-call rule and the time window.
        let end = permit.start.map(|_| Instant::now());
        let slow = match (permit.start, end, self.cfg.slow_threshold) {
            (Some(start), Some(end), Some(threshold)) if verdict != Verdict::Ignore => {
                let took = end.saturating_duration_since(start);
                let slow = took >= threshold;
                if slow {
                    emit(&self.label, &self.keys, self.cfg.listener.as_ref(), &Event::SlowCall { duration: took });
                }
                slow
            }
            _ => false,
        };
        match permit.kind {
            PermitKind::Counted => {
                let now = end.map_or(0, |e| nanos(e.saturating_duration_since(self.base)));
                self.complete_closed(permit, verdict, slow, now);
            }
            PermitKind::Probe => self.complete_probe(permit, verdict, slow),
            PermitKind::Untracked => {}
        }
    }

    #[inline]
    fn complete_closed(&self, permit: &Permit, verdict: Verdict, slow: bool, now_ns: u64) {
        let w = self.word.load(Ordering::Acquire);
        let state = st(w);
        if verdict == Verdict::Ignore
            || generation(w) != permit.generation
            || (state != CLOSED && state != FORCED_CLOSED)
        {
            return;
        }
        let failed = verdict == Verdict::Failure;
        let mark = CALL | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let snap = self.window.record(mark, now_ns);
        let consecutive = if failed {
            self.consecutive.fetch_add(1, Ordering::AcqRel).saturating_add(1)
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Release);
            }
            0
        };
        if state == FORCED_CLOSED {
            return;
        }
        if let Some(reason) = self.should_trip(&snap, consecutive) {
            self.trip(Some(permit.generation), &[CLOSED], reason);
        } else if failed && let Some(wake) = &self.wake {
            // Shared mode: a window that looks bad (ignoring the minimum) is worth an early sync.
            if self.cfg.failure_rate_bp.is_some_and(|bp| snap.failures * RATE_SCALE >= bp * snap.calls) {
                wake.notify_one();
            }
        }
    }

    fn complete_probe(&self, permit: &Permit, verdict: Verdict, slow: bool) {
        let verdict = if slow && verdict == Verdict::Success { Verdict::Failure } else { verdict };
        loop {
            let w = self.word.load(Ordering::Acquire);
            if generation(w) != permit.generation || st(w) != HALF_OPEN {
                return;
            }
            match verdict {
                Verdict::Failure => {
                    self.trip(Some(permit.generation), &[HALF_OPEN], Reason::ProbeFailed);
                    return;
                }
                Verdict::Ignore => {
                    // The probe said nothing about the gateway: give its slot back.
                    if self.release_once(w) {
                        return;
                    }
                }
                Verdict::Success => {
                    if succeeded(w) + 1 >= u64::from(self.cfg.half_open_successes) {
                        if self.transition(Some(permit.generation), &[HALF_OPEN], CLOSED, Reason::ProbesSucceeded, None)
                        {
                            self.trips.store(0, Ordering::Release);
                        }
                        return;
                    }
                    let next = w + (1 << SUCCEEDED_SHIFT);
                    if self.word.compare_exchange(w, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        return;
                    }
                }
            }
        }
    }

    fn release_once(&self, w: u64) -> bool {
        if admitted(w) == 0 {
            return true;
        }
        self.word.compare_exchange(w, w - (1 << ADMITTED_SHIFT), Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Gives back a probe slot whose call was dropped before it completed (cancellation).
    pub(crate) fn release(&self, permit: &Permit) {
        if permit.kind != PermitKind::Probe {
            return;
        }
        loop {
            let w = self.word.load(Ordering::Acquire);
            if generation(w) != permit.generation || st(w) != HALF_OPEN || self.release_once(w) {
                return;
            }
        }
    }

    fn should_trip(&self, s: &Snapshot, consecutive: u32) -> Option<Reason> {
        if self.cfg.consecutive_failures.is_some_and(|n| consecutive >= n) {
            return Some(Reason::ConsecutiveFailures);
        }
        if s.calls < u64::from(self.cfg.minimum_calls) {
            return None;
        }
        if self.cfg.failure_rate_bp.is_some_and(|bp| s.failures * RATE_SCALE >= bp * s.calls) {
            return Some(Reason::FailureRate);
        }
        if self.cfg.slow_rate_bp.is_some_and(|bp| s.slow * RATE_SCALE >= bp * s.calls) {
            return Some(Reason::SlowCallRate);
        }
        None
    }

    fn unit(&self) -> f64 {
        // splitmix64 over an atomic counter: seeded, lock-free, good enough for jitter.
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The open duration the next trip would use (consumes one random draw, not a trip).
    pub(crate) fn next_open_duration(&self) -> Duration {
        let attempt = self.trips.load(Ordering::Acquire);
        let prev = self.previous_open.load(Ordering::Acquire);
        let prev = (prev > 0).then(|| Duration::from_nanos(prev));
        self.cfg.open.delay(attempt, prev, self.unit()).max(Duration::from_millis(1))
    }

    fn trip(&self, expect: Option<u64>, from: &[u64], reason: Reason) {
        self.transition(expect, from, OPEN, reason, None);
    }

    /// Opens because the shared store says all instances together are failing; `remaining` comes from the
    /// store's clock. Does nothing when the breaker is forced or disabled, or already open for longer.
    #[cfg(feature = "redis")]
    pub(crate) fn open_shared(&self, remaining: Duration) {
        if st(self.word.load(Ordering::Acquire)) == OPEN && self.remaining_open() >= remaining {
            return;
        }
        self.transition(None, &[CLOSED, HALF_OPEN, OPEN], OPEN, Reason::Shared, Some(remaining));
    }

    /// Moves to `to` when the state is one of `from` (and the generation is `expect`, if given). Returns whether
    /// it moved. Emits the event.
    pub(crate) fn transition(
        &self,
        expect: Option<u64>,
        from: &[u64],
        to: u64,
        reason: Reason,
        open_for: Option<Duration>,
    ) -> bool {
        let guard = self.transition.lock();
        let w = self.word.load(Ordering::Acquire);
        if expect.is_some_and(|g| g != generation(w)) || !from.contains(&st(w)) {
            return false;
        }
        let old = st(w);
        let mut open_for_event = None;
        if to == OPEN {
            let d = match open_for {
                Some(d) => d,
                None => {
                    let d = self.next_open_duration();
                    self.trips.fetch_add(1, Ordering::AcqRel);
                    self.previous_open.store(nanos(d), Ordering::Release);
                    d
                }
            };
            self.open_until.store(self.now_ns().saturating_add(nanos(d)), Ordering::Release);
            open_for_event = Some(d);
        }
        // Every state starts from an empty window (results of the old generation are ignored anyway).
        self.window.clear();
        self.consecutive.store(0, Ordering::Release);
        // Only probe counters change without the mutex; retry the CAS until the state word is ours.
        let mut cur = w;
        loop {
            match self.word.compare_exchange(cur, word(to, generation(cur) + 1), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // Emit outside the mutex: a listener may call back into the handle.
        drop(guard);
        emit(
            &self.label,
            &self.keys,
            self.cfg.listener.as_ref(),
            &Event::Transition { from: to_state(old), to: to_state(to), reason, open_for: open_for_event },
        );
        true
    }

    /// Operator transitions (handle).
    pub(crate) fn set(&self, to: State) {
        let all = [CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, FORCED_CLOSED, DISABLED];
        let to = from_state(to);
        let from: Vec<u64> = all.iter().copied().filter(|s| *s != to || to == CLOSED).collect();
        if to == CLOSED {
            self.trips.store(0, Ordering::Release);
            self.previous_open.store(0, Ordering::Release);
            self.open_until.store(0, Ordering::Release);
        }
        self.transition(None, &from, to, Reason::Operator, None);
    }
}

/// A small stable hash for seeding per-key jitter (FxHash's constant).
fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, b| (h.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use std::sync::Barrier;
    use std::sync::atomic::AtomicUsize;

    fn half_open_breaker(probes: u32) -> Arc<Breaker> {
        let cfg = Settings { half_open_probes: probes, ..Settings::default() }.validate().unwrap();
        let b = Arc::new(Breaker::new(Arc::from("t"), Arc::new(cfg), None));
        // Open with no time left: the first caller turns it half-open, racing all the others.
        assert!(b.transition(None, &[CLOSED], OPEN, Reason::Operator, Some(Duration::ZERO)));
        b
    }

    #[test]
    fn probe_limit_holds_across_threads() {
        for round in 0..20 {
            let b = half_open_breaker(5);
            let admitted = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(8));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (b, admitted, barrier) = (b.clone(), admitted.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..2_000 {
                            if b.try_acquire().is_ok() {
                                admitted.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(admitted.load(Ordering::SeqCst), 5, "round {round}");
            assert_eq!(b.state(), State::HalfOpen);
        }
    }

    #[test]
    fn cancelled_probes_never_let_more_than_the_limit_in_flight() {
        let b = half_open_breaker(3);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, in_flight, max_seen, total, barrier) =
                    (b.clone(), in_flight.clone(), max_seen.clone(), total.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..5_000 {
                        if let Ok(p) = b.try_acquire() {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(now, Ordering::SeqCst);
                            total.fetch_add(1, Ordering::SeqCst);
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            b.release(&p); // the caller dropped the probe
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(max_seen.load(Ordering::SeqCst) <= 3, "max in flight {}", max_seen.load(Ordering::SeqCst));
        assert!(total.load(Ordering::SeqCst) > 3, "released slots were reused");
        assert_eq!(admitted(b.word.load(Ordering::SeqCst)), 0, "every slot came back");
    }
}
