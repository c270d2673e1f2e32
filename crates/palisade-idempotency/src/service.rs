//! The typed-mode `Service`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use palisade_core::{Classify, GatewayKeyed, IdempotencyKey};
use pin_project_lite::pin_project;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::MissingKey;
use crate::engine::Engine;
use crate::engine::{Begin, KeyBuf, Ticket, count, gateway_key_for};
use crate::error::IdempotencyRejection;
use palisade_store::lease::{Fingerprint, Payload};

pub(crate) type KeyFn<Req> = Arc<dyn Fn(&Req) -> Option<IdempotencyKey> + Send + Sync>;
pub(crate) type ScopeFn<Req> = Arc<dyn Fn(&Req) -> Option<String> + Send + Sync>;
pub(crate) type FingerprintFn<Req> = Arc<dyn Fn(&Req) -> Fingerprint + Send + Sync>;

/// What every clone of a typed layer and its services share: the engine and how a request gives its key, scope
/// and fingerprint.
pub(crate) struct Typed<Req> {
    pub(crate) engine: Arc<Engine>,
    /// `None`: the request's own gateway key ([`GatewayKeyed`]), read in place rather than cloned.
    pub(crate) key: Option<KeyFn<Req>>,
    pub(crate) scope: Option<ScopeFn<Req>>,
    pub(crate) fingerprint: FingerprintFn<Req>,
}

/// The service [`IdempotencyLayer`](crate::IdempotencyLayer) produces.
pub struct IdempotencyService<S, Req, C> {
    inner: S,
    shared: Arc<Typed<Req>>,
    classifier: C,
}

impl<S: Clone, Req, C: Clone> Clone for IdempotencyService<S, Req, C> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: std::fmt::Debug, Req, C> std::fmt::Debug for IdempotencyService<S, Req, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyService").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, Req, C> IdempotencyService<S, Req, C> {
    pub(crate) fn new(inner: S, shared: Arc<Typed<Req>>, classifier: C) -> Self {
        IdempotencyService { inner, shared, classifier }
    }
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

pin_project! {
    /// The future of [`IdempotencyService`]: a replay or refusal ready at once; a request claimed in a store that
    /// answered at once (the memory store), driven in place — the inner service's readiness, its call, the lease
    /// heartbeat and the recording, with no allocation but the kept result (and, when the inner service was not
    /// ready at once, the box it waits in); or, for stores that must be awaited and for duplicates that wait, a
    /// boxed future.
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, C>
    where
        S: Service<Req>,
    {
        Ready { result: Option<Result<S::Response, S::Error>> },
        Executing {
            #[pin]
            call: Call<S, Req>,
            ticket: Option<Ticket>,
            classifier: C,
            beat: Option<Pin<Box<Sleep>>>,
        },
        Recording { fut: Pin<Box<dyn Future<Output = ()> + Send>>, result: Option<Result<S::Response, S::Error>> },
        Boxed { fut: BoxFuture<S::Response, S::Error> },
    }
}

