//! Scenarios every store must pass, run against the memory store (tests/memory.rs) and Redis (tests/redis.rs).

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use palisade_core::*;
use palisade_idempotency::{
    Claim, FencingToken, Fingerprint, Hold, IdempotencyLayer, LeaseStore, Payload, Record, storage_key,
};
use palisade_sim::GatewaySim;
use tokio::sync::Semaphore;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

/// Something a store's test does to time around the record at a storage key: ends a lease, or waits out a TTL.
pub type OnKey = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Ends the lease of a storage key at once, as if its holder had crashed long ago.
pub type Expire = OnKey;

/// Ends the lease of the Redis record at `rkey`, as if its holder had crashed long ago: an in-flight record (`i`
/// first) ends in `:<lease ms>`, and lease 0 is an ended lease. A completed record, or none, is left alone.
pub async fn end_redis_lease(conn: &mut impl redis::aio::ConnectionLike, rkey: &str) {
    let record: Option<Vec<u8>> = redis::cmd("GET").arg(rkey).query_async(conn).await.unwrap();
    let Some(mut record) = record.filter(|r| r.first() == Some(&b'i')) else { return };
    let colon = record.iter().rposition(|&b| b == b':').expect("an in-flight record has a lease");
    record.truncate(colon + 1);
    record.push(b'0');
    let _: () = redis::cmd("SET").arg(rkey).arg(record).arg("KEEPTTL").query_async(conn).await.unwrap();
}

pub const LEASE: Duration = Duration::from_secs(30);

/// A token no store hands out in these tests.
pub const FOREIGN: FencingToken = FencingToken(u64::MAX);

/// Which token a `complete` or `release` presents, in the model-based tests (tests/*_model.rs).
#[derive(Debug, Clone)]
pub enum Tok {
    /// The latest token handed out for this key (the holder's, unless it expired or was taken over).
    Latest,
    /// The i-th (mod count) token handed out for this key: often stale.
    OfKey(usize),
    /// The i-th (mod count) token handed out for any key.
    Any(usize),
    /// The latest token with its last digit dropped (`true`) or a digit added: a prefix or an extension of it.
    Near(bool),
    /// A token never handed out.
    Foreign,
}

impl Tok {
    /// Mostly the holder's token, sometimes a stale, foreign or near-miss one.
    pub fn strategy() -> impl proptest::strategy::Strategy<Value = Tok> + Clone {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Tok::Latest),
            2 => any::<usize>().prop_map(Tok::OfKey),
            1 => any::<usize>().prop_map(Tok::Any),
            1 => any::<bool>().prop_map(Tok::Near),
            1 => Just(Tok::Foreign),
        ]
    }

    /// The token this names, given the tokens handed out so far for the key and for every key, in order.
    pub fn pick(&self, of_key: &[FencingToken], all: &[FencingToken]) -> FencingToken {
        let nth = |v: &[FencingToken], i: usize| if v.is_empty() { FOREIGN } else { v[i % v.len()] };
        let latest = of_key.last().copied().unwrap_or(FOREIGN);
        match *self {
            Tok::Latest => latest,
            Tok::OfKey(i) => nth(of_key, i),
            Tok::Any(i) => nth(all, i),
            Tok::Near(shorter) if latest != FOREIGN => {
                FencingToken(if shorter { latest.0 / 10 } else { latest.0 * 10 + 1 })
            }
            Tok::Near(_) | Tok::Foreign => FOREIGN,
        }
    }
}
pub const TTL: Duration = Duration::from_secs(3600);

pub fn charge(order: &str, amount: &str, token: &str, key: &str) -> GatewayRequest {
    palisade_testkit::charge(order).amount(amount).token(token).key(key).build()
}

pub type Gw = BoxCloneService<GatewayRequest, GatewayResponse, PaymentError>;

/// The simulator behind a gate: each call waits for a permit, and `entered` counts calls that arrived.
#[derive(Clone)]
pub struct Gated {
    pub sim: GatewaySim,
    pub gate: Arc<Semaphore>,
    pub entered: Arc<AtomicUsize>,
}

