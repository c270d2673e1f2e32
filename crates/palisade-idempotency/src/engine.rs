//! The protocol both modes run: claim (or wait, or refuse), execute, then record by outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrayvec::ArrayString;
use palisade_core::{IdempotencyKey, Outcome};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::IdempotencyRejection;
use palisade_store::StoreError;
use palisade_store::lease::{
    Claim, FencingToken, Fingerprint, Hold, Payload, abandon_in_background, beat_every, random_attempt, renewing,
};

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

/// Longest storage key built on the stack; longer ones (long scopes) go to the heap.
const KEY_INLINE: usize = 320;

/// [`storage_key`] spelled without a heap allocation when it fits in [`KEY_INLINE`] bytes: a lookup (a replay, a
/// refusal) needs only the text; the store makes its own copy when it inserts a record. The caller keeps the
/// buffer on its stack and [`spell`](Self::spell)s the key into it, so the key is written where it is read, not
/// built in a buffer that is then moved. An `ArrayString` is neither zeroed first nor checked for UTF-8 after:
/// it is only ever appended `str`s.
pub(crate) struct KeyBuf {
    inline: ArrayString<KEY_INLINE>,
    /// The key when it does not fit (a long scope).
    heap: Option<String>,
}

impl KeyBuf {
    #[inline]
    pub(crate) fn new() -> KeyBuf {
        KeyBuf { inline: ArrayString::new_const(), heap: None }
    }

    /// The storage key of `key` within `scope`, in this buffer when it fits.
    #[inline]
    pub(crate) fn spell(&mut self, scope: Option<&str>, key: &IdempotencyKey) -> &str {
        let k = key.as_str();
        self.inline.clear();
        match scope {
            // The usual case: `k:` and the key (at most 255 bytes, so it always fits).
            None if 2 + k.len() <= KEY_INLINE => {
                self.inline.push_str("k:");
                self.inline.push_str(k);
            }
            None => return self.heap.insert(storage_key(scope, key)),
            Some(s) => {
                let mut digits = [0u8; 20];
                let parts = ["s", decimal(s.len(), &mut digits), ":", s, ":", k];
                if parts.iter().map(|p| p.len()).sum::<usize>() > KEY_INLINE {
                    return self.heap.insert(storage_key(scope, key));
                }
                for p in parts {
                    self.inline.push_str(p);
                }
            }
        }
        &self.inline
    }
}

/// `n` in decimal, written into the end of `out`.
fn decimal(mut n: usize, out: &mut [u8; 20]) -> &str {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            // ASCII digits are UTF-8, so this never takes the default.
            return std::str::from_utf8(&out[i..]).unwrap_or_default();
        }
    }
}

/// The gateway idempotency key a request carries to the gateway for an edge key within a scope.
///
/// Without a scope it is the edge key itself. With one it is `pal-` and the SHA-256 of the storage key in hex,
/// so two tenants' equal keys reach the gateway as different keys. An edge key without a scope that is spelled
/// like a key Palisade derives ([`IdempotencyKey::looks_derived`]: `pal-…`, `sg-…`) is hashed the same way (its
/// storage key differs from every scoped one), so no client can send another tenant's or a saga's gateway key as
/// its own. Deterministic: a retry after a crash (in any process) sends the same gateway key, which is what lets
/// the gateway deduplicate a re-execution.
#[must_use]
pub fn gateway_key_for(scope: Option<&str>, key: &IdempotencyKey) -> IdempotencyKey {
    match scope {
        None if !key.looks_derived() => key.clone(),
        _ => {
            let digest = Sha256::digest(storage_key(scope, key).as_bytes());
            // 4 + 64 visible ASCII characters: always a valid key.
            IdempotencyKey::new(format!("{}{}", IdempotencyKey::SCOPED_PREFIX, hex::encode(digest)))
                .unwrap_or_else(|_| key.clone())
        }
    }
}

