//! `RedisStore` against a model of the `LeaseStore` contract (proptest): random sequences of claim /
//! complete / release / get over a few keys and two fingerprints, with stale, foreign and near-miss tokens.
//! Redis keeps real time, so leases and TTLs are long, and time is moved by hand instead: a lease ends by
//! rewriting the record (as tests/redis.rs does) and a record expires by deleting it. Every answer must be the
//! model's, and tokens must grow per key.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Tok, end_redis_lease};
use palisade_idempotency::{Claim, FencingToken, Fingerprint, Hold, LeaseStore, Payload, Record, RedisStore};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const KEYS: usize = 3;
/// The second fingerprint shares every byte the record format uses (`:`, `d`, `i`) with the first but one.
const FPS: [Fingerprint; 2] = [Fingerprint([b':'; 32]), {
    let mut fp = [b':'; 32];
    fp[31] = b'd';
    Fingerprint(fp)
}];
const LEASE: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(120);
#[derive(Debug, Clone)]
enum Op {
    Claim {
        key: usize,
        fp: usize,
    },
    Complete {
        key: usize,
        tok: Tok,
        body: u8,
    },
    Release {
        key: usize,
        tok: Tok,
    },
    Get {
        key: usize,
    },
    /// The holder's lease ends (it crashed long ago).
    EndLease {
        key: usize,
    },
    /// The record's TTL runs out.
    Expire {
        key: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let tok = Tok::strategy();
    prop_oneof![
        4 => (key.clone(), prop_oneof![3 => Just(0usize), 1 => Just(1usize)]).prop_map(|(key, fp)| Op::Claim { key, fp }),
        3 => (key.clone(), tok.clone(), any::<u8>()).prop_map(|(key, tok, body)| Op::Complete { key, tok, body }),
        1 => (key.clone(), tok).prop_map(|(key, tok)| Op::Release { key, tok }),
        2 => key.clone().prop_map(|key| Op::Get { key }),
        1 => key.clone().prop_map(|key| Op::EndLease { key }),
        1 => key.prop_map(|key| Op::Expire { key }),
    ]
}

#[derive(Debug, Clone)]
enum State {
    InFlight { token: FencingToken, alive: bool },
    Completed { body: Bytes },
}

#[derive(Debug, Default)]
struct Model {
    recs: HashMap<usize, (usize, State)>,
    tokens: Vec<Vec<FencingToken>>,
    all_tokens: Vec<FencingToken>,
}

impl Model {
    fn token(&self, key: usize, tok: &Tok) -> FencingToken {
        tok.pick(&self.tokens[key], &self.all_tokens)
    }