pin_project! {
    /// The inner service waiting to be ready (polled with the caller's context, as tower's `Oneshot` does), then
    /// its call. The waiting state is boxed: it is rare (an inner service not ready when called: a rate limit that
    /// waits, a full concurrency limit), and inline it would hold a whole service and request, making the future
    /// larger than the inner call's own — every call's future, which each outer layer moves, by that much.
    #[project = CallProj]
    enum Call<S, Req>
    where
        S: Service<Req>,
    {
        Waiting { waiting: Box<(S, Option<Req>)> },
        Running { #[pin] fut: S::Future },
    }
}

impl<S: Service<Req>, Req, C> ResponseFuture<S, Req, C> {
    fn ready(result: Result<S::Response, S::Error>) -> Self {
        ResponseFuture { kind: Kind::Ready { result: Some(result) } }
    }
    fn boxed(fut: impl Future<Output = Result<S::Response, S::Error>> + Send + 'static) -> Self {
        ResponseFuture { kind: Kind::Boxed { fut: Box::pin(fut) } }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    S::Response: Serialize + Clone + Send + Sync + 'static,
    S::Error: Serialize + Clone + Send + Sync + 'static,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.as_mut().project().kind;
        let (result, recording) = match kind.as_mut().project() {
            KindProj::Ready { result } => match result.take() {
                Some(r) => return Poll::Ready(r),
                None => panic!("idempotency ResponseFuture polled after completion"),
            },
            KindProj::Boxed { fut } => return fut.as_mut().poll(cx),
            KindProj::Recording { fut, result } => {
                if fut.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match result.take() {
                    Some(r) => return Poll::Ready(r),
                    None => panic!("idempotency ResponseFuture polled after completion"),
                }
            }
            KindProj::Executing { mut call, ticket, classifier, beat } => {
                let result = loop {
                    match call.as_mut().project() {
                        CallProj::Waiting { waiting } => match waiting.0.poll_ready(cx) {
                            Poll::Ready(Ok(())) => {
                                let (inner, req) = &mut **waiting;
                                let Some(req) = req.take() else {
                                    panic!("idempotency ResponseFuture polled after completion")
                                };
                                let fut = inner.call(req);
                                call.set(Call::Running { fut });
                            }
                            Poll::Ready(Err(e)) => break Err(e),
                            Poll::Pending => break Ok(Poll::Pending),
                        },
                        CallProj::Running { fut } => match fut.poll(cx) {
                            Poll::Ready(r) => break Ok(Poll::Ready(r)),
                            Poll::Pending => break Ok(Poll::Pending),
                        },
                    }
                };
                match result {
                    Ok(Poll::Ready(result)) => {
                        let recording = ticket.take().and_then(|ticket| {
                            let outcome = classifier.classify(&result);
                            // Kept as the value: a replay in this process clones it instead of decoding JSON;
                            // a remote store keeps its JSON.
                            let payload = outcome.is_final().then(|| Payload::value(result.clone()));
                            ticket.record_now(outcome, payload)
                        });
                        (result, recording)
                    }
                    Ok(Poll::Pending) => {
                        // Still running: renew the lease every third of it (the timer is made only for a request
                        // that did not finish at once).
                        if let Some(t) = ticket.as_ref().filter(|t| t.renews()) {
                            let sleep = beat.get_or_insert_with(|| Box::pin(tokio::time::sleep(t.beat_every())));
                            while sleep.as_mut().poll(cx).is_ready() {
                                t.renew_now();
                                sleep.as_mut().reset(Instant::now() + t.beat_every());
                            }
                        }
                        return Poll::Pending;
                    }
                    // The inner service failed before the call: nothing ran, so the claim is released.
                    Err(e) => (Err(e), ticket.take().and_then(Ticket::release_now)),
                }
            }
        };
        match recording {
            None => Poll::Ready(result),
            Some(fut) => {
                // The store must be awaited for the recording: answer once it is done.
                kind.set(Kind::Recording { fut, result: Some(result) });
                self.poll(cx)
            }
        }
    }
}

async fn ready<S: Service<Req>, Req>(svc: &mut S) -> Result<(), S::Error> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await
}

