//! Lock-free sliding windows. Recording a call is a few atomic operations and never allocates.

use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Window;

/// One call's mark in a window.
pub(crate) const CALL: u8 = 1;
pub(crate) const FAILED: u8 = 2;
pub(crate) const SLOW: u8 = 4;

/// What a window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow: u64,
}

pub(crate) enum SlidingWindow {
    Count(CountWindow),
    Time(TimeWindow),
}

impl SlidingWindow {
    pub fn new(w: Window) -> Self {
        match w {
            Window::Count(n) => SlidingWindow::Count(CountWindow::new(n as usize)),
            Window::Time { length, buckets } => SlidingWindow::Time(TimeWindow::new(length, buckets)),
        }
    }
    /// Records one call (`mark` = CALL | FAILED? | SLOW?) at `now_ns` and returns the window after it.
    #[inline]
    pub fn record(&self, mark: u8, now_ns: u64) -> Snapshot {
        match self {
            SlidingWindow::Count(w) => w.record(mark),
            SlidingWindow::Time(w) => w.record(mark, now_ns),
        }
    }
    pub fn snapshot(&self, now_ns: u64) -> Snapshot {
        match self {
            SlidingWindow::Count(w) => w.snapshot(),
            SlidingWindow::Time(w) => w.snapshot(now_ns),
        }
    }
    pub fn clear(&self) {
        match self {
            SlidingWindow::Count(w) => w.clear(),
            SlidingWindow::Time(w) => w.clear(),
        }
    }
}

/// The last `n` calls in a ring of one byte each. The totals always equal the sum of the ring's slots once
/// concurrent writers are done: every slot change is a `swap`, and the totals move by the difference between the
/// old and the new mark, so no interleaving can make them drift. Under concurrent completions the ring holds `n`
/// of the most recent results (a mark may replace a simultaneous one), which leaves the rates unbiased.
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU64,
    calls: AtomicI64,
    failures: AtomicI64,
    slow: AtomicI64,
}

#[inline]
fn bit(m: u8, b: u8) -> i64 {
    i64::from(m & b != 0)
}

fn clamp(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl CountWindow {
    fn new(n: usize) -> Self {
        CountWindow {
            slots: (0..n.max(1)).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            calls: AtomicI64::new(0),
            failures: AtomicI64::new(0),
            slow: AtomicI64::new(0),
        }
    }

    #[inline]
    fn apply(&self, old: u8, new: u8) {
        if old == new {
            return;
        }
        let dc = bit(new, CALL) - bit(old, CALL);
        let df = bit(new, FAILED) - bit(old, FAILED);
        let ds = bit(new, SLOW) - bit(old, SLOW);
        if dc != 0 {
            self.calls.fetch_add(dc, Ordering::AcqRel);
        }
        if df != 0 {
            self.failures.fetch_add(df, Ordering::AcqRel);
        }
        if ds != 0 {
            self.slow.fetch_add(ds, Ordering::AcqRel);
        }
    }

    #[inline]
    fn record(&self, mark: u8) -> Snapshot {
        // A plain load and store, not a `fetch_add`: the index only spreads marks over the ring. Two callers
        // completing at the same instant may pick the same slot (one mark replaces the other); the totals still
        // equal the ring's contents, and a sequence of calls is counted exactly. Saves a locked instruction on
        // every call.
        let i = self.next.load(Ordering::Relaxed);
        self.next.store(i.wrapping_add(1), Ordering::Relaxed);
        // The modulo keeps the index below `slots.len()`, which fits in u64 and usize.
        #[allow(clippy::cast_possible_truncation)]
        let slot = &self.slots[(i % self.slots.len() as u64) as usize];
        // The steady state (a healthy gateway) overwrites a success with a success: a load is enough, and a
        // writer racing us on this slot leaves its own mark, which the totals already match.
        if slot.load(Ordering::Acquire) != mark {
            let old = slot.swap(mark, Ordering::AcqRel);
            self.apply(old, mark);
        }
        self.snapshot()
    }

    #[inline]
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            calls: clamp(self.calls.load(Ordering::Acquire)),
            failures: clamp(self.failures.load(Ordering::Acquire)),
            slow: clamp(self.slow.load(Ordering::Acquire)),
        }
    }

    fn clear(&self) {
        for s in self.slots.iter() {
            let old = s.swap(0, Ordering::AcqRel);
            self.apply(old, 0);
        }
    }
}

