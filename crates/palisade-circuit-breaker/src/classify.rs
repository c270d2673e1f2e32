//! How results become breaker verdicts.

use std::convert::Infallible;

use palisade_core::mode::{Http, Typed};
use palisade_core::problem::LayerRefusal;
use palisade_core::{BoxError, Classify, PaymentError};

use crate::breaker::Verdict;
use crate::config::LayerRejections;

/// Recognises a refusal made by an inner Palisade layer (rate limited, idempotency in flight, another breaker
/// open, store unavailable) rather than by the gateway, from the error a call failed with. What it then counts as
/// is [`LayerRejections`](crate::LayerRejections). Implemented for closures `Fn(&Result<Res, E>) -> bool`; it is
/// asked about errors only. Refusals that are responses (HTTP mode) are recognised by the mode
/// ([`ModeRejections`]).
pub trait DetectRejection<Res, E> {
    /// True when `result` is an inner layer's refusal.
    fn is_layer_rejection(&self, result: &Result<Res, E>) -> bool;
}

impl<Res, E, F> DetectRejection<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> bool,
{
    fn is_layer_rejection(&self, result: &Result<Res, E>) -> bool {
        self(result)
    }
}

/// The default detector: a [`PaymentError`] (also inside a `BoxError`) whose kind
/// `is_layer_rejection()`. Works for `PaymentError`, `BoxError` and `Infallible` errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct PaymentRejections;

impl<Res> DetectRejection<Res, PaymentError> for PaymentRejections {
    fn is_layer_rejection(&self, result: &Result<Res, PaymentError>) -> bool {
        matches!(result, Err(e) if e.kind().is_layer_rejection())
    }
}

impl<Res> DetectRejection<Res, BoxError> for PaymentRejections {
    fn is_layer_rejection(&self, result: &Result<Res, BoxError>) -> bool {
        match result {
            Err(e) => e.downcast_ref::<PaymentError>().is_some_and(|e| e.kind().is_layer_rejection()),
            Ok(_) => false,
        }
    }
}

impl<Res> DetectRejection<Res, Infallible> for PaymentRejections {
    fn is_layer_rejection(&self, _: &Result<Res, Infallible>) -> bool {
        false
    }
}

/// A detector that never sees a layer rejection (for error types that carry none).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRejections;

impl<Res, E> DetectRejection<Res, E> for NoRejections {
    fn is_layer_rejection(&self, _: &Result<Res, E>) -> bool {
        false
    }
}

/// How a mode recognises an inner layer's refusal that comes back as a *response*: in [`Http`] mode, a response
/// carrying [`LayerRefusal`] (which `palisade_core::Problem::into_response` sets for the kinds the typed detector
/// knows: rate limited, idempotency conflict / in flight / key missing, circuit open, store unavailable). In
/// [`Typed`] mode refusals are errors, seen by the [`DetectRejection`] detector, so no response is one. This works
/// alongside the detector (a custom `.rejections(..)` does not turn it off). Sealed: implemented for the two modes.
pub trait ModeRejections<Res>: sealed::Sealed {
    /// True when `res` is an inner Palisade layer's refusal.
    fn is_layer_refusal(res: &Res) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for palisade_core::mode::Typed {}
    impl Sealed for palisade_core::mode::Http {}
}

impl<Res> ModeRejections<Res> for Typed {
    #[inline]
    fn is_layer_refusal(_: &Res) -> bool {
        false
    }
}

impl<B> ModeRejections<http::Response<B>> for Http {
    #[inline]
    fn is_layer_refusal(res: &http::Response<B>) -> bool {
        res.extensions().get::<LayerRefusal>().is_some()
    }
}

#[inline]
pub(crate) fn verdict<Res, E, C, D, M>(c: &C, d: &D, policy: LayerRejections, result: &Result<Res, E>) -> Verdict
where
    C: Classify<Res, E>,
    D: DetectRejection<Res, E>,
    M: ModeRejections<Res>,
{
    let rejection = match result {
        Ok(res) => M::is_layer_refusal(res),
        Err(_) => d.is_layer_rejection(result),
    };
    if rejection {
        return match policy {
            LayerRejections::Failure => Verdict::Failure,
            LayerRejections::Success => Verdict::Success,
            LayerRejections::Ignore => Verdict::Ignore,
        };
    }
    if c.classify(result).is_failure() { Verdict::Failure } else { Verdict::Success }
}
