//! How the layer answers and reads outcomes in each mode: typed (`PaymentError`) or HTTP (problem+json).

use std::any::Any;
use std::sync::Arc;

use palisade_core::mode::{Http, Typed};
use palisade_core::{ErrorKind, GatewayRequest, PaymentError, Reference};

use crate::attributes::{Attributes, FieldSet};
use crate::decision::Assessment;
use crate::error::FraudRejection;

/// The verdict of a screened request, put on the request for the services below (HTTP: in
/// `http::Extensions`; typed: see [`Annotate`]).
#[derive(Debug, Clone)]
pub struct FraudVerdict(pub Arc<Assessment>);

/// Where the verdict of a `Review` goes on the request.
///
/// - `http::Request<B>`: [`FraudVerdict`] in the request's extensions.
/// - [`GatewayRequest`] (charge and authorize): metadata `fraud_decision = review`, `fraud_score = <n>` and
///   `fraud_rule = <rule>`, which the gateway keeps with the payment (Stripe shows metadata on the dashboard),
///   so whoever reviews finds the reason next to the charge. Turn it off with `annotate(false)` on the builder.
pub trait Annotate {
    /// Attaches the verdict.
    fn annotate(&mut self, verdict: &Arc<Assessment>);
}

impl<B> Annotate for http::Request<B> {
    fn annotate(&mut self, verdict: &Arc<Assessment>) {
        self.extensions_mut().insert(FraudVerdict(verdict.clone()));
    }
}

impl Annotate for GatewayRequest {
    fn annotate(&mut self, verdict: &Arc<Assessment>) {
        if let GatewayRequest::Charge(c) | GatewayRequest::Authorize(c) = self {
            let mut put = |k: &str, v: String| {
                if let Ok(r) = Reference::new(v) {
                    c.metadata.insert(k.to_owned(), r);
                }
            };
            put("fraud_decision", verdict.decision.as_str().to_owned());
            put("fraud_score", verdict.score.to_string());
            if let Some(rule) = &verdict.decided_by {
                put("fraud_rule", rule.to_string());
            }
        }
    }
}

/// How the screening context is taken from a request. [`DefaultExtract`] knows `palisade_core`'s gateway
/// requests and HTTP requests carrying [`Attributes`] in their extensions; [`ExtractFn`] wraps a function.
/// `None` means "not screened" (a refund, a capture).
pub trait Extract<Req> {
    /// The attributes of this request, or `None` to let it through unscreened.
    fn extract(&self, req: &Req) -> Option<Attributes>;

    /// [`Extract::extract`] when the rules in force read only `fields` ([`RuleSet::fields`](crate::RuleSet::fields)):
    /// an extraction may leave the other attributes unknown. The default extracts everything.
    fn extract_reading(&self, req: &Req, fields: FieldSet) -> Option<Attributes> {
        let _ = fields;
        self.extract(req)
    }
}

/// The default extraction: [`Attributes::from_gateway_request`] for gateway requests; for HTTP requests, the
/// [`Attributes`] an earlier layer or extractor put in the request's extensions.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultExtract;

impl Extract<GatewayRequest> for DefaultExtract {
    fn extract(&self, req: &GatewayRequest) -> Option<Attributes> {
        Attributes::from_gateway_request(req)
    }
    fn extract_reading(&self, req: &GatewayRequest, fields: FieldSet) -> Option<Attributes> {
        Attributes::from_gateway_request_reading(req, fields)
    }
}

impl<B> Extract<http::Request<B>> for DefaultExtract {
    fn extract(&self, req: &http::Request<B>) -> Option<Attributes> {
        req.extensions().get::<Attributes>().cloned()
    }
}

/// A function as an extractor.
#[derive(Clone, Copy)]
pub struct ExtractFn<F>(pub F);

impl<F> std::fmt::Debug for ExtractFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtractFn")
    }
}

impl<Req, F: Fn(&Req) -> Option<Attributes>> Extract<Req> for ExtractFn<F> {
    fn extract(&self, req: &Req) -> Option<Attributes> {
        (self.0)(req)
    }
}

/// The layer's mode: how a refusal is answered and how a gateway decline is recognised (to count it for
/// `declines_per_*`). Implemented by [`Typed`] and [`Http`].
pub trait FraudMode<Res, E>: Clone + Send + Sync + 'static {
    /// The answer to a refused request.
    fn refuse(&self, rejection: FraudRejection) -> Result<Res, E>;
    /// True when the inner service's answer is a card decline.
    fn is_decline(&self, out: &Result<Res, E>) -> bool;
}

fn is_decline_error(e: &PaymentError) -> bool {
    matches!(e.kind(), ErrorKind::CardDeclined | ErrorKind::InsufficientFunds)
}

impl<Res, E: From<FraudRejection> + 'static> FraudMode<Res, E> for Typed {
    fn refuse(&self, rejection: FraudRejection) -> Result<Res, E> {
        Err(E::from(rejection))
    }
    fn is_decline(&self, out: &Result<Res, E>) -> bool {
        let Err(e) = out else { return false };
        let any = e as &dyn Any;
        if let Some(p) = any.downcast_ref::<PaymentError>() {
            return is_decline_error(p);
        }
        any.downcast_ref::<palisade_core::BoxError>()
            .and_then(|b| b.downcast_ref::<PaymentError>())
            .is_some_and(is_decline_error)
    }
}

impl<B: From<bytes::Bytes>, E: 'static> FraudMode<http::Response<B>, E> for Http {
    fn refuse(&self, rejection: FraudRejection) -> Result<http::Response<B>, E> {
        Ok(rejection.into_response())
    }
    fn is_decline(&self, out: &Result<http::Response<B>, E>) -> bool {
        matches!(out, Ok(r) if r.status() == http::StatusCode::PAYMENT_REQUIRED)
    }
}
