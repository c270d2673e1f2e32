//! The charges API, assembled: routes, the idempotency layer and its settings. `main.rs` adds the listener.

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use palisade::core::{PaymentError, Problem};
use palisade::idempotency::{HttpIdempotencyLayer, LeaseStore, MissingKey};
use palisade::sim::GatewaySim;

use crate::{charges, ledger};

/// The largest request body the charges API accepts (and the idempotency layer buffers): charge requests are a
/// few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The caller's account: when present it scopes the idempotency key, so two accounts sending the same key never
/// share a record (nor receive each other's charge). Without it a key is unscoped, as before the header existed.
///
/// This example trusts the header because it has no authentication. A real API derives the scope from the
/// authenticated caller (the account id behind the API key or the token the auth layer verified, put into the
/// request's extensions) and never from a header the client chooses.
pub const ACCOUNT_HEADER: HeaderName = HeaderName::from_static("x-account");

/// Longest account id accepted in [`ACCOUNT_HEADER`].
pub const MAX_ACCOUNT_LEN: usize = 64;

/// The idempotency layer the API runs with: a key is required (400 without one), scoped by [`ACCOUNT_HEADER`],
/// bodies up to [`BODY_LIMIT`], POST and PATCH, 24 h retention, the layer's default lease (renewed while a charge
/// runs).
pub fn idempotency(store: impl LeaseStore) -> HttpIdempotencyLayer {
    HttpIdempotencyLayer::builder()
        .store(store)
        .missing_key(MissingKey::Reject)
        .body_limit(BODY_LIMIT)
        .scope_header(ACCOUNT_HEADER)
        .build()
}

/// `POST /v1/charges` behind the idempotency layer, and `GET /v1/_sim/ledger`; a malformed [`ACCOUNT_HEADER`]
/// is refused (400) before anything else.
pub fn router(sim: GatewaySim, store: impl LeaseStore) -> Router {
    router_with_orders(sim, store, None)
}

/// [`router`], with the charges handler writing `orders` rows and completing the idempotency record in the same
/// transaction when `orders` is given (the server on PostgreSQL: `store` must be the orders' `PostgresStore`).
pub fn router_with_orders(sim: GatewaySim, store: impl LeaseStore, orders: Option<charges::Orders>) -> Router {
    Router::new()
        .merge(charges::router(sim.clone(), idempotency(store), orders))
        .merge(ledger::router(sim))
        .layer(middleware::from_fn(valid_account))
}

/// Refuses a request whose account header is not 1 to [`MAX_ACCOUNT_LEN`] visible ASCII characters (or is sent
/// twice): such a request must not fall back to the unscoped keys.
pub async fn valid_account(req: Request, next: Next) -> Response {
    let mut values = req.headers().get_all(&ACCOUNT_HEADER).iter();
    if let Some(first) = values.next() {
        let ok = values.next().is_none()
            && (1..=MAX_ACCOUNT_LEN).contains(&first.len())
            && first.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if !ok {
            let err = PaymentError::invalid_request(format!(
                "{ACCOUNT_HEADER} must be one header of 1 to {MAX_ACCOUNT_LEN} visible ASCII characters"
            ));
            return Problem::from_error(&err).into_response::<axum::body::Body>().into_response();
        }
    }
    next.run(req).await
}
