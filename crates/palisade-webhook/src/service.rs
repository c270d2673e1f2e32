//! [`WebhookService`]: capture, verify, deduplicate, hand on.

use std::convert::Infallible;
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
use palisade_core::{BoxError, FailurePolicy, PaymentError};
use tower_service::Service;

use crate::rejection::WebhookRejection;
use crate::store::{Claim, ClaimToken, DeliveryStore};
use crate::telemetry;
use crate::verifier::Verifier;

/// What every clone of a webhook layer and its services share.
pub(crate) struct Shared<D> {
    pub(crate) verifier: Verifier,
    pub(crate) store: D,
    pub(crate) body_limit: usize,
    pub(crate) lease: Duration,
    pub(crate) retention: Duration,
    pub(crate) failure_policy: FailurePolicy,
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
pub struct WebhookService<S, D> {
    inner: S,
    shared: Arc<Shared<D>>,
}

impl<S: Clone, D> Clone for WebhookService<S, D> {
    fn clone(&self) -> Self {
        WebhookService { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S: std::fmt::Debug, D> std::fmt::Debug for WebhookService<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, D> WebhookService<S, D> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<D>>) -> Self {
        WebhookService { inner, shared }
    }
}

/// The service's future. Boxed: the body has to be collected before anything else happens, so one allocation
/// per webhook is noise next to reading the body and an HMAC over it.
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

fn reject<B: From<Bytes>>(r: &WebhookRejection) -> Response<B> {
    r.problem().into_response()
}

/// What a store error says failed, without what it claims about the call: `PaymentError::StoreUnavailable`'s
/// text adds "the call was not attempted", which is false once the handler has run. Every log line below says
/// itself what happened to the delivery.
fn what_failed(e: &PaymentError) -> String {
    match e {
        PaymentError::StoreUnavailable { message } => message.as_str().to_owned(),
        other => other.to_string(),
    }
}

/// Releases a claim if the handler's future is dropped before it finished (client gone, panic, shutdown).
struct ClaimGuard<D: DeliveryStore> {
    store: D,
    event_id: String,
    token: Option<ClaimToken>,
    lease: Duration,
}

impl<D: DeliveryStore> Drop for ClaimGuard<D> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else { return };
        // Without a runtime the lease simply expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, lease) = (self.store.clone(), self.lease);
            let id = std::mem::take(&mut self.event_id);
            rt.spawn(async move {
                match store.release(&id, &token).await {
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
                        error = what_failed(&e),
                        "a delivery was dropped while its handler ran (it may have had effects) and the store did not confirm the release of its claim; at worst the sender's redelivery runs the handler once the lease ends (within {lease:?})"
                    ),
                }
            });
        }
    }
}

/// Undoes, in the background, a claim whose answer never arrived: it may have landed, or land later (a stalled
/// store runs it when it resumes, and the undo after it). A failed undo is tried again a few times, until just
/// after the `Retry-After: 1` the delivery was answered with (a dropped connection: the new one carries it), and
/// never past one lease, after which a claim that landed has ended by itself.
fn abandon_later<D: DeliveryStore>(store: &D, event_id: &str, attempt: ClaimToken, lease: Duration) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let (store, id) = (store.clone(), event_id.to_owned());
    rt.spawn(async move {
        let give_up = tokio::time::Instant::now() + lease;
        let mut pause = ABANDON_FIRST_PAUSE;
        for tries_left in (0..ABANDON_TRIES).rev() {
            match store.abandon(&id, &attempt).await {
                Ok(true) => {
                    tracing::info!(target: "palisade_webhook", event_id = id, result = "abandoned", "a claim whose answer was lost had landed; it was undone, so the event's redelivery is handled");
                    return;
                }
                Ok(false) => return,
                Err(e) if tries_left > 0 && tokio::time::Instant::now() + pause < give_up => {
                    tracing::debug!(target: "palisade_webhook", event_id = id, error = what_failed(&e), "could not undo a claim whose answer was lost yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    tracing::warn!(target: "palisade_webhook", event_id = id, result = "abandon_failed", error = what_failed(&e), "could not undo a claim whose answer was lost; if it landed, the event is answered 503 in progress until its lease ends (within {lease:?} of landing)");
                    return;
                }
            }
        }
    });
}

/// Attempts to undo a lost claim, and the pause after the first failure (doubling): 0, 0.25, 0.75 and 1.75 s
/// after the claim failed.
const ABANDON_TRIES: u32 = 4;
const ABANDON_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// Runs the handler while renewing the claim's lease every third of it. The renewals are polled inside this
/// future, so they stop when the handler ends or the delivery is dropped, and follow `tokio::time`.
async fn hold<D: DeliveryStore, F: Future>(
    store: &D,
    event_id: &str,
    token: &ClaimToken,
    lease: Duration,
    handler: F,
) -> F::Output {
    tokio::select! {
        biased;
        out = handler => out,
        never = heartbeat(store, event_id, token, lease) => match never {},
    }
}

