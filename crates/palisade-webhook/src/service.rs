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
use palisade_core::{BoxError, FailurePolicy};
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

/// Releases a claim if the handler's future is dropped before it finished (client gone, panic, shutdown).
struct ClaimGuard<D: DeliveryStore> {
    store: D,
    event_id: String,
    token: Option<ClaimToken>,
}

impl<D: DeliveryStore> Drop for ClaimGuard<D> {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else { return };
        // Without a runtime the lease simply expires.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            let id = std::mem::take(&mut self.event_id);
            rt.spawn(async move {
                let _ = store.release(&id, &token).await;
            });
        }
    }
}

/// Releases, in the background, a claim whose answer never arrived (it may have landed, or land later).
fn release_later<D: DeliveryStore>(store: &D, event_id: &str, token: ClaimToken) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let (store, id) = (store.clone(), event_id.to_owned());
    rt.spawn(async move {
        if let Err(e) = store.release(&id, &token).await {
            tracing::warn!(target: "palisade_webhook", event_id = id, "could not undo a claim whose answer was lost; if it landed, it ends with its lease: {e}");
        }
    });
}

/// Runs the handler while renewing the claim's lease every third of it.
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
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(target: "palisade_webhook", event_id, "the claim's lease ended while the handler runs; a redelivery may run it again")
            }
            Err(e) => {
                tracing::warn!(target: "palisade_webhook", event_id, "could not renew the claim's lease; trying again at the next heartbeat: {e}")
            }
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
            let token = ClaimToken::fresh();
            let claim = match shared.store.claim_with(&event_id, &token, shared.lease).await {
                Ok(c) => c,
                Err(e) => {
                    // The claim may have landed although its answer never came (a stalled store answers late):
                    // release it, so the sender's redelivery after Retry-After is handled. One connection runs
                    // the release after the claim.
                    release_later(&shared.store, &event_id, token);
                    if shared.failure_policy == FailurePolicy::FailOpen {
                        tracing::warn!(target: "palisade_webhook", event_id, "delivery store unavailable, running the handler without deduplication (fail-open): {e}");
                        return inner.call(req).await;
                    }
                    tracing::error!(target: "palisade_webhook", event_id, "delivery store unavailable, answering 503: {e}");
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
            let mut guard = ClaimGuard { store: shared.store.clone(), event_id, token: Some(token) };
            let result = match guard.token.as_ref() {
                Some(token) => hold(&shared.store, &guard.event_id, token, shared.lease, inner.call(req)).await,
                None => inner.call(req).await,
            };
            let Some(token) = guard.token.take() else { return result };
            let event_id = std::mem::take(&mut guard.event_id);
            let handled = matches!(&result, Ok(res) if res.status().is_success());
            if handled {
                telemetry::delivery("handled", &event_id);
                if let Err(e) = shared.store.complete(&event_id, &token, shared.retention).await {
                    tracing::error!(target: "palisade_webhook", event_id, "could not record the event as done; a redelivery after the lease may run the handler again: {e}");
                }
            } else {
                telemetry::delivery("handler_failed", &event_id);
                if let Err(e) = shared.store.release(&event_id, &token).await {
                    tracing::warn!(target: "palisade_webhook", event_id, "could not release the claim; a redelivery runs the handler once the lease expires: {e}");
                }
            }
            result
        })
    }
}
