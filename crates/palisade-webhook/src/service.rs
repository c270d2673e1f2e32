//! [`WebhookService`]: capture, verify, deduplicate, hand on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use palisade_core::body::{BodyError, collect_limited};
use palisade_core::{BoxError, FailurePolicy};
use palisade_store::StoreError;
use palisade_store::lease::{
    Claim, Fingerprint, Hold, LeaseStore, Payload, abandon_in_background, random_attempt, renewing,
};
use tower_service::Service;

use crate::rejection::WebhookRejection;
use crate::telemetry;
use crate::verifier::Verifier;

/// What every clone of a webhook layer and its services share.
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    /// Deduplicates deliveries when set.
    pub(crate) store: Option<Arc<dyn LeaseStore>>,
    pub(crate) body_limit: usize,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) failure_policy: FailurePolicy,
    /// The endpoint's namespace in the store, if it has one.
    pub(crate) namespace: Option<String>,
}

/// The verified event's id, in the request extensions (`axum::Extension<EventId>` extracts it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(pub String);

impl EventId {
    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Header set on the 200 answered for an already-handled event, so a sender's delivery log shows why.
pub const DUPLICATE_HEADER: &str = "palisade-webhook-duplicate";

/// The service built by [`WebhookLayer`](crate::WebhookLayer).
pub struct WebhookService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for WebhookService<S> {
    fn clone(&self) -> Self {
        WebhookService { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for WebhookService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> WebhookService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        WebhookService { inner, shared }
    }
}

/// The service's future. Boxed: the body has to be collected before anything else happens, so one allocation
/// per webhook is noise next to reading the body and an HMAC over it.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

fn reject<B: From<Bytes>>(r: &WebhookRejection) -> Response<B> {
    r.problem().into_response()
}

/// The store key of a delivery record: `webhook:<id>` without a namespace (the key of earlier versions, so their
/// records are found after an upgrade), `webhook<len>:<namespace>:<id>` with one. The namespace's length (bytes)
/// makes the key injective: no `(namespace, id)` pair, namespace or not, spells another's key. Disjoint from
/// every idempotency key (`k:…`, `s<len>:…`), so one store serves both layers.
fn delivery_key(namespace: Option<&str>, dedup_id: &str) -> Arc<str> {
    match namespace {
        None => Arc::from(format!("webhook:{dedup_id}")),
        Some(ns) => Arc::from(format!("webhook{}:{ns}:{dedup_id}", ns.len())),
    }
}

/// Releases a claim if the handler's future is dropped before it finished (client gone, panic, shutdown).
struct ClaimGuard {
    store: Arc<dyn LeaseStore>,
    event_id: String,
    hold: Option<Hold>,
    lease: Duration,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(hold) = self.hold.take() else { return };
        let (id, lease) = (std::mem::take(&mut self.event_id), self.lease);
        let log = move |released: Result<bool, StoreError>| match released {
            Ok(true) => tracing::info!(
                target: "palisade_webhook",
                event_id = id,
                result = "dropped",
                "a delivery was dropped while its handler ran (it may have had effects); its claim was released, so the sender's redelivery runs the handler again"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                target: "palisade_webhook",
                event_id = id,
                result = "release_failed",
                error = %e,
                "a delivery was dropped while its handler ran (it may have had effects) and the store did not confirm the release of its claim; at worst the sender's redelivery runs the handler once the lease ends (within {lease:?})"
            ),
        };
        let now = self.store.release(&hold).now().map_err(drop);
        match now {
            Ok(released) => log(released),
            // Without a runtime the lease simply expires.
            Err(()) => {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let store = self.store.clone();
                    rt.spawn(async move { log(store.release(&hold).await) });
                }
            }
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for WebhookService<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready handles this request; a fresh clone stays behind for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        if req.method() != http::Method::POST {
            return Box::pin(std::future::ready(Ok(reject(&WebhookRejection::MethodNotAllowed))));
        }
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = match collect_limited(&parts.headers, body, shared.body_limit).await {
                Ok(bytes) => bytes,
                Err(BodyError::TooLarge { limit }) => return Ok(reject(&WebhookRejection::BodyTooLarge { limit })),
                Err(_) => return Ok(reject(&WebhookRejection::BodyUnreadable)),
            };
            let verified = match shared.verifier.verify(&parts.headers, &bytes) {
                Ok(v) => v,
                Err(e) => return Ok(reject(&WebhookRejection::Invalid(e))),
            };
            // What deduplication keys on: something the signature covers (for GitHub the body's digest, not the
            // unsigned delivery id). Computed only when there is a store.
            let dedup_id = match &shared.store {
                Some(_) => shared.verifier.dedup_id(&verified, &bytes),
                None => None,
            };
            if let Some(id) = &verified.event_id {
                parts.extensions.insert(EventId(id.clone()));
            }
            parts.extensions.insert(verified);
            let req = Request::from_parts(parts, Full::new(bytes));

