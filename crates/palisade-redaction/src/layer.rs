//! [`AuditLayer`]: the audit trail. One tracing event per call, with the request and the result rendered
//! through the redactor, the outcome class and the duration.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::{Classify, DefaultClassifier, OutcomeClass};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::defaults::DEFAULT_SERVICE_NAME;
use crate::redactor::Redactor;

/// The tracing target of audit events. Filter on it to route the audit trail (`palisade::audit=info`).
pub const AUDIT_TARGET: &str = "palisade::audit";
/// The histogram (seconds) recorded per call behind the `metrics` feature, labelled `service` and `outcome`.
pub const DURATION_HISTOGRAM: &str = "palisade_redaction_call_duration_seconds";

#[derive(Debug)]
pub(crate) struct AuditConfig {
    pub(crate) redactor: Redactor,
    pub(crate) service: Cow<'static, str>,
    /// The duration histogram's key for each outcome class (in [`OutcomeClass`] order), made once: a key
    /// with the service name as a label would otherwise be a `String` and a label vector per call.
    #[cfg(feature = "metrics")]
    durations: [metrics::Key; 4],
}

/// Milliseconds with microsecond precision (`12.345`). A raw `as_secs_f64() * 1000.0` prints up to 17 significant
/// digits (`12.345678901234567`), and a 13–19 digit fraction can pass Luhn: the audit trail must not print
/// anything a scanner downstream would take for a card number.
fn duration_ms(elapsed: std::time::Duration) -> f64 {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    micros as f64 / 1000.0
}

impl AuditConfig {
    pub(crate) fn new(redactor: Redactor, service: Cow<'static, str>) -> Self {
        AuditConfig {
            #[cfg(feature = "metrics")]
            durations: [OutcomeClass::Success, OutcomeClass::Terminal, OutcomeClass::Retriable, OutcomeClass::Unknown]
                .map(|class| duration_key(&service, class)),
            redactor,
            service,
        }
    }

    /// Whether a subscriber records audit events now (at WARN, the level of a failed call, or finer). When none
    /// does, a call renders nothing: no request or result is formatted and scanned for an event nobody keeps.
    fn listened() -> bool {
        tracing::enabled!(target: AUDIT_TARGET, tracing::Level::WARN)
    }

    /// Whether a subscriber records the event of a call of this class now: INFO for success and terminal
    /// outcomes, WARN for the others (as [`event`](Self::event) emits them).
    fn recorded(class: OutcomeClass) -> bool {
        if matches!(class, OutcomeClass::Success | OutcomeClass::Terminal) {
            tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO)
        } else {
            Self::listened()
        }
    }

    /// Ends a call: its event, when a subscriber records one of its class (the request and the result are
    /// rendered only then), and its duration.
    pub(crate) fn finish<T>(
        &self,
        request: &Held<T>,
        render_request: impl FnOnce(&T) -> String,
        result: impl FnOnce() -> String,
        class: OutcomeClass,
        elapsed: std::time::Duration,
    ) {
        if Self::recorded(class)
            && let Some(request) = request.render(render_request)
        {
            self.event(&request, &result(), class, elapsed);
        }
        self.measure(class, elapsed);
    }

    /// The audit event: INFO for success and terminal outcomes, WARN for retriable and unknown ones.
    fn event(&self, request: &str, result: &str, class: OutcomeClass, elapsed: std::time::Duration) {
        let duration_ms = duration_ms(elapsed);
        let service: &str = &self.service;
        let outcome = class.as_str();
        if matches!(class, OutcomeClass::Success | OutcomeClass::Terminal) {
            tracing::info!(target: AUDIT_TARGET, service, request, outcome, result, duration_ms, "call completed");
        } else {
            tracing::warn!(target: AUDIT_TARGET, service, request, outcome, result, duration_ms, "call failed");
        }
    }

    /// The duration histogram (`metrics` feature), whether or not anyone listens to the events.
    #[cfg_attr(not(feature = "metrics"), allow(clippy::unused_self))]
    fn measure(&self, class: OutcomeClass, elapsed: std::time::Duration) {
        #[cfg(feature = "metrics")]
        {
            // What `metrics::histogram!` would make, made once (the macro's target and level).
            static METADATA: metrics::Metadata<'static> =
                metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
            let at = match class {
                OutcomeClass::Success => Some(0),
                OutcomeClass::Terminal => Some(1),
                OutcomeClass::Retriable => Some(2),
                OutcomeClass::Unknown => Some(3),
                _ => None,
            };
            let key = match at.and_then(|at| self.durations.get(at)) {
                Some(key) => Cow::Borrowed(key),
                // A class added to core later: its own key.
                None => Cow::Owned(duration_key(&self.service, class)),
            };
            metrics::with_recorder(|r| r.register_histogram(&key, &METADATA)).record(elapsed.as_secs_f64());
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (class, elapsed);
    }

    pub(crate) fn render(&self, value: &dyn fmt::Debug) -> String {
        let text = format!("{value:?}");
        match self.redactor.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(r) => r,
        }
    }
}

