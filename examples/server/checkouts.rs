//! `POST /v1/checkouts`: the checkout saga (reserve inventory → authorize → capture → create shipment) through
//! the whole stack, behind the HTTP idempotency layer.
//!
//! The order of the stack is the point: **Idempotency** (the HTTP layer around the route: a retry with the same
//! key is answered from the store and runs nothing) → **Fraud** (screens the authorization before any gateway call)
//! → **CircuitBreaker** → **Retry** → **RateLimit** → **Audit** → gateway. The saga's step keys are the gateway
//! idempotency keys, so a step run again (a retry, a recovery after a crash) cannot charge twice.
//!
//! Answers, each stored and replayed by the idempotency layer: 201 with the order when the saga completed; a
//! decline 402; a fraud block 402 `fraud_blocked`; any other compensated saga 409 `checkout_compensated` with the
//! reason (the reservation released, the authorization voided or the capture refunded); a compensation that
//! failed 500 `saga_compensation_failed` (not stored: the saga waits for `palisade saga retry-compensation`).
//! A checkout compensated only because the gateway (or the stock store) could not be reached, before anything was
//! authorized, is 503 `gateway_unavailable` with `Retry-After` (not stored): nothing of it is left, and the retry
//! of the same request restarts the saga as a new run with keys of its own ([`retry_later`],
//! [`Orchestrator::restart`]), so an outage does not spend the order on a 409.
//!
//! The saga runs on a task of its own, so a client that gives up does not stop it; the shop counts those tasks,
//! and a shutdown waits for them after the requests in flight ([`Shop::wait_for_sagas`]). A retry of the request that
//! started a checkout (same account and key) whose answer was lost waits up to [`CHECKOUT_WAIT`] for the checkout
//! and answers with its result, or 409 `checkout_in_progress` with `Retry-After` (not stored); another key for an
//! order that exists is 409 `order_exists` (not stored). Compensations that had to find out what a lost answer did
//! write a payment note ([`Inventory::note_payment`]) that reconciliation reads (docs/reliability.md).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use palisade::Stack;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::backoff::{Backoff, Jitter};
use palisade::core::{
    CaptureRequest, ChargeRequest, Currency, ErrorKind, GatewayRequest, GatewayResponse, HttpClassifier, Money,
    Outcome, PaymentError, PaymentToken, Problem, Reference, RefundRequest, VoidRequest,
};
use palisade::idempotency::{
    Claim, Fingerprint, HttpIdempotencyLayer, LeaseStore, MissingKey, NotExecuted, Payload, Record,
};
use palisade::rate_limit::RateLimitLayer;
use palisade::redaction::AuditLayer;
use palisade::retry::RetryLayer;
use palisade_fraud::{Action, Field, FraudEngine, FraudLayer, Rule};
use palisade_saga::{Event, Orchestrator, Saga, SagaError, SagaLog, SagaRecord, SagaReport, SagaState, Step, StepCx};
use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

use crate::app;

/// The typed stack below idempotency, boxed.
pub type GatewayService = BoxCloneSyncService<GatewayRequest, GatewayResponse, PaymentError>;

/// The gateway the saga's steps call, three ways over one stack (one retry, rate limit and audit; one breaker):
/// - `screened`: the fraud screen, the circuit breaker, then the rest, for the authorization, the one request a
///   screen is for;
/// - `unscreened`: the breaker and the rest, for the capture;
/// - `undo`: retry, rate limit and audit only, for every compensation.
///
/// A compensation is never screened: one that asks the gateway what an authorization whose answer was lost did
/// re-sends that authorization under its key, and a rule reloaded since (the email blocklisted meanwhile), a
/// velocity count that grew or a velocity store that is down (fail-closed) would block it, leaving the
/// authorization, which may exist, on the card. Nor is it refused by the breaker: compensations are few, must
/// happen, and retry on their own backoff ([`GATEWAY_COMPENSATION_BACKOFF`]); behind a breaker whose open time
/// had doubled past their retries (the chaos run saw one open for minutes while its probes kept failing), they
/// ended in `failed_compensation` without the gateway being asked. They neither count in nor wait for the
/// breaker's view of the gateway's health.
#[derive(Clone)]
pub struct Gateway {
    /// Through the fraud screen and the breaker.
    pub screened: GatewayService,
    /// Through the breaker, not the screen.
    pub unscreened: GatewayService,
    /// Neither screened nor behind the breaker.
    pub undo: GatewayService,
}

// Used by main.rs only (the tests that include this file do not use it).
#[allow(dead_code)]
impl Gateway {
    /// `service` for all three (no layer at all: `--bare`, the baseline of bench/http).
    pub fn bare(service: GatewayService) -> Gateway {
        Gateway { screened: service.clone(), unscreened: service.clone(), undo: service }
    }
}

/// The saga definition's name (in the saga log, and what recovery finds it by).
pub const SAGA_NAME: &str = "checkout";

/// Emails the built-in fraud rules block (compared case-insensitively).
pub const BLOCKED_EMAILS: &[&str] = &["fraud@example.com"];

/// A sku the warehouse never has: reserving it fails for good, so the saga is compensated (409).
pub const OUT_OF_STOCK_SKU: &str = "sku_out_of_stock";

/// The fraud engine of the example: a blocklist of emails ([`BLOCKED_EMAILS`]) and a block above
/// [`AMOUNT_LIMIT_MINOR`] (10,000.00) in USD and EUR. Both are blocks (402 `fraud_blocked`, nothing reaches the
/// gateway): `Rule::amount_over` reviews by default, and this example has no review queue, so a review would let
/// the charge through.
pub fn fraud_engine() -> FraudEngine {
    let blocklist = Rule::blocklist("blocked_email", Field::Email, BLOCKED_EMAILS.iter().copied());
    let big = Rule::amount_over(
        "amount_over_limit",
        [Currency::USD, Currency::EUR].map(|c| Money::from_minor(AMOUNT_LIMIT_MINOR, c)),
    )
    .action(Action::Block);
    FraudEngine::builder().rule(blocklist).rule(big).build()
}