/// Bucket word: epoch tag (16 bits) | calls (16) | failures (16) | slow (16). One CAS updates a bucket, so a bucket
/// that rolls over to a new epoch is reset and counted in the same step.
///
/// The tag is the epoch's low 16 bits, which names it exactly only while the bucket is less than 65 536 buckets
/// old. Two rules keep every bucket that young, so a stale count is never read as a current one:
///
/// - every snapshot (each recorded call takes one) empties the buckets that have left the window, so a bucket is
///   examined within two windows of going stale while calls keep coming;
/// - `latest` holds the full epoch of the last recorded call: when it is a whole window old, every bucket is stale
///   whatever its tag says, so a snapshot reads nothing and the next call empties the buckets before counting.
///
/// Both cost an atomic load per call and, rarely, a write; the hot path still never locks or allocates.
pub(crate) struct TimeWindow {
    buckets: Box<[AtomicU64]>,
    bucket_ns: u64,
    latest: AtomicU64,
}

const FIELD: u64 = 0xFFFF;
/// Tags less than half the tag space ahead of a snapshot's epoch are from concurrent callers that read the clock
/// later, not stale: a snapshot leaves them alone.
const HALF: u64 = 0x8000;

fn unpack(w: u64) -> (u64, u64, u64, u64) {
    (w >> 48, (w >> 32) & FIELD, (w >> 16) & FIELD, w & FIELD)
}

fn pack(epoch: u64, calls: u64, failures: u64, slow: u64) -> u64 {
    ((epoch & FIELD) << 48) | (calls << 32) | (failures << 16) | slow
}

/// A bucket that has left the window is emptied before its tag can come round again. A failed exchange means a
/// caller has just reset it for a new epoch. Once per bucket per window at most: off the hot path.
#[cold]
#[inline(never)]
fn scrub(b: &AtomicU64, stale: u64) {
    let _ = b.compare_exchange(stale, 0, Ordering::AcqRel, Ordering::Relaxed);
}

impl TimeWindow {
    fn new(length: Duration, buckets: u32) -> Self {
        let n = u64::from(buckets.max(1));
        let len = u64::try_from(length.as_nanos()).unwrap_or(u64::MAX);
        TimeWindow {
            // Epoch 0 with empty counts is "no data" because counts are zero.
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bucket_ns: (len / n).max(1),
            latest: AtomicU64::new(0),
        }
    }

    fn epoch(&self, now_ns: u64) -> u64 {
        now_ns / self.bucket_ns
    }

