//! `MemoryStore` against a reference model of the `LeaseStore` contract (proptest, paused time): random
//! sequences of claim / complete / release / get / advance / purge over a few keys, two fingerprints and mixed
//! leases and TTLs (TTL shorter than the lease, TTLs that differ between operations, so the expiry queue is not
//! in expiry order). Every answer must be the model's, and the store must hold every live record and no key the
//! model does not know; after `purge_expired()` it holds exactly the live records.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{FOREIGN, Tok};
use palisade_idempotency::{
    Claim, FencingToken, Fingerprint, Hold, LeaseStore, MemoryStore, Payload, Record, StoreFuture,
};

/// A memory store's answer, which it gives at once.
fn now<T>(f: StoreFuture<'_, T>) -> T {
    f.now().expect("the memory store answers at once").expect("the memory store does not fail")
}
use proptest::prelude::*;

const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
const FPS: [Fingerprint; 2] = [Fingerprint([1; 32]), Fingerprint([2; 32])];
/// Leases, in ms: short ones end within a few steps, long ones outlive short TTLs.
const LEASES: [u64; 5] = [1, 5, 10, 30, 100];
/// TTLs, in ms: zero (a completion that expires at once), shorter than most leases, and longer.
const TTLS: [u64; 7] = [0, 1, 5, 10, 30, 100, 300];
#[derive(Debug, Clone)]
enum Op {
    Claim { key: usize, fp: usize, lease_ms: u64, ttl_ms: u64 },
    Complete { key: usize, tok: Tok, body: u8, ttl_ms: u64 },
    Release { key: usize, tok: Tok },
    Get { key: usize },
    Advance { ms: u64 },
    Purge,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let fp = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    let lease = proptest::sample::select(&LEASES[..]);
    let ttl = proptest::sample::select(&TTLS[..]);
    let tok = Tok::strategy();
    prop_oneof![
        4 => (key.clone(), fp, lease, ttl.clone())
            .prop_map(|(key, fp, lease_ms, ttl_ms)| Op::Claim { key, fp, lease_ms, ttl_ms }),
        3 => (key.clone(), tok.clone(), any::<u8>(), ttl)
            .prop_map(|(key, tok, body, ttl_ms)| Op::Complete { key, tok, body, ttl_ms }),
        1 => (key.clone(), tok).prop_map(|(key, tok)| Op::Release { key, tok }),
        2 => key.prop_map(|key| Op::Get { key }),
        3 => prop_oneof![3 => 0u64..=12, 1 => 0u64..=150].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Purge),
    ]
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone)]
enum State {
    InFlight { token: FencingToken, lease_until: u64 },
    Completed { body: Bytes },
}

#[derive(Debug, Clone)]
struct Rec {
    fp: usize,
    state: State,
    expires_at: u64,
}

/// The contract of `LeaseStore` (src/store/mod.rs), with time in ms since the start. Records stay in
/// `recs` after they expire (the store may still hold them) until a purge.
#[derive(Debug, Default)]
struct Model {
    now: u64,
    recs: HashMap<usize, Rec>,
    /// Every token handed out, per key and in order.
    tokens: Vec<Vec<FencingToken>>,
    /// Every token handed out, in order.
    all_tokens: Vec<FencingToken>,
}

/// What a claim must answer; the token of an acquisition is the store's to choose.
#[derive(Debug)]
enum Expect {
    Acquired { took_over: bool },
    Exactly(Claim),
}

impl Model {
    fn new() -> Model {
        Model { tokens: vec![Vec::new(); KEYS.len()], ..Model::default() }
    }

    fn live(&self, key: usize) -> Option<&Rec> {
        self.recs.get(&key).filter(|r| r.expires_at > self.now)
    }

    fn live_count(&self) -> usize {
        (0..KEYS.len()).filter(|&k| self.live(k).is_some()).count()
    }

