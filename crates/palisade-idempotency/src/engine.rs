//! The protocol both modes run: claim (or wait, or refuse), execute, then record by outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_core::{IdempotencyKey, Outcome};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::IdempotencyRejection;
use crate::store::{Claim, FencingToken, Fingerprint};

/// The storage key of an idempotency key within a scope. Scope and key are length-delimited, so no
/// `(scope, key)` pair can produce another pair's storage key: two tenants' equal keys never meet.
///
/// ```
/// use palisade_core::IdempotencyKey;
/// use palisade_idempotency::storage_key;
/// let k = IdempotencyKey::new("order-1").unwrap();
/// assert_ne!(storage_key(Some("tenant-a"), &k), storage_key(Some("tenant-b"), &k));
/// assert_ne!(storage_key(None, &k), storage_key(Some(""), &k));
/// ```
#[must_use]
pub fn storage_key(scope: Option<&str>, key: &IdempotencyKey) -> String {
    match scope {
        None => format!("k:{key}"),
        Some(s) => format!("s{}:{s}:{key}", s.len()),
    }
}

/// The gateway idempotency key a request carries to the gateway for an edge key within a scope.
///
/// Without a scope it is the edge key itself. With one it is `pal-` and the SHA-256 of the storage key in hex,
/// so two tenants' equal keys reach the gateway as different keys. Deterministic: a retry after a crash (in any
/// process) sends the same gateway key, which is what lets the gateway deduplicate a re-execution.
#[must_use]
pub fn gateway_key_for(scope: Option<&str>, key: &IdempotencyKey) -> IdempotencyKey {
    match scope {
        None => key.clone(),
        Some(_) => {
            let digest = Sha256::digest(storage_key(scope, key).as_bytes());
            // 4 + 64 visible ASCII characters: always a valid key.
            IdempotencyKey::new(format!("pal-{}", hex::encode(digest))).unwrap_or_else(|_| key.clone())
        }
    }
}

pub(crate) fn count(result: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("palisade_idempotency_requests_total", "result" => result).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

pub(crate) struct Engine {
    pub(crate) settings: Settings,
}

pub(crate) enum Begin {
    Execute(Ticket),
    Replay(Bytes),
}

/// Shortest and longest pause between claim attempts while waiting for an in-flight original.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(200);

impl Engine {
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Engine { settings })
    }

    pub(crate) async fn begin(self: &Arc<Self>, key: String, fp: Fingerprint) -> Result<Begin, IdempotencyRejection> {
        let s = &self.settings;
        let mut deadline = None;
        let mut pause = POLL_MIN;
        loop {
            let claim = match s.store.claim(&key, &fp, s.lease, s.ttl).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(result = "store_unavailable", error = %e, "idempotency store unavailable; request refused");
                    count("store_unavailable");
                    return Err(e.into());
                }
            };
            match claim {
                Claim::Acquired { token, took_over } => {
                    if took_over {
                        tracing::info!(result = "took_over", token = token.0, "idempotency lease ended; taking over");
                    }
                    count(if took_over { "took_over" } else { "executed" });
                    return Ok(Begin::Execute(Ticket { engine: self.clone(), key, token, armed: true }));
                }
                Claim::Completed { response } => {
                    tracing::debug!(result = "replayed", "idempotent replay");
                    count("replayed");
                    return Ok(Begin::Replay(response));
                }
                Claim::Mismatch => {
                    tracing::info!(result = "conflict", "idempotency key reused with a different request");
                    count("conflict");
                    return Err(IdempotencyRejection::Conflict);
                }
                Claim::InFlight { lease_remaining } => {
                    let now = Instant::now();
                    let deadline = *deadline.get_or_insert(now + s.wait);
                    if now >= deadline {
                        tracing::debug!(
                            result = "in_flight",
                            lease_remaining_ms = lease_remaining.as_millis() as u64,
                            "duplicate refused while the original runs"
                        );
                        count("in_flight");
                        return Err(IdempotencyRejection::InFlight { retry_after: s.in_flight_retry_after });
                    }
                    tokio::time::sleep(pause.min(deadline - now).min(lease_remaining.max(POLL_MIN))).await;
                    pause = (pause * 2).min(POLL_MAX);
                }
            }
        }
    }
}

/// The right to execute one claimed request. Record the outcome with [`Ticket::record`]; a ticket dropped
/// without one (the caller's future was cancelled) releases its claim in the background, because the request
/// may or may not have run — the Unknown case, which is safe to re-execute only because the gateway key flows.
pub(crate) struct Ticket {
    engine: Arc<Engine>,
    key: String,
    token: FencingToken,
    armed: bool,
}

impl Ticket {
    /// Records a result: final outcomes store `payload` (when it could be encoded), others release the claim.
    /// Callers encode the payload only for final outcomes.
    pub(crate) async fn record(mut self, outcome: Outcome, payload: Option<Bytes>) {
        self.armed = false;
        let s = &self.engine.settings;
        if outcome.is_final()
            && let Some(bytes) = payload
        {
            match s.store.complete(&self.key, self.token, bytes, s.ttl).await {
                Ok(true) => {
                    tracing::debug!(result = "stored", outcome = outcome.class().as_str(), "idempotent result stored")
                }
                Ok(false) => {
                    tracing::warn!(
                        result = "fenced",
                        token = self.token.0,
                        outcome = outcome.class().as_str(),
                        "lease was taken over while this request ran; its result was not stored"
                    );
                    count("fenced");
                }
                Err(e) => {
                    tracing::error!(result = "store_failed", error = %e, "could not store the idempotent result; the key stays claimed until its lease ends");
                    count("store_failed");
                }
            }
            return;
        }
        self.release_now().await;
    }

    /// Releases the claim now (the request did not run, or its outcome is not final).
    pub(crate) async fn release(mut self) {
        self.armed = false;
        self.release_now().await;
    }

    async fn release_now(&self) {
        let s = &self.engine.settings;
        match s.store.release(&self.key, self.token).await {
            Ok(true) => tracing::debug!(result = "released", "idempotency claim released for re-execution"),
            Ok(false) => {
                tracing::warn!(result = "fenced", token = self.token.0, "lease was taken over while this request ran")
            }
            Err(e) => {
                tracing::error!(result = "release_failed", error = %e, "could not release the claim; it ends with its lease")
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancelled mid-request: release in the background if a runtime is there; otherwise the lease ends it.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let engine = self.engine.clone();
            let key = std::mem::take(&mut self.key);
            let token = self.token;
            rt.spawn(async move {
                let _ = engine.settings.store.release(&key, token).await;
            });
        }
    }
}