/// The largest checkout the example's fraud rules let through, in minor units of USD or EUR: 10,000.00. Above it,
/// `amount_over_limit` blocks.
pub const AMOUNT_LIMIT_MINOR: i64 = 1_000_000;

/// Gateway calls per second the checkouts of one instance may make, unless `--gateway-rate` says otherwise: a
/// gateway's contracted rate is typically of this order, and a limit kept here turns a burst into a short wait
/// (up to [`palisade::rate_limit::DEFAULT_MAX_WAIT`], then a `rate_limited` refusal that retry and the saga's
/// own step retries absorb) instead of the gateway's own 429s. A saga's step waits rather than being refused at
/// once: a refused authorization is retried anyway, so refusing only spends the retry budget on a burst.
pub const DEFAULT_GATEWAY_RATE: u32 = 1_000;

/// [`gateway_stack_at`] with [`DEFAULT_GATEWAY_RATE`].
///
/// # Errors
/// Only for an invalid layer configuration (a bug here).
#[allow(dead_code)] // the tests' (main.rs takes the rate from --gateway-rate)
pub fn gateway_stack<S>(gateway: S) -> anyhow::Result<Gateway>
where
    S: tower::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    gateway_stack_at(gateway, DEFAULT_GATEWAY_RATE)
}

/// [`gateway_stack_with`] and the example's [`fraud_engine`].
///
/// # Errors
/// Only for an invalid layer configuration (a bug here), such as a rate of 0.
pub fn gateway_stack_at<S>(gateway: S, calls_per_second: u32) -> anyhow::Result<Gateway>
where
    S: tower::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    gateway_stack_with(gateway, calls_per_second, fraud_engine())
}

/// Fraud (`engine`) → CircuitBreaker → Retry → RateLimit (`calls_per_second`) → Audit around `gateway` (the
/// in-process simulator or an HTTP client of one): the stack's order below idempotency, which the HTTP layer
/// around the route provides; and the same stack without the screen, and without the screen and the breaker, for
/// what is not screened or not refused (see [`Gateway`]).
///
/// # Errors
/// Only for an invalid layer configuration (a bug here), such as a rate of 0.
pub fn gateway_stack_with<S>(gateway: S, calls_per_second: u32, engine: FraudEngine) -> anyhow::Result<Gateway>
where
    S: tower::Service<GatewayRequest, Response = GatewayResponse, Error = PaymentError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    // palisade::Stack owns the order below the breaker; the idempotency position is left empty here because the
    // HTTP layer around the route holds it. Breaker and rate limit keep their state per instance, shared by the
    // three services. The breaker and the screen go around the stack's service, the places `Stack::circuit_breaker`
    // and `Stack::fraud` put them.
    let svc = Stack::new()
        .retry(RetryLayer::builder().max_attempts(3))
        .rate_limit(
            RateLimitLayer::builder()
                .rate(calls_per_second, Duration::from_secs(1))
                .wait(palisade::rate_limit::DEFAULT_MAX_WAIT),
        )
        .audit(AuditLayer::new())
        .service(gateway)
        .map_err(|e| anyhow::anyhow!("the gateway stack: {e}"))?;
    let undo = BoxCloneSyncService::new(svc);
    let breaker = CircuitBreakerLayer::builder().build().map_err(|e| anyhow::anyhow!("the circuit breaker: {e}"))?;
    let unscreened = BoxCloneSyncService::new(breaker.layer(undo.clone()));
    let screened = BoxCloneSyncService::new(FraudLayer::new(engine).layer(unscreened.clone()));
    Ok(Gateway { screened, unscreened, undo })
}

/// Stock holds (and the payment notes of compensated checkouts), kept in the idempotency store (memory, Redis or PostgreSQL: whatever `--redis` / `--postgres`
/// chose), so every instance on that store sees them. A hold is a record under the reserve step's key and its
/// release another record under the same key: both written insert-if-absent, so running the step or its
/// compensation again (a retry, a recovery) holds or releases nothing more.
#[derive(Clone)]
pub struct Inventory {
    store: Arc<dyn LeaseStore>,
}

/// How long a hold's records are kept.
const HOLD_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long one write of a hold may stay claimed before another attempt takes it over.
const HOLD_LEASE: Duration = Duration::from_secs(10);

// Some functions are used by main.rs or the tests only.
#[allow(dead_code)]
impl Inventory {
    /// Holds on `store`.
    pub fn new(store: Arc<dyn LeaseStore>) -> Self {
        Inventory { store }
    }

    fn hold_key(key: &str) -> String {
        format!("inventory:hold:{key}")
    }

    fn release_key(key: &str) -> String {
        format!("inventory:release:{key}")
    }

