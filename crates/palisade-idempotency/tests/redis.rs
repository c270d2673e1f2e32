//! The store-agnostic scenarios on Redis (through palisade-testkit), plus what only Redis has: an unreachable
//! server, server-side expiry, hash-tagged keys. Leases end by rewriting the record's lease to 0, not by sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_core::*;
use palisade_idempotency::{Hold, HttpIdempotencyLayer, IdempotencyLayer, Payload, RedisStore, storage_key};
use palisade_sim::GatewaySim;
use palisade_testkit::RedisTest;
use tower::{Layer, ServiceExt};

async fn setup(name: &str) -> Option<(RedisTest, RedisStore, Expire)> {
    let r = palisade_testkit::redis(name).await?;
    let store = RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    let (conn, s) = (r.conn.clone(), store.clone());
    let expire: Expire = Arc::new(move |key: String| {
        let (mut conn, rkey) = (conn.clone(), s.record_key(&key));
        Box::pin(async move { end_redis_lease(&mut conn, &rkey).await })
    });
    Some((r, store, expire))
}

#[tokio::test]
async fn store_contract_redis() {
    let Some((r, store, expire)) = setup("idem_store_contract").await else { return };
    store_contract(store, expire).await;
    r.cleanup().await;
}

#[tokio::test]
async fn thousand_concurrent_same_key_refused_redis() {
    let Some((r, store, _)) = setup("idem_thousand_refused").await else { return };
    thousand_concurrent_refused(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn thousand_concurrent_same_key_waiting_redis() {
    let Some((r, store, _)) = setup("idem_thousand_waiting").await else { return };
    thousand_concurrent_waiting(store).await;
    r.cleanup().await;
}

/// Two instances of the service, as two processes would run them: two `RedisStore`s, each connected on its own
/// (`RedisStore::connect`, as a service connects), under the test's prefix. The tests run them on two worker
/// threads, so claims really race at the server.
async fn two_instances(r: &RedisTest) -> [RedisStore; 2] {
    let instance = || async { RedisStore::connect(&r.url).await.unwrap().with_prefix(r.prefix.clone()) };
    [instance().await, instance().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_race_two_instances_held_redis() {
    let Some((r, _, _)) = setup("idem_race_two_held").await else { return };
    same_key_race(two_instances(&r).await, Gateway::Held).await;
    r.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_race_two_instances_open_redis() {
    let Some((r, _, _)) = setup("idem_race_two_open").await else { return };
    same_key_race(two_instances(&r).await, Gateway::Open).await;
    r.cleanup().await;
}

#[tokio::test]
async fn takeover_and_fencing_redis() {
    let Some((r, store, expire)) = setup("idem_takeover").await else { return };
    takeover_and_fencing(store, expire).await;
    r.cleanup().await;
}

#[tokio::test]
async fn outcomes_redis() {
    let Some((r, store, _)) = setup("idem_outcomes").await else { return };
    outcomes(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn conflicts_redis() {
    let Some((r, store, _)) = setup("idem_conflicts").await else { return };
    conflicts(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn scope_isolation_redis() {
    let Some((r, store, _)) = setup("idem_scope").await else { return };
    scope_isolation(store).await;
    r.cleanup().await;
}

#[tokio::test]
async fn braces_in_scopes_and_keys_redis() {
    let Some((r, store, _)) = setup("idem_braces").await else { return };
    braces_in_scopes_and_keys(store).await;
    r.cleanup().await;
}

/// The TTL scenario on the server's clock, which a test cannot pause: records live 100 ms, the checks before the
/// TTL run at once, and the test then polls until Redis has expired the records (`EXISTS`, which also expires a
/// due key on the spot), giving up after 5 s. This costs about 100 real milliseconds, the price of having Redis
/// itself decide the expiry.
#[tokio::test]
async fn ttl_expiry_redis() {
    let Some((r, store, _)) = setup("idem_ttl_expiry").await else { return };
    let ttl = Duration::from_millis(100);
    let almost: OnKey = Arc::new(|_key: String| Box::pin(async {}));
    let (conn, s) = (r.conn.clone(), store.clone());
    let gone: OnKey = Arc::new(move |key: String| {
        let (mut conn, rkey) = (conn.clone(), s.record_key(&key));
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let exists: bool = redis::cmd("EXISTS").arg(&rkey).query_async(&mut conn).await.unwrap();
                if !exists {
                    return;
                }
                if tokio::time::Instant::now() > deadline {
                    let pttl: i64 = redis::cmd("PTTL").arg(&rkey).query_async(&mut conn).await.unwrap();
                    panic!("Redis still holds {rkey} after 5 s of waiting out a TTL of {ttl:?} (PTTL {pttl})");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
    ttl_expiry(store, ttl, almost, gone).await;
    r.cleanup().await;
}

#[tokio::test]
async fn records_carry_the_ttl_and_a_hash_tag() {
    let Some((r, store, _)) = setup("idem_ttl").await else { return };
    let sim = GatewaySim::new();
    let ttl = Duration::from_secs(600);
    let svc = IdempotencyLayer::builder().store(store.clone()).ttl(ttl).lease(LEASE).build().layer(sim.clone());
    svc.oneshot(charge("order-t", "1.00", "tok_visa", "k-ttl")).await.unwrap();
    let rkey = store.record_key(&storage_key(None, &IdempotencyKey::new("k-ttl").unwrap()));
    assert!(rkey.starts_with(&r.prefix) && rkey.contains("{k:k-ttl}"), "{rkey}");
    let mut conn = r.conn.clone();
    let pttl: i64 = redis::cmd("PTTL").arg(&rkey).query_async(&mut conn).await.unwrap();
    assert!(pttl > (ttl.as_millis() as i64) - 60_000 && pttl <= ttl.as_millis() as i64, "PTTL {pttl}");
    // What happens when Redis expires the record: `ttl_expiry_redis`.
    assert_eq!(sim.calls(), 1);
    r.cleanup().await;
}

#[tokio::test]
async fn unreachable_redis_is_a_typed_error_and_no_inner_call() {
    let sim = GatewaySim::new();
    let store = RedisStore::open(&palisade_testkit::unreachable_redis_url()).unwrap();
    let svc = IdempotencyLayer::builder().store(store.clone()).build().layer(sim.clone());
    let err = svc.oneshot(charge("order-down", "1.00", "tok_visa", "k-down")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(err.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.calls(), 0);

    let handler_calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = handler_calls.clone();
    let app = HttpIdempotencyLayer::builder().store(store).build().layer(tower::service_fn(
        move |_req: http::Request<axum::body::Body>| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::empty())) }
        },
    ));
    let req = http::Request::post("/v1/charges")
        .header("idempotency-key", "k-down")
        .body(axum::body::Body::from("{}"))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[http::header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(handler_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A renewal never shortens a lease: a holder whose token is stamped a minute ahead of the server's clock (a
/// clock stepped back, a failover to a replica behind) renews, and its lease stays live; before, the renewal wrote
/// a negative lease, which reads as released, and a duplicate took over the live holder.
#[tokio::test]
async fn a_renewal_under_a_clock_behind_the_token_keeps_the_lease() {
    use palisade_idempotency::{Claim, Fingerprint, LeaseStore};
    let Some((r, store, _expire)) = setup("idem_renew_skew").await else { return };
    let mut conn = r.conn.clone();
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let ahead = secs * 1_000_000 + micros + 60_000_000;
    let (k, fp) = ("renew-skew", Fingerprint([7; 32]));
    let mut record = vec![b'i'];
    record.extend_from_slice(&fp.0);
    record.extend_from_slice(format!("{ahead}:10000/1").as_bytes());
    let _: () = redis::cmd("SET")
        .arg(store.record_key(k))
        .arg(record)
        .arg("PX")
        .arg(600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(matches!(store.claim(k, &fp, LEASE, TTL).await.unwrap(), Claim::Held { .. }));
    let hold = Hold::new(k, palisade_idempotency::FencingToken(ahead));
    assert!(store.renew(&hold, Duration::from_secs(10)).await.unwrap(), "the holder renews");
    let after = store.claim(k, &fp, LEASE, TTL).await.unwrap();
    assert!(matches!(after, Claim::Held { .. }), "still held after the renewal: {after:?}");
    r.cleanup().await;
}

/// The record is one string: state byte, 32 raw fingerprint bytes, then the state's fields. Fingerprints made of
/// the bytes the format itself uses (`:`, `d`, `i`, digits) must not confuse the scripts, a release keeps the
/// record's TTL, and a key holding something else is a typed store error, never a claim.
#[tokio::test]
async fn record_format_survives_any_fingerprint_bytes() {
    use palisade_idempotency::{Claim, Fingerprint, LeaseStore, Record};
    let Some((r, store, expire)) = setup("idem_format").await else { return };
    let mut conn = r.conn.clone();
    for (i, fill) in [b':', b'd', b'i', b'0', 0u8, 0xff].into_iter().enumerate() {
        let k = format!("format-{i}");
        let fp = Fingerprint([fill; 32]);
        let mut other = fp;
        other.0[31] ^= 1;
        let Claim::Acquired { hold, took_over: false } = store.claim(&k, &fp, LEASE, TTL).await.unwrap() else {
            panic!("fresh key must be acquired")
        };
        let t1 = hold.token();
        assert_eq!(store.claim(&k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
        assert!(matches!(store.get(&k).await.unwrap(), Some(Record::Held { token, fingerprint, lease_remaining })
                if token == t1 && fingerprint == fp && lease_remaining > Duration::ZERO));
        // A token that is a prefix or an extension of the real one holds nothing.
        let shorter = palisade_idempotency::FencingToken(t1.0 / 10);
        let longer = palisade_idempotency::FencingToken(t1.0 * 10 + 1);
        assert!(!store.release(&Hold::new(&k, shorter)).await.unwrap());
        assert!(
            !store.complete(&Hold::new(&k, longer), Payload::from(bytes::Bytes::from_static(b"x")), TTL).await.unwrap()
        );

        let rkey = store.record_key(&k);
        let before: i64 = redis::cmd("PTTL").arg(&rkey).query_async(&mut conn).await.unwrap();
        assert!(store.release(&Hold::new(&k, t1)).await.unwrap());
        let after: i64 = redis::cmd("PTTL").arg(&rkey).query_async(&mut conn).await.unwrap();
        assert!(after > before - 60_000 && after <= before, "release must keep the TTL: {before} then {after}");
        assert!(
            matches!(store.get(&k).await.unwrap(), Some(Record::Held { lease_remaining, .. }) if lease_remaining == Duration::ZERO)
        );
        assert_eq!(store.claim(&k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
        let Claim::Acquired { hold, took_over: true } = store.claim(&k, &fp, LEASE, TTL).await.unwrap() else {
            panic!("a released key is taken over")
        };
        let t2 = hold.token();
        assert!(t2 > t1);
        let body = bytes::Bytes::from(vec![fill, b':', b'd', fill]);
        assert!(store.complete(&Hold::new(&k, t2), Payload::from(body.clone()), TTL).await.unwrap());
        assert_eq!(
            store.claim(&k, &fp, LEASE, TTL).await.unwrap(),
            Claim::Done { response: Payload::from(body.clone()) }
        );
        assert_eq!(store.claim(&k, &other, LEASE, TTL).await.unwrap(), Claim::Mismatch);
        assert_eq!(store.get(&k).await.unwrap(), Some(Record::Done { fingerprint: fp, response: Payload::from(body) }));
        expire(k.clone()).await;
    }

    // Something else under a record's key: a store error (the layer answers 503), not a claim.
    let k = "format-foreign";
    let _: () = redis::cmd("HSET").arg(store.record_key(k)).arg("f").arg("v").query_async(&mut conn).await.unwrap();
    assert!(store.claim(k, &Fingerprint([1; 32]), LEASE, TTL).await.is_err());
    for garbage in ["garbage", "i", "d", "x-not-a-record-but-long-enough-to-hold-a-fingerprint:1"] {
        let _: () = redis::cmd("SET").arg(store.record_key(k)).arg(garbage).query_async(&mut conn).await.unwrap();
        assert!(store.claim(k, &Fingerprint([1; 32]), LEASE, TTL).await.is_err(), "{garbage}");
        assert!(store.get(k).await.is_err(), "{garbage}");
    }
    r.cleanup().await;
}

#[tokio::test]
async fn renew_forget_abandon_redis() {
    let Some((r, store, expire)) = setup("idem_lease_ops").await else { return };
    renew_forget_abandon(store, expire, true).await;
    r.cleanup().await;
}
