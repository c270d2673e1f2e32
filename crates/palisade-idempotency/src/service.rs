//! The typed-mode `Service`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use palisade_core::{Classify, GatewayKeyed};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_service::Service;

use crate::config::MissingKey;
use crate::engine::{Begin, count, gateway_key_for, storage_key};
use crate::error::IdempotencyRejection;
use crate::layer::Typed;

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

/// The future of [`IdempotencyService`].
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

async fn ready<S: Service<Req>, Req>(svc: &mut S) -> Result<(), S::Error> {
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await
}

impl<S, Req, C> Service<Req> for IdempotencyService<S, Req, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Serialize + DeserializeOwned + Send + 'static,
    S::Error: Serialize + DeserializeOwned + From<IdempotencyRejection> + Send + 'static,
    Req: GatewayKeyed + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    /// Always ready: the inner service's readiness is awaited only when the request is really executed, so a
    /// replay or a refusal never waits for (or takes) inner capacity.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = &self.shared;
        let Some(key) = (shared.key)(&req) else {
            return match shared.engine.settings.missing_key {
                MissingKey::Reject => {
                    count("missing_key");
                    Box::pin(std::future::ready(Err(IdempotencyRejection::KeyMissing.into())))
                }
                _ => {
                    count("passthrough");
                    Box::pin(async move {
                        ready(&mut inner).await?;
                        inner.call(req).await
                    })
                }
            };
        };
        let scope = shared.scope.as_ref().and_then(|f| f(&req));
        let fingerprint = (shared.fingerprint)(&req);
        let skey = storage_key(scope.as_deref(), &key);
        req.set_gateway_key(gateway_key_for(scope.as_deref(), &key));
        let engine = shared.engine.clone();
        let classifier = self.classifier.clone();
        Box::pin(async move {
            match engine.begin(skey, fingerprint).await? {
                Begin::Replay(bytes) => match serde_json::from_slice::<Result<S::Response, S::Error>>(&bytes) {
                    Ok(result) => result,
                    Err(e) => Err(IdempotencyRejection::UnreadableRecord(e.to_string()).into()),
                },
                Begin::Execute(ticket) => {
                    if let Err(e) = ready(&mut inner).await {
                        ticket.release().await;
                        return Err(e);
                    }
                    let result = inner.call(req).await;
                    let outcome = classifier.classify(&result);
                    let payload = if outcome.is_final() {
                        // Sized for a typical response, so encoding does not grow the buffer.
                        let mut buf = Vec::with_capacity(256);
                        serde_json::to_writer(&mut buf, &result).ok().map(|()| Bytes::from(buf))
                    } else {
                        None
                    };
                    ticket.record(outcome, payload).await;
                    result
                }
            }
        })
    }
}