    /// Writes `value` under `record` once: done when it is there already.
    ///
    /// A write claimed by an attempt that died before completing it (an instance killed between the claim and the
    /// completion) stays claimed until its lease ends: the write waits for that (at most [`HOLD_LEASE`] and a
    /// little more) instead of failing the step, which would compensate a checkout only because its previous
    /// owner died at the wrong instant.
    async fn write_once(&self, record: &str, value: &[u8]) -> Result<(), PaymentError> {
        let unavailable = |e: &dyn std::fmt::Display| PaymentError::store_unavailable(format!("inventory: {e}"));
        let fp = Fingerprint::of_bytes(value);
        let give_up = tokio::time::Instant::now() + HOLD_LEASE + Duration::from_secs(2);
        loop {
            match self.store.claim(record, &fp, HOLD_LEASE, HOLD_TTL).await.map_err(|e| unavailable(&e))? {
                Claim::Acquired { hold, .. } => {
                    let payload = Payload::from(Bytes::copy_from_slice(value));
                    return if self.store.complete(&hold, payload, HOLD_TTL).await.map_err(|e| unavailable(&e))? {
                        Ok(())
                    } else {
                        Err(unavailable(&"another attempt took the hold over"))
                    };
                }
                Claim::Done { .. } | Claim::Mismatch => return Ok(()),
                Claim::Held { lease_remaining } if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(lease_remaining.clamp(Duration::from_millis(10), Duration::from_secs(1))).await;
                }
                _ => return Err(unavailable(&"another attempt is writing the hold")),
            }
        }
    }

    /// Holds `items` under `key` (the reserve step's key).
    ///
    /// # Errors
    /// Terminal when a sku is out of stock ([`OUT_OF_STOCK_SKU`]); retriable when the store does not answer.
    pub async fn reserve(&self, key: &str, items: &[Item]) -> Result<(), PaymentError> {
        if let Some(item) = items.iter().find(|i| i.sku == OUT_OF_STOCK_SKU) {
            return Err(PaymentError::invalid_request(format!("{} is out of stock", item.sku)));
        }
        let value = serde_json::to_vec(items).unwrap_or_default();
        self.write_once(&Inventory::hold_key(key), &value).await
    }

    /// Releases the hold under `key`.
    ///
    /// # Errors
    /// Retriable when the store does not answer.
    pub async fn release(&self, key: &str) -> Result<(), PaymentError> {
        self.write_once(&Inventory::release_key(key), b"released").await
    }

    fn payment_key(order: &str) -> String {
        format!("inventory:payment:{order}")
    }

    /// Records how the payment of the compensated checkout `order` ended: `voided:<authorization>`,
    /// `refunded:<authorization>` or `none` (nothing was authorized). Written by the compensations once they know
    /// (also when they had to find out because an answer was lost), before the saga records them done; the first
    /// note stays. The saga log alone cannot tell a void from a refund, nor name an authorization whose answer was
    /// lost; reconciliation needs both.
    ///
    /// # Errors
    /// Retriable when the store does not answer.
    pub async fn note_payment(&self, order: &str, note: &str) -> Result<(), PaymentError> {
        self.write_once(&Inventory::payment_key(order), note.as_bytes()).await
    }

    /// The note [`note_payment`](Self::note_payment) wrote for `order`, if any.
    ///
    /// # Errors
    /// When the store does not answer.
    pub async fn payment_note(&self, order: &str) -> Result<Option<String>, PaymentError> {
        let record = self
            .store
            .get(&Inventory::payment_key(order))
            .await
            .map_err(|e| PaymentError::store_unavailable(format!("inventory: {e}")))?;
        Ok(match record {
            Some(Record::Done { response, .. }) => Some(String::from_utf8_lossy(&response.to_bytes()).into_owned()),
            _ => None,
        })
    }

    /// True while the hold under `key` exists and is not released.
    ///
    /// # Errors
    /// When the store does not answer.
    pub async fn is_held(&self, key: &str) -> Result<bool, PaymentError> {
        let get = |k: String| async move {
            self.store.get(&k).await.map_err(|e| PaymentError::store_unavailable(format!("inventory: {e}")))
        };
        Ok(get(Inventory::hold_key(key)).await?.is_some() && get(Inventory::release_key(key)).await?.is_none())
    }
}

/// One line of the order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The product: an identifier ([`is_identifier`], at most [`MAX_SKU_LEN`] characters), never card data.
    pub sku: String,
    /// How many.
    pub qty: u32,
}

/// Longest `order_id`.
pub const MAX_ORDER_ID_LEN: usize = 255;

/// Longest `items[].sku`: product codes are short; a longer one is more likely something pasted into the field.
pub const MAX_SKU_LEN: usize = 64;

/// True when `s` is 1 to `max` characters of `[A-Za-z0-9_.:-]`, is not `.` or `..`, and holds no card number.
///
/// Order ids and skus are identifiers: they end up in log lines, in the saga log and the stock holds (in clear),
/// in storage keys, and the order id in the `Location` header and the `/v1/orders/{order_id}` path. A control
/// character would forge log lines, `/`, `?`, `#` or a dot segment would make `Location` name another resource,
/// and a card number would be stored in clear; so anything but this charset is refused (400) rather than escaped
/// here and unescaped there. What the chaos run (`chaos-<seed>-<n>`), bench/http (`o-<run>-<thread>-<n>`) and the
/// tests send fits.
pub fn is_identifier(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        && s != "."
        && s != ".."
        && !palisade::core::card::contains_card_like(s)
}

/// The request body, and the saga's context (stored in the saga log as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkout {
    /// The order (also the saga's id): an identifier ([`is_identifier`], at most [`MAX_ORDER_ID_LEN`]
    /// characters).
    pub order_id: String,
    /// Decimal amount, `"12.34"`.
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The payment token.
    pub source: String,
    /// The customer's email (screened by the fraud rules).
    pub email: String,
    /// What to reserve.
    pub items: Vec<Item>,
    /// Test switch: the carrier refuses the shipment, so the saga compensates (refund, release).
    #[serde(default)]
    pub fail_shipment: bool,
    /// The request that started the checkout (its account and `Idempotency-Key`), set by the server from the
    /// headers, never taken from the body: a retry of that request whose first answer was lost (the client gave
    /// up, the instance died) is answered with this checkout's result instead of "order exists".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

