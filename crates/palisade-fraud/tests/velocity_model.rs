//! The memory velocity store against a model that keeps every attempt and decline and counts them from scratch:
//! seeded random sequences of new attempts, retries (the same id, subjects, amount and currency: they read what
//! their first attempt read, as it was then), the same id with other subjects, another amount or another
//! currency, attempts without an id, declines, and now and then an amount that takes a sum past `i64::MAX`, with
//! the clock moved by anything from nothing to more than a day (tokio's paused time). After every attempt, all 36 attributes the store returns equal the model's; memory is given back
//! once history leaves the widest window.

use std::borrow::Cow;
use std::time::Duration;

use palisade_core::Currency;
use palisade_fraud::{Attempt, MemoryVelocityStore, VelocityCounts, Window};
use tokio::time::Instant;

/// The widest window: history and attempt ids are kept this long.
const DAY: Duration = Duration::from_secs(86_400);

/// A tiny deterministic generator (xorshift64*), so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An attempt as the model keeps it.
#[derive(Clone, PartialEq, Eq)]
struct Owned {
    id: Option<String>,
    subjects: [Option<String>; 4],
    currency: Currency,
    amount: i64,
}

impl Owned {
    fn attempt(&self) -> Attempt<'_> {
        Attempt {
            id: self.id.as_deref(),
            subjects: self.subjects.clone().map(|v| v.map(Cow::Owned)),
            currency: self.currency,
            amount_minor: self.amount,
        }
    }
    /// One attempt (a retry): the same id, subjects, amount and currency.
    fn same_key(&self, other: &Owned) -> bool {
        self.id.is_some()
            && self.id == other.id
            && self.subjects == other.subjects
            && self.currency == other.currency
            && self.amount == other.amount
    }
}

#[derive(Default)]
struct Model {
    attempts: Vec<(Instant, Owned)>,
    declines: Vec<(Instant, Owned)>,
    /// What each attempt with an id read when it was recorded (by its position in `attempts`).
    first: Vec<Option<VelocityCounts>>,
}

impl Model {
    /// Whether `a` (with an id) was recorded in `log` within the last day.
    fn seen(log: &[(Instant, Owned)], a: &Owned, now: Instant) -> bool {
        Self::position(log, a, now).is_some()
    }

    /// Where `a` (with an id) was recorded in `log` within the last day.
    fn position(log: &[(Instant, Owned)], a: &Owned, now: Instant) -> Option<usize> {
        log.iter().position(|(at, b)| b.same_key(a) && *at + DAY >= now)
    }

    fn counts(&self, a: &Owned, now: Instant) -> VelocityCounts {
        let mut c = VelocityCounts::default();
        for (s, value) in a.subjects.iter().enumerate() {
            let Some(value) = value else { continue };
            for (w, window) in Window::ALL.iter().enumerate() {
                let inside = |at: &Instant| now.checked_sub(window.duration()).is_none_or(|from| *at >= from);
                let mine = |b: &Owned| b.subjects[s].as_deref() == Some(value.as_str());
                let attempts = self.attempts.iter().filter(|(at, b)| inside(at) && mine(b));
                // The sum, exact, read saturating.
                let (mut n, mut sum) = (0, 0i128);
                for (_, b) in attempts {
                    n += 1;
                    if b.currency == a.currency {
                        sum += i128::from(b.amount.max(0));
                    }
                }
                let sum = i64::try_from(sum).unwrap_or(i64::MAX);
                let declines = self.declines.iter().filter(|(at, b)| inside(at) && mine(b)).count();
                c.0[s * 9 + w] = n;
                c.0[s * 9 + 3 + w] = sum;
                c.0[s * 9 + 6 + w] = declines as i64;
            }
        }
        c
    }

    /// The distinct (subject, value) pairs with history in the last day.
    fn live_keys(&self, now: Instant) -> usize {
        let mut keys = std::collections::HashSet::new();
        for (at, a) in self.attempts.iter().chain(&self.declines) {
            if *at + DAY >= now {
                for (s, v) in a.subjects.iter().enumerate() {
                    if let Some(v) = v {
                        keys.insert((s, v.clone()));
                    }
                }
            }
        }
        keys.len()
    }
}

