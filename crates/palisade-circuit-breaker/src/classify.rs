//! How results become breaker verdicts.

use std::convert::Infallible;

use palisade_core::{BoxError, Classify, PaymentError};

use crate::breaker::Verdict;
use crate::config::LayerRejections;

/// Recognises a refusal made by an inner Palisade layer (rate limited, idempotency in flight, another breaker
/// open, store unavailable) rather than by the gateway. What it then counts as is
/// [`LayerRejections`](crate::LayerRejections). Implemented for closures `Fn(&Result<Res, E>) -> bool`.
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

#[inline]
pub(crate) fn verdict<Res, E, C, D>(c: &C, d: &D, policy: LayerRejections, result: &Result<Res, E>) -> Verdict
where
    C: Classify<Res, E>,
    D: DetectRejection<Res, E>,
{
    if result.is_err() && d.is_layer_rejection(result) {
        return match policy {
            LayerRejections::Failure => Verdict::Failure,
            LayerRejections::Success => Verdict::Success,
            LayerRejections::Ignore => Verdict::Ignore,
        };
    }
    if c.classify(result).is_failure() { Verdict::Failure } else { Verdict::Success }
}