#[cfg(feature = "metrics")]
fn duration_key(service: &str, class: OutcomeClass) -> metrics::Key {
    metrics::Key::from_parts(
        DURATION_HISTOGRAM,
        vec![metrics::Label::new("service", service.to_owned()), metrics::Label::new("outcome", class.as_str())],
    )
}

/// The audit layer for typed services (a gateway `Service<GatewayRequest>`). Innermost in the Palisade stack,
/// so each attempt is recorded exactly as sent. For HTTP services use [`HttpAuditLayer`].
///
/// The request is rendered with `Debug`, the response with `Debug`, an error with `Display`, each through the
/// [`Redactor`]; the outcome comes from the classifier (default [`DefaultClassifier`]). Rendering happens only
/// for an event a subscriber records (`tracing::enabled!` on `palisade::audit`): successes and terminal outcomes
/// are INFO events, retriable and unknown ones WARN. With INFO recorded when the call begins, the request is
/// rendered then; with only WARN recorded (a service logging warnings), a clone of the request is kept (one
/// allocation) and rendered only if the call fails, so successes are neither formatted nor scanned (requests
/// are `Clone` for that, as a gateway request is); with neither, a call costs a clock read and, with the
/// `metrics` feature, the duration histogram, and allocates nothing.
///
/// ```
/// use palisade_redaction::AuditLayer;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AuditLayer::builder().service_name("stripe").build())
///     .service_fn(|req: String| async move { Ok::<_, palisade_core::PaymentError>(req.len()) });
/// let cap = palisade_testkit::LogCapture::new();
/// let _guard = tracing::subscriber::set_default(cap.subscriber());
/// svc.oneshot("charge card 4242424242424242".to_string()).await.unwrap();
/// let log = cap.contents();
/// assert!(log.contains("************4242") && !log.contains("4242424242424242"));
/// assert!(log.contains("outcome=\"success\"") && log.contains("service=\"stripe\""));
/// # }
/// ```
///
/// [`HttpAuditLayer`]: crate::HttpAuditLayer
#[derive(Debug, Clone)]
pub struct AuditLayer<C = DefaultClassifier> {
    cfg: Arc<AuditConfig>,
    classifier: C,
}

impl AuditLayer {
    /// A layer with the defaults: the default [`Redactor`], service name [`DEFAULT_SERVICE_NAME`],
    /// [`DefaultClassifier`].
    #[must_use]
    pub fn new() -> Self {
        AuditLayer::builder().build()
    }
    /// A builder.
    pub fn builder() -> AuditLayerBuilder {
        AuditLayerBuilder {
            redactor: Redactor::default(),
            service: Cow::Borrowed(DEFAULT_SERVICE_NAME),
            classifier: DefaultClassifier,
        }
    }
}

impl Default for AuditLayer {
    fn default() -> Self {
        AuditLayer::new()
    }
}

/// Builds a [`AuditLayer`] (or, with [`http`](Self::http), an [`HttpAuditLayer`](crate::HttpAuditLayer)).
#[derive(Debug, Clone)]
#[must_use]
pub struct AuditLayerBuilder<C = DefaultClassifier> {
    pub(crate) redactor: Redactor,
    pub(crate) service: Cow<'static, str>,
    classifier: C,
}

impl<C> AuditLayerBuilder<C> {
    /// The redactor (default: [`Redactor::default`], masking).
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
    /// The `service` field of each event (default [`DEFAULT_SERVICE_NAME`]).
    pub fn service_name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.service = name.into();
        self
    }
    /// The classifier deciding each call's outcome (default [`DefaultClassifier`]); a closure works.
    pub fn classifier<C2>(self, classifier: C2) -> AuditLayerBuilder<C2> {
        AuditLayerBuilder { redactor: self.redactor, service: self.service, classifier }
    }
    /// The layer.
    pub fn build(self) -> AuditLayer<C> {
        AuditLayer { cfg: Arc::new(AuditConfig::new(self.redactor, self.service)), classifier: self.classifier }
    }
}

impl<S, C: Clone> Layer<S> for AuditLayer<C> {
    type Service = Audit<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Audit { inner, cfg: self.cfg.clone(), classifier: self.classifier.clone() }
    }
}