impl<S, Req, C> Service<Req> for IdempotencyService<S, Req, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    S::Error: Serialize + DeserializeOwned + Clone + From<IdempotencyRejection> + Send + Sync + 'static,
    Req: GatewayKeyed + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C>;

    /// Always ready: the inner service's readiness is awaited only when the request is really executed, so a
    /// replay or a refusal never waits for (or takes) inner capacity.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        // A key function's key, or (the default) the request's own gateway key, borrowed: no reference count
        // taken and dropped.
        let given = shared.key.as_ref().map(|f| f(&req));
        let key = match &given {
            Some(given) => given.as_ref(),
            None => req.gateway_key(),
        };
        let Some(key) = key else {
            return match shared.engine.settings.missing_key {
                MissingKey::Reject => {
                    count("missing_key");
                    ResponseFuture::ready(Err(IdempotencyRejection::KeyMissing.into()))
                }
                _ => {
                    count("passthrough");
                    let mut inner = self.take_inner();
                    ResponseFuture::boxed(async move {
                        ready(&mut inner).await?;
                        inner.call(req).await
                    })
                }
            };
        };
        let scope = shared.scope.as_ref().and_then(|f| f(&req));
        let fingerprint = (shared.fingerprint)(&req);
        let mut buf = KeyBuf::new();
        let skey = buf.spell(scope.as_deref(), key);
        let engine = &shared.engine;

        // A store that answers at once (memory): claim here, replay a kept value by cloning it, and run the
        // request in place. Stores that must be awaited, and duplicates that wait, take the general path below.
        match engine.begin_now(skey, &fingerprint) {
            Some(Ok(Begin::Execute(ticket))) => {
                if let Some(gateway_key) = gateway_key_to_set(&req, scope.as_deref(), key) {
                    req.set_gateway_key(gateway_key);
                }
                // An inner service that is ready now is called now: no clone of it travels with the future. One
                // that is not goes into the future, which polls its readiness again with the caller's context
                // (the no-op waker registered here is replaced then). Each future is built in the expression it
                // is returned by, so the inner call's future is written where it stays instead of being moved.
                return match self.inner.poll_ready(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(Ok(())) => ResponseFuture {
                        kind: Kind::Executing {
                            call: Call::Running { fut: self.inner.call(req) },
                            ticket: Some(ticket),
                            classifier: self.classifier.clone(),
                            beat: None,
                        },
                    },
                    Poll::Pending => ResponseFuture {
                        kind: Kind::Executing {
                            call: Call::Waiting { waiting: Box::new((self.take_inner(), Some(req))) },
                            ticket: Some(ticket),
                            classifier: self.classifier.clone(),
                            beat: None,
                        },
                    },
                    // The inner service failed before the call: nothing ran, so the claim is released.
                    Poll::Ready(Err(e)) => match ticket.release_now() {
                        None => ResponseFuture::ready(Err(e)),
                        Some(fut) => ResponseFuture { kind: Kind::Recording { fut, result: Some(Err(e)) } },
                    },
                };
            }
            Some(Ok(Begin::Replay(found))) => return ResponseFuture::ready(replayed(&found)),
            Some(Err(refusal)) => return ResponseFuture::ready(Err(refusal.into())),
            None => {}
        }

        let skey: Arc<str> = Arc::from(skey);
        if let Some(gateway_key) = gateway_key_to_set(&req, scope.as_deref(), key) {
            req.set_gateway_key(gateway_key);
        }
        let engine = engine.clone();
        let (mut inner, classifier) = (self.take_inner(), self.classifier.clone());
        ResponseFuture::boxed(async move {
            let ticket = match engine.begin(skey, fingerprint).await? {
                Begin::Replay(found) => return replayed(&found),
                Begin::Execute(ticket) => ticket,
            };
            if let Err(e) = ready(&mut inner).await {
                ticket.release().await;
                return Err(e);
            }
            let result = ticket.hold(inner.call(req)).await;
            let outcome = classifier.classify(&result);
            let payload = outcome.is_final().then(|| Payload::value(result.clone()));
            ticket.record(outcome, payload).await;
            result
        })
    }
}

impl<S: Clone, Req, C> IdempotencyService<S, Req, C> {
    /// The inner service for one call, leaving a clone in its place.
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

/// A stored result: the value itself when this process kept it, otherwise its JSON.
fn replayed<T, E>(found: &Payload) -> Result<T, E>
where
    T: DeserializeOwned + Clone + 'static,
    E: DeserializeOwned + Clone + From<IdempotencyRejection> + 'static,
{
    match found.downcast_ref::<Result<T, E>>() {
        Some(result) => result.clone(),
        // Bytes, or kept by a layer with other types: read it as the JSON it would have stored.
        None => decode(&found.to_bytes()),
    }
}

/// The gateway key the request must carry for its edge key (the edge key itself without a scope), when it does
/// not carry it already.
fn gateway_key_to_set<Req: GatewayKeyed>(
    req: &Req,
    scope: Option<&str>,
    key: &IdempotencyKey,
) -> Option<IdempotencyKey> {
    match scope {
        None if req.gateway_key() == Some(key) => None,
        None => Some(key.clone()),
        Some(_) => Some(gateway_key_for(scope, key)),
    }
}

/// A stored JSON result.
fn decode<T: DeserializeOwned, E: DeserializeOwned + From<IdempotencyRejection>>(bytes: &[u8]) -> Result<T, E> {
    match serde_json::from_slice::<Result<T, E>>(bytes) {
        Ok(result) => result,
        Err(e) => Err(IdempotencyRejection::UnreadableRecord(e.to_string()).into()),
    }
}
