//! The store-agnostic scenarios on the in-memory store, under paused time (leases end by advancing the clock).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_core::*;
use palisade_idempotency::{IdempotencyLayer, LeaseStore, MemoryStore, MissingKey};
use palisade_sim::GatewaySim;
use tower::{Layer, ServiceExt};

fn expire_by_advancing() -> Expire {
    Arc::new(|_key: String| Box::pin(async { tokio::time::advance(LEASE).await }))
}

#[tokio::test(start_paused = true)]
async fn store_contract_memory() {
    store_contract(MemoryStore::new(), expire_by_advancing()).await;
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_same_key_refused_memory() {
    thousand_concurrent_refused(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn thousand_concurrent_same_key_waiting_memory() {
    thousand_concurrent_waiting(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_same_key_on_threads_memory() {
    thousand_concurrent_refused(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn takeover_and_fencing_memory() {
    takeover_and_fencing(MemoryStore::new(), expire_by_advancing()).await;
}

#[tokio::test(start_paused = true)]
async fn outcomes_memory() {
    outcomes(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_memory() {
    conflicts(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_race_two_instances_on_threads_memory() {
    let store = MemoryStore::new();
    same_key_race([store.clone(), store], Gateway::Open).await;
}

#[tokio::test(start_paused = true)]
async fn scope_isolation_memory() {
    scope_isolation(MemoryStore::new()).await;
}

#[tokio::test(start_paused = true)]
async fn braces_in_scopes_and_keys_memory() {
    braces_in_scopes_and_keys(MemoryStore::new()).await;
}

/// The TTL scenario under paused time: the scenario writes its records at the start, so the clock stops 1 ms
/// before the TTL ends, then at the very instant it ends.
#[tokio::test(start_paused = true)]
async fn ttl_expiry_memory() {
    let ttl = Duration::from_secs(24 * 3600);
    let end = tokio::time::Instant::now() + ttl;
    let advance_to = |at: tokio::time::Instant| -> OnKey {
        Arc::new(move |_key: String| {
            Box::pin(tokio::time::advance(at.saturating_duration_since(tokio::time::Instant::now())))
        })
    };
    ttl_expiry(MemoryStore::new(), ttl, advance_to(end - Duration::from_millis(1)), advance_to(end)).await;
}

#[tokio::test(start_paused = true)]
async fn missing_key_passes_through_or_is_rejected() {
    let sim = GatewaySim::new();
    let no_key = GatewayRequest::Charge(ChargeRequest::new(
        Money::parse("1.00", Currency::USD).unwrap(),
        PaymentToken::new("tok_visa").unwrap(),
        "order-7000".parse().unwrap(),
    ));
    let pass = IdempotencyLayer::builder().build().layer(sim.clone());
    pass.clone().oneshot(no_key.clone()).await.unwrap();
    pass.clone().oneshot(no_key.clone()).await.unwrap();
    assert_eq!(sim.charges_for("order-7000").len(), 2, "pass-through does nothing for keyless requests");
    let strict = IdempotencyLayer::builder().missing_key(MissingKey::Reject).build().layer(sim.clone());
    assert_eq!(strict.oneshot(no_key).await.unwrap_err(), PaymentError::IdempotencyKeyMissing);
    assert_eq!(sim.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_releases_its_claim() {
    let gated = Gated::new(GatewaySim::new());
    let svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(gated.service());
    let req = charge("order-8000", "10.00", "tok_visa", "k-8000");
    let task = tokio::spawn(svc.clone().oneshot(req.clone()));
    wait_until("the request reaches the gateway", || gated.entered.load(std::sync::atomic::Ordering::SeqCst) == 1)
        .await;
    task.abort();
    let _ = task.await;
    tokio::task::yield_now().await; // the background release runs
    gated.open();
    // No need to wait for the 90 s lease: the retry executes at once.
    assert!(svc.oneshot(req).await.is_ok());
    assert_eq!(gated.sim.charges_for("order-8000").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn custom_key_extractor_sets_the_gateway_key() {
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder()
        .key(|r: &GatewayRequest| match r {
            GatewayRequest::Charge(c) => {
                c.metadata.get("request_id").and_then(|v| IdempotencyKey::new(v.as_str()).ok())
            }
            _ => None,
        })
        .build()
        .layer(sim.clone());
    let req = GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("3.00", Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "order-9000".parse().unwrap(),
        )
        .meta("request_id", "req-42".parse().unwrap()),
    );
    svc.clone().oneshot(req.clone()).await.unwrap();
    svc.oneshot(req).await.unwrap();
    assert_eq!(sim.calls(), 1);
    assert_eq!(sim.ledger()[0].gateway_key.as_deref(), Some("req-42"));
}

/// The memory store keeps a typed result as a value; its byte-level API still answers the JSON the layer would have
/// stored, and a layer with other types sharing the store reads the kept value through that JSON.
#[tokio::test(start_paused = true)]
async fn kept_values_read_as_json_and_across_types() {
    let sim = GatewaySim::new();
    let store = MemoryStore::new();
    let svc = IdempotencyLayer::builder().store(store.clone()).build().layer(sim.clone());
    let req = charge("order-9100", "10.00", "tok_visa", "k-9100");
    let first = svc.oneshot(req.clone()).await.unwrap();
    let key = palisade_idempotency::storage_key(None, &IdempotencyKey::new("k-9100").unwrap());
    let Some(palisade_idempotency::Record::Done { response, .. }) = store.get(&key).await.unwrap() else {
        panic!("the result is stored");
    };
    let stored: Result<GatewayResponse, PaymentError> = serde_json::from_slice(&response.to_bytes()).unwrap();
    assert_eq!(stored, Ok(first.clone()));

    // Another layer over the same store whose service answers JSON values: a replay, not an execution.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let as_json = tower::service_fn(move |_req: GatewayRequest| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::ready(Ok::<serde_json::Value, PaymentError>(serde_json::Value::Null))
    });
    let other = IdempotencyLayer::builder().store(store).build().layer(as_json);
    let replayed = other.oneshot(req).await.unwrap();
    assert_eq!(replayed, serde_json::to_value(&first).unwrap());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(sim.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn renew_forget_abandon_memory() {
    renew_forget_abandon(MemoryStore::new(), expire_by_advancing(), true).await;
}
