//! Issue 16, finding 3, against examples/server's API on Redis: Redis stalls past its response timeout while a
//! charge claims its key; the charge is answered 503, and once Redis answers again the same key charges after
//! `Retry-After` (exactly once), instead of answering 409 for a whole lease. Real Redis through a stalling proxy,
//! real time (about three seconds).

#[path = "../examples/server/app.rs"]
mod app;
#[path = "../examples/server/charges.rs"]
mod charges;
#[path = "../examples/server/ledger.rs"]
mod ledger;

use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode, header};
use palisade::idempotency::RedisStore;
use palisade::sim::GatewaySim;
use tower::ServiceExt;

fn charge(key: &str) -> Request<Body> {
    Request::post("/v1/charges")
        .header("Idempotency-Key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"amount":"12.34","currency":"USD","source":"tok_visa","order_id":"o-stalled"}"#))
        .unwrap()
}

#[tokio::test]
async fn a_charge_refused_while_redis_stalled_goes_through_after_retry_after() {
    let Some(r) = palisade_testkit::redis("server_stalled_redis").await else { return };
    let proxy = palisade_testkit::StallProxy::start(&r.url).await;
    let store = RedisStore::connect(&proxy.url()).await.unwrap().with_prefix(r.prefix.clone());
    let sim = GatewaySim::new();
    let app = app::router(sim.clone(), store);
    assert_eq!(app.clone().oneshot(charge("warm-up")).await.unwrap().status(), StatusCode::CREATED);

    proxy.stall();
    let refused = app.clone().oneshot(charge("k-stalled")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(retry_after)).await;

    let retried = app.clone().oneshot(charge("k-stalled")).await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED, "usable when Retry-After said, not 409 for a lease");
    let again = app.clone().oneshot(charge("k-stalled")).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(sim.charges_for("o-stalled").len(), 2, "the warm-up and the retried charge: nothing twice");
    r.cleanup().await;
}
