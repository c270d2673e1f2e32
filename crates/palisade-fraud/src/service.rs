//! The `Service`.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use crate::decision::{Assessment, Decision};
use crate::engine::RulesCache;
use crate::error::FraudRejection;
use crate::future::{ResponseFuture, Watch};
use crate::layer::Config;
use crate::mode::{Annotate, Extract, FraudMode};
use crate::velocity::Attempt;

/// The service made by [`crate::FraudLayer`].
pub struct Fraud<S, X, M> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config<X>>,
    pub(crate) mode: M,
    /// The engine's rules in force, as this service last saw them (revalidated on every call).
    pub(crate) rules: RulesCache,
}

impl<S: Clone, X, M: Clone> Clone for Fraud<S, X, M> {
    fn clone(&self) -> Self {
        Fraud {
            inner: self.inner.clone(),
            config: self.config.clone(),
            mode: self.mode.clone(),
            rules: self.rules.clone(),
        }
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
    type Future = ResponseFuture<S::Future, Result<S::Response, S::Error>, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let engine = &self.config.engine;
        // One rule set for the call: what it reads is extracted, then it decides.
        let rules = self.rules.load();
        // Read where it was extracted (the attributes are large: they are moved only into a watch or a box).
        let extracted = self.config.extract.extract_reading(&req, rules.fields);
        let Some(attrs) = &extracted else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // Decided at once when the rules read no velocity or the store answers without waiting: no box.
        let rules = match engine.try_assess_with(rules, attrs) {
            Err(rules) => rules,
            Ok(verdict) => {
                let reads_velocity = !verdict.rule_set().reads.is_empty();
                // An approval needs nothing done (and the verdict is not moved into `apply` for it).
                if verdict.decision != Decision::Approve
                    && let Some(refusal) = apply(&self.config, &self.mode, verdict, &mut req)
                {
                    return ResponseFuture::refused(refusal);
                }
                // A decline is recorded only for rules that read velocity; otherwise nothing is kept.
                let watch = if reads_velocity {
                    extracted.map(|attrs| Watch {
                        engine: engine.clone(),
                        attrs: Box::new(attrs),
                        mode: self.mode.clone(),
                    })
                } else {
                    None
                };
                return ResponseFuture::called(self.inner.call(req), watch);
            }
        };
        // The readied service goes into the future; a fresh clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let mode = self.mode.clone();
        ResponseFuture::screened(Box::pin(async move {
            let engine = &config.engine;
            // Always there (the request was screened above); an unscreened request would pass, as above.
            let Some(attrs) = extracted else { return inner.call(req).await };
            let attempt = Attempt::from_attributes(&attrs);
            let verdict = engine.assess_attempt_with(rules, &attrs, &attempt).await;
            if let Some(refusal) = apply(&config, &mode, verdict, &mut req) {
                return refusal;
            }
            let out = inner.call(req).await;
            if mode.is_decline(&out) {
                engine.record_decline_attempt(&attempt).await;
            }
            out
        }))
    }
}

/// Acts on a verdict: the refusal for `Block` and `Challenge`; for `Review`, the event, the callback and the
/// annotation, and `None` (the request goes on), as for `Approve`.
fn apply<X, Req: Annotate, R, E, M: FraudMode<R, E>>(
    config: &Config<X>,
    mode: &M,
    verdict: Assessment,
    req: &mut Req,
) -> Option<Result<R, E>> {
    // The deciding rule's name, made only for a verdict that names it (an approval allocates nothing).
    let rule = || -> Arc<str> { verdict.decided_by.clone().unwrap_or_else(|| Arc::from("fraud")) };
    match verdict.decision {
        Decision::Block => Some(mode.refuse(FraudRejection::Blocked { rule: rule() })),
        Decision::Challenge => {
            Some(mode.refuse(FraudRejection::Challenge { rule: rule(), challenge_url: config.challenge_url.clone() }))
        }
        Decision::Review => {
            let rule = rule();
            let verdict = Arc::new(verdict);
            tracing::info!(
                target: "palisade_fraud",
                engine = config.engine.name(),
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
            None
        }
        _ => None,
    }
}
