//! `GET /v1/orders/{order_id}`: where an order's checkout is, read from the saga log (so any instance on the same
//! store answers the same): `{"order_id", "state", "charge_id"?}` with `state` one of `running` (steps or
//! compensations still running), `completed`, `compensated` and `failed_compensation`; 404 for an unknown order.
//!
//! `charge_id` is there whenever the capture step is done, whatever the state: for a `compensated` order it names
//! the charge that was refunded, for a `failed_compensation` one the charge whose refund is still owed. That is
//! what support and reconciliation look a payment up by, and the order has no other place to show it. Whether an
//! order is paid is `state` (`completed`), never the presence of `charge_id`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use palisade::core::{PaymentError, Problem};
use palisade_saga::{Event, Orchestrator, SagaRecord, SagaState};
use serde::Serialize;

/// The orders route, on the orchestrator's saga log.
pub fn router(orchestrator: Orchestrator) -> Router {
    Router::new().route("/v1/orders/{order_id}", get(show)).with_state(orchestrator)
}

/// An order as the API shows it.
#[derive(Debug, Serialize)]
struct Order {
    order_id: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    charge_id: Option<String>,
}

/// The API's name for a saga state: a compensation still running is `running` too (the order is not settled).
fn state(s: SagaState) -> &'static str {
    match s {
        SagaState::Completed => "completed",
        SagaState::Compensated => "compensated",
        SagaState::FailedCompensation => "failed_compensation",
        _ => "running",
    }
}

/// The capture's output: the charge id, once the capture step is done (also when the saga was compensated since:
/// the refunded charge).
fn charge_id(record: &SagaRecord) -> Option<String> {
    // The latest run's (a restarted saga's runs before it were compensated, each with keys of its own).
    record.events.iter().rev().take_while(|e| !matches!(e, Event::Restarted { .. })).find_map(|e| match e {
        Event::StepDone { step, output } if step == "capture" => output.as_str().map(str::to_owned),
        _ => None,
    })
}

async fn show(State(orchestrator): State<Orchestrator>, order_id: Result<Path<String>, PathRejection>) -> Response {
    // A path segment that does not decode (`%ff`) is refused as the server's other errors are, not with axum's
    // plain-text rejection; the segment is not echoed.
    let Ok(Path(order_id)) = order_id else {
        let err = PaymentError::invalid_request("the order id in the path must be percent-encoded UTF-8");
        return Problem::from_error(&err).into_response::<axum::body::Body>();
    };
    match orchestrator.get(&order_id).await {
        Ok(Some(record)) => {
            let order = Order { charge_id: charge_id(&record), state: state(record.state), order_id };
            Json(order).into_response()
        }
        Ok(None) => Problem::new(StatusCode::NOT_FOUND, "not_found", "not found", format!("no order {order_id}"))
            .into_response::<axum::body::Body>(),
        Err(e) => Problem::from_error(&PaymentError::store_unavailable(format!("the saga log did not answer: {e}")))
            .into_response::<axum::body::Body>(),
    }
}