    fn claim(&self, key: usize, fp: usize) -> Expect {
        let Some(r) = self.live(key) else { return Expect::Acquired { took_over: false } };
        if r.fp != fp {
            return Expect::Exactly(Claim::Mismatch);
        }
        match &r.state {
            State::Completed { body } => Expect::Exactly(Claim::Done { response: Payload::from(body.clone()) }),
            State::InFlight { lease_until, .. } if *lease_until > self.now => {
                Expect::Exactly(Claim::Held { lease_remaining: ms(lease_until - self.now) })
            }
            State::InFlight { .. } => Expect::Acquired { took_over: true },
        }
    }

    fn acquired(&mut self, key: usize, fp: usize, token: FencingToken, lease_ms: u64, ttl_ms: u64) {
        self.tokens[key].push(token);
        self.all_tokens.push(token);
        let state = State::InFlight { token, lease_until: self.now + lease_ms };
        self.recs.insert(key, Rec { fp, state, expires_at: self.now + ttl_ms.max(lease_ms) });
    }

    fn token(&self, key: usize, tok: &Tok) -> FencingToken {
        tok.pick(&self.tokens[key], &self.all_tokens)
    }

    /// The live in-flight record of `key` whose latest token is `token`.
    fn holder(&mut self, key: usize, token: FencingToken) -> Option<&mut Rec> {
        let now = self.now;
        self.recs
            .get_mut(&key)
            .filter(|r| r.expires_at > now && matches!(r.state, State::InFlight { token: t, .. } if t == token))
    }

    fn complete(&mut self, key: usize, token: FencingToken, body: Bytes, ttl_ms: u64) -> bool {
        let now = self.now;
        let Some(r) = self.holder(key, token) else { return false };
        r.state = State::Completed { body };
        r.expires_at = now + ttl_ms;
        true
    }

    fn release(&mut self, key: usize, token: FencingToken) -> bool {
        let now = self.now;
        let Some(r) = self.holder(key, token) else { return false };
        r.state = State::InFlight { token, lease_until: now };
        true
    }

    fn get(&self, key: usize) -> Option<Record> {
        let r = self.live(key)?;
        Some(match &r.state {
            State::InFlight { token, lease_until } => Record::Held {
                fingerprint: FPS[r.fp],
                token: *token,
                lease_remaining: ms(lease_until.saturating_sub(self.now)),
            },
            State::Completed { body } => Record::Done { fingerprint: FPS[r.fp], response: Payload::from(body.clone()) },
        })
    }

    fn purge(&mut self) {
        let now = self.now;
        self.recs.retain(|_, r| r.expires_at > now);
    }
}