impl Checkout {
    fn money(&self) -> Result<Money, PaymentError> {
        let currency = Currency::from_code(&self.currency).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
        Money::parse(&self.amount, currency).map_err(|e| PaymentError::invalid_request(e.to_string()))
    }

    fn validate(&self) -> Result<(), PaymentError> {
        // Refused here, before stock is held: the gateway would refuse it after, and the order would be spent on a
        // compensated saga.
        self.money()?.require_positive()?;
        PaymentToken::new(self.source.clone()).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
        // Refused with a message that never echoes the value: it may hold card data or control characters.
        if !is_identifier(&self.order_id, MAX_ORDER_ID_LEN) {
            return Err(PaymentError::invalid_request(format!(
                "order_id must be 1 to {MAX_ORDER_ID_LEN} characters of A-Z a-z 0-9 _ . : - (not . or ..), and no card number"
            )));
        }
        self.order_id.parse::<Reference>().map_err(PaymentError::from)?;
        Reference::new(self.email.clone()).map_err(PaymentError::from)?;
        if self.items.is_empty() || self.items.iter().any(|i| i.qty == 0) {
            return Err(PaymentError::invalid_request("items must name at least one sku, each with qty >= 1"));
        }
        if let Some(n) = self.items.iter().position(|i| !is_identifier(&i.sku, MAX_SKU_LEN)) {
            return Err(PaymentError::invalid_request(format!(
                "items[{n}].sku must be 1 to {MAX_SKU_LEN} characters of A-Z a-z 0-9 _ . : -, and no card number"
            )));
        }
        Ok(())
    }
}

/// Attempts of a void or refund: 12, with [`GATEWAY_COMPENSATION_BACKOFF`] between them, at least a minute in
/// all. The saga's defaults (5 attempts from 200 ms) give up within about 3 s, so a gateway outage of a few
/// seconds, or a circuit breaker open for its 30 s, turned every compensation that ran meanwhile into
/// `failed_compensation` (the chaos run found it): money held until someone retries by hand.
pub const GATEWAY_COMPENSATION_ATTEMPTS: u32 = 12;

/// 500 ms doubling to 20 s, never less than half of that (equal jitter): about 65 to 130 s over
/// [`GATEWAY_COMPENSATION_ATTEMPTS`], past the circuit breaker's open duration and its half-open probes.
pub const GATEWAY_COMPENSATION_BACKOFF: Backoff =
    Backoff { base: Duration::from_millis(500), max: Duration::from_secs(20), factor: 2.0, jitter: Jitter::Equal };

/// The authorization of a checkout, under the authorize step's key (in its compensation too: the same request
/// under the same key is answered with what the gateway did).
fn authorization(cx: &StepCx<Checkout>) -> Result<ChargeRequest, PaymentError> {
    let c = cx.context();
    let token = PaymentToken::new(c.source.clone()).map_err(|e| PaymentError::invalid_request(e.to_string()))?;
    let order: Reference = c.order_id.parse().map_err(PaymentError::from)?;
    Ok(ChargeRequest::new(c.money()?, token, order)
        .meta("email", Reference::new(c.email.clone()).map_err(PaymentError::from)?)
        .idempotency_key(cx.key_of("authorize")))
}

/// Refunds the captured `payment` in full under the capture's compensation key (the capture's compensation and
/// the authorization's, when it finds the authorization captured, send this same request), and notes it.
async fn refund(
    gw: &GatewayService,
    inv: &Inventory,
    cx: &StepCx<Checkout>,
    payment: &str,
) -> Result<(), PaymentError> {
    let refund = RefundRequest {
        payment_id: payment.into(),
        amount: Some(cx.context().money()?),
        idempotency_key: Some(cx.compensation_key_of("capture")),
    };
    gw.clone().oneshot(GatewayRequest::Refund(refund)).await?;
    inv.note_payment(cx.saga_id(), &format!("refunded:{payment}")).await
}

