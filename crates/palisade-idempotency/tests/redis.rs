//! The store-agnostic scenarios on Redis (through palisade-testkit), plus what only Redis has: an unreachable
//! server, server-side expiry, hash-tagged keys. Leases end by writing the record's lease field, not by sleeping.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_core::*;
use palisade_idempotency::{HttpIdempotencyLayer, IdempotencyLayer, RedisStore, storage_key};
use palisade_sim::GatewaySim;
use palisade_testkit::RedisTest;
use tower::{Layer, ServiceExt};

async fn setup(name: &str) -> Option<(RedisTest, RedisStore, Expire)> {
    let r = palisade_testkit::redis(name).await?;
    let store = RedisStore::new(r.conn.clone()).with_prefix(r.prefix.clone());
    let (conn, s) = (r.conn.clone(), store.clone());
    let expire: Expire = Arc::new(move |key: String| {
        let (mut conn, rkey) = (conn.clone(), s.record_key(&key));
        Box::pin(async move {
            let _: () = redis::cmd("HSET").arg(&rkey).arg("lease").arg("0").query_async(&mut conn).await.unwrap();
        })
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
async fn records_carry_the_ttl_and_a_hash_tag() {
    let Some((r, store, _)) = setup("idem_ttl").await else { return };
    let sim = GatewaySim::new();
    let ttl = Duration::from_secs(600);
    let svc = IdempotencyLayer::builder().store(store.clone()).ttl(ttl).lease(LEASE).build().layer(sim.clone());
    svc.clone().oneshot(charge("order-t", "1.00", "tok_visa", "k-ttl")).await.unwrap();
    let rkey = store.record_key(&storage_key(None, &IdempotencyKey::new("k-ttl").unwrap()));
    assert!(rkey.starts_with(&r.prefix) && rkey.contains("{k:k-ttl}"), "{rkey}");
    let mut conn = r.conn.clone();
    let pttl: i64 = redis::cmd("PTTL").arg(&rkey).query_async(&mut conn).await.unwrap();
    assert!(pttl > (ttl.as_millis() as i64) - 60_000 && pttl <= ttl.as_millis() as i64, "PTTL {pttl}");
    // When Redis expires the record, the key is new again (the gateway still deduplicates by key).
    let _: () = redis::cmd("DEL").arg(&rkey).query_async(&mut conn).await.unwrap();
    svc.oneshot(charge("order-t", "1.00", "tok_visa", "k-ttl")).await.unwrap();
    assert_eq!(sim.calls(), 2);
    assert_eq!(sim.charges_for("order-t").len(), 1);
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