/// Runs `ops` on a fresh store and the model side by side, under a paused clock.
fn run(shards: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let store = MemoryStore::with_shards(shards);
        let mut model = Model::new();
        for (step, op) in ops.iter().enumerate() {
            let at = model.now;
            match *op {
                Op::Claim { key, fp, lease_ms, ttl_ms } => {
                    let got = now(store.claim(KEYS[key], &FPS[fp], ms(lease_ms), ms(ttl_ms)));
                    match model.claim(key, fp) {
                        Expect::Acquired { took_over } => {
                            let Claim::Acquired { hold, took_over: got_took_over } = got else {
                                return Err(TestCaseError::fail(format!(
                                    "step {step} at {at} ms, {op:?}: store {got:?}, model Acquired {{ took_over: \
                                     {took_over} }}"
                                )));
                            };
                            prop_assert_eq!(got_took_over, took_over, "step {} at {} ms, {:?}", step, at, op);
                            let token = hold.token();
                            prop_assert_ne!(token, FOREIGN);
                            if let Some(&earlier) = model.tokens[key].last() {
                                prop_assert!(
                                    token > earlier,
                                    "step {step} at {at} ms, {op:?}: token {token:?} not above {earlier:?}"
                                );
                            }
                            model.acquired(key, fp, token, lease_ms, ttl_ms);
                        }
                        Expect::Exactly(want) => prop_assert_eq!(got, want, "step {} at {} ms, {:?}", step, at, op),
                    }
                }
                Op::Complete { key, ref tok, body, ttl_ms } => {
                    let token = model.token(key, tok);
                    let body = Bytes::from(vec![body; 3]);
                    let got =
                        now(store.complete(&Hold::new(KEYS[key], token), Payload::from(body.clone()), ms(ttl_ms)));
                    let want = model.complete(key, token, body, ttl_ms);
                    prop_assert_eq!(got, want, "step {} at {} ms, {:?} with {:?}", step, at, op, token);
                }
                Op::Release { key, ref tok } => {
                    let token = model.token(key, tok);
                    let got = now(store.release(&Hold::new(KEYS[key], token)));
                    let want = model.release(key, token);
                    prop_assert_eq!(got, want, "step {} at {} ms, {:?} with {:?}", step, at, op, token);
                }
                Op::Get { key } => {
                    prop_assert_eq!(now(store.get(KEYS[key])), model.get(key), "step {} at {} ms, {:?}", step, at, op);
                }
                Op::Advance { ms: n } => {
                    tokio::time::advance(ms(n)).await;
                    model.now += n;
                }
                Op::Purge => {
                    store.purge_expired();
                    model.purge();
                    prop_assert_eq!(store.len(), model.live_count(), "step {} at {} ms: purge", step, at);
                }
            }
            // Every live record is held; nothing is held for a key the model has not seen since the last purge.
            let (len, live, known) = (store.len(), model.live_count(), model.recs.len());
            prop_assert!(
                live <= len && len <= known,
                "step {step} at {at} ms, {op:?}: store holds {len}, model has {live} live of {known} known"
            );
        }
        // Whatever the last step was, every key reads as the model says.
        for (key, name) in KEYS.iter().enumerate() {
            prop_assert_eq!(now(store.get(name)), model.get(key), "final get of {}", name);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_follows_the_contract(shards in 1usize..=2, ops in proptest::collection::vec(op(), 1..120)) {
        run(shards, &ops)?;
    }
}

/// The model itself is not vacuous: a takeover, a stale token refused, a release keeping the fingerprint, and a
/// completion that expires before the claim would have.
#[test]
fn model_follows_the_documented_lifecycle() {
    let ops = [
        Op::Claim { key: 0, fp: 0, lease_ms: 10, ttl_ms: 100 },
        Op::Claim { key: 0, fp: 0, lease_ms: 10, ttl_ms: 100 },
        Op::Claim { key: 0, fp: 1, lease_ms: 10, ttl_ms: 100 },
        Op::Advance { ms: 10 },
        Op::Claim { key: 0, fp: 0, lease_ms: 10, ttl_ms: 100 },
        Op::Complete { key: 0, tok: Tok::OfKey(0), body: 1, ttl_ms: 5 },
        Op::Complete { key: 0, tok: Tok::Latest, body: 2, ttl_ms: 5 },
        Op::Claim { key: 0, fp: 0, lease_ms: 10, ttl_ms: 100 },
        Op::Claim { key: 1, fp: 0, lease_ms: 100, ttl_ms: 1 },
        Op::Release { key: 1, tok: Tok::Latest },
        Op::Claim { key: 1, fp: 1, lease_ms: 100, ttl_ms: 1 },
        Op::Advance { ms: 5 },
        Op::Get { key: 0 },
        Op::Purge,
    ];
    run(1, &ops).unwrap();
    let mut m = Model::new();
    m.acquired(0, 0, FencingToken(1), 10, 100);
    assert!(matches!(m.claim(0, 0), Expect::Exactly(Claim::Held { lease_remaining }) if lease_remaining == ms(10)));
    assert!(matches!(m.claim(0, 1), Expect::Exactly(Claim::Mismatch)));
    m.now = 10;
    assert!(matches!(m.claim(0, 0), Expect::Acquired { took_over: true }));
    m.acquired(0, 0, FencingToken(2), 10, 100);
    assert!(!m.complete(0, FencingToken(1), Bytes::from_static(b"stale"), 5));
    assert!(m.release(0, FencingToken(2)));
    assert!(matches!(m.claim(0, 1), Expect::Exactly(Claim::Mismatch)));
    assert!(m.complete(0, FencingToken(2), Bytes::from_static(b"r"), 5));
    m.now = 15;
    assert_eq!(m.get(0), None);
    assert!(matches!(m.claim(0, 1), Expect::Acquired { took_over: false }));
}
