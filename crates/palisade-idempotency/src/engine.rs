//! The protocol both modes run: claim (or wait, or refuse), execute, then record by outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_core::{IdempotencyKey, Outcome};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::{IdempotencyRejection, StoreError};
use crate::store::{Claim, FencingToken, Fingerprint, LocalClaim, Payload, SlotRef};

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

/// [`storage_key`] built without a heap allocation when it fits in [`KEY_INLINE`] bytes: a lookup (a replay, a
/// refusal) needs only the text; the store makes the shared `Arc<str>` when it inserts a record.
// The inline variant is large on purpose: it lives on the stack for the duration of one `call`.
#[allow(clippy::large_enum_variant)]
pub(crate) enum KeyBuf {
    Inline { buf: [u8; KEY_INLINE], len: usize },
    Heap(String),
}

impl KeyBuf {
    pub(crate) fn new(scope: Option<&str>, key: &IdempotencyKey) -> KeyBuf {
        let mut digits = [0u8; 20];
        let parts: [&[u8]; 5] = match scope {
            None => [b"k:", key.as_str().as_bytes(), b"", b"", b""],
            Some(s) => [b"s", decimal(s.len(), &mut digits), b":", s.as_bytes(), b":"],
        };
        let tail = if scope.is_some() { key.as_str().as_bytes() } else { b"" };
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + tail.len();
        if len > KEY_INLINE {
            return KeyBuf::Heap(storage_key(scope, key));
        }
        let mut buf = [0u8; KEY_INLINE];
        let mut at = 0;
        for p in parts.iter().chain(std::iter::once(&tail)) {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        KeyBuf::Inline { buf, len }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // A concatenation of `str`s and ASCII digits is UTF-8, so this never takes the default.
            KeyBuf::Inline { buf, len } => std::str::from_utf8(&buf[..*len]).unwrap_or_default(),
            KeyBuf::Heap(s) => s,
        }
    }
}

