//! The ledger: every effect the simulated gateway really performed.

use palisade_core::{Money, Operation};
use serde::Serialize;

/// One effect the gateway really performed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Order of execution, from 1.
    pub seq: u64,
    /// The operation.
    #[serde(rename = "op")]
    pub operation: Operation,
    /// The merchant's order reference.
    pub order_id: String,
    /// The amount moved.
    #[serde(flatten)]
    pub amount: Money,
    /// The gateway's id for the payment object.
    pub payment_id: String,
    /// The gateway idempotency key the request carried.
    pub gateway_key: Option<String>,
}
