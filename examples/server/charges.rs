//! `POST /v1/charges`: authorize and capture through the simulated gateway, behind the idempotency layer.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use palisade::core::{
    CaptureRequest, ChargeRequest, Currency, GatewayKey, GatewayRequest, GatewayResponse, IdempotencyKey, Money,
    PaymentError, PaymentToken, Problem, Reference,
};
use palisade::idempotency::{HttpIdempotencyLayer, NotExecuted, gateway_key_for};
use palisade::sim::GatewaySim;
use serde::{Deserialize, Serialize};

/// The charges route with the idempotency layer around it.
pub fn router(sim: GatewaySim, idempotency: HttpIdempotencyLayer) -> Router {
    Router::new().route("/v1/charges", post(create_charge)).layer(idempotency).with_state(sim)
}

/// The request body.
#[derive(Debug, Deserialize)]
struct NewCharge {
    amount: String,
    currency: String,
    source: String,
    order_id: String,
}

/// The charge the API answers with.
#[derive(Debug, Serialize)]
struct Charge {
    id: palisade_core::GatewayId,
    object: &'static str,
    amount: String,
    currency: String,
    status: &'static str,
    order_id: String,
}

fn problem(err: &PaymentError) -> Response {
    Problem::from_error(err).into_response::<axum::body::Body>()
}

/// A validation error: a 400 marked [`NotExecuted`], so the idempotency layer keeps no record and the key stays
/// usable for the corrected request.
fn invalid(message: impl Into<String>) -> Response {
    refused(&PaymentError::invalid_request(message))
}

fn refused(err: &PaymentError) -> Response {
    let mut res = problem(err);
    res.extensions_mut().insert(NotExecuted);
    res
}

async fn create_charge(State(sim): State<GatewaySim>, key: Option<Extension<GatewayKey>>, body: Bytes) -> Response {
    let new: NewCharge = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return invalid(format!("body must be JSON with amount, currency, source and order_id: {e}")),
    };
    let currency = match Currency::from_code(&new.currency) {
        Ok(c) => c,
        Err(e) => return invalid(e.to_string()),
    };
    let amount = match Money::parse(&new.amount, currency) {
        Ok(m) => m,
        Err(e) => return invalid(e.to_string()),
    };
    let source = match PaymentToken::new(new.source) {
        Ok(t) => t,
        Err(e) => return invalid(e.to_string()),
    };
    if new.order_id.is_empty() || new.order_id.len() > 255 {
        return invalid("order_id must be 1 to 255 characters");
    }
    // Sent to the gateway exactly as given; an order id holding a card number is refused here (400).
    let order_id: Reference = match new.order_id.parse() {
        Ok(r) => r,
        Err(e) => return refused(&PaymentError::from(e)),
    };
    // The idempotency layer puts the gateway key in the extensions; the gateway deduplicates on it, which is what
    // makes re-executing a request whose first attempt ended Unknown safe.
    let auth_key = key.map_or_else(IdempotencyKey::generate, |Extension(k)| k.0);
    let capture_key = gateway_key_for(Some("capture"), &auth_key);

    let auth = ChargeRequest::new(amount, source, order_id).idempotency_key(auth_key);
    let authorized = match sim.handle(GatewayRequest::Authorize(auth)).await {
        Ok(a) => a,
        Err(e) => return problem(&e),
    };
    let capture =
        CaptureRequest { authorization_id: authorized.id.clone(), amount: None, idempotency_key: Some(capture_key) };
    match sim.handle(GatewayRequest::Capture(capture)).await {
        Ok(captured) => created(&captured, &new.order_id),
        Err(e) => problem(&e),
    }
}

fn created(c: &GatewayResponse, order_id: &str) -> Response {
    let charge = Charge {
        id: c.id.clone(),
        object: "charge",
        amount: c.amount.amount().to_string(),
        currency: c.amount.currency().code().to_owned(),
        status: "captured",
        order_id: order_id.to_owned(),
    };
    let mut res = (StatusCode::CREATED, axum::Json(charge)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/charges/{}", c.id)) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}
