//! The typed-mode `Service`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
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
use crate::store::Fingerprint;
use crate::store::Payload;

pub(crate) type KeyFn<Req> = Arc<dyn Fn(&Req) -> Option<IdempotencyKey> + Send + Sync>;
pub(crate) type ScopeFn<Req> = Arc<dyn Fn(&Req) -> Option<String> + Send + Sync>;
pub(crate) type FingerprintFn<Req> = Arc<dyn Fn(&Req) -> Fingerprint + Send + Sync>;

/// What every clone of a typed layer and its services share: the engine and how a request gives its key, scope
/// and fingerprint.
pub(crate) struct Typed<Req> {
    pub(crate) engine: Arc<Engine>,
    pub(crate) key: KeyFn<Req>,
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
    /// The future of [`IdempotencyService`]: a replay or refusal ready at once, a request executing against the
    /// layer's memory store (recorded in place when it completes, no allocation), or, for other stores and for
    /// duplicates that wait, a boxed future.
    pub struct ResponseFuture<F, T, E, C> {
        #[pin]
        kind: Kind<F, T, E, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T, E, C> {
        Ready { result: Option<Result<T, E>> },
        Executing { #[pin] fut: F, ticket: Option<Ticket>, classifier: C, beat: Option<Pin<Box<Sleep>>> },
        Boxed { fut: BoxFuture<T, E> },
    }
}

impl<F, T, E, C> ResponseFuture<F, T, E, C> {
    fn ready(result: Result<T, E>) -> Self {
        ResponseFuture { kind: Kind::Ready { result: Some(result) } }
    }
    fn boxed(fut: impl Future<Output = Result<T, E>> + Send + 'static) -> Self {
        ResponseFuture { kind: Kind::Boxed { fut: Box::pin(fut) } }
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, T, E, C>
where
    F: Future<Output = Result<T, E>>,
    T: Serialize + Clone + Send + 'static,
    E: Serialize + Clone + Send + 'static,
    C: Classify<T, E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Ready { result } => match result.take() {
                Some(r) => Poll::Ready(r),
                None => panic!("idempotency ResponseFuture polled after completion"),
            },
            KindProj::Executing { fut, ticket, classifier, beat } => {
                let Poll::Ready(result) = fut.poll(cx) else {
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
                };
                if let Some(ticket) = ticket.take() {
                    let outcome = classifier.classify(&result);
                    // Kept as the value: a replay in this process clones it instead of decoding JSON.
                    let payload = outcome.is_final().then(|| Payload::Local(Box::new(result.clone())));
                    ticket.record_now(outcome, payload);
                }
                Poll::Ready(result)
            }
            KindProj::Boxed { fut } => fut.as_mut().poll(cx),
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
    S::Response: Serialize + DeserializeOwned + Clone + Send + 'static,
    S::Error: Serialize + DeserializeOwned + Clone + From<IdempotencyRejection> + Send + 'static,
    Req: GatewayKeyed + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Response, S::Error, C>;

    /// Always ready: the inner service's readiness is awaited only when the request is really executed, so a
    /// replay or a refusal never waits for (or takes) inner capacity.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        let Some(key) = (shared.key)(&req) else {
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
        let skey = KeyBuf::new(scope.as_deref(), &key);
        let engine = &shared.engine;

        // A memory store answers at once: claim here, replay a kept value by cloning it, and box only the
        // execution. Waiting for an in-flight original takes the general path below.
        let kept = |p: &Payload| match p {
            Payload::Local(v) => match v.as_any().downcast_ref::<Result<S::Response, S::Error>>() {
                Some(result) => Ok(result.clone()),
                // Kept by a layer with other types: read it as the bytes it would have stored.
                None => Err(v.encode()),
            },
            Payload::Bytes(b) => Err(b.clone()),
        };
        match engine.begin_local(skey.as_str(), &fingerprint, kept) {
            Some(Ok(Begin::Execute(ticket))) => {
                set_gateway_key(&mut req, scope.as_deref(), key);
                return self.execute_local(req, ticket);
            }
            Some(Ok(Begin::Replay(found))) => {
                return ResponseFuture::ready(found.unwrap_or_else(|bytes| decode(&bytes)));
            }
            Some(Err(refusal)) => return ResponseFuture::ready(Err(refusal.into())),
            None => {}
        }

        let local = engine.settings.memory.is_some();
        let skey: Arc<str> = Arc::from(skey.as_str());
        set_gateway_key(&mut req, scope.as_deref(), key);
        let engine = engine.clone();
        let mut this = self.clone_for_call();
        ResponseFuture::boxed(async move {
            match engine.begin(skey, fingerprint).await? {
                Begin::Replay(bytes) => decode(&bytes),
                Begin::Execute(ticket) => this.execute(req, ticket, local).await,
            }
        })
    }
}

impl<S, Req, C> IdempotencyService<S, Req, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Serialize + Clone + Send + 'static,
    S::Error: Serialize + Clone + Send + 'static,
    Req: Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
{
    /// The inner service for one call, leaving a clone in its place (the one that was driven to readiness, if
    /// any, goes with the call).
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    fn clone_for_call(&mut self) -> Self {
        IdempotencyService {
            inner: self.take_inner(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }

    /// Runs a request claimed on the layer's memory store. When the inner service is ready right away (asked
    /// with a no-op waker) it is called here and the call's own future is driven in place, recording the outcome
    /// when it completes; otherwise this takes the general path.
    fn execute_local(&mut self, req: Req, ticket: Ticket) -> ResponseFuture<S::Future, S::Response, S::Error, C> {
        match self.inner.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => ResponseFuture {
                kind: Kind::Executing {
                    fut: self.inner.call(req),
                    ticket: Some(ticket),
                    classifier: self.classifier.clone(),
                    beat: None,
                },
            },
            Poll::Ready(Err(e)) => {
                ticket.release_now();
                ResponseFuture::ready(Err(e))
            }
            Poll::Pending => ResponseFuture { kind: Kind::Boxed { fut: self.execute(req, ticket, true) } },
        }
    }

    /// Runs a claimed request and records its outcome: on a memory store (`local`) a final result is kept as a
    /// value, elsewhere as JSON.
    ///
    /// When the inner service is ready right away (asked with a no-op waker), it is called here, so the call
    /// needs no clone of it; otherwise a clone goes with the future and readiness is awaited there.
    fn execute(&mut self, req: Req, ticket: Ticket, local: bool) -> BoxFuture<S::Response, S::Error> {
        let classifier = self.classifier.clone();
        let called = match self.inner.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => Ok(self.inner.call(req)),
            Poll::Ready(Err(e)) => {
                return Box::pin(async move {
                    ticket.release().await;
                    Err(e)
                });
            }
            Poll::Pending => Err((self.take_inner(), req)),
        };
        Box::pin(async move {
            let result = match called {
                Ok(fut) => ticket.hold(fut).await,
                Err((mut inner, req)) => {
                    if let Err(e) = ready(&mut inner).await {
                        ticket.release().await;
                        return Err(e);
                    }
                    ticket.hold(inner.call(req)).await
                }
            };
            let outcome = classifier.classify(&result);
            let payload = if !outcome.is_final() {
                None
            } else if local {
                Some(Payload::Local(Box::new(result.clone())))
            } else {
                // Sized for a typical response, so encoding does not grow the buffer.
                let mut buf = Vec::with_capacity(256);
                serde_json::to_writer(&mut buf, &result).ok().map(|()| Payload::Bytes(Bytes::from(buf)))
            };
            ticket.record(outcome, payload).await;
            result
        })
    }
}

/// The request carries the gateway key of its edge key (the edge key itself without a scope).
fn set_gateway_key<Req: GatewayKeyed>(req: &mut Req, scope: Option<&str>, key: IdempotencyKey) {
    match scope {
        None if req.gateway_key() == Some(&key) => {}
        None => req.set_gateway_key(key),
        Some(_) => req.set_gateway_key(gateway_key_for(scope, &key)),
    }
}

/// A stored JSON result.
fn decode<T: DeserializeOwned, E: DeserializeOwned + From<IdempotencyRejection>>(bytes: &[u8]) -> Result<T, E> {
    match serde_json::from_slice::<Result<T, E>>(bytes) {
        Ok(result) => result,
        Err(e) => Err(IdempotencyRejection::UnreadableRecord(e.to_string()).into()),
    }
}
