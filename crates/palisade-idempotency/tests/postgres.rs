//! The store-agnostic scenarios on PostgreSQL (through palisade-testkit, each test in its own schema), plus what
//! only PostgreSQL has: migrations, an unreachable server, purging expired rows, and completion of the record in
//! the handler's own transaction. Leases end by rewriting the row's `lease_until`, not by sleeping.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use palisade_core::*;
use palisade_idempotency::{HttpIdempotencyLayer, IdempotencyLayer, PostgresStore, TxCompletion, storage_key};
use palisade_sim::GatewaySim;
use palisade_testkit::PostgresTest;
use tower::{Layer, ServiceExt};

async fn setup(name: &str) -> Option<(PostgresTest, PostgresStore, Expire)> {
    let pg = palisade_testkit::postgres(name).await?;
    let store = PostgresStore::new(pg.pool.clone()).with_prefix(&pg.prefix()).unwrap();
    store.migrate().await.unwrap();
    let (pool, table) = (pg.pool.clone(), format!("{}leases", pg.prefix()));
    let expire: Expire = Arc::new(move |key: String| {
        let (pool, sql) =
            (pool.clone(), format!("UPDATE {table} SET lease_until = statement_timestamp() WHERE key = $1"));
        Box::pin(async move {
            sqlx::query(&sql).bind(key).execute(&pool).await.unwrap();
        })
    });
    Some((pg, store, expire))
}