/// The checkout saga's definition: reserve → authorize → capture → ship, undone by release, void (only when
/// nothing was captured) and refund. A step whose answer was lost is compensated too (with no output): the
/// authorization's compensation asks the gateway again under the step key and voids what it authorized, or
/// refunds it when it turns out captured.
pub fn checkout_saga(gateway: &Gateway, inventory: &Inventory) -> Saga<Checkout> {
    let inv = inventory.clone();
    let reserve = Step::<Checkout>::new("reserve", move |cx| {
        let inv = inv.clone();
        async move {
            inv.reserve(cx.key().as_str(), &cx.context().items).await?;
            Ok(format!("hold_{}", cx.saga_id()))
        }
    });
    let inv = inventory.clone();
    let reserve = reserve.compensate(move |cx, _hold| {
        let inv = inv.clone();
        async move { inv.release(cx.key().as_str()).await }
    });

    let gw = gateway.screened.clone();
    let authorize = Step::<Checkout>::new("authorize", move |cx| {
        let gw = gw.clone();
        async move {
            let res = gw.oneshot(GatewayRequest::Authorize(authorization(&cx)?)).await?;
            Ok(res.id.to_string())
        }
    });
    // Neither screened nor behind the breaker: see `Gateway`.
    let (gw, inv) = (gateway.undo.clone(), inventory.clone());
    let authorize = authorize.compensate(move |cx, auth| {
        let (gw, inv) = (gw.clone(), inv.clone());
        async move {
            if cx.output::<String>("capture").is_some() {
                // Captured: the capture's refund gives the money back; a captured authorization cannot be voided.
                return Ok(());
            }
            let auth = match auth.as_str() {
                Some(auth) => auth.to_owned(),
                // Null: the authorization's answer was lost, so it may exist. Find out by its step key: the
                // gateway answers the same request with what it did (or does it now), and that is voided below.
                None => match gw.clone().oneshot(GatewayRequest::Authorize(authorization(&cx)?)).await {
                    Ok(res) => res.id.to_string(),
                    // A decline (stored under the key, or now): nothing was authorized.
                    Err(e) if e.outcome() == Outcome::Terminal => return inv.note_payment(cx.saga_id(), "none").await,
                    Err(e) => return Err(e),
                },
            };
            let void =
                VoidRequest { authorization_id: auth.clone().into(), idempotency_key: Some(cx.compensation_key()) };
            match gw.clone().oneshot(GatewayRequest::Void(void)).await {
                Ok(_) => inv.note_payment(cx.saga_id(), &format!("voided:{auth}")).await,
                // Refused: the authorization was captured although the capture step is not done in the log (its
                // answer was lost, then it failed for good). Give the money back with the very refund the
                // capture's compensation sends (same key, same amount), so the gateway makes them one.
                Err(PaymentError::InvalidRequest { .. }) => refund(&gw, &inv, &cx, &auth).await,
                Err(e) => Err(e),
            }
        }
    });

    let gw = gateway.unscreened.clone();
    let capture = Step::<Checkout>::new("capture", move |cx| {
        let gw = gw.clone();
        async move {
            let auth: String =
                cx.output("authorize").ok_or_else(|| PaymentError::invalid_request("no authorization"))?;
            let capture = CaptureRequest {
                authorization_id: auth.into(),
                amount: Some(cx.context().money()?),
                idempotency_key: Some(cx.key()),
            };
            let res = gw.oneshot(GatewayRequest::Capture(capture)).await?;
            Ok(res.id.to_string())
        }
    });
    let (gw, inv) = (gateway.undo.clone(), inventory.clone());
    let capture = capture.compensate(move |cx, payment| {
        let (gw, inv) = (gw.clone(), inv.clone());
        async move {
            // Null: the capture's answer was lost, so it may have happened; the authorization's compensation (next)
            // finds out: its void is refused for a captured authorization, and it refunds instead.
            let Some(payment) = payment.as_str() else { return Ok(()) };
            refund(&gw, &inv, &cx, payment).await
        }
    });

    let ship = Step::<Checkout>::new("ship", |cx| async move {
        if cx.context().fail_shipment {
            return Err(PaymentError::invalid_request("the carrier refused the shipment"));
        }
        Ok(format!("shp_{}", cx.saga_id()))
    });

    Saga::builder(SAGA_NAME)
        .step(reserve)
        .step(
            authorize
                .compensation_attempts(GATEWAY_COMPENSATION_ATTEMPTS)
                .compensation_backoff(GATEWAY_COMPENSATION_BACKOFF),
        )
        .step(
            capture
                .compensation_attempts(GATEWAY_COMPENSATION_ATTEMPTS)
                .compensation_backoff(GATEWAY_COMPENSATION_BACKOFF),
        )
        .step(ship)
        .build()
        .unwrap_or_else(|e| unreachable!("the checkout saga is a valid definition: {e}"))
}

/// Everything a checkout needs: the orchestrator (with the checkout saga registered, so its recovery worker can
/// finish what a dead instance started) and the inventory. Cheap to clone.
#[derive(Clone)]
pub struct Shop {
    orchestrator: Orchestrator,
    saga: Arc<Saga<Checkout>>,
    inventory: Inventory,
    /// Turned on by [`Shop::halt`]: every checkout saga this shop runs stops where it is.
    halted: Arc<tokio::sync::watch::Sender<bool>>,
    /// The checkout sagas running on tasks of their own, which a shutdown waits for.
    sagas: SagaTasks,
}

/// The checkout sagas a [`Shop`] runs on tasks of their own, by saga id: a task registers before it is spawned and leaves
/// when it ends (or is dropped), so [`Shop::wait_for_sagas`] sees every saga that could still be acting on the
/// gateway. A checkout's saga outlives its request on purpose (a client that hangs up must not stop it), so the
/// HTTP server's own count of requests in flight says nothing about it.
#[derive(Clone)]
struct SagaTasks(Arc<tokio::sync::watch::Sender<SagaTaskSet>>);

#[derive(Default)]
struct SagaTaskSet {
    next: u64,
    running: std::collections::BTreeMap<u64, String>,
}

/// One saga task, until it is dropped.
struct SagaTask {
    tasks: SagaTasks,
    n: u64,
}

impl SagaTasks {
    fn new() -> Self {
        SagaTasks(Arc::new(tokio::sync::watch::Sender::new(SagaTaskSet::default())))
    }

    fn enter(&self, id: &str) -> SagaTask {
        let mut n = 0;
        self.0.send_modify(|set| {
            n = set.next;
            set.next += 1;
            set.running.insert(n, id.to_owned());
        });
        SagaTask { tasks: self.clone(), n }
    }

    fn running(&self) -> Vec<String> {
        self.0.borrow().running.values().cloned().collect()
    }
}

impl Drop for SagaTask {
    fn drop(&mut self) {
        self.tasks.0.send_modify(|set| {
            set.running.remove(&self.n);
        });
    }
}

// Some functions are used by main.rs or the tests only.
#[allow(dead_code)]
impl Shop {
    /// A shop on `log` and `inventory`, calling `gateway`; `instance` is the orchestrator's owner name.
    pub fn new(gateway: Gateway, inventory: Inventory, log: Arc<dyn SagaLog>, instance: &str) -> Shop {
        let orchestrator = Orchestrator::builder(log).owner(instance).build();
        let saga = orchestrator.register(checkout_saga(&gateway, &inventory));
        let halted = Arc::new(tokio::sync::watch::Sender::new(false));
        Shop { orchestrator, saga, inventory, halted, sagas: SagaTasks::new() }
    }

