//! The charges API, assembled: routes, the idempotency layer and its settings. `main.rs` adds the listener.

use axum::Router;
use palisade::idempotency::{HttpIdempotencyLayer, IdempotencyStore, MissingKey};
use palisade::sim::GatewaySim;

use crate::{charges, ledger};

/// The largest request body the charges API accepts (and the idempotency layer buffers): charge requests are a
/// few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The idempotency layer the API runs with: a key is required (400 without one), bodies up to [`BODY_LIMIT`],
/// POST and PATCH, 24 h retention, 90 s lease.
pub fn idempotency(store: impl IdempotencyStore) -> HttpIdempotencyLayer {
    HttpIdempotencyLayer::builder().store(store).missing_key(MissingKey::Reject).body_limit(BODY_LIMIT).build()
}

/// `POST /v1/charges` behind the idempotency layer, and `GET /v1/_sim/ledger`.
pub fn router(sim: GatewaySim, store: impl IdempotencyStore) -> Router {
    Router::new().merge(charges::router(sim.clone(), idempotency(store))).merge(ledger::router(sim))
}
