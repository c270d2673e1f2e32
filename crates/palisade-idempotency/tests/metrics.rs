//! With the `metrics` feature, `palisade_idempotency_requests_total{result=...}` counts what the layer did: the
//! results its tracing events name, plus pass-throughs.
#![cfg(feature = "metrics")]

use std::time::Duration;

use palisade_core::*;
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use palisade_testkit::MetricsCapture;
use tower::{Layer, ServiceExt};

const LEASE: Duration = Duration::from_secs(10);

fn charge(order: &str, amount: &str, key: Option<&str>) -> GatewayRequest {
    palisade_testkit::charge(order).amount(amount).maybe_key(key).build()
}

/// Answers a charge at once; `slow` orders take three leases, `lost` ones time out (an Unknown outcome).
async fn gateway(req: GatewayRequest) -> Result<GatewayResponse, PaymentError> {
    let GatewayRequest::Charge(c) = req else { panic!("only charges here") };
    match c.order_reference.as_str() {
        "slow" => tokio::time::sleep(3 * LEASE).await,
        "lost" => return Err(PaymentError::timeout("no answer")),
        _ => {}
    }
    Ok(palisade_testkit::captured(&GatewayRequest::Charge(c)))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_result_is_counted() {
    let capture = MetricsCapture::default();
    let _guard = metrics::set_default_local_recorder(&capture);
    let layer = IdempotencyLayer::builder().store(MemoryStore::new()).lease(LEASE).build();
    let svc = layer.layer(tower::service_fn(gateway));

    svc.clone().oneshot(charge("o1", "10.00", Some("k1"))).await.unwrap(); // executed, stored
    svc.clone().oneshot(charge("o1", "10.00", Some("k1"))).await.unwrap(); // replayed
    svc.clone().oneshot(charge("o1", "99.00", Some("k1"))).await.unwrap_err(); // conflict
    svc.clone().oneshot(charge("lost", "10.00", Some("k2"))).await.unwrap_err(); // executed, released
    svc.clone().oneshot(charge("o3", "10.00", None)).await.unwrap(); // passthrough

    // A holder outlives its lease: a duplicate refused while the lease runs, then taken over; the stale
    // holder's late result is fenced off.
    let stale = tokio::spawn(svc.clone().oneshot(charge("slow", "10.00", Some("k3"))));
    tokio::task::yield_now().await;
    svc.clone().oneshot(charge("slow", "10.00", Some("k3"))).await.unwrap_err(); // in_flight
    tokio::time::advance(LEASE + Duration::from_millis(1)).await;
    let fresh = tokio::spawn(svc.clone().oneshot(charge("slow", "10.00", Some("k3")))); // took_over
    stale.await.unwrap().unwrap(); // fenced
    fresh.await.unwrap().unwrap(); // stored

    let count = |result: &str| capture.counter(&format!("palisade_idempotency_requests_total{{result={result}}}"));
    let all = capture.counters();
    for (result, n) in [
        ("executed", 3),
        ("took_over", 1),
        ("stored", 2),
        ("replayed", 1),
        ("conflict", 1),
        ("released", 1),
        ("in_flight", 1),
        ("fenced", 1),
        ("passthrough", 1),
    ] {
        assert_eq!(count(result), n, "{result}: {all:?}");
    }
    assert_eq!(all.len(), 9, "nothing else is counted: {all:?}");
}