    /// Stops every checkout saga this shop is running where it is, as if its process died (for tests of another
    /// instance taking them over; the process itself just exits). Requests waiting for them get 503.
    pub fn halt(&self) {
        self.halted.send_replace(true);
    }

    /// Runs the checkout saga `id` on a task of its own (see `create_checkout`): started with `Ok(checkout)`, or,
    /// with `Err(run)`, its compensated run `run` restarted ([`Orchestrator::restart`]: a checkout compensated only
    /// because the gateway could not be reached, see [`retry_later`]). Counted in [`Shop::wait_for_sagas`] until it
    /// ends; `None` when [`Shop::halt`] stopped it.
    async fn run(&self, id: &str, checkout: Result<Checkout, u32>) -> Option<Result<SagaReport, SagaError>> {
        // Entered before the spawn: a shutdown that starts waiting right after this cannot miss the saga.
        let entered = self.sagas.enter(id);
        let (shop, id) = (self.clone(), id.to_owned());
        let mut halted = self.halted.subscribe();
        let task = tokio::spawn(async move {
            let _entered = entered;
            let run = async {
                match checkout {
                    Ok(checkout) => shop.orchestrator.start(&shop.saga, &id, checkout).await,
                    Err(run) => shop.orchestrator.restart(&id, run).await,
                }
            };
            tokio::select! {
                report = run => Some(report),
                _ = halted.wait_for(|h| *h) => None,
            }
        });
        // A panic in a step is a bug; it surfaces as this request's 500 (`JoinError`'s message).
        task.await.unwrap_or_else(|e| Some(Err(SagaError::Context(format!("the checkout task failed: {e}")))))
    }

    /// Waits until no checkout saga of this shop is running (including those whose client gave up; the sagas its
    /// recovery worker resumed are waited for by [`palisade_saga::Recovery::shutdown`]), or until `deadline`;
    /// returns the ids of the sagas still running then. A shutdown calls it after the HTTP requests in flight are
    /// answered, so the process does not exit (dropping the sagas' tasks mid-step) while a saga is between a
    /// gateway call and its record in the saga log.
    pub async fn wait_for_sagas(&self, deadline: tokio::time::Instant) -> Vec<String> {
        let mut sagas = self.sagas.0.subscribe();
        let _ = tokio::time::timeout_at(deadline, sagas.wait_for(|set| set.running.is_empty())).await;
        self.sagas.running()
    }

    /// The ids of the sagas this shop is running now.
    pub fn running_sagas(&self) -> Vec<String> {
        self.sagas.running()
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }
}

/// The idempotency layer of the checkouts route: as the charges route's ([`app::idempotency`]), except that a
/// 409 is a final answer (a compensated checkout), stored and replayed; the layer's own "in progress" 409 and
/// the handler's refusals marked [`NotExecuted`] keep the key usable.
pub fn idempotency(store: impl LeaseStore) -> HttpIdempotencyLayer {
    HttpIdempotencyLayer::builder()
        .store(store)
        .missing_key(MissingKey::Reject)
        .body_limit(app::BODY_LIMIT)
        .scope_header(app::ACCOUNT_HEADER)
        .classifier(|status, headers| match status {
            StatusCode::CONFLICT => Outcome::Terminal,
            _ => HttpClassifier::classify_parts(status, headers, std::time::SystemTime::now()),
        })
        .build()
}

/// `POST /v1/checkouts` behind [`idempotency`] on `store`.
pub fn router(shop: Shop, store: impl LeaseStore) -> Router {
    Router::new()
        .route("/v1/checkouts", post(create_checkout))
        .layer(idempotency(store))
        .layer(middleware::from_fn(app::valid_account))
        .with_state(shop)
}

/// `POST /v1/checkouts` with no idempotency layer: the baseline of bench/http/run.sh (`--bare`), never for real
/// traffic — a retried request runs its checkout again.
#[allow(dead_code)] // main.rs's (the tests that include this file do not use it)
pub fn bare_router(shop: Shop) -> Router {
    Router::new()
        .route("/v1/checkouts", post(create_checkout))
        .layer(middleware::from_fn(app::valid_account))
        .with_state(shop)
}

fn problem(p: Problem) -> Response {
    p.into_response::<axum::body::Body>()
}

/// A refusal before anything ran: the key stays usable.
fn refused(p: Problem) -> Response {
    let mut res = problem(p);
    res.extensions_mut().insert(NotExecuted);
    res
}

fn count(result: &'static str) {
    metrics::counter!("palisade_checkouts_total", "result" => result).increment(1);
}

/// How long a retry of a checkout's own request waits for the checkout to end before it is answered 409
/// `checkout_in_progress` (with `Retry-After`, key left usable): a checkout whose instance died ends only after its
/// lease ([`palisade_saga::defaults::DEFAULT_LEASE`]) and a recovery pass, longer than a client should hold a
/// request open.
pub const CHECKOUT_WAIT: Duration = Duration::from_secs(5);