#[tokio::test]
async fn store_contract_postgres() {
    let Some((pg, store, expire)) = setup("store_contract").await else { return };
    store_contract(store, expire).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn renew_forget_abandon_postgres() {
    let Some((pg, store, expire)) = setup("lease_ops").await else { return };
    renew_forget_abandon(store, expire, true).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn thousand_concurrent_same_key_refused_postgres() {
    let Some((pg, store, _)) = setup("thousand_refused").await else { return };
    thousand_concurrent_refused(store).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn thousand_concurrent_same_key_waiting_postgres() {
    let Some((pg, store, _)) = setup("thousand_waiting").await else { return };
    thousand_concurrent_waiting(store).await;
    pg.cleanup().await;
}

/// Two instances, as two processes would run them: two stores on two pools of their own, racing on two threads.
async fn two_instances(pg: &PostgresTest) -> [PostgresStore; 2] {
    let instance = || async { PostgresStore::connect(&pg.url).await.unwrap().with_prefix(&pg.prefix()).unwrap() };
    [instance().await, instance().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_race_two_instances_held_postgres() {
    let Some((pg, _, _)) = setup("race_two_held").await else { return };
    same_key_race(two_instances(&pg).await, Gateway::Held).await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_race_two_instances_open_postgres() {
    let Some((pg, _, _)) = setup("race_two_open").await else { return };
    same_key_race(two_instances(&pg).await, Gateway::Open).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn takeover_and_fencing_postgres() {
    let Some((pg, store, expire)) = setup("takeover").await else { return };
    takeover_and_fencing(store, expire).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn outcomes_postgres() {
    let Some((pg, store, _)) = setup("outcomes").await else { return };
    outcomes(store).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn conflicts_postgres() {
    let Some((pg, store, _)) = setup("conflicts").await else { return };
    conflicts(store).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn scope_isolation_postgres() {
    let Some((pg, store, _)) = setup("scope").await else { return };
    scope_isolation(store).await;
    pg.cleanup().await;
}

#[tokio::test]
async fn braces_in_scopes_and_keys_postgres() {
    let Some((pg, store, _)) = setup("braces").await else { return };
    braces_in_scopes_and_keys(store).await;
    pg.cleanup().await;
}

/// The TTL scenario on the server's clock: records live 100 ms, and the test polls until PostgreSQL treats them
/// as expired (every statement compares `expires_at` with `statement_timestamp()`), giving up after 5 s. Then a
/// purge deletes the expired rows.
#[tokio::test]
async fn ttl_expiry_and_purge_postgres() {
    let Some((pg, store, _)) = setup("ttl_expiry").await else { return };
    let ttl = Duration::from_millis(100);
    let almost: OnKey = Arc::new(|_key: String| Box::pin(async {}));
    let s = store.clone();
    let gone: OnKey = Arc::new(move |key: String| {
        let s = s.clone();
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while palisade_idempotency::LeaseStore::get(&s, &key).await.unwrap().is_some() {
                assert!(tokio::time::Instant::now() < deadline, "PostgreSQL still serves {key} after 5 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    });
    ttl_expiry(store.clone(), ttl, almost, gone).await;
    let rows = || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}leases", pg.prefix()))
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        n
    };
    assert!(rows().await >= 2, "expired rows stay until purged");
    // The two records of the last executions are alive; the expired ones go.
    tokio::time::sleep(ttl * 2).await;
    let purged = store.purge_expired(1).await.unwrap();
    assert!(purged >= 2, "purged {purged}");
    assert_eq!(rows().await, 0, "everything had expired");
    pg.cleanup().await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_prefixes_are_checked() {
    let Some((pg, store, _)) = setup("migrate").await else { return };
    store.migrate().await.unwrap();
    store.clone().migrate().await.unwrap();
    let versions: Vec<i32> = sqlx::query_scalar(&format!("SELECT version FROM {}lease_migrations", pg.prefix()))
        .fetch_all(&pg.pool)
        .await
        .unwrap();
    assert_eq!(versions, vec![1]);
    for bad in ["", "Palisade", "a;drop table x", "a b", "1abc", "x.y.z"] {
        assert!(PostgresStore::new(pg.pool.clone()).with_prefix(bad).is_err(), "{bad:?}");
    }
    pg.cleanup().await;
}

#[tokio::test]
async fn unreachable_postgres_is_a_typed_error_and_no_inner_call() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = PostgresStore::open(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).unwrap();
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder().store(store).build().layer(sim.clone());
    let err = svc.oneshot(charge("order-pg-down", "1.00", "tok_visa", "k-pg-down")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(err.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sim.calls(), 0);
}

/// What the charges handler of a shop does: writes its order row and completes the idempotency record in one
/// transaction. `crash` says where it stops: after the order row, before the completion (the process died, the
/// connection dropped), or not at all.
#[derive(Clone)]
struct Shop {
    store: PostgresStore,
    orders: String,
    calls: Arc<AtomicUsize>,
    crash_next: Arc<std::sync::atomic::AtomicBool>,
    /// Roll back after completing the record, before the commit.
    abort_next: Arc<std::sync::atomic::AtomicBool>,
}

async fn charge_handler(
    State(shop): State<Shop>,
    Extension(done): Extension<TxCompletion>,
    body: Bytes,
) -> Result<Response, StatusCode> {
    shop.calls.fetch_add(1, Ordering::SeqCst);
    let mut tx = shop.store.pool().begin().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    sqlx::query(&format!("INSERT INTO {} (body) VALUES ($1)", shop.orders))
        .bind(body.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    if shop.crash_next.swap(false, Ordering::SeqCst) {
        // Killed between the two writes: the transaction is dropped, never committed.
        drop(tx);
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let answer = Bytes::from(format!("{{\"order\":{}}}", shop.calls.load(Ordering::SeqCst)));
    let completed = done
        .complete_in(&shop.store, &mut tx, StatusCode::CREATED, &HeaderMap::new(), &answer)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    assert!(completed, "the claim is ours");
    if shop.abort_next.swap(false, Ordering::SeqCst) {
        tx.rollback().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        return Err(StatusCode::CONFLICT);
    }
    tx.commit().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, answer).into_response())
}

fn post(key: &str, body: &'static str) -> Request<Body> {
    Request::post("/v1/charges").header("idempotency-key", key).body(Body::from(body)).unwrap()
}

/// Issue 19: the order row and the idempotency record commit together. A handler killed between writing the
/// order and completing the record leaves neither (the order rolled back, the claim released, not completed),
/// so the retry executes and pays once; after a commit the record replays the committed answer.
#[tokio::test]
async fn the_record_commits_with_the_order_or_not_at_all() {
    let Some((pg, store, _)) = setup("tx_completion").await else { return };
    let orders = format!("{}.orders", pg.schema);
    sqlx::raw_sql(&format!("CREATE TABLE {orders} (id bigserial PRIMARY KEY, body bytea NOT NULL)"))
        .execute(&pg.pool)
        .await
        .unwrap();
    let shop = Shop {
        store: store.clone(),
        orders: orders.clone(),
        calls: Arc::new(AtomicUsize::new(0)),
        crash_next: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        abort_next: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let app = axum::Router::new()
        .route("/v1/charges", axum::routing::post(charge_handler))
        .route_layer(HttpIdempotencyLayer::builder().store(store.clone()).build())
        .with_state(shop.clone());
    let order_rows = || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {orders}")).fetch_one(&pg.pool).await.unwrap();
        n
    };
    let key = storage_key(None, &IdempotencyKey::new("order-77").unwrap());

    // Killed between the two writes: no order, and the claim is released (not completed, not stuck).
    let res = app.clone().oneshot(post("order-77", "{\"amount\":\"10.00\"}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(order_rows().await, 0, "the order rolled back");
    match palisade_idempotency::LeaseStore::get(&store, &key).await.unwrap() {
        Some(palisade_idempotency::Record::Held { lease_remaining, .. }) => {
            assert_eq!(lease_remaining, Duration::ZERO, "released, so a retry executes at once")
        }
        other => panic!("the claim must be released, not completed: {other:?}"),
    }

    // Completed in the transaction, then rolled back: the completion rolls back with the order.
    shop.abort_next.store(true, Ordering::SeqCst);
    let res = app.clone().oneshot(post("order-77", "{\"amount\":\"10.00\"}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(order_rows().await, 0, "the order rolled back");
    assert!(
        matches!(
            palisade_idempotency::LeaseStore::get(&store, &key).await.unwrap(),
            Some(palisade_idempotency::Record::Held { lease_remaining, .. }) if lease_remaining.is_zero()
        ),
        "a completion in a transaction that rolled back leaves the claim released, not done"
    );

    // The retry executes, and the order and the record commit together.
    let res = app.clone().oneshot(post("order-77", "{\"amount\":\"10.00\"}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let first = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    assert_eq!(order_rows().await, 1);
    assert!(matches!(
        palisade_idempotency::LeaseStore::get(&store, &key).await.unwrap(),
        Some(palisade_idempotency::Record::Done { .. })
    ));

    // A duplicate replays the committed answer without running the handler.
    let res = app.clone().oneshot(post("order-77", "{\"amount\":\"10.00\"}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["idempotent-replayed"], "true");
    assert_eq!(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap(), first);
    assert_eq!(shop.calls.load(Ordering::SeqCst), 3, "the crashed attempt, the rolled back one, the committed one");
    assert_eq!(order_rows().await, 1, "one order");
    pg.cleanup().await;
}

/// The optional background purge deletes expired rows on its own (real time: records of 50 ms, a purge every
/// 50 ms, polled for at most 5 s).
#[tokio::test]
async fn the_background_purge_deletes_expired_rows() {
    let Some((pg, store, _)) = setup("purge_task").await else { return };
    let fp = palisade_idempotency::Fingerprint([3; 32]);
    let short = Duration::from_millis(50);
    for i in 0..10 {
        let claim = palisade_idempotency::LeaseStore::claim(&store, &format!("k{i}"), &fp, short, short).await;
        assert!(matches!(claim.unwrap(), palisade_idempotency::Claim::Acquired { .. }));
    }
    let table = format!("{}leases", pg.prefix());
    let rows = || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&pg.pool).await.unwrap();
        n
    };
    assert_eq!(rows().await, 10);
    let task = store.purge_in_background(short);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rows().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the background purge left expired rows");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    pg.cleanup().await;
}