/// The service of [`AuditLayer`].
#[derive(Debug, Clone)]
pub struct Audit<S, C = DefaultClassifier> {
    inner: S,
    cfg: Arc<AuditConfig>,
    classifier: C,
}

impl<S, C, Req> Service<Req> for Audit<S, C>
where
    S: Service<Req>,
    Req: fmt::Debug + Clone,
    S::Response: fmt::Debug,
    S::Error: fmt::Display,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuditFuture<S::Future, C, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Rendered only for a subscriber that records the event; the duration is measured either way.
        let request = Held::at_call(|| self.cfg.render(&req), || req.clone());
        AuditFuture {
            inner: self.inner.call(req),
            request,
            start: Instant::now(),
            cfg: self.cfg.clone(),
            classifier: self.classifier.clone(),
            done: false,
        }
    }
}

/// A call's request, as its audit event will need it, by what a subscriber recorded when the call began (typed
/// mode keeps the request, HTTP mode its method, URI, headers and body).
pub(crate) enum Held<T> {
    /// Nothing was recorded: no event, only the duration.
    Nothing,
    /// Every outcome was recorded (INFO): rendered at once.
    Rendered(String),
    /// Only failures were recorded (WARN, not INFO): a copy, rendered only for an event that will be kept. A
    /// service logging at WARN would otherwise format and scan every request for a success event it drops.
    Kept(Box<T>),
}

impl<T> Held<T> {
    /// At the start of a call: `render`ed at once when INFO events are recorded, `keep`'s copy when only WARN
    /// ones are, nothing otherwise.
    pub(crate) fn at_call(render: impl FnOnce() -> String, keep: impl FnOnce() -> T) -> Self {
        if tracing::enabled!(target: AUDIT_TARGET, tracing::Level::INFO) {
            Held::Rendered(render())
        } else if AuditConfig::listened() {
            Held::Kept(Box::new(keep()))
        } else {
            Held::Nothing
        }
    }

    /// The rendered request, if there is one to emit.
    fn render(&self, render: impl FnOnce(&T) -> String) -> Option<Cow<'_, str>> {
        match self {
            Held::Nothing => None,
            Held::Rendered(text) => Some(Cow::Borrowed(text)),
            Held::Kept(kept) => Some(Cow::Owned(render(kept))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Audit`]: the inner call, then the audit event. Dropped before it completes (a timeout
    /// above it gave up), it still records the call, as `unknown`: the request may have reached the gateway.
    pub struct AuditFuture<F, C, Req>
    where
        Req: fmt::Debug,
    {
        #[pin]
        inner: F,
        request: Held<Req>,
        start: Instant,
        cfg: Arc<AuditConfig>,
        classifier: C,
        done: bool,
    }

    impl<F, C, Req> PinnedDrop for AuditFuture<F, C, Req>
    where
        Req: fmt::Debug,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.done {
                let cfg: &AuditConfig = this.cfg;
                let elapsed = this.start.elapsed();
                cfg.finish(this.request, |r| cfg.render(r), || CANCELLED.to_owned(), OutcomeClass::Unknown, elapsed);
            }
        }
    }
}

/// The `result` of a call whose future was dropped before it completed.
pub const CANCELLED: &str = "cancelled before completion";

impl<F, C, Req, T, E> Future for AuditFuture<F, C, Req>
where
    F: Future<Output = Result<T, E>>,
    Req: fmt::Debug,
    T: fmt::Debug,
    E: fmt::Display,
    C: Classify<T, E>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        *this.done = true;
        let class = this.classifier.classify(&result).class();
        let elapsed = this.start.elapsed();
        let cfg: &AuditConfig = this.cfg;
        let rendered = || match &result {
            Ok(res) => cfg.render(res),
            Err(e) => cfg.render(&format_args!("error: {e}")),
        };
        cfg.finish(this.request, |r| cfg.render(r), rendered, class, elapsed);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod duration_tests {
    use super::duration_ms;
    use std::time::Duration;

    #[test]
    fn durations_print_with_at_most_three_decimals() {
        for nanos in [0u64, 1, 999, 27_321_987, 12_345_678_901, 3_999_999_999, u64::from(u32::MAX) * 7] {
            let shown = duration_ms(Duration::from_nanos(nanos)).to_string();
            let decimals = shown.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 3, "{nanos} ns printed as {shown}");
            assert!(!palisade_core::card::contains_card_like(&shown), "{shown}");
        }
        assert_eq!(duration_ms(Duration::from_nanos(12_345_678_901)).to_string(), "12345.678");
    }
}