/// `n` in decimal, written into the end of `out`.
fn decimal(mut n: usize, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
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

/// What a claim leads to: execute with the ticket, or replay `R` (the stored bytes, or on the layer's memory
/// store whatever the caller made of the kept payload).
pub(crate) enum Begin<R = Bytes> {
    Execute(Ticket),
    Replay(R),
}

/// Shortest and longest pause between claim attempts while waiting for an in-flight original.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(200);

impl Engine {
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Engine { settings })
    }

    /// Sends [`abandon`](crate::IdempotencyStore::abandon) for a claim whose answer was lost, in the background.
    fn abandon_later(self: &Arc<Self>, key: Arc<str>, attempt: u64) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let engine = self.clone();
        rt.spawn(async move {
            match engine.settings.store.abandon(&key, attempt).await {
                Ok(true) => tracing::info!(result = "abandoned", "a claim whose answer was lost was undone"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    result = "abandon_failed",
                    error = %e,
                    "could not undo a claim whose answer was lost; if it landed, it ends with its lease"
                ),
            }
        });
    }

    /// Logs and counts an acquired claim, and makes its ticket.
    pub(crate) fn acquired(self: &Arc<Self>, key: TicketKey, token: FencingToken, took_over: bool) -> Ticket {
        if took_over {
            tracing::info!(result = "took_over", token = token.0, "idempotency lease ended; taking over");
        }
        count(if took_over { "took_over" } else { "executed" });
        Ticket { engine: self.clone(), key, token, armed: true }
    }

    pub(crate) fn replayed() {
        tracing::debug!(result = "replayed", "idempotent replay");
        count("replayed");
    }

    pub(crate) fn conflict() -> IdempotencyRejection {
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

    /// The in-flight refusal when duplicates do not wait; `None` when they do (then run [`begin`](Self::begin)).
    pub(crate) fn refuse_in_flight(&self, lease_remaining: Duration) -> Option<IdempotencyRejection> {
        self.settings.wait.is_zero().then(|| self.in_flight(lease_remaining))
    }

    /// [`begin`](Self::begin) on the layer's memory store, which answers at once: no store future, no key on the
    /// heap, and a ticket that completes at its slot. A completed record replays what `on_completed` makes of
    /// its payload, under the shard lock (keep it short: a clone). `None` when the store is another one, or when
    /// a duplicate should wait for its in-flight original (then run `begin`).
    pub(crate) fn begin_local<R>(
        self: &Arc<Self>,
        key: &str,
        fp: &Fingerprint,
        on_completed: impl FnOnce(&Payload) -> R,
    ) -> Option<Result<Begin<R>, IdempotencyRejection>> {
        let s = &self.settings;
        let claim = s.memory.as_ref()?.claim_local(key, fp, s.lease, s.ttl, on_completed);
        Some(match claim {
            LocalClaim::Acquired { slot, token, took_over } => {
                Ok(Begin::Execute(self.acquired(TicketKey::Slot(slot), token, took_over)))
            }
            LocalClaim::Completed(response) => {
                Self::replayed();
                Ok(Begin::Replay(response))
            }
            LocalClaim::Mismatch => Err(Self::conflict()),
            LocalClaim::InFlight { lease_remaining } => Err(self.refuse_in_flight(lease_remaining)?),
        })
    }

    pub(crate) async fn begin(self: &Arc<Self>, key: Arc<str>, fp: Fingerprint) -> Result<Begin, IdempotencyRejection> {
        let s = &self.settings;
        let mut deadline = None;
        let mut pause = POLL_MIN;
        loop {
            let attempt = crate::store::random_attempt();
            let claim = match s.store.claim_as(&key, &fp, s.lease, s.ttl, attempt).await {
                Ok(c) => c,
                Err(e) => {
                    // The claim may have landed although its answer never came (a stalled store answers late):
                    // undo it, so the 503 below means the key is usable when its Retry-After says. A store runs
                    // this after the claim, as one connection does.
                    self.abandon_later(key.clone(), attempt);
                    tracing::warn!(
                        result = "store_unavailable",
                        error = %e,
                        "idempotency store unavailable while claiming the key; request refused, not executed"
                    );
                    count("store_unavailable");
                    return Err(e.into());
                }
            };
            match claim {
                Claim::Acquired { token, took_over } => {
                    return Ok(Begin::Execute(self.acquired(TicketKey::Key(key), token, took_over)));
                }
                Claim::Completed { response } => {
                    Self::replayed();
                    return Ok(Begin::Replay(response));
                }
                Claim::Mismatch => return Err(Self::conflict()),
                Claim::InFlight { lease_remaining } => {
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
    }
}

/// Which record a ticket holds: a memory-store slot claimed on the fast path, or a storage key.
/// A slot only comes from the layer's memory store (`Settings::memory`).
pub(crate) enum TicketKey {
    Slot(SlotRef),
    Key(Arc<str>),
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
/// without one (the caller's future was cancelled) releases its claim in the background, because the request
/// may or may not have run — the Unknown case, which is safe to re-execute only because the gateway key flows.
pub(crate) struct Ticket {
    engine: Arc<Engine>,
    key: TicketKey,
    token: FencingToken,
    armed: bool,
}

impl Ticket {
    /// Records a result: final outcomes store `payload` (when it could be encoded), others release the claim.
    /// Callers encode the payload only for final outcomes.
    /// On a [`MemoryStore`](crate::MemoryStore) a [`Payload::Local`] is kept as the value; other stores get its
    /// bytes.
    pub(crate) async fn record(mut self, outcome: Outcome, payload: Option<Payload>) {
        if self.engine.settings.memory.is_some() {
            return self.record_now(outcome, payload);
        }
        self.armed = false;
        let (s, key) = (&self.engine.settings, self.key_str());
        match payload.filter(|_| outcome.is_final()) {
            Some(payload) => {
                let bytes = match payload {
                    Payload::Bytes(b) => b,
                    Payload::Local(v) => v.encode(),
                };
                let stored = s.store.complete(key, self.token, bytes, s.ttl).await;
                self.stored(outcome, stored);
            }
            None => {
                let released = s.store.release(key, self.token).await;
                self.released(released);
            }
        }
    }

    /// [`record`](Self::record) on the layer's memory store, which answers at once: no future needed.
    pub(crate) fn record_now(mut self, outcome: Outcome, payload: Option<Payload>) {
        self.armed = false;
        let s = &self.engine.settings;
        let Some(m) = &s.memory else {
            // Only memory tickets come here; a ticket of another store ends with its lease.
            return self.released(Ok(false));
        };
        match payload.filter(|_| outcome.is_final()) {
            Some(payload) => {
                let stored = match &self.key {
                    TicketKey::Slot(at) => m.complete_local(*at, self.token, payload, s.ttl),
                    TicketKey::Key(key) => m.complete_keyed(key, self.token, payload, s.ttl),
                };
                self.stored(outcome, Ok(stored));
            }
            None => {
                let released = self.release_in(m);
                self.released(Ok(released));
            }
        }
    }

    /// Whether this ticket's lease is renewed while its request runs.
    pub(crate) fn renews(&self) -> bool {
        self.engine.settings.renew_leases
    }

    /// The lease's heartbeat interval: a third of the lease.
    pub(crate) fn beat_every(&self) -> Duration {
        (self.engine.settings.lease / 3).max(Duration::from_millis(1))
    }

    /// Runs `fut` (the request) while renewing the lease every third of it, so a live request keeps its key
    /// however long it takes. Without [`renew_leases`](crate::IdempotencyLayerBuilder::renew_leases) it just
    /// runs `fut`.
    pub(crate) async fn hold<F: Future>(&self, fut: F) -> F::Output {
        if !self.engine.settings.renew_leases {
            return fut.await;
        }
        tokio::select! {
            biased;
            out = fut => out,
            never = self.beat() => match never {},
        }
    }

    async fn beat(&self) -> std::convert::Infallible {
        let every = self.beat_every();
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = &self.engine.settings;
            let renewed = match &self.key {
                TicketKey::Key(key) if s.memory.is_none() => s.store.renew(key, self.token, s.lease).await,
                _ => Ok(self.renew_in_memory()),
            };
            self.renewed(renewed);
        }
    }

    /// One heartbeat on the layer's memory store, which answers at once.
    pub(crate) fn renew_now(&self) {
        let renewed = self.renew_in_memory();
        self.renewed(Ok(renewed));
    }

    fn renew_in_memory(&self) -> bool {
        let s = &self.engine.settings;
        match (&s.memory, &self.key) {
            (Some(m), TicketKey::Slot(at)) => m.renew_local(*at, self.token, s.lease),
            (Some(m), TicketKey::Key(key)) => m.renew_now(key, self.token, s.lease),
            (None, _) => false,
        }
    }

    fn renewed(&self, renewed: Result<bool, StoreError>) {
        match renewed {
            Ok(true) => tracing::trace!(result = "renewed", token = self.token.0, "idempotency lease renewed"),
            Ok(false) => tracing::warn!(
                result = "fenced",
                token = self.token.0,
                "lease was taken over while this request runs; its result will not be stored"
            ),
            Err(e) => tracing::warn!(
                result = "renew_failed",
                error = %e,
                "could not renew the idempotency lease; trying again at the next heartbeat"
            ),
        }
    }

    /// Forgets the claim: the request was refused before any effect (a routing refusal, a validation error, a
    /// handler's [`NotExecuted`](crate::NotExecuted)), so the key is unused again.
    pub(crate) async fn forget(mut self) {
        self.armed = false;
        let s = &self.engine.settings;
        let forgot = match (&s.memory, &self.key) {
            (Some(m), TicketKey::Slot(at)) => Ok(m.forget_local(*at, self.token)),
            (Some(m), TicketKey::Key(key)) => Ok(m.forget_now(key, self.token)),
            (None, _) => s.store.forget(self.key_str(), self.token).await,
        };
        self.ended(forgot, Ended::Forgotten);
    }

    /// Releases the claim now (the request did not run, or its outcome is not final).
    pub(crate) async fn release(mut self) {
        self.armed = false;
        let released = match &self.engine.settings.memory {
            Some(m) => Ok(self.release_in(m)),
            None => self.engine.settings.store.release(self.key_str(), self.token).await,
        };
        self.released(released);
    }

    /// Releases the claim without waiting: at once on the layer's memory store, otherwise in the background
    /// (the ticket's drop).
    pub(crate) fn release_now(mut self) {
        if let Some(m) = &self.engine.settings.memory {
            self.armed = false;
            let released = self.release_in(m);
            self.released(Ok(released));
        }
    }

    fn release_in(&self, m: &crate::MemoryStore) -> bool {
        match &self.key {
            TicketKey::Slot(at) => m.release_local(*at, self.token),
            TicketKey::Key(key) => m.release_now(key, self.token),
        }
    }

    /// The storage key; empty for a memory slot, which only the memory store's own paths use.
    fn key_str(&self) -> &str {
        match &self.key {
            TicketKey::Key(key) => key,
            TicketKey::Slot(_) => "",
        }
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
                    token = self.token.0,
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

    fn released(&self, released: Result<bool, StoreError>) {
        self.ended(released, Ended::Released);
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
                tracing::warn!(result = "fenced", token = self.token.0, "lease was taken over while this request ran");
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

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancelled mid-request: a memory store releases at once; another store in the background if a runtime
        // is there; otherwise the lease ends it.
        let key = match (&self.engine.settings.memory, &self.key) {
            (Some(m), _) => {
                self.release_in(m);
                return;
            }
            (None, TicketKey::Slot(_)) => return,
            (None, TicketKey::Key(key)) => key.clone(),
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let engine = self.engine.clone();
            let token = self.token;
            rt.spawn(async move {
                let _ = engine.settings.store.release(&key, token).await;
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
                let buf = KeyBuf::new(scope, key);
                assert_eq!(buf.as_str(), storage_key(scope, key), "{scope:?}");
                let fits = storage_key(scope, key).len() <= KEY_INLINE;
                assert_eq!(matches!(buf, KeyBuf::Inline { .. }), fits, "{scope:?}");
            }
        }
    }
}