            let Some(store) = shared.store.clone() else { return inner.call(req).await };
            // From here on `event_id` (and the `event_id` log field) is the deduplication id.
            let Some(event_id) = dedup_id else { return Ok(reject(&WebhookRejection::EventIdMissing)) };
            let (key, lease) = (delivery_key(shared.namespace.as_deref(), &event_id), shared.lease);
            let attempt = random_attempt();
            // Kept for the retention period from the start, so a handler that outlives its lease can still
            // record the event as done when nobody took it over.
            let claimed = store.claim_as(&key, &Fingerprint::NONE, lease, shared.retention, attempt).await;
            let claim = match claimed {
                Ok(c) => c,
                Err(e) => {
                    // The claim may have landed although its answer never came (a stalled store answers late):
                    // undo it, so the sender's redelivery after Retry-After is handled. One connection runs the
                    // undo after the claim.
                    let id = event_id.clone();
                    abandon_in_background(store.clone(), key, attempt, lease, move |answer| match answer {
                        Ok(true) => {
                            tracing::info!(target: "palisade_webhook", event_id = id, result = "abandoned", "a claim whose answer was lost had landed; it was undone, so the event's redelivery is handled")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(target: "palisade_webhook", event_id = id, result = "abandon_failed", error = %e, "could not undo a claim whose answer was lost; if it landed, the event is answered 503 in progress until its lease ends (within {lease:?} of landing)")
                        }
                    });
                    if shared.failure_policy == FailurePolicy::FailOpen {
                        tracing::warn!(target: "palisade_webhook", event_id, error = %e, "delivery store unavailable while claiming the event; running the handler without deduplication (fail-open): a concurrent or later delivery may run it too");
                        return inner.call(req).await;
                    }
                    tracing::error!(target: "palisade_webhook", event_id, error = %e, "delivery store unavailable while claiming the event; answered 503, the handler was not run (the sender redelivers)");
                    telemetry::delivery("store_unavailable", &event_id);
                    return Ok(reject(&WebhookRejection::Store(e.into())));
                }
            };
            let hold = match claim {
                Claim::Acquired { hold, .. } => hold,
                Claim::Done { .. } => {
                    telemetry::delivery("duplicate_done", &event_id);
                    let mut res = Response::new(ResBody::from(Bytes::new()));
                    *res.status_mut() = StatusCode::OK;
                    res.headers_mut().insert(DUPLICATE_HEADER, HeaderValue::from_static("done"));
                    return Ok(res);
                }
                Claim::Held { lease_remaining } => {
                    telemetry::delivery("duplicate_in_progress", &event_id);
                    return Ok(reject(&WebhookRejection::InProgress { retry_after: lease_remaining }));
                }
                // Deliveries all claim with `Fingerprint::NONE`; a mismatch (a key written by something else) or a
                // state this version does not know is refused, never handled twice.
                _ => {
                    tracing::error!(target: "palisade_webhook", event_id, "the delivery record holds something this layer did not write; answered 503, the handler was not run");
                    let e = StoreError::new("the delivery record is not one this layer wrote");
                    return Ok(reject(&WebhookRejection::Store(e.into())));
                }
            };
            let mut guard = ClaimGuard { store: store.clone(), event_id, hold: Some(hold), lease };
            let result = match guard.hold.as_ref() {
                Some(hold) => {
                    let id = guard.event_id.as_str();
                    renewing(&*store, hold, lease, inner.call(req), |renewed| match renewed {
                        Ok(true) => tracing::trace!(target: "palisade_webhook", event_id = id, result = "renewed", "claim renewed"),
                        Ok(false) => tracing::warn!(
                            target: "palisade_webhook",
                            event_id = id,
                            result = "fenced",
                            "the claim's lease ended while the handler runs (renewals failed or this process stalled): a redelivery may run the handler too, and this delivery cannot record the event as done if another took it over"
                        ),
                        Err(e) => tracing::warn!(
                            target: "palisade_webhook",
                            event_id = id,
                            result = "renew_failed",
                            error = %e,
                            "could not renew the claim's lease while the handler runs; trying again at the next heartbeat"
                        ),
                    })
                    .await
                }
                None => inner.call(req).await,
            };
            let Some(hold) = guard.hold.take() else { return result };
            let event_id = std::mem::take(&mut guard.event_id);
            let handled = matches!(&result, Ok(res) if res.status().is_success());
            if handled {
                telemetry::delivery("handled", &event_id);
                match store.complete(&hold, Payload::Bytes(Bytes::new()), shared.retention).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        target: "palisade_webhook",
                        event_id,
                        result = "fenced",
                        "the handler ran and succeeded, but its claim had been taken over (its lease ended): another delivery holds or finished the event and may run the handler too; this delivery did not record it"
                    ),
                    Err(e) => tracing::error!(
                        target: "palisade_webhook",
                        event_id,
                        result = "store_failed",
                        error = %e,
                        "the handler ran and succeeded (its answer goes to the sender), but the store did not confirm that the event was recorded as done: if it was not, its claim ends with its lease (within {lease:?}), and a redelivery after that runs the handler again"
                    ),
                }
            } else {
                telemetry::delivery("handler_failed", &event_id);
                match store.release(&hold).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(
                        target: "palisade_webhook",
                        event_id,
                        result = "fenced",
                        "the handler failed; its claim had already ended, so there was nothing to release"
                    ),
                    Err(e) => tracing::warn!(
                        target: "palisade_webhook",
                        event_id,
                        result = "release_failed",
                        error = %e,
                        "the handler ran and failed; the store did not confirm the release of its claim, so at worst the sender's redelivery runs the handler again once the lease ends (within {lease:?})"
                    ),
                }
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::delivery_key;

