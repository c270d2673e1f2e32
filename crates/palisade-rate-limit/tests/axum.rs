//! The axum pitfall, in axum itself: a Router is cloned for every request, and the limit still holds.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode};
use palisade_rate_limit::RateLimitLayer;
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn a_router_cloned_per_request_keeps_one_limit() {
    let limit = RateLimitLayer::builder().name("api").rate(5, Duration::from_secs(1)).http().build().unwrap();
    let app = Router::new().route("/charges", post(|| async { "charged" })).layer(limit);
    let mut statuses = Vec::new();
    for _ in 0..300 {
        // axum's server clones the router (and so every layer's service) for each connection and request.
        let res = app.clone().oneshot(Request::post("/charges").body(Body::empty()).unwrap()).await.unwrap();
        statuses.push(res.status());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5, "exactly the cap, not 5 per clone");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 295);
    tokio::time::advance(Duration::from_millis(200)).await;
    let res = app.clone().oneshot(Request::post("/charges").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "one unit back after one interval");
    assert_eq!(res.headers()["ratelimit"], "\"api\";r=0;t=1");
}