fn random_attempt(rng: &mut Rng, next_id: &mut u64) -> Owned {
    let pick = |rng: &mut Rng, prefix: &str, n: u64, absent: bool| {
        let i = rng.below(n + u64::from(absent));
        (i < n).then(|| format!("{prefix}{i}"))
    };
    *next_id += 1;
    Owned {
        id: (rng.below(8) != 0).then(|| format!("k{next_id}")),
        subjects: [
            pick(rng, "tok_", 6, true),
            // One long value, past the one-byte length of a retry key's encoding, and past 24 bytes.
            pick(rng, "c@example.com", 4, true).map(|v| if v.ends_with('3') { v.repeat(30) } else { v }),
            pick(rng, "10.0.0.", 3, false),
            pick(rng, "u", 5, true),
        ],
        currency: if rng.below(4) == 0 { Currency::EUR } else { Currency::USD },
        // Now and then an amount that takes a sum past `i64::MAX`.
        amount: if rng.below(40) == 0 { i64::MAX / 2 } else { 100 + rng.below(10_000) as i64 },
    }
}

async fn run(seed: u64, steps: usize) {
    let store = MemoryVelocityStore::new();
    let mut model = Model::default();
    let mut rng = Rng(seed | 1);
    let mut next_id = 0;
    // Exactly a window's length too, so an attempt lands on a window's edge.
    let gaps = [0, 0, 1, 30, 300, 599, 600, 601, 1_800, 3_600, 3_601, 7_200, 43_200, 86_400, 86_401];
    for step in 0..steps {
        let gap = gaps[rng.below(gaps.len() as u64) as usize];
        // A gap of over a day is rare, so histories grow long between them.
        if gap < 86_400 || rng.below(10) == 0 {
            let millis = if rng.below(2) == 0 { 0 } else { rng.below(1_000) };
            tokio::time::advance(Duration::from_secs(gap) + Duration::from_millis(millis)).await;
        }
        let now = Instant::now();
        let a = match rng.below(10) {
            // A retry, or a decline's or attempt's id with other subjects.
            0..=2 if !model.attempts.is_empty() => {
                let (_, prev) = &model.attempts[rng.below(model.attempts.len() as u64) as usize];
                let mut a = prev.clone();
                match rng.below(6) {
                    0 | 1 => a.subjects[2] = Some(format!("10.0.1.{}", rng.below(2))),
                    // The same idempotency key for another amount or currency: another attempt.
                    2 => a.amount += 1,
                    3 => a.currency = if a.currency == Currency::USD { Currency::EUR } else { Currency::USD },
                    _ => {}
                }
                a
            }
            _ => random_attempt(&mut rng, &mut next_id),
        };
        if rng.below(4) == 0 {
            store.record_decline_now(&a.attempt());
            if a.id.is_none() || !Model::seen(&model.declines, &a, now) {
                model.declines.push((now, a));
            }
            continue;
        }
        let got = store.record_attempt_now(&a.attempt());
        // A retry reads what its first attempt read, as it was then.
        let want = match Model::position(&model.attempts, &a, now).filter(|_| a.id.is_some()) {
            Some(i) => model.first[i].expect("an attempt with an id keeps what it read"),
            None => {
                model.attempts.push((now, a.clone()));
                let want = model.counts(&a, now);
                model.first.push(a.id.is_some().then_some(want));
                want
            }
        };
        assert_eq!(got.0, want.0, "seed {seed}, step {step}: counts differ");
    }
    // After more than a day of quiet, one attempt: only its own subjects are tracked.
    tokio::time::advance(DAY + Duration::from_secs(1)).await;
    let a = random_attempt(&mut rng, &mut next_id);
    let got = store.record_attempt_now(&a.attempt());
    model.attempts.push((Instant::now(), a.clone()));
    model.first.push(None);
    assert_eq!(got.0, model.counts(&a, Instant::now()).0, "seed {seed}: after a quiet day");
    assert_eq!(store.tracked_keys(), model.live_keys(Instant::now()), "seed {seed}: history older than a day is kept");
}

#[tokio::test(start_paused = true)]
async fn memory_store_counts_what_a_model_counts() {
    for seed in 1..=40u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 400).await;
    }
}