    fn record(&self, mark: u8, now_ns: u64) -> Snapshot {
        let epoch = self.epoch(now_ns);
        let n = self.buckets.len() as u64;
        let latest = self.latest.load(Ordering::Acquire);
        if epoch.saturating_sub(latest) >= n {
            self.empty();
        }
        // The modulo keeps the index below the bucket count.
        #[allow(clippy::cast_possible_truncation)]
        let b = &self.buckets[(epoch % n) as usize];
        let mut cur = b.load(Ordering::Acquire);
        loop {
            let (e, c, f, s) = unpack(cur);
            let (c, f, s) = if e == epoch & FIELD { (c, f, s) } else { (0, 0, 0) };
            if c >= FIELD {
                break; // saturated: the bucket keeps the rates of its first 65 535 calls
            }
            let next = pack(
                epoch,
                c + u64::from(mark & CALL != 0),
                f + u64::from(mark & FAILED != 0),
                s + u64::from(mark & SLOW != 0),
            );
            match b.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // Published after the emptying above, so a snapshot that sees a recent `latest` sees empty old buckets.
        if epoch > latest {
            self.latest.fetch_max(epoch, Ordering::AcqRel);
        }
        // `latest` is now at least `epoch`: the window is not quiet.
        self.sum(epoch)
    }

    fn snapshot(&self, now_ns: u64) -> Snapshot {
        let epoch = self.epoch(now_ns);
        if epoch.saturating_sub(self.latest.load(Ordering::Acquire)) >= self.buckets.len() as u64 {
            return Snapshot::default(); // nothing recorded within the window (see the type's docs)
        }
        self.sum(epoch)
    }

    /// The buckets of the window ending at `epoch`, emptying those that have left it.
    fn sum(&self, epoch: u64) -> Snapshot {
        let n = self.buckets.len() as u64;
        // Sums in locals, not in the returned struct: the (cold) call in the loop would keep them in memory.
        let (mut calls, mut failures, mut slow) = (0, 0, 0);
        for b in self.buckets.iter() {
            let w = b.load(Ordering::Acquire);
            let (e, c, f, s) = unpack(w);
            // A bucket belongs to the window when its epoch is one of the last n. Compared modulo 2^16, which is
            // exact because no bucket holding counts is 65 536 buckets old (see the type's docs).
            let age = epoch.wrapping_sub(e) & FIELD;
            if age < n {
                calls += c;
                failures += f;
                slow += s;
            } else if c != 0 && age < HALF {
                scrub(b, w);
            }
        }
        Snapshot { calls, failures, slow }
    }

    /// No call for a whole window: every bucket is stale, but a tag cannot tell 65 536 buckets ago from now. Empty
    /// them all before counting. A caller racing us out of the same quiet period may lose its mark to our emptying
    /// (or we ours to its); a stale count is never kept.
    #[cold]
    #[inline(never)]
    fn empty(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Release);
        }
    }

    fn clear(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_slides() {
        let w = CountWindow::new(4);
        for _ in 0..4 {
            w.record(CALL | FAILED);
        }
        assert_eq!(w.snapshot(), Snapshot { calls: 4, failures: 4, slow: 0 });
        let s = w.record(CALL);
        assert_eq!(s, Snapshot { calls: 4, failures: 3, slow: 0 });
        w.clear();
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[test]
    fn count_window_totals_match_slots_under_concurrency() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let m = if (i + t) % 3 == 0 { CALL | FAILED } else { CALL | SLOW };
                        w.record(m);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let slots: Vec<u8> = w.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect();
        let want = Snapshot {
            calls: slots.iter().filter(|m| **m & CALL != 0).count() as u64,
            failures: slots.iter().filter(|m| **m & FAILED != 0).count() as u64,
            slow: slots.iter().filter(|m| **m & SLOW != 0).count() as u64,
        };
        assert_eq!(w.snapshot(), want);
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let sec = 1_000_000_000u64;
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(CALL | FAILED, 0);
        w.record(CALL, 5 * sec);
        assert_eq!(w.snapshot(5 * sec), Snapshot { calls: 2, failures: 1, slow: 0 });
        // 10 s after the first call its bucket has left the window.
        assert_eq!(w.snapshot(10 * sec), Snapshot { calls: 1, failures: 0, slow: 0 });
        // The bucket is reused for a new epoch and reset on the way.
        w.record(CALL, 10 * sec);
        assert_eq!(w.snapshot(10 * sec), Snapshot { calls: 2, failures: 0, slow: 0 });
        assert_eq!(w.snapshot(100 * sec), Snapshot::default());
    }

    #[test]
    fn time_window_never_counts_a_bucket_65536_buckets_old() {
        let ms = 1_000_000u64;
        // 16 buckets of 100 ms: 65 536 buckets later the same bucket comes round with the same 16-bit tag.
        let w = TimeWindow::new(Duration::from_millis(1_600), 16);
        for _ in 0..4 {
            w.record(CALL | FAILED, 0);
        }
        let later = 65_536 * 100 * ms;
        assert_eq!(w.snapshot(later), Snapshot::default());
        assert_eq!(w.record(CALL, later), Snapshot { calls: 1, failures: 0, slow: 0 });
        assert_eq!(w.record(CALL, later + 100 * ms), Snapshot { calls: 2, failures: 0, slow: 0 });
    }

    #[test]
    fn time_window_with_calls_in_one_bucket_only_never_revives_another() {
        let ms = 1_000_000u64;
        let w = TimeWindow::new(Duration::from_millis(1_000), 10); // 100 ms buckets
        w.record(CALL | FAILED, 3 * 100 * ms);
        // One call per window, always in bucket 5: bucket 3 is never reused, and 65 536 buckets after its failure
        // its tag is current again.
        for lap in 1..6_600u64 {
            let at = (5 + 10 * lap) * 100 * ms;
            let got = w.record(CALL, at);
            assert_eq!(got, Snapshot { calls: 1, failures: 0, slow: 0 }, "at bucket {}", at / (100 * ms));
            for dt in [1, 4, 9] {
                assert_eq!(w.snapshot(at + dt * 100 * ms).failures, 0, "at bucket {}", at / (100 * ms) + dt);
            }
        }
    }

    proptest::proptest! {
        /// The time window counts exactly the calls of the last `buckets` whole buckets, also across quiet periods
        /// of (about) any multiple of 65 536 buckets.
        #[test]
        fn time_window_matches_a_model_across_long_gaps(
            buckets in 1u32..40,
            events in proptest::collection::vec((0u64..4, 0u64..50, 0u8..8), 0..120),
        ) {
            let bucket = 1_000u64; // 1 µs buckets
            let w = TimeWindow::new(Duration::from_nanos(bucket * u64::from(buckets)), buckets);
            let n = u64::from(buckets);
            let mut t = 0u64;
            let mut log: Vec<(u64, u8)> = Vec::new();
            for (laps, dt, m) in events {
                // Mostly small steps; sometimes exactly k·65 536 buckets plus a few.
                t += if laps == 0 { dt * bucket / 10 } else { laps * 65_536 * bucket + dt * bucket / 10 };
                let m = m | CALL;
                log.push((t, m));
                let got = w.record(m, t);
                let epoch = t / bucket;
                let inside: Vec<u8> = log.iter().filter(|(at, _)| epoch - at / bucket < n).map(|(_, m)| *m).collect();
                let want = Snapshot {
                    calls: inside.len() as u64,
                    failures: inside.iter().filter(|x| **x & FAILED != 0).count() as u64,
                    slow: inside.iter().filter(|x| **x & SLOW != 0).count() as u64,
                };
                proptest::prop_assert_eq!(got, want);
            }
        }


        /// Sequentially, the count window equals a model: the last n marks.
        #[test]
        fn count_window_matches_a_model(n in 1usize..40, marks in proptest::collection::vec(0u8..8, 0..300)) {
            let w = CountWindow::new(n);
            let mut model = std::collections::VecDeque::new();
            for m in marks {
                let m = m | CALL;
                model.push_back(m);
                if model.len() > n {
                    model.pop_front();
                }
                let got = w.record(m);
                let want = Snapshot {
                    calls: model.len() as u64,
                    failures: model.iter().filter(|x| **x & FAILED != 0).count() as u64,
                    slow: model.iter().filter(|x| **x & SLOW != 0).count() as u64,
                };
                proptest::prop_assert_eq!(got, want);
            }
        }

        /// The time window counts exactly the calls of the last `buckets` whole buckets.
        #[test]
        fn time_window_matches_a_model(events in proptest::collection::vec((0u64..3_000, 0u8..8), 0..200)) {
            let ms = 1_000_000u64;
            let w = TimeWindow::new(Duration::from_millis(1_000), 10); // 100 ms buckets
            let mut t = 0u64;
            let mut log: Vec<(u64, u8)> = Vec::new();
            for (dt, m) in events {
                t += dt * ms / 10;
                let m = m | CALL;
                log.push((t, m));
                let got = w.record(m, t);
                let epoch = t / (100 * ms);
                let inside: Vec<u8> = log.iter().filter(|(at, _)| epoch - at / (100 * ms) < 10).map(|(_, m)| *m).collect();
                let want = Snapshot {
                    calls: inside.len() as u64,
                    failures: inside.iter().filter(|x| **x & FAILED != 0).count() as u64,
                    slow: inside.iter().filter(|x| **x & SLOW != 0).count() as u64,
                };
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