    #[test]
    fn delivery_keys_keep_the_old_form_without_a_namespace() {
        assert_eq!(&*delivery_key(None, "evt_1"), "webhook:evt_1");
        assert_eq!(&*delivery_key(Some("stripe-eu"), "evt_1"), "webhook9:stripe-eu:evt_1");
        assert_eq!(&*delivery_key(Some(""), "evt_1"), "webhook0::evt_1");
        // Without the length these would meet: `webhook::` / `webhook::`.
        assert_ne!(delivery_key(Some(""), ""), delivery_key(None, ":"));
    }

    proptest::proptest! {
        /// Two different (namespace, id) pairs never share a key, whatever `:` or digits they contain. A small
        /// alphabet, so near-collisions (`(None, "a:b")` against `(Some("a"), "b")`) come up in every run.
        #[test]
        fn delivery_keys_never_meet(
            a in (proptest::option::of("[a1:]{0,3}"), "[a1:]{0,3}"),
            b in (proptest::option::of("[a1:]{0,3}"), "[a1:]{0,3}"),
        ) {
            let key = |(ns, id): &(Option<String>, String)| delivery_key(ns.as_deref(), id);
            proptest::prop_assert_eq!(a == b, key(&a) == key(&b), "{:?} {:?}", a, b);
        }
    }
}
