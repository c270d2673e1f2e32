//! A simulated Stripe-style payment gateway: a cheap-to-clone `tower::Service<GatewayRequest>` that behaves like
//! the real thing where it matters for money, and keeps a ledger of what it really did.
//!
//! - **Magic tokens**: `tok_visa` (and any other well-formed token) succeeds; `tok_chargeDeclined`,
//!   `tok_insufficientFunds`, `tok_fraudulent`, `tok_authenticationRequired` fail as their names say.
//! - **Idempotency like Stripe**: the same gateway key with the same parameters returns the stored result, errors
//!   included; different parameters are refused ([`PaymentError::IdempotencyConflict`](palisade_core::PaymentError::IdempotencyConflict)); the same key while the
//!   first request is still being processed is refused ([`PaymentError::IdempotencyInFlight`](palisade_core::PaymentError::IdempotencyInFlight)).
//! - **Faults**, seeded and reproducible, or scripted call by call: fail before commit (`Retriable`), **fail after
//!   commit** (the charge is in the ledger but the caller sees a timeout: `Unknown`), timeout without commit, 429
//!   with `retry_after`, 503, 5xx, and latency.
//! - **A ledger** of every effect, so a test can assert "exactly one charge for this order".
//! - **Over a real socket** (feature `http`): [`SimServer`] serves the simulator as a Stripe-like JSON API whose
//!   faults happen on the wire (a lost response really closes the connection), and [`HttpGateway`] is the gateway
//!   `Service` that calls it from another process (`palisade sim serve`; routes and shapes in `docs/sim.md`).
//!
//! ```
//! use palisade_core::*;
//! use palisade_sim::{Fault, GatewaySim};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut sim = GatewaySim::new();
//! sim.script(Operation::Charge, [Fault::FailAfterCommit]);
//! let key = IdempotencyKey::new("order-1-charge").unwrap();
//! let req = GatewayRequest::Charge(
//!     ChargeRequest::new(
//!         Money::parse("10.00", Currency::USD).unwrap(),
//!         PaymentToken::new("tok_visa").unwrap(),
//!         "order-1".parse().unwrap(),
//!     )
//!         .idempotency_key(key),
//! );
//! // The response is lost, but the charge happened ...
//! let first = sim.ready().await.unwrap().call(req.clone()).await;
//! assert!(matches!(first, Err(PaymentError::GatewayTimeout { .. })));
//! assert_eq!(sim.charges_for("order-1").len(), 1);
//! // ... and a retry with the same key gets the stored result without charging again.
//! let second = sim.ready().await.unwrap().call(req).await.unwrap();
//! assert_eq!(second.operation, Operation::Charge);
//! assert_eq!(sim.charges_for("order-1").len(), 1);
//! # }
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod faults;
#[cfg(feature = "http")]
pub mod http;
mod ledger;
mod service;

pub use faults::{Fault, FaultPlan, Latency};
pub use ledger::LedgerEntry;
pub use service::{GatewaySim, SimBuilder};

#[cfg(feature = "http")]
pub use crate::http::{HttpFault, HttpGateway, SimHandle, SimServer};