    /// The in-flight record of `key` whose latest token is `token`, alive or not.
    fn holder(&mut self, key: usize, token: FencingToken) -> Option<&mut (usize, State)> {
        self.recs.get_mut(&key).filter(|(_, s)| matches!(s, State::InFlight { token: t, .. } if *t == token))
    }
}

fn fail(step: usize, op: &Op, what: String) -> TestCaseError {
    TestCaseError::fail(format!("step {step}, {op:?}: {what}"))
}

async fn run(store: &RedisStore, conn: &mut redis::aio::ConnectionManager, ops: &[Op]) -> Result<(), TestCaseError> {
    let name = |key: usize| format!("model-{key}");
    let mut model = Model { tokens: vec![Vec::new(); KEYS], ..Model::default() };
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Claim { key, fp } => {
                let got =
                    store.claim(&name(key), &FPS[fp], LEASE, TTL).await.map_err(|e| fail(step, op, e.to_string()))?;
                let took_over = match model.recs.get(&key) {
                    None => Some(false),
                    Some((f, _)) if *f != fp => {
                        prop_assert_eq!(&got, &Claim::Mismatch, "step {}, {:?}", step, op);
                        None
                    }
                    Some((_, State::Completed { body })) => {
                        prop_assert_eq!(
                            &got,
                            &Claim::Done { response: Payload::from(body.clone()) },
                            "step {}, {:?}",
                            step,
                            op
                        );
                        None
                    }
                    Some((_, State::InFlight { alive: true, .. })) => {
                        let ok = matches!(got, Claim::Held { lease_remaining } if lease_remaining > Duration::ZERO && lease_remaining <= LEASE);
                        prop_assert!(ok, "step {}, {:?}: {:?}, want in flight", step, op, got);
                        None
                    }
                    Some((_, State::InFlight { alive: false, .. })) => Some(true),
                };
                if let Some(want) = took_over {
                    let Claim::Acquired { hold, took_over } = got else {
                        return Err(fail(step, op, format!("{got:?}, want acquired")));
                    };
                    prop_assert_eq!(took_over, want, "step {}, {:?}", step, op);
                    let token = hold.token();
                    if let Some(&earlier) = model.tokens[key].last() {
                        prop_assert!(token > earlier, "step {}, {:?}: token {:?} after {:?}", step, op, token, earlier);
                    }
                    model.tokens[key].push(token);
                    model.all_tokens.push(token);
                    model.recs.insert(key, (fp, State::InFlight { token, alive: true }));
                }
            }
            Op::Complete { key, ref tok, body } => {
                let token = model.token(key, tok);
                let body = Bytes::from(vec![body, b':', body]);
                let got = store
                    .complete(&Hold::new(&name(key), token), Payload::from(body.clone()), TTL)
                    .await
                    .map_err(|e| fail(step, op, e.to_string()))?;
                let want = match model.holder(key, token) {
                    Some(rec) => {
                        rec.1 = State::Completed { body };
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(got, want, "step {}, {:?} with {:?}", step, op, token);
            }
            Op::Release { key, ref tok } => {
                let token = model.token(key, tok);
                let got =
                    store.release(&Hold::new(&name(key), token)).await.map_err(|e| fail(step, op, e.to_string()))?;
                let want = match model.holder(key, token) {
                    Some(rec) => {
                        rec.1 = State::InFlight { token, alive: false };
                        true
                    }
                    None => false,
                };
                prop_assert_eq!(got, want, "step {}, {:?} with {:?}", step, op, token);
            }
            Op::Get { key } => {
                let got = store.get(&name(key)).await.map_err(|e| fail(step, op, e.to_string()))?;
                let ok = match (model.recs.get(&key), &got) {
                    (None, None) => true,
                    (Some((fp, State::Completed { body })), Some(Record::Done { fingerprint, response })) => {
                        fingerprint == &FPS[*fp] && response == body
                    }
                    (
                        Some((fp, State::InFlight { token, alive })),
                        Some(Record::Held { fingerprint, token: t, lease_remaining }),
                    ) => {
                        let lease_ok = if *alive {
                            *lease_remaining > Duration::ZERO && *lease_remaining <= LEASE
                        } else {
                            lease_remaining.is_zero()
                        };
                        fingerprint == &FPS[*fp] && t == token && lease_ok
                    }
                    _ => false,
                };
                prop_assert!(ok, "step {}, {:?}: store {:?}, model {:?}", step, op, got, model.recs.get(&key));
            }
            Op::EndLease { key } => {
                end_redis_lease(conn, &store.record_key(&name(key))).await;
                if let Some((_, State::InFlight { alive, .. })) = model.recs.get_mut(&key) {
                    *alive = false;
                }
            }
            Op::Expire { key } => {
                let _: () = redis::cmd("DEL").arg(store.record_key(&name(key))).query_async(conn).await.unwrap();
                model.recs.remove(&key);
            }
        }
    }
    Ok(())
}

#[test]
fn redis_store_follows_the_contract() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(r) = rt.block_on(palisade_testkit::redis("idem_model")) else { return };
    let mut runner = TestRunner::new(Config { cases: 256, ..Config::default() });
    let case = std::cell::Cell::new(0u32);
    let result = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
        // Each case in its own namespace under the test's prefix, so cases never see each other's records.
        case.set(case.get() + 1);
        let store = RedisStore::new(r.conn.clone()).with_prefix(format!("{}c{}:", r.prefix, case.get()));
        rt.block_on(run(&store, &mut r.conn.clone(), &ops))
    });
    rt.block_on(r.cleanup());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The model is not vacuous: a takeover after an ended lease, a refused stale token, a release that keeps the
/// fingerprint, a completion replayed, and an expired record claimed afresh.
#[test]
fn redis_model_follows_the_documented_lifecycle() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(r) = rt.block_on(palisade_testkit::redis("idem_model_lifecycle")) else { return };
    let store = RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    let ops = [
        Op::Claim { key: 0, fp: 0 },
        Op::Claim { key: 0, fp: 0 },
        Op::Claim { key: 0, fp: 1 },
        Op::EndLease { key: 0 },
        Op::Claim { key: 0, fp: 0 },
        Op::Complete { key: 0, tok: Tok::OfKey(0), body: 1 },
        Op::Complete { key: 0, tok: Tok::Near(true), body: 1 },
        Op::Release { key: 0, tok: Tok::Latest },
        Op::Claim { key: 0, fp: 1 },
        Op::Get { key: 0 },
        Op::Claim { key: 0, fp: 0 },
        Op::Complete { key: 0, tok: Tok::Latest, body: 2 },
        Op::Claim { key: 0, fp: 0 },
        Op::Get { key: 0 },
        Op::Expire { key: 0 },
        Op::Claim { key: 0, fp: 1 },
        Op::Get { key: 0 },
    ];
    let result = rt.block_on(run(&store, &mut r.conn.clone(), &ops));
    rt.block_on(r.cleanup());
    result.unwrap();
}
