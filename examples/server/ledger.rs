//! `GET /v1/_sim/ledger`: what the simulated gateway really executed.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use palisade::sim::{GatewaySim, LedgerEntry};

/// The ledger route. Each element has `seq`, `op` (`authorize`, `capture`, `void`, `refund`, `charge`),
/// `order_id`, `amount`, `currency`, `payment_id` and `gateway_key`.
pub fn router(sim: GatewaySim) -> Router {
    Router::new().route("/v1/_sim/ledger", get(ledger)).with_state(sim)
}

async fn ledger(State(sim): State<GatewaySim>) -> Json<Vec<LedgerEntry>> {
    Json(sim.ledger())
}
