//! `POST /v1/charges`: authorize and capture through the simulated gateway, behind the idempotency layer.
//!
//! On PostgreSQL (`--postgres`) a captured charge also writes an `orders` row, and the idempotency record is
//! completed in the same transaction ([`TxCompletion`]): "the order is paid" and "this key's answer is stored"
//! commit together or not at all. On memory or Redis there is no orders table and the layer stores the answer
//! after the handler, as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use palisade::core::{
    CaptureRequest, ChargeRequest, Currency, GatewayKey, GatewayRequest, GatewayResponse, IdempotencyKey, Money,
    PaymentError, PaymentToken, Problem, Reference,
};
use palisade::idempotency::{HttpIdempotencyLayer, NotExecuted, PostgresStore, TxCompletion, gateway_key_for};
use palisade::sim::GatewaySim;
use serde::{Deserialize, Serialize};

/// The charges route with the idempotency layer around it; `orders` when the server runs on PostgreSQL.
pub fn router(sim: GatewaySim, idempotency: HttpIdempotencyLayer, orders: Option<Orders>) -> Router {
    Router::new().route("/v1/charges", post(create_charge)).layer(idempotency).with_state(Charges { sim, orders })
}

/// The handler's state.
#[derive(Clone)]
struct Charges {
    sim: GatewaySim,
    orders: Option<Orders>,
}

/// The shop's `orders` table, in the database of the idempotency store (which must be the store the idempotency
/// layer runs on): one row per captured charge, written in the transaction that completes the idempotency record.
// Used by main.rs and tests/server_postgres.rs, not by every test that includes this file.
#[allow(dead_code)]
#[derive(Clone)]
pub struct Orders {
    store: PostgresStore,
    table: String,
    crash_after_insert: Arc<AtomicBool>,
}

#[allow(dead_code)]
impl Orders {
    /// The orders table next to the store's tables: `<schema>.orders` when the store's prefix names a schema
    /// (`payments.palisade_` gives `payments.orders`), `orders` otherwise. Creates it when missing: `id`,
    /// `idempotency_key` (as the client sent it), `account` (the `X-Account` scope, empty when unscoped),
    /// `order_ref`, `amount`, `currency`, `gateway_charge_id` (unique) and `created_at`.
    ///
    /// # Errors
    /// When the table cannot be created (PostgreSQL unreachable, no `CREATE` privilege).
    pub async fn create(store: PostgresStore, prefix: Option<&str>) -> anyhow::Result<Orders> {
        let table = match prefix.and_then(|p| p.split_once('.')) {
            Some((schema, _)) => format!("{schema}.orders"),
            None => "orders".to_owned(),
        };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 id                bigserial PRIMARY KEY,
                 idempotency_key   text NOT NULL,
                 account           text NOT NULL DEFAULT '',
                 order_ref         text NOT NULL,
                 amount            numeric NOT NULL,
                 currency          text NOT NULL,
                 gateway_charge_id text NOT NULL UNIQUE,
                 created_at        timestamptz NOT NULL DEFAULT now()
             )"
        );
        sqlx::raw_sql(&ddl)
            .execute(store.pool())
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the orders table {table}: {e}"))?;
        Ok(Orders { store, table, crash_after_insert: Arc::new(AtomicBool::new(false)) })
    }

    /// The table's name (schema-qualified when the store's prefix is).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Test hook: the next charge's transaction is dropped after the order row is written and before the record
    /// is completed, as if the process died between the two writes; that request is answered 503. Only tests
    /// call this (the server has no flag or route for it).
    pub fn crash_next_after_insert(&self) {
        self.crash_after_insert.store(true, Ordering::SeqCst);
    }
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