/// The request a checkout belongs to: its account (the scope of its key) and its `Idempotency-Key`.
fn request_of(headers: &HeaderMap) -> Option<String> {
    let key = headers.get(palisade::core::IDEMPOTENCY_KEY)?.to_str().ok()?;
    let account = headers.get(&app::ACCOUNT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    Some(format!("{}:{account}:{key}", account.len()))
}

async fn create_checkout(State(shop): State<Shop>, headers: HeaderMap, body: Bytes) -> Response {
    let mut checkout: Checkout = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            let err = PaymentError::invalid_request(format!(
                "body must be JSON with order_id, amount, currency, source, email and items: {e}"
            ));
            return refused(Problem::from_error(&err));
        }
    };
    if let Err(e) = checkout.validate() {
        return refused(Problem::from_error(&e));
    }
    checkout.request = request_of(&headers);
    let id = checkout.order_id.clone();
    // The saga runs on a task of its own: a client that gives up (or a connection that breaks) drops this
    // handler, not the checkout, which goes on to its end here instead of waiting for its lease to end and a
    // recovery worker to take it over. The retry finds it through `settled`.
    let Some(started) = shop.run(&id, Ok(checkout.clone())).await else {
        return stopping(&id);
    };
    match started {
        Ok(report) => respond(&shop, &report, &checkout, 0).await,
        Err(SagaError::AlreadyExists(_)) => match settled(&shop, &id, checkout.request.as_deref()).await {
            Settled::Done(report, run) => match retry_later(&shop, &report, run).await {
                // This request's checkout, compensated only because the gateway could not be reached (it was
                // answered 503): its retry runs it again, as a new run of the same saga.
                Ok(true) => match shop.run(&id, Err(run)).await {
                    None => stopping(&id),
                    Some(Ok(report)) => respond(&shop, &report, &checkout, run + 1).await,
                    // Restarted meanwhile by another attempt of this request (whose answer was lost).
                    Some(Err(SagaError::WrongState { .. } | SagaError::Superseded { .. })) => in_progress(&id),
                    Some(Err(e @ (SagaError::Log(_) | SagaError::Fenced(_)))) => unavailable(&id, &e),
                    Some(Err(e)) => internal(&e),
                },
                Ok(false) => answer(&report, &checkout),
                Err(e) => stock_store_down(&id, &e),
            },
            Settled::Running => in_progress(&id),
            Settled::Other => {
                count("order_exists");
                refused(Problem::new(
                    StatusCode::CONFLICT,
                    "order_exists",
                    "order exists",
                    format!("order {id} was checked out already; see GET /v1/orders/{id}"),
                ))
            }
            Settled::Unavailable(e) => unavailable(&id, &e),
        },
        Err(e @ (SagaError::Log(_) | SagaError::Fenced(_))) => unavailable(&id, &e),
        Err(e) => internal(&e),
    }
}