async fn heartbeat<D: DeliveryStore>(store: &D, event_id: &str, token: &ClaimToken, lease: Duration) -> Infallible {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.renew(event_id, token, lease).await {
            Ok(true) => tracing::trace!(target: "palisade_webhook", event_id, result = "renewed", "claim renewed"),
            Ok(false) => {
                tracing::warn!(
                    target: "palisade_webhook",
                    event_id,
                    result = "fenced",
                    "the claim's lease ended while the handler runs (renewals failed or this process stalled): a redelivery may run the handler too, and this delivery cannot record the event as done if another took it over"
                );
                // A lease that ended cannot be renewed again: stop asking.
                return std::future::pending().await;
            }
            Err(e) => tracing::warn!(
                target: "palisade_webhook",
                event_id,
                result = "renew_failed",
                error = what_failed(&e),
                "could not renew the claim's lease while the handler runs; trying again at the next heartbeat"
            ),
        }
    }
}

impl<S, D, B, ResBody> Service<Request<B>> for WebhookService<S, D>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    D: DeliveryStore,
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
            let event_id = verified.event_id.clone();
            if let Some(id) = &event_id {
                parts.extensions.insert(EventId(id.clone()));
            }
            parts.extensions.insert(verified);
            let req = Request::from_parts(parts, Full::new(bytes));

            if !shared.store.deduplicates() {
                return inner.call(req).await;
            }
            let Some(event_id) = event_id else { return Ok(reject(&WebhookRejection::EventIdMissing)) };
            let attempt = ClaimToken::fresh();
            let claim = match shared.store.claim_as(&event_id, shared.lease, &attempt).await {
                Ok(c) => c,
                Err(e) => {
                    // The claim may have landed although its answer never came (a stalled store answers late):
                    // undo it, so the sender's redelivery after Retry-After is handled. One connection runs the
                    // undo after the claim.
                    abandon_later(&shared.store, &event_id, attempt, shared.lease);
                    if shared.failure_policy == FailurePolicy::FailOpen {
                        tracing::warn!(target: "palisade_webhook", event_id, error = what_failed(&e), "delivery store unavailable while claiming the event; running the handler without deduplication (fail-open): a concurrent or later delivery may run it too");
                        return inner.call(req).await;
                    }
                    tracing::error!(target: "palisade_webhook", event_id, error = what_failed(&e), "delivery store unavailable while claiming the event; answered 503, the handler was not run (the sender redelivers)");
                    telemetry::delivery("store_unavailable", &event_id);
                    return Ok(reject(&WebhookRejection::Store(e)));
                }
            };
            let token = match claim {
                Claim::Acquired(token) => token,
                Claim::Done => {
                    telemetry::delivery("duplicate_done", &event_id);
                    let mut res = Response::new(ResBody::from(Bytes::new()));
                    *res.status_mut() = StatusCode::OK;
                    res.headers_mut().insert(DUPLICATE_HEADER, HeaderValue::from_static("done"));
                    return Ok(res);
                }
                Claim::InProgress { retry_after } => {
                    telemetry::delivery("duplicate_in_progress", &event_id);
                    return Ok(reject(&WebhookRejection::InProgress { retry_after }));
                }
            };
            let lease = shared.lease;
            let mut guard = ClaimGuard { store: shared.store.clone(), event_id, token: Some(token), lease };
            let result = match guard.token.as_ref() {
                Some(token) => hold(&shared.store, &guard.event_id, token, lease, inner.call(req)).await,
                None => inner.call(req).await,
            };
            let Some(token) = guard.token.take() else { return result };
            let event_id = std::mem::take(&mut guard.event_id);
            let handled = matches!(&result, Ok(res) if res.status().is_success());
            if handled {
                telemetry::delivery("handled", &event_id);
                match shared.store.complete(&event_id, &token, shared.retention).await {
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
                        error = what_failed(&e),
                        "the handler ran and succeeded (its answer goes to the sender), but the store did not confirm that the event was recorded as done: if it was not, its claim ends with its lease (within {lease:?}), and a redelivery after that runs the handler again"
                    ),
                }
            } else {
                telemetry::delivery("handler_failed", &event_id);
                match shared.store.release(&event_id, &token).await {
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
                        error = what_failed(&e),
                        "the handler ran and failed; the store did not confirm the release of its claim, so at worst the sender's redelivery runs the handler again once the lease ends (within {lease:?})"
                    ),
                }
            }
            result
        })
    }
}