impl Gated {
    pub fn new(sim: GatewaySim) -> Self {
        Gated { sim, gate: Arc::new(Semaphore::new(0)), entered: Arc::new(AtomicUsize::new(0)) }
    }
    pub fn service(&self) -> Gw {
        let g = self.clone();
        BoxCloneService::new(tower::service_fn(move |req: GatewayRequest| {
            let g = g.clone();
            async move {
                g.entered.fetch_add(1, Ordering::SeqCst);
                let permit = g.gate.acquire().await.unwrap();
                permit.forget();
                g.sim.handle(req).await
            }
        }))
    }
    pub fn open(&self) {
        self.gate.add_permits(1_000_000);
    }
}

/// Yields until `cond` holds; panics instead of hanging if it never does.
pub async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1_000_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("gave up waiting: {what}");
}

/// The next finished task; panics instead of hanging when every remaining request is stuck (under paused time the
/// clock jumps ahead as soon as everything is blocked, so a stuck test fails at once).
pub async fn next<T: 'static>(set: &mut tokio::task::JoinSet<T>) -> Option<T> {
    next_unless(set, || None).await
}

/// [`next`], but failing as soon as `broken` says what went wrong, instead of once the requests are stuck.
pub async fn next_unless<T: 'static>(
    set: &mut tokio::task::JoinSet<T>,
    broken: impl Fn() -> Option<String>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(what) = broken() {
            panic!("{what}");
        }
        // `join_next` is cancel safe: a timeout loses no finished task.
        match tokio::time::timeout(Duration::from_millis(50), set.join_next()).await {
            Ok(r) => return r.map(|r| r.unwrap()),
            Err(_) if tokio::time::Instant::now() < deadline => {}
            Err(_) => panic!("requests stuck: more than one execution is waiting inside the gateway"),
        }
    }
}

fn acquired(c: Claim) -> FencingToken {
    match c {
        Claim::Acquired { hold, .. } => hold.token(),
        other => panic!("expected Acquired, got {other:?}"),
    }
}

