//! `POST /v1/webhooks/gateway`: the gateway's asynchronous notifications, verified on the raw body and handled
//! effectively once.
//!
//! The gateway signs Stripe-style (`Stripe-Signature: t=…,v1=…`) with the secret in `PALISADE_WEBHOOK_SECRET`
//! (a development default when unset). Deliveries are deduplicated by the event's `id`, in Redis when the server
//! runs with `--redis`, in memory otherwise. Try it:
//!
//! ```text
//! body='{"id":"evt_1","type":"charge.succeeded","data":{"object":{"id":"ch_1","order":"o1"}}}'
//! sig=$(printf '%s' "$body" | palisade webhook sign --scheme stripe --secret whsec_palisade_dev_only)
//! curl -i localhost:8080/v1/webhooks/gateway -H "stripe-signature: $sig" -H 'content-type: application/json' -d "$body"
//! ```
//!
//! Answers: 200 `{"received":…}` when handled; 200 with `palisade-webhook-duplicate: done` for an event already
//! handled; 503 + `Retry-After` while another delivery of the event is running, or while Redis is down; 400
//! problem+json for a bad signature or a stale timestamp; 413 above 64 KiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Extension, Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use palisade::webhook::{EventId, LeaseStore, Stripe, Verifier, WebhookLayer};

/// The secret used when `PALISADE_WEBHOOK_SECRET` is unset. For local tries only.
pub const DEV_SECRET: &str = "whsec_palisade_dev_only";

/// Gateway events are a few KiB; 64 KiB matches the charges API's limit.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handler has seen, for the log line.
#[derive(Default)]
struct Handled {
    events: AtomicU64,
}

/// The webhook route. `redis` is the server's `--redis` URL: delivery records go there when given (connecting
/// lazily, so the server starts while Redis is down), in memory otherwise.
///
/// # Errors
/// When the secret or the Redis URL is unusable.
pub fn router(store: impl LeaseStore) -> anyhow::Result<Router> {
    let secret = std::env::var("PALISADE_WEBHOOK_SECRET").unwrap_or_else(|_| {
        tracing::warn!("PALISADE_WEBHOOK_SECRET is unset; webhooks are verified with the development secret");
        DEV_SECRET.to_owned()
    });
    // Several secrets may be configured during a rotation: PALISADE_WEBHOOK_SECRET="whsec_new whsec_old".
    let verifier = secret.split_whitespace().fold(Verifier::builder(Stripe), |b, s| b.secret(s)).build()?;
    let layer = WebhookLayer::builder(verifier).body_limit(BODY_LIMIT);
    let handled = Arc::new(Handled::default());
    let route = Router::new().route("/v1/webhooks/gateway", post(on_event));
    let route = route.route_layer(layer.dedup(store).build());
    Ok(route.with_state(handled))
}

async fn on_event(
    State(handled): State<Arc<Handled>>,
    Extension(id): Extension<EventId>,
    Json(event): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let n = handled.events.fetch_add(1, Ordering::Relaxed) + 1;
    let kind = event["type"].as_str().unwrap_or("unknown");
    tracing::info!(event_id = id.as_str(), kind, handled = n, "gateway webhook handled");
    (StatusCode::OK, Json(serde_json::json!({ "received": id.as_str() })))
}
