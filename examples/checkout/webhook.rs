//! Scenario: webhook handling. The gateway reports a charge asynchronously with a signed webhook; only a
//! genuine event marks the order paid, a redelivery does not run the handler twice, a tampered body is refused.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Json, State};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use palisade::core::*;
use palisade::sim::GatewaySim;
use palisade::webhook::Clock as _;
use palisade::webhook::{
    EventId, LeaseStore, MemoryStore, Message, RedisStore, Signer, Stripe, SystemClock, Verifier, WebhookLayer,
};
use tower::{Service, ServiceExt};

use crate::Env;
use crate::report::Report;

const SECRET: &str = "whsec_checkout_demo_secret";

/// The merchant's side: orders marked paid, and how often the handler ran.
#[derive(Default)]
struct Orders {
    paid: std::sync::Mutex<Vec<String>>,
    handler_runs: std::sync::atomic::AtomicUsize,
}

async fn on_event(
    State(orders): State<Arc<Orders>>,
    Extension(_id): Extension<EventId>,
    Json(event): Json<serde_json::Value>,
) -> StatusCode {
    orders.handler_runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if event["type"] == "charge.succeeded"
        && let Some(order) = event["data"]["object"]["order"].as_str()
    {
        orders.paid.lock().expect("not poisoned").push(order.to_owned());
    }
    StatusCode::OK
}

pub async fn webhook_handling(r: &mut Report, env: &Env) {
    r.scenario(
        "webhook handling",
        "The gateway charges order-1008, then reports it asynchronously with a signed charge.succeeded\n\
         webhook. Only a genuinely signed event may mark the order paid; the gateway's redelivery of the\n\
         same event must not mark it twice; someone who edits the body in transit must be refused.",
    );
    match &env.redis_url {
        Some(url) => match RedisStore::connect(url).await {
            Ok(store) => {
                let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
                r.step("delivery records in Redis");
                run(r, store.with_prefix(format!("palisade:checkout:webhook:{nanos}:"))).await;
            }
            Err(e) => r.check(&format!("Redis reachable for the delivery store ({e})"), false),
        },
        None => run(r, MemoryStore::new()).await,
    }
}

async fn run(r: &mut Report, store: impl LeaseStore + Clone) {
    let mut gw = GatewaySim::new();
    let charge = ChargeRequest::new(
        Money::parse("49.99", Currency::USD).expect("valid amount"),
        PaymentToken::new("tok_visa").expect("valid token"),
        "order-1008".parse().expect("a reference without card data"),
    )
    .idempotency_key(IdempotencyKey::new("k-1008").expect("valid key"));
    let charged = gw.ready().await.expect("ready").call(GatewayRequest::Charge(charge)).await;
    let Ok(charged) = charged else {
        r.check("the gateway charged order-1008", false);
        return;
    };
    r.step(format!("gateway charged {} for order-1008", charged.id));

    let orders = Arc::new(Orders::default());
    let verifier = Verifier::builder(Stripe).secret(SECRET).build().expect("valid secret");
    let layer = WebhookLayer::builder(verifier).dedup(store).build();
    let app = Router::new().route("/v1/webhooks/gateway", post(on_event)).route_layer(layer).with_state(orders.clone());

    let body = serde_json::json!({
        "id": format!("evt_{}", charged.id),
        "type": "charge.succeeded",
        "data": {"object": {"id": charged.id, "order": "order-1008", "amount": 4999}},
    })
    .to_string();
    let signer = Signer::new(Stripe, SECRET).expect("valid secret");
    let deliver = |body: String, signed_body: &str| {
        let headers = signer
            .headers(&Message { id: None, timestamp: SystemClock.now_unix(), body: signed_body.as_bytes() })
            .expect("stripe signs any body");
        let mut req = Request::post("/v1/webhooks/gateway")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("valid request");
        req.headers_mut().extend(headers);
        app.clone().oneshot(req)
    };
    let runs = || orders.handler_runs.load(std::sync::atomic::Ordering::SeqCst);
    let paid = || orders.paid.lock().expect("not poisoned").clone();

    let first = deliver(body.clone(), &body).await.expect("infallible").status();
    r.step(format!("signed charge.succeeded delivered: HTTP {first}"));
    r.check("a validly signed webhook is accepted (200) and runs the handler", first == StatusCode::OK && runs() == 1);
    r.check("order-1008 is marked paid", paid() == ["order-1008"]);

    // The gateway did not see our 200 (a timeout on its side) and delivers again, freshly signed.
    let again = deliver(body.clone(), &body).await.expect("infallible");
    r.step(format!(
        "the gateway redelivers the same event: HTTP {} ({})",
        again.status(),
        again.headers().get(palisade::webhook::DUPLICATE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-")
    ));
    r.check(
        "the replay is deduplicated: 200 without running the handler",
        again.status() == StatusCode::OK && runs() == 1,
    );
    r.check("order-1008 is still marked paid exactly once", paid() == ["order-1008"]);

    // Someone edits a genuinely signed event in transit to mark another order paid.
    let forged_body = body.replace("order-1008", "order-6666").replace(&format!("evt_{}", charged.id), "evt_forged");
    let tampered = deliver(forged_body, &body).await.expect("infallible").status();
    r.step(format!("a body edited after signing is delivered: HTTP {tampered}"));
    r.check(
        "the tampered body is rejected (400) before the handler runs",
        tampered == StatusCode::BAD_REQUEST && runs() == 1,
    );
    r.check("order-6666 is not marked paid", !paid().iter().any(|o| o == "order-6666"));
    r.check("the gateway's ledger holds exactly one charge for order-1008", gw.charges_for("order-1008").len() == 1);
}