// Inlined: every caller passes a literal, so the match below folds to the one counter it names.
#[inline(always)]
pub(crate) fn count(result: &'static str) {
    // Literal labels let `metrics` build the key statically: counting allocates nothing on the hot path
    // (`tests/allocations.rs` runs with and without the feature).
    #[cfg(feature = "metrics")]
    macro_rules! counted {
        ($($known:literal),*) => {
            match result {
                $($known => metrics::counter!("palisade_idempotency_requests_total", "result" => $known).increment(1),)*
                other => metrics::counter!("palisade_idempotency_requests_total", "result" => other).increment(1),
            }
        };
    }
    #[cfg(feature = "metrics")]
    counted!(
        "executed",
        "took_over",
        "replayed",
        "in_flight",
        "conflict",
        "store_unavailable",
        "stored",
        "released",
        "fenced",
        "store_failed",
        "release_failed",
        "not_executed",
        "passthrough",
        "missing_key",
        "invalid_key",
        "body_too_large"
    );
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

pub(crate) struct Engine {
    pub(crate) settings: Settings,
}

/// What a claim leads to: execute with the ticket, or replay the stored answer.
pub(crate) enum Begin {
    Execute(Ticket),
    Replay(Payload),
}

/// Shortest and longest pause between claim attempts while waiting for an in-flight original.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(200);

impl Engine {
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Engine { settings })
    }

    /// Logs and counts an acquired claim, and makes its ticket.
    fn acquired(self: &Arc<Self>, hold: Hold, took_over: bool) -> Ticket {
        if took_over {
            tracing::info!(result = "took_over", token = hold.token().0, "idempotency lease ended; taking over");
        }
        count(if took_over { "took_over" } else { "executed" });
        Ticket { engine: self.clone(), hold, armed: true }
    }

    fn replayed() {
        tracing::debug!(result = "replayed", "idempotent replay");
        count("replayed");
    }

    fn conflict() -> IdempotencyRejection {
        tracing::info!(result = "conflict", "idempotency key reused with a different request");
        count("conflict");
        IdempotencyRejection::Conflict
    }

    fn in_flight(&self, lease_remaining: Duration) -> IdempotencyRejection {
        tracing::debug!(
            result = "in_flight",
            lease_remaining_ms = lease_remaining.as_millis() as u64,
            "duplicate refused while the original runs"
        );
        count("in_flight");
        let retry_after = self.settings.in_flight_retry_after.min(lease_remaining.max(Duration::from_millis(1)));
        IdempotencyRejection::InFlight { retry_after }
    }

    fn store_unavailable(e: StoreError) -> IdempotencyRejection {
        tracing::warn!(
            result = "store_unavailable",
            error = %e,
            "idempotency store unavailable while claiming the key; request refused, not executed"
        );
        count("store_unavailable");
        e.into()
    }

    /// What a claim's answer leads to; `None` for a duplicate that waits for its in-flight original.
    fn decide(self: &Arc<Self>, claim: Claim) -> Option<Result<Begin, IdempotencyRejection>> {
        Some(match claim {
            Claim::Acquired { hold, took_over } => Ok(Begin::Execute(self.acquired(hold, took_over))),
            Claim::Done { response } => {
                Self::replayed();
                Ok(Begin::Replay(response))
            }
            Claim::Mismatch => Err(Self::conflict()),
            Claim::Held { lease_remaining } if self.settings.wait.is_zero() => Err(self.in_flight(lease_remaining)),
            Claim::Held { .. } => return None,
            // `Claim` is non-exhaustive; a future state is refused rather than guessed at.
            _ => Err(Self::store_unavailable(StoreError::new("the store answered a claim in an unknown state"))),
        })
    }

    /// [`begin`](Self::begin) without waiting, when the store answers at once (the memory store does): no
    /// future, no key on the heap. `None` when the store's answer needs awaiting (its unpolled future is dropped:
    /// it has done nothing), or when a duplicate should wait for its in-flight original; then run `begin`.
    pub(crate) fn begin_now(
        self: &Arc<Self>,
        key: &str,
        fp: &Fingerprint,
    ) -> Option<Result<Begin, IdempotencyRejection>> {
        let s = &self.settings;
        match s.store.claim(key, fp, s.lease, s.ttl).now() {
            Ok(Ok(claim)) => self.decide(claim),
            // A store that answers at once has not lost a claim's answer: nothing to abandon.
            Ok(Err(e)) => Some(Err(Self::store_unavailable(e))),
            Err(_unpolled) => None,
        }
    }

    pub(crate) async fn begin(self: &Arc<Self>, key: Arc<str>, fp: Fingerprint) -> Result<Begin, IdempotencyRejection> {
        let s = &self.settings;
        let mut deadline = None;
        let mut pause = POLL_MIN;
        loop {
            let attempt = random_attempt();
            let claim = match s.store.claim_as(&key, &fp, s.lease, s.ttl, attempt).await {
                Ok(c) => c,
                Err(e) => {
                    // The claim may have landed although its answer never came (a stalled store answers late):
                    // undo it, so the 503 below means the key is usable when its Retry-After says. A store runs
                    // this after the claim, as one connection does.
                    abandon_in_background(s.store.clone(), key.clone(), attempt, s.lease, |answer| match answer {
                        Ok(true) => tracing::info!(result = "abandoned", "a claim whose answer was lost was undone"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            result = "abandon_failed",
                            error = %e,
                            "could not undo a claim whose answer was lost; if it landed, it ends with its lease"
                        ),
                    });
                    return Err(Self::store_unavailable(e));
                }
            };
            let lease_remaining = match claim {
                Claim::Held { lease_remaining } => lease_remaining,
                decided => match self.decide(decided) {
                    Some(begun) => return begun,
                    None => continue,
                },
            };
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + s.wait);
            if now >= deadline {
                return Err(self.in_flight(lease_remaining));
            }
            tokio::time::sleep(pause.min(deadline - now).min(lease_remaining.max(POLL_MIN))).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// How a claim ended without a stored result.
#[derive(Clone, Copy)]
enum Ended {
    /// The outcome was not final: the same request may execute again.
    Released,
    /// Nothing was executed: the key is unused again.
    Forgotten,
}

/// The right to execute one claimed request. Record the outcome with [`Ticket::record`]; a ticket dropped
/// without one (the caller's future was cancelled) releases its claim (in the background when the store does
/// not answer at once), because the request may or may not have run — the Unknown case, which is safe to
/// re-execute only because the gateway key flows.
pub(crate) struct Ticket {
    engine: Arc<Engine>,
    hold: Hold,
    armed: bool,
}

type Pending = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Ticket {
    /// Records a result: final outcomes store `payload` (a kept value, or bytes), others release the claim.
    /// Callers make the payload only for final outcomes.
    pub(crate) async fn record(mut self, outcome: Outcome, payload: Option<Payload>) {
        self.armed = false;
        let s = &self.engine.settings;
        match payload.filter(|_| outcome.is_final()) {
            Some(payload) => {
                let stored = s.store.complete(&self.hold, payload, s.ttl).await;
                self.stored(outcome, stored);
            }
            None => {
                let released = s.store.release(&self.hold).await;
                self.ended(released, Ended::Released);
            }
        }
    }

    /// [`record`](Self::record) at once when the store answers at once; otherwise the future that records.
    pub(crate) fn record_now(mut self, outcome: Outcome, payload: Option<Payload>) -> Option<Pending> {
        let s = &self.engine.settings;
        // A clone of a payload is a reference count: kept in case the store must be awaited after all. A store
        // future that is not ready is dropped unpolled, so it did nothing.
        let answer = match payload.as_ref().filter(|_| outcome.is_final()) {
            Some(p) => s.store.complete(&self.hold, p.clone(), s.ttl).now().map(|r| (r, true)).map_err(drop),
            None => s.store.release(&self.hold).now().map(|r| (r, false)).map_err(drop),
        };
        match answer {
            Ok((stored, true)) => {
                self.armed = false;
                self.stored(outcome, stored);
                None
            }
            Ok((released, false)) => {
                self.armed = false;
                self.ended(released, Ended::Released);
                None
            }
            Err(()) => Some(Box::pin(self.record(outcome, payload))),
        }
    }

    /// Releases the claim (the request did not run) at once when the store answers at once; otherwise the
    /// future that releases.
    pub(crate) fn release_now(mut self) -> Option<Pending> {
        match self.engine.settings.store.release(&self.hold).now().map_err(drop) {
            Ok(released) => {
                self.armed = false;
                self.ended(released, Ended::Released);
                None
            }
            Err(()) => Some(Box::pin(self.release())),
        }
    }

    /// The handle by which the handler completes this record in its own transaction.
    #[cfg(feature = "postgres")]
    pub(crate) fn tx_completion(&self, stored_headers: Arc<[http::HeaderName]>) -> crate::TxCompletion {
        crate::TxCompletion::new(self.hold.clone(), self.engine.settings.ttl, stored_headers)
    }

    /// Ends a claim whose record the handler completed in its own transaction: when the transaction committed
    /// the record is done and there is nothing to release; when it rolled back the claim is still held, and is
    /// released so a retry with the key executes again.
    #[cfg(feature = "postgres")]
    pub(crate) async fn after_transaction(mut self) {
        self.armed = false;
        match self.engine.settings.store.release(&self.hold).await {
            Ok(false) => {
                tracing::debug!(result = "stored", "idempotent result stored in the handler's transaction");
                count("stored");
            }
            Ok(true) => {
                tracing::info!(
                    result = "released",
                    "the handler's transaction did not commit the idempotency record; the claim was released, so a retry executes"
                );
                count("released");
            }
            Err(e) => self.ended(Err(e), Ended::Released),
        }
    }

    /// Whether this ticket's lease is renewed while its request runs.
    pub(crate) fn renews(&self) -> bool {
        self.engine.settings.renew_leases
    }

    /// The lease's heartbeat interval.
    pub(crate) fn beat_every(&self) -> Duration {
        beat_every(self.engine.settings.lease)
    }

    /// Runs `fut` (the request) while renewing the lease every third of it, so a live request keeps its key
    /// however long it takes. Without [`renew_leases`](crate::IdempotencyLayerBuilder::renew_leases) it just
    /// runs `fut`.
    pub(crate) async fn hold<F: Future>(&self, fut: F) -> F::Output {
        let s = &self.engine.settings;
        if !s.renew_leases {
            return fut.await;
        }
        renewing(&*s.store, &self.hold, s.lease, fut, |r| self.renewed(r)).await
    }

    /// One heartbeat from a poll: at once when the store answers at once, otherwise in the background.
    pub(crate) fn renew_now(&self) {
        let s = &self.engine.settings;
        match s.store.renew(&self.hold, s.lease).now() {
            Ok(renewed) => self.renewed(renewed),
            Err(_unpolled) => {
                let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
                let (engine, hold) = (self.engine.clone(), self.hold.clone());
                rt.spawn(async move {
                    let s = &engine.settings;
                    let renewed = s.store.renew(&hold, s.lease).await;
                    log_renewed(hold.token(), renewed);
                });
            }
        }
    }

    fn renewed(&self, renewed: Result<bool, StoreError>) {
        log_renewed(self.hold.token(), renewed);
    }

    /// Forgets the claim: the request was refused before any effect (a routing refusal, a validation error, a
    /// handler's [`NotExecuted`](crate::NotExecuted)), so the key is unused again.
    pub(crate) async fn forget(mut self) {
        self.armed = false;
        let forgot = self.engine.settings.store.forget(&self.hold).await;
        self.ended(forgot, Ended::Forgotten);
    }

    /// Releases the claim now (the request did not run, or its outcome is not final).
    pub(crate) async fn release(mut self) {
        self.armed = false;
        let released = self.engine.settings.store.release(&self.hold).await;
        self.ended(released, Ended::Released);
    }

    fn stored(&self, outcome: Outcome, stored: Result<bool, StoreError>) {
        match stored {
            Ok(true) => {
                tracing::debug!(result = "stored", outcome = outcome.class().as_str(), "idempotent result stored");
                count("stored");
            }
            Ok(false) => {
                tracing::warn!(
                    result = "fenced",
                    token = self.hold.token().0,
                    outcome = outcome.class().as_str(),
                    "lease was taken over while this request ran; its result was not stored"
                );
                count("fenced");
            }
            Err(e) => {
                tracing::error!(
                    result = "store_failed",
                    error = %e,
                    outcome = outcome.class().as_str(),
                    "the request was executed but its result could not be stored; the key stays claimed until its lease ends, then a retry executes it again with the same gateway key"
                );
                count("store_failed");
            }
        }
    }

    /// Logs and counts how a claim ended without a stored result.
    fn ended(&self, ended: Result<bool, StoreError>, how: Ended) {
        match (ended, how) {
            (Ok(true), Ended::Released) => {
                tracing::debug!(result = "released", "idempotency claim released for re-execution");
                count("released");
            }
            (Ok(true), Ended::Forgotten) => {
                tracing::debug!(result = "not_executed", "the request did not execute; its key is unused again");
                count("not_executed");
            }
            (Ok(false), _) => {
                tracing::warn!(
                    result = "fenced",
                    token = self.hold.token().0,
                    "lease was taken over while this request ran"
                );
                count("fenced");
            }
            (Err(e), Ended::Released) => {
                tracing::error!(
                    result = "release_failed",
                    error = %e,
                    "could not release the claim (the outcome was not final); the key is free for a retry when its lease ends"
                );
                count("release_failed");
            }
            (Err(e), Ended::Forgotten) => {
                tracing::error!(
                    result = "release_failed",
                    error = %e,
                    "the request did not execute, but its claim could not be removed; the same request may retry when the lease ends"
                );
                count("release_failed");
            }
        }
    }
}

fn log_renewed(token: FencingToken, renewed: Result<bool, StoreError>) {
    match renewed {
        Ok(true) => tracing::trace!(result = "renewed", token = token.0, "idempotency lease renewed"),
        Ok(false) => tracing::warn!(
            result = "fenced",
            token = token.0,
            "lease was taken over while this request runs; its result will not be stored"
        ),
        Err(e) => tracing::warn!(
            result = "renew_failed",
            error = %e,
            "could not renew the idempotency lease; trying again at the next heartbeat"
        ),
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancelled mid-request: release at once when the store answers at once, otherwise in the background if
        // a runtime is there; otherwise the lease ends it.
        let store = &self.engine.settings.store;
        if store.release(&self.hold).now().is_ok() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (engine, hold) = (self.engine.clone(), self.hold.clone());
            rt.spawn(async move {
                let _ = engine.settings.store.release(&hold).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_buf_spells_the_storage_key_inline_and_on_the_heap() {
        let keys = [IdempotencyKey::new("k").unwrap(), IdempotencyKey::new("x".repeat(255)).unwrap()];
        let long_scope = "t".repeat(400);
        let scopes = [None, Some(""), Some("tenant-a"), Some("a:b"), Some("1234567890"), Some(long_scope.as_str())];
        for key in &keys {
            for scope in scopes {
                let mut buf = KeyBuf::new();
                assert_eq!(buf.spell(scope, key), storage_key(scope, key), "{scope:?}");
                let fits = storage_key(scope, key).len() <= KEY_INLINE;
                assert_eq!(buf.heap.is_none(), fits, "{scope:?}");
            }
        }
    }
}