/// Store conformance: lifecycle, conflict in every state, release, takeover and fencing.
pub async fn store_contract(store: impl LeaseStore, expire: Expire) {
    let fp = Fingerprint([7; 32]);
    let other = Fingerprint([8; 32]);
    let k = "contract-key";
    assert_eq!(store.get(k).await.unwrap(), None);
    let t1 = acquired(store.claim(k, &fp, LEASE, TTL).await.unwrap());
    // in flight, lease alive
    assert!(
        matches!(store.claim(k, &fp, LEASE, TTL).await.unwrap(), Claim::Held { lease_remaining } if lease_remaining <= LEASE && lease_remaining > Duration::ZERO)
    );
    assert_eq!(store.claim(k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
    assert!(
        matches!(store.get(k).await.unwrap(), Some(Record::Held { token, fingerprint, .. }) if token == t1 && fingerprint == fp)
    );
    // lease ended: conflict still holds, the same request takes over with a greater token
    expire(k.to_owned()).await;
    assert_eq!(store.claim(k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
    let c = store.claim(k, &fp, LEASE, TTL).await.unwrap();
    assert!(matches!(c, Claim::Acquired { took_over: true, .. }), "{c:?}");
    let t2 = acquired(c);
    assert!(t2 > t1, "fencing token must grow: {t1:?} then {t2:?}");
    // the stale holder is refused, whatever it tries
    assert!(!store.complete(&Hold::new(k, t1), Payload::from(Bytes::from_static(b"stale")), TTL).await.unwrap());
    assert!(!store.release(&Hold::new(k, t1)).await.unwrap());
    // the new holder releases (a Retriable outcome), and the key can be claimed again, but not by another request
    assert!(store.release(&Hold::new(k, t2)).await.unwrap());
    assert_eq!(store.claim(k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
    let t3 = acquired(store.claim(k, &fp, LEASE, TTL).await.unwrap());
    assert!(t3 > t2);
    // completes; the stored bytes come back exactly, even non-UTF-8
    let payload = Bytes::from_static(&[0xff, 0x00, 0xfe, b'x']);
    assert!(store.complete(&Hold::new(k, t3), Payload::from(payload.clone()), TTL).await.unwrap());
    assert!(!store.complete(&Hold::new(k, t3), Payload::from(Bytes::from_static(b"twice")), TTL).await.unwrap());
    assert!(!store.complete(&Hold::new(k, t2), Payload::from(Bytes::from_static(b"stale")), TTL).await.unwrap());
    assert_eq!(
        store.claim(k, &fp, LEASE, TTL).await.unwrap(),
        Claim::Done { response: Payload::from(payload.clone()) }
    );
    assert_eq!(store.claim(k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
    assert_eq!(store.get(k).await.unwrap(), Some(Record::Done { fingerprint: fp, response: Payload::from(payload) }));
    // expiring a completed record's lease changes nothing
    expire(k.to_owned()).await;
    assert!(matches!(store.claim(k, &fp, LEASE, TTL).await.unwrap(), Claim::Done { .. }));
}

/// Store conformance for issue 16's lease operations: renew keeps a live lease alive and cannot revive an ended
/// one or serve a stale token; forget leaves the key as if never seen; abandon (on stores that record attempts,
/// `records_attempts`) undoes a claim by its attempt, keeping its fingerprint.
pub async fn renew_forget_abandon(store: impl LeaseStore, expire: Expire, records_attempts: bool) {
    let fp = Fingerprint([7; 32]);
    let other = Fingerprint([8; 32]);
    let k = "lease-ops-key";
    let t1 = acquired(store.claim(k, &fp, LEASE, TTL).await.unwrap());
    assert!(store.renew(&Hold::new(k, t1), LEASE).await.unwrap(), "the holder renews");
    assert!(!store.renew(&Hold::new(k, FOREIGN), LEASE).await.unwrap(), "a foreign token renews nothing");
    assert!(matches!(store.claim(k, &fp, LEASE, TTL).await.unwrap(), Claim::Held { .. }));
    // An ended lease is not revived by a late heartbeat: a claim takes over and the old holder is fenced.
    expire(k.to_owned()).await;
    assert!(!store.renew(&Hold::new(k, t1), LEASE).await.unwrap(), "a renewal after the lease ended fails");
    let t2 = acquired(store.claim(k, &fp, LEASE, TTL).await.unwrap());
    assert!(!store.renew(&Hold::new(k, t1), LEASE).await.unwrap());
    assert!(store.renew(&Hold::new(k, t2), LEASE).await.unwrap());
    // Forget: only the holder's token; then the key is unused, even for another request.
    assert!(!store.forget(&Hold::new(k, t1)).await.unwrap(), "a stale token forgets nothing");
    assert!(store.forget(&Hold::new(k, t2)).await.unwrap());
    assert_eq!(store.get(k).await.unwrap(), None);
    assert!(
        !store.complete(&Hold::new(k, t2), Payload::from(Bytes::from_static(b"late")), TTL).await.unwrap(),
        "nothing left to complete"
    );
    let t3 = acquired(store.claim(k, &other, LEASE, TTL).await.unwrap());
    assert!(store.complete(&Hold::new(k, t3), Payload::from(Bytes::from_static(b"done")), TTL).await.unwrap());
    assert!(!store.forget(&Hold::new(k, t3)).await.unwrap(), "a completed record is never forgotten");
    assert!(!store.renew(&Hold::new(k, t3), LEASE).await.unwrap(), "nor renewed");

    // Abandon by attempt.
    let a = "lease-abandon-key";
    let ta = acquired(store.claim_as(a, &fp, LEASE, TTL, 42).await.unwrap());
    if records_attempts {
        // The same claim sent again (its answer was lost; a Redis Cluster client resends after a dropped
        // connection): acquired again, not refused as in flight by itself. Another attempt is refused.
        let again = store.claim_as(a, &fp, LEASE, TTL, 42).await.unwrap();
        assert!(matches!(again, Claim::Acquired { took_over: false, .. }), "a resent claim is acquired: {again:?}");
        assert!(matches!(store.claim_as(a, &fp, LEASE, TTL, 43).await.unwrap(), Claim::Held { .. }));
        let ta2 = acquired(again);
        assert!(
            matches!(store.get(a).await.unwrap(), Some(Record::Held { token, .. }) if token == ta2),
            "the resend's hold is the live one"
        );
    }
    assert!(!store.abandon(a, 41).await.unwrap(), "another attempt's claim is left alone");
    assert_eq!(store.abandon(a, 42).await.unwrap(), records_attempts);
    if records_attempts {
        assert_eq!(store.claim(a, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch, "the fingerprint stays");
        let c = store.claim(a, &fp, LEASE, TTL).await.unwrap();
        assert!(matches!(c, Claim::Acquired { took_over: true, .. }), "the same request takes the key: {c:?}");
        assert!(!store.abandon(a, 42).await.unwrap(), "an abandoned attempt no longer holds anything");
        assert!(!store.renew(&Hold::new(a, ta), LEASE).await.unwrap());
    }
}

/// 1000 concurrent same-key same-payload requests with nobody waiting: exactly one reaches the gateway, the
/// other 999 are refused as in flight; afterwards the stored charge is replayed.
pub async fn thousand_concurrent_refused(store: impl LeaseStore) {
    same_key_race([store], Gateway::Held).await;
}

/// When the gateway answers the one request that reaches it, in [`same_key_race`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// Only once every other request has been answered: they are all refused as in flight.
    Held,
    /// At once: its completion races the other claims, which are replays of its charge or in-flight refusals.
    Open,
}

/// 1000 concurrent same-key same-payload requests, dealt in turn to one service per store (give two stores on
/// two connections to run two instances of the service, as two processes would): exactly one reaches the
/// gateway, every other one is a replay of its charge or an in-flight refusal (only refusals when the gateway
/// is [`Gateway::Held`]); afterwards every instance replays the stored charge.
pub async fn same_key_race<S: LeaseStore>(stores: impl IntoIterator<Item = S>, gateway: Gateway) {
    const N: usize = 1000;
    let gated = Gated::new(GatewaySim::new());
    if gateway == Gateway::Open {
        gated.open();
    }
    let svcs: Vec<_> = stores
        .into_iter()
        .map(|store| IdempotencyLayer::builder().store(store).lease(LEASE).build().layer(gated.service()))
        .collect();
    assert!(!svcs.is_empty(), "same_key_race needs a store");
    let req = charge("order-1000", "12.34", "tok_visa", "k-1000");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..N {
        let (svc, req) = (svcs[i % svcs.len()].clone(), req.clone());
        set.spawn(async move { svc.oneshot(req).await });
    }
    let (mut refused, mut ok) = (0, Vec::new());
    let executions = || match gated.entered.load(Ordering::SeqCst) {
        0 | 1 => None,
        n => Some(format!("inner service called {n} times for one key")),
    };
    while let Some(r) = next_unless(&mut set, executions).await {
        match r {
            Err(PaymentError::IdempotencyInFlight { retry_after }) => {
                assert!(retry_after.is_some());
                refused += 1;
                if refused == N - 1 {
                    gated.open();
                }
            }
            Ok(res) => ok.push(res),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(gated.entered.load(Ordering::SeqCst), 1, "inner service called more than once");
    assert_eq!(gated.sim.calls(), 1);
    assert_eq!(gated.sim.charges_for("order-1000").len(), 1);
    assert_eq!(ok.len() + refused, N);
    if gateway == Gateway::Held {
        assert_eq!((ok.len(), refused), (1, N - 1));
    }
    assert!(!ok.is_empty() && ok.iter().all(|r| *r == ok[0]), "answers other than the one charge: {ok:?}");
    for svc in &svcs {
        assert_eq!(svc.clone().oneshot(req.clone()).await.unwrap(), ok[0]);
    }
    assert_eq!(gated.sim.calls(), 1);
}

/// 1000 concurrent duplicates that wait for the original: every one gets the same charge, one execution.
pub async fn thousand_concurrent_waiting(store: impl LeaseStore) {
    let gated = Gated::new(GatewaySim::new());
    gated.open();
    let svc = IdempotencyLayer::builder()
        .store(store)
        .lease(LEASE)
        .wait_for_in_flight(Duration::from_secs(20))
        .build()
        .layer(gated.service());
    let req = charge("order-2000", "5.00", "tok_visa", "k-2000");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let (svc, req) = (svc.clone(), req.clone());
        set.spawn(async move { svc.oneshot(req).await });
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut refused = 0;
    while let Some(r) = next(&mut set).await {
        match r {
            Ok(res) => {
                ids.insert(res.id);
            }
            Err(PaymentError::IdempotencyInFlight { .. }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ids.len(), 1, "different charges were returned: {ids:?}");
    assert!(refused < 1000);
    assert_eq!(gated.entered.load(Ordering::SeqCst), 1);
    assert_eq!(gated.sim.charges_for("order-2000").len(), 1);
}

/// The holder "crashes" (its lease ends while it is stuck); a retry takes over, executes with the same gateway key
/// and stores its result; the stale holder's late completion is refused and the stored result stays.
pub async fn takeover_and_fencing(store: impl LeaseStore + Clone, expire: Expire) {
    let gated = Gated::new(GatewaySim::new());
    let svc = IdempotencyLayer::builder().store(store.clone()).lease(LEASE).build().layer(gated.service());
    let req = charge("order-3000", "30.00", "tok_visa", "k-3000");
    let stale = tokio::spawn(svc.clone().oneshot(req.clone()));
    wait_until("the first request reaches the gateway", || gated.entered.load(Ordering::SeqCst) == 1).await;
    // The first holder is stuck inside the gateway call. Its lease ends.
    expire(storage_key(None, &IdempotencyKey::new("k-3000").unwrap())).await;
    // The retry takes over with a new token and also enters the gateway call.
    let fresh = tokio::spawn(svc.clone().oneshot(req.clone()));
    wait_until("the takeover reaches the gateway", || gated.entered.load(Ordering::SeqCst) == 2).await;
    let skey = storage_key(None, &IdempotencyKey::new("k-3000").unwrap());
    let Some(Record::Held { token: fresh_token, .. }) = store.get(&skey).await.unwrap() else {
        panic!("the takeover must hold the key")
    };
    // The stale holder wakes first (the gate is FIFO), charges, and tries to complete: refused by its token.
    gated.gate.add_permits(1);
    let stale_res = stale.await.unwrap().expect("the stale holder's call succeeds at the gateway");
    assert!(
        matches!(store.get(&skey).await.unwrap(), Some(Record::Held { token, .. }) if token == fresh_token),
        "the stale holder overwrote the record of the request that took over"
    );
    // The takeover runs with the same gateway key: the gateway deduplicates, nothing is charged twice.
    gated.open();
    let fresh_id = fresh.await.unwrap().expect("the takeover executes").id;
    assert_eq!(stale_res.id, fresh_id);
    assert!(matches!(store.get(&skey).await.unwrap(), Some(Record::Done { .. })));
    assert_eq!(gated.sim.charges_for("order-3000").len(), 1, "ledger: {:?}", gated.sim.ledger());
    // A later duplicate replays the stored charge without a gateway call.
    let calls = gated.sim.calls();
    assert_eq!(svc.clone().oneshot(req).await.unwrap().id, fresh_id);
    assert_eq!(gated.sim.calls(), calls);
}

/// A decline is stored and replayed as the same typed decline; a lost response (Unknown) is released and the
/// retry is deduplicated at the gateway by the flowing key.
pub async fn outcomes(store: impl LeaseStore + Clone) {
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder().store(store).build().layer(sim.clone());
    let declined = charge("order-4000", "20.00", "tok_chargeDeclined", "k-4000");
    let first = svc.clone().oneshot(declined.clone()).await.unwrap_err();
    let replay = svc.clone().oneshot(declined).await.unwrap_err();
    assert!(matches!(first, PaymentError::CardDeclined { .. }));
    assert_eq!(first, replay);
    assert_eq!(sim.calls(), 1);

    sim.script(Operation::Charge, [palisade_sim::Fault::FailAfterCommit]);
    let lost = charge("order-4001", "20.00", "tok_visa", "k-4001");
    assert!(matches!(svc.clone().oneshot(lost.clone()).await, Err(PaymentError::GatewayTimeout { .. })));
    let retried = svc.clone().oneshot(lost.clone()).await.unwrap();
    assert_eq!(sim.charges_for("order-4001").len(), 1, "the retry must not charge again");
    assert_eq!(sim.calls(), 3);
    assert_eq!(svc.clone().oneshot(lost).await.unwrap(), retried);
    assert_eq!(sim.calls(), 3);

    sim.script(Operation::Charge, [palisade_sim::Fault::FailBeforeCommit]);
    let refused = charge("order-4002", "1.00", "tok_visa", "k-4002");
    assert!(matches!(svc.clone().oneshot(refused.clone()).await, Err(PaymentError::NetworkBeforeSend { .. })));
    assert!(svc.clone().oneshot(refused).await.is_ok());
    assert_eq!(sim.charges_for("order-4002").len(), 1);
}

/// Conflict in every state: in flight, completed, released.
pub async fn conflicts(store: impl LeaseStore + Clone) {
    let gated = Gated::new(GatewaySim::new());
    let svc = IdempotencyLayer::builder().store(store).build().layer(gated.service());
    let a = charge("order-5000", "10.00", "tok_visa", "k-5000");
    let b = charge("order-5000", "99.00", "tok_visa", "k-5000");
    let running = tokio::spawn(svc.clone().oneshot(a.clone()));
    wait_until("the first request reaches the gateway", || gated.entered.load(Ordering::SeqCst) == 1).await;
    assert_eq!(svc.clone().oneshot(b.clone()).await.unwrap_err(), PaymentError::IdempotencyConflict);
    gated.open();
    running.await.unwrap().unwrap();
    assert_eq!(svc.clone().oneshot(b.clone()).await.unwrap_err(), PaymentError::IdempotencyConflict);
    // released after a retriable failure: still bound to the first request
    gated.sim.script(Operation::Charge, [palisade_sim::Fault::FailBeforeCommit]);
    let c = charge("order-5001", "10.00", "tok_visa", "k-5001");
    assert!(svc.clone().oneshot(c).await.is_err());
    let d = charge("order-5001", "11.00", "tok_visa", "k-5001");
    assert_eq!(svc.clone().oneshot(d).await.unwrap_err(), PaymentError::IdempotencyConflict);
    assert_eq!(gated.sim.charges_for("order-5000").len(), 1);
}

/// Two tenants' equal keys never meet: both execute, with different gateway keys.
pub async fn scope_isolation(store: impl LeaseStore + Clone) {
    scopes_never_meet(store, &["tenant-a", "tenant-b"]).await;
}

/// A layer whose scope is the charge's customer, as a multi-tenant service would have.
fn scoped_layer(
    store: impl LeaseStore,
    sim: &GatewaySim,
) -> BoxCloneService<GatewayRequest, GatewayResponse, PaymentError> {
    BoxCloneService::new(
        IdempotencyLayer::builder()
            .store(store)
            .scope(|r: &GatewayRequest| match r {
                GatewayRequest::Charge(c) => c.customer.as_ref().map(|c| c.as_str().to_owned()),
                _ => None,
            })
            .build()
            .layer(sim.clone()),
    )
}

/// A charge of `amount` for `order` under idempotency key `key`, by `customer` (the scope of [`scoped_layer`]).
fn charge_by(customer: &str, order: &str, amount: &str, key: &str) -> GatewayRequest {
    match charge(order, amount, "tok_visa", key) {
        GatewayRequest::Charge(c) => GatewayRequest::Charge(c.customer(customer.parse().unwrap())),
        _ => unreachable!(),
    }
}

/// Tenants sending the same idempotency key with different payloads: each executes its own request (no
/// conflict, no replay of another tenant's charge) with a gateway key of its own, and each replay is its own.
pub async fn scopes_never_meet(store: impl LeaseStore + Clone, tenants: &[&str]) {
    let sim = GatewaySim::new();
    let svc = scoped_layer(store, &sim);
    let for_tenant = |i: usize| {
        charge_by(tenants[i], &format!("order-{}", tenants[i]), &format!("{}.00", 10 * (i + 1)), "shared-key")
    };
    let mut answers = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let res = svc.clone().oneshot(for_tenant(i)).await;
        answers.push(res.unwrap_or_else(|e| panic!("tenant {tenant:?} met another tenant's record: {e}")));
    }
    let ids: std::collections::BTreeSet<_> = answers.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), tenants.len(), "a tenant was answered with another tenant's charge: {answers:?}");
    let ledger = sim.ledger();
    assert_eq!(ledger.len(), tenants.len());
    let gateway_keys: std::collections::BTreeSet<_> = ledger.iter().map(|e| e.gateway_key.clone()).collect();
    assert_eq!(gateway_keys.len(), tenants.len(), "tenants share a gateway key: {ledger:?}");
    assert!(ledger.iter().all(|e| e.gateway_key.as_deref() != Some("shared-key")), "{ledger:?}");
    for (i, tenant) in tenants.iter().enumerate() {
        assert_eq!(sim.charges_for(&format!("order-{tenant}")).len(), 1);
        // each tenant's replay is its own
        assert_eq!(svc.clone().oneshot(for_tenant(i)).await.unwrap(), answers[i], "tenant {tenant:?}");
    }
    assert_eq!(sim.calls(), tenants.len() as u64);
}

/// Scopes and keys that differ only in braces (or in what a brace could be escaped to) are different records:
/// no scope or key may be rewritten into another one on its way to the store.
pub async fn braces_in_scopes_and_keys(store: impl LeaseStore + Clone) {
    scopes_never_meet(store.clone(), &["t{x", "t(x", "t%7Bx", "t}x", "t)x"]).await;

    let keys = ["a{b", "a(b", "a%7Bb", "a%257Bb", "a}b", "a)b", "a{b}", "a(b)"];
    let sim = GatewaySim::new();
    let plain = BoxCloneService::new(IdempotencyLayer::builder().store(store.clone()).build().layer(sim.clone()));
    let scoped = scoped_layer(store.clone(), &sim);
    for (scope, svc) in [(None, plain), (Some("t{x"), scoped)] {
        let req = |i: usize| {
            charge_by(scope.unwrap_or("-"), &format!("order-{scope:?}-{}", keys[i]), &format!("{}.00", i + 1), keys[i])
        };
        let mut answers = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let res = svc.clone().oneshot(req(i)).await;
            answers
                .push(res.unwrap_or_else(|e| panic!("key {key:?} in scope {scope:?} met another key's record: {e}")));
        }
        let ids: std::collections::BTreeSet<_> = answers.iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids.len(), keys.len(), "scope {scope:?}: a key was answered with another key's charge");
        let mut fingerprints = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let skey = storage_key(scope, &IdempotencyKey::new(key).unwrap());
            match store.get(&skey).await.unwrap() {
                Some(Record::Done { fingerprint, .. }) => fingerprints.push(fingerprint),
                other => panic!("key {key:?} in scope {scope:?}: expected its own completed record, found {other:?}"),
            }
            assert_eq!(svc.clone().oneshot(req(i)).await.unwrap(), answers[i], "key {key:?} in scope {scope:?}");
        }
        let distinct: std::collections::BTreeSet<_> = fingerprints.iter().map(|f| f.0).collect();
        assert_eq!(distinct.len(), keys.len(), "scope {scope:?}: two keys read one record");
    }
    assert_eq!(sim.calls(), 2 * keys.len() as u64);
}

/// TTL expiry, on the store's own clock. A completed result is replayed until its TTL ends, and after it the key
/// is new: the same request executes again (a second inner call; the gateway deduplicates it by key). A claim
/// released after a retriable failure keeps its fingerprint (a different request is refused) until the same TTL
/// ends, and no longer: after it a different request with that key executes.
///
/// `almost` brings time to just before the TTL of a record written now ends; `gone(storage key)` returns once
/// that record has expired. What the scenario sees before the TTL is asserted only when less than `ttl` has
/// really passed since it wrote the records (always, under paused time): a store on a real clock (Redis) on a
/// machine too slow for its short TTL makes that part inconclusive, and says so, rather than failing.
pub async fn ttl_expiry(store: impl LeaseStore + Clone, ttl: Duration, almost: OnKey, gone: OnKey) {
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder()
        .store(store.clone())
        .ttl(ttl)
        .lease(LEASE.min(ttl)) // an in-flight record lives max(TTL, lease): the released claim lives the TTL
        .build()
        .layer(sim.clone());
    let done = charge("order-6000", "10.00", "tok_visa", "k-6000");
    let released = charge("order-6001", "10.00", "tok_visa", "k-6001");
    let other = charge("order-6001", "99.00", "tok_visa", "k-6001");
    let done_key = storage_key(None, &IdempotencyKey::new("k-6000").unwrap());
    let released_key = storage_key(None, &IdempotencyKey::new("k-6001").unwrap());

    let started = tokio::time::Instant::now();
    let first = svc.clone().oneshot(done.clone()).await.unwrap();
    sim.script(Operation::Charge, [palisade_sim::Fault::FailBeforeCommit]);
    let failed = svc.clone().oneshot(released.clone()).await.unwrap_err();
    assert!(matches!(failed, PaymentError::NetworkBeforeSend { .. }), "{failed}");
    assert!(
        matches!(store.get(&released_key).await.unwrap(), Some(Record::Held { lease_remaining, .. }) if lease_remaining == Duration::ZERO),
        "a retriable failure releases the claim"
    );
    assert_eq!(sim.calls(), 2);

    almost(done_key.clone()).await;
    let replay = svc.clone().oneshot(done.clone()).await;
    let calls = sim.calls();
    let refused = svc.clone().oneshot(other.clone()).await;
    let elapsed = started.elapsed();
    if elapsed < ttl {
        assert_eq!(replay.unwrap(), first);
        assert_eq!(calls, 2, "replayed within the TTL");
        assert_eq!(refused.unwrap_err(), PaymentError::IdempotencyConflict, "a released claim keeps its fingerprint");
        assert_eq!(sim.calls(), 2);
    } else {
        eprintln!(
            "ttl_expiry: {elapsed:?} passed before the checks within the TTL of {ttl:?} ended: nothing to conclude \
             about the time before the TTL on this run"
        );
    }

    gone(done_key.clone()).await;
    assert_eq!(store.get(&done_key).await.unwrap(), None, "the completed record outlived its TTL");
    gone(released_key.clone()).await;
    assert_eq!(store.get(&released_key).await.unwrap(), None, "the released claim outlived its TTL");
    let calls = sim.calls();
    let again = svc.clone().oneshot(done.clone()).await.unwrap();
    assert_eq!(sim.calls(), calls + 1, "executed again after the TTL");
    assert_eq!(again.id, first.id, "the gateway deduplicates the execution by key");
    assert_eq!(sim.charges_for("order-6000").len(), 1);
    let new = svc.oneshot(other).await;
    assert!(new.is_ok(), "the key of an expired released claim is new, to any request: {new:?}");
    assert_eq!(sim.calls(), calls + 2);
    assert_eq!(sim.charges_for("order-6001").len(), 1);
}