async fn create_charge(
    State(state): State<Charges>,
    key: Option<Extension<GatewayKey>>,
    done: Option<Extension<TxCompletion>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sim = &state.sim;
    let new: NewCharge = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return invalid(format!("body must be JSON with amount, currency, source and order_id: {e}")),
    };
    let currency = match Currency::from_code(&new.currency) {
        Ok(c) => c,
        Err(e) => return invalid(e.to_string()),
    };
    let amount = match Money::parse(&new.amount, currency) {
        Ok(m) => match m.require_positive() {
            Ok(()) => m,
            Err(e) => return refused(&e),
        },
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
    let captured = match sim.handle(GatewayRequest::Capture(capture)).await {
        Ok(captured) => captured,
        Err(e) => return problem(&e),
    };
    let answer = created(&captured, &new.order_id);
    match (&state.orders, done) {
        // On PostgreSQL: the order row and the idempotency record in one transaction.
        (Some(orders), Some(Extension(done))) => {
            let order = NewOrder { headers: &headers, order_id: &new.order_id, charge: &captured };
            match save_order(orders, &done, &order, &answer).await {
                Ok(()) => answer.into_response(),
                Err(res) => res,
            }
        }
        _ => answer.into_response(),
    }
}

/// A 201 with the charge, as parts: the transactional path stores exactly what the client receives.
struct Created {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl IntoResponse for Created {
    fn into_response(self) -> Response {
        (self.status, self.headers, self.body).into_response()
    }
}

fn created(c: &GatewayResponse, order_id: &str) -> Created {
    let charge = Charge {
        id: c.id.clone(),
        object: "charge",
        amount: c.amount.amount().to_string(),
        currency: c.amount.currency().code().to_owned(),
        status: "captured",
        order_id: order_id.to_owned(),
    };
    let body = Bytes::from(serde_json::to_vec(&charge).unwrap_or_default());
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/charges/{}", c.id)) {
        headers.insert(header::LOCATION, v);
    }
    Created { status: StatusCode::CREATED, headers, body }
}

/// What the order row is made of.
struct NewOrder<'a> {
    headers: &'a HeaderMap,
    order_id: &'a str,
    charge: &'a GatewayResponse,
}

/// Writes the order row and completes the idempotency record with `answer` in one transaction, then commits.
/// On any failure the transaction rolls back (the layer then releases the claim, so a retry executes again and
/// the gateway, deduplicating on the same gateway key, does not charge twice) and the error is the answer.
async fn save_order(
    orders: &Orders,
    done: &TxCompletion,
    order: &NewOrder<'_>,
    answer: &Created,
) -> Result<(), Response> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "{what}; the charge's transaction rolled back");
        problem(&PaymentError::store_unavailable(format!("{what}; retry with the same Idempotency-Key")))
    };
    let header = |name: &str| order.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut tx = orders.store.pool().begin().await.map_err(|e| unavailable("the order database is unavailable", &e))?;
    sqlx::query(&format!(
        "INSERT INTO {} (idempotency_key, account, order_ref, amount, currency, gateway_charge_id)
         VALUES ($1, $2, $3, $4::numeric, $5, $6)",
        orders.table
    ))
    .bind(header("idempotency-key"))
    .bind(header(crate::app::ACCOUNT_HEADER.as_str()))
    .bind(order.order_id)
    .bind(order.charge.amount.amount().to_string())
    .bind(order.charge.amount.currency().code())
    .bind(order.charge.id.to_string())
    .execute(&mut *tx)
    .await
    .map_err(|e| unavailable("the order could not be written", &e))?;
    if orders.crash_after_insert.swap(false, Ordering::SeqCst) {
        // The test hook: gone between the two writes. Dropping the transaction rolls the order back.
        drop(tx);
        return Err(problem(&PaymentError::store_unavailable("simulated crash between the order and the record")));
    }
    let completed = done
        .complete_in(&orders.store, &mut tx, answer.status, &answer.headers, &answer.body)
        .await
        .map_err(|e| unavailable("the idempotency record could not be completed", &e))?;
    if !completed {
        // Our lease ended and another execution took the key over: it owns the order.
        drop(tx);
        let err = PaymentError::store_unavailable("this request's claim on its Idempotency-Key was taken over");
        return Err(problem(&err));
    }
    tx.commit().await.map_err(|e| unavailable("the order could not be committed", &e))
}