fn internal(e: &SagaError) -> Response {
    count("error");
    problem(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error", e.to_string()))
}

/// The stock store (which keeps the payment notes) did not answer: whether the checkout may run again is not
/// known, so nothing is decided (503, the key released).
fn stock_store_down(id: &str, e: &PaymentError) -> Response {
    count("unavailable");
    tracing::warn!(order_id = %id, error = %e, "the payment note of a compensated checkout could not be read");
    problem(Problem::from_error(e))
}

/// This instance is stopping ([`Shop::halt`]): the saga stays where its log says.
fn stopping(id: &str) -> Response {
    count("unavailable");
    let err = PaymentError::store_unavailable(format!(
        "this instance is stopping; GET /v1/orders/{id} shows where the checkout is"
    ));
    problem(Problem::from_error(&err))
}

/// 409 `checkout_in_progress` with `Retry-After` (not stored): the checkout of this request is still running.
fn in_progress(id: &str) -> Response {
    count("in_progress");
    let mut res = refused(Problem::new(
        StatusCode::CONFLICT,
        "checkout_in_progress",
        "checkout in progress",
        format!("order {id} is still being checked out; retry with the same key, or see GET /v1/orders/{id}"),
    ));
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// How many runs a checkout may have (the first and its restarts, [`retry_later`]): 20. Each run adds about ten
/// events to the saga's history and two stock records; a client that keeps retrying through a long outage gets a
/// final 409 `checkout_compensated` after the twentieth, rather than a history that grows for as long as it tries.
pub const MAX_CHECKOUT_RUNS: u32 = 20;

/// True when the checkout `report` (of run `run`) was compensated only because the gateway (or the stock store) could not be
/// reached, before anything was authorized: its failure is Retriable (a refused connection, a 503, an open
/// circuit breaker, a rate limit), no authorization exists (the authorize step has no output and its compensation
/// wrote no payment note, so no attempt of it may have acted) and the stock hold was released. Nothing of it is
/// left, so the same request may run it again ([`Orchestrator::restart`], keys of a new run) instead of the order
/// being spent on a 409; it is answered 503 with `Retry-After` (not stored) to say so. A decline, a block, a
/// failure after an authorization, and the last of [`MAX_CHECKOUT_RUNS`] stay final (402, 409).
///
/// # Errors
/// When the stock store does not answer (the payment note cannot be read).
async fn retry_later(shop: &Shop, report: &SagaReport, run: u32) -> Result<bool, PaymentError> {
    let retriable = report.error.as_ref().is_some_and(|e| matches!(e.outcome(), Outcome::Retriable { .. }));
    if report.state != SagaState::Compensated
        || !retriable
        || report.outputs.get("authorize").is_some()
        || run >= MAX_CHECKOUT_RUNS - 1
    {
        return Ok(false);
    }
    Ok(shop.inventory.payment_note(&report.id).await?.is_none())
}

/// The answer to a checkout that ended (in run `run`): [`answer`], or 503 with `Retry-After` (not stored) for one
/// the same request may run again ([`retry_later`]).
async fn respond(shop: &Shop, report: &SagaReport, c: &Checkout, run: u32) -> Response {
    match retry_later(shop, report, run).await {
        Ok(false) => answer(report, c),
        Ok(true) => {
            count("gateway_unavailable");
            let error = report.error.clone().unwrap_or_else(|| PaymentError::invalid_request("the saga failed"));
            let after = error.retry_after().unwrap_or(Duration::from_secs(1)).as_secs().max(1);
            let mut res = problem(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "gateway_unavailable",
                "gateway unavailable",
                format!(
                    "order {} was not charged: the gateway could not be reached ({error}); retry with the same key",
                    c.order_id
                ),
            ));
            if let Ok(v) = HeaderValue::from_str(&after.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
        Err(e) => stock_store_down(&c.order_id, &e),
    }
}

/// The saga stays where its log says; a recovery worker finishes it. The layer releases the key.
fn unavailable(id: &str, e: &SagaError) -> Response {
    count("unavailable");
    tracing::warn!(order_id = %id, error = %e, "checkout saga stopped before its end");
    problem(Problem::from_error(&PaymentError::store_unavailable(format!(
        "the checkout could not be recorded ({e}); GET /v1/orders/{id} shows where it is"
    ))))
}

/// Where an existing checkout is, for a request that found its order taken.
enum Settled {
    /// Started by this same request and ended: its result, and the run it is of ([`palisade_saga::latest_run`]).
    Done(SagaReport, u32),
    /// Started by this same request and still running after [`CHECKOUT_WAIT`].
    Running,
    /// Started by another request.
    Other,
    /// The saga log did not answer.
    Unavailable(SagaError),
}

/// Waits (at most [`CHECKOUT_WAIT`]) for the checkout `id` that `request` started to end.
async fn settled(shop: &Shop, id: &str, request: Option<&str>) -> Settled {
    let until = tokio::time::Instant::now() + CHECKOUT_WAIT;
    loop {
        let record = match shop.orchestrator.get(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Settled::Other,
            Err(e) => return Settled::Unavailable(e),
        };
        let started_by = record.context.get("request").and_then(|v| v.as_str());
        if request.is_none() || started_by != request {
            return Settled::Other;
        }
        if matches!(record.state, SagaState::Completed | SagaState::Compensated | SagaState::FailedCompensation) {
            let run = palisade_saga::latest_run(&record);
            return Settled::Done(report_of(record), run);
        }
        if tokio::time::Instant::now() >= until {
            return Settled::Running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The report a saga's run would have given, from its record in the log.
fn report_of(record: SagaRecord) -> SagaReport {
    let mut outputs = Vec::new();
    let (mut failure, mut compensation) = (None, None);
    for event in &record.events {
        match event {
            // A new run: the runs before it were compensated; its report is this run's.
            Event::Restarted { .. } => {
                outputs.clear();
                (failure, compensation) = (None, None);
            }
            Event::StepDone { step, output } => {
                outputs.push((step.clone(), output.clone()));
            }
            Event::StepFailed { error, last: true, .. } => {
                failure.get_or_insert_with(|| PaymentError::clone(error));
            }
            Event::CompensationFailed { step, error, last: true } => {
                compensation = Some(PaymentError::SagaCompensationFailed {
                    step: step.as_str().into(),
                    message: error.to_string().into(),
                });
            }
            _ => {}
        }
    }
    let error = match record.state {
        SagaState::Completed => None,
        SagaState::FailedCompensation => compensation.or(failure),
        _ => failure,
    };
    let outputs = outputs.into_iter().collect();
    SagaReport { id: record.id.into(), name: record.name.into(), state: record.state, outputs, error }
}

/// The order the API answers with: what was charged, `amount` in the currency's canonical form (`"12.30"`) and
/// `currency` its ISO code (`"USD"`), whatever spelling the request used (`"12.3"`, `"usd"`).
#[derive(Debug, Serialize)]
struct Created<'a> {
    order_id: &'a str,
    state: &'static str,
    charge_id: Option<String>,
    authorization_id: Option<String>,
    shipment_id: Option<String>,
    amount: String,
    currency: String,
}

fn output(report: &SagaReport, step: &str) -> Option<String> {
    report.outputs.get(step).and_then(|v| v.as_str()).map(str::to_owned)
}

fn answer(report: &SagaReport, c: &Checkout) -> Response {
    match report.state {
        SagaState::Completed => {
            count("completed");
            // The context was validated before the saga started, so it parses; were it not to, the request's own
            // spelling is all there is to show.
            let (amount, currency) = match c.money() {
                Ok(m) => (m.amount().to_string(), m.currency().code().to_owned()),
                Err(_) => (c.amount.clone(), c.currency.clone()),
            };
            let order = Created {
                order_id: &c.order_id,
                state: "completed",
                charge_id: output(report, "capture"),
                authorization_id: output(report, "authorize"),
                shipment_id: output(report, "ship"),
                amount,
                currency,
            };
            let mut res = (StatusCode::CREATED, axum::Json(order)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/v1/orders/{}", c.order_id)) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        SagaState::Compensated => {
            let error = report.error.clone().unwrap_or_else(|| PaymentError::invalid_request("the saga failed"));
            match error.kind() {
                ErrorKind::CardDeclined
                | ErrorKind::InsufficientFunds
                | ErrorKind::FraudBlocked
                | ErrorKind::AuthenticationRequired => {
                    count(if error.kind() == ErrorKind::FraudBlocked { "fraud_blocked" } else { "declined" });
                    problem(Problem::from_error(&error))
                }
                _ => {
                    count("compensated");
                    problem(Problem::new(
                        StatusCode::CONFLICT,
                        "checkout_compensated",
                        "checkout compensated",
                        format!("order {} was not completed and what it did was undone: {error}", c.order_id),
                    ))
                }
            }
        }
        _ => {
            count("failed_compensation");
            let error = report.error.clone().unwrap_or(PaymentError::SagaCompensationFailed {
                step: "unknown".into(),
                message: "compensation failed".into(),
            });
            problem(Problem::from_error(&error))
        }
    }
}
