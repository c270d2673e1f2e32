//! The `Service`.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::decision::Decision;
use crate::error::FraudRejection;
use crate::future::ResponseFuture;
use crate::layer::Config;
use crate::mode::{Annotate, Extract, FraudMode};
use crate::velocity::Attempt;

/// The service made by [`crate::FraudLayer`].
pub struct Fraud<S, X, M> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config<X>>,
    pub(crate) mode: M,
}

impl<S: Clone, X, M: Clone> Clone for Fraud<S, X, M> {
    fn clone(&self) -> Self {
        Fraud { inner: self.inner.clone(), config: self.config.clone(), mode: self.mode.clone() }
    }
}

impl<S, X, M: std::fmt::Debug> std::fmt::Debug for Fraud<S, X, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fraud").field("engine", &self.config.engine).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl<S, Req, X, M> Service<Req> for Fraud<S, X, M>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Annotate + Send + 'static,
    X: Extract<Req> + Send + Sync + 'static,
    M: FraudMode<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let Some(attrs) = self.config.extract.extract(&req) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // The readied service goes into the future; a fresh clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let mode = self.mode.clone();
        ResponseFuture::screened(Box::pin(async move {
            let engine = &config.engine;
            let attempt = Attempt::from_attributes(&attrs);
            let verdict = engine.assess_attempt(&attrs, &attempt).await;
            // The deciding rule's name, made only for a verdict that names it (an approval allocates nothing).
            let rule = || -> Arc<str> { verdict.decided_by.clone().unwrap_or_else(|| Arc::from("fraud")) };
            match verdict.decision {
                Decision::Block => return mode.refuse(FraudRejection::Blocked { rule: rule() }),
                Decision::Challenge => {
                    return mode.refuse(FraudRejection::Challenge {
                        rule: rule(),
                        challenge_url: config.challenge_url.clone(),
                    });
                }
                Decision::Review => {
                    let rule = rule();
                    let verdict = Arc::new(verdict);
                    tracing::info!(
                        target: "palisade_fraud",
                        engine = engine.name(),
                        event = "fraud_review",
                        rule = &*rule,
                        score = verdict.score,
                        "charge passed for manual review"
                    );
                    if let Some(f) = &config.on_review {
                        f(&verdict);
                    }
                    if config.annotate {
                        req.annotate(&verdict);
                    }
                }
                _ => {}
            }
            let out = inner.call(req).await;
            if mode.is_decline(&out) {
                engine.record_decline_attempt(&attempt).await;
            }
            out
        }))
    }
}
