//! Typed or HTTP: how a layer's own refusal reaches its caller. One pair of markers and one trait for every layer.
//!
//! A layer refuses a call for reasons of its own (circuit open, rate limited, an attempt timed out, an
//! idempotency conflict). Each refusal is a typed value of that layer's crate that implements [`Rejection`].
//! The layer then hands it to its mode, a type parameter set by the builder:
//!
//! - [`Typed`] (every builder's default): the refusal is the service's error, `Err(E::from(rejection))`, so a
//!   gateway stack keeps one error type end to end ([`PaymentError`](crate::PaymentError) converts from every
//!   layer's rejection; `tower::BoxError` works too).
//! - [`Http`] (each builder's `.http()`): the refusal is an `application/problem+json` response (RFC 9457) with
//!   the status and headers the rejection asks for, and the service's error type is left alone.
//!
//! ```
//! use palisade_core::mode::{Http, Refuse, Rejection, Typed};
//! use palisade_core::{PaymentError, Problem};
//! use std::time::Duration;
//!
//! #[derive(Debug)]
//! struct Busy;
//! impl Rejection for Busy {
//!     fn to_problem(&self) -> Problem {
//!         Problem::from_error(&PaymentError::RateLimited { retry_after: Some(Duration::from_secs(2)) })
//!     }
//! }
//! impl From<Busy> for PaymentError {
//!     fn from(_: Busy) -> Self {
//!         PaymentError::RateLimited { retry_after: Some(Duration::from_secs(2)) }
//!     }
//! }
//!
//! let typed: Result<(), PaymentError> = Typed.refuse(Busy);
//! assert!(matches!(typed, Err(PaymentError::RateLimited { .. })));
//!
//! let http: Result<http::Response<Vec<u8>>, std::convert::Infallible> = Http.refuse(Busy);
//! let res = http.unwrap();
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["retry-after"], "2");
//! ```

use crate::problem::Problem;

/// Typed mode: a refusal is the service's error, `Err(E::from(rejection))`. Every builder's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Typed;

/// HTTP mode: a refusal is an `application/problem+json` response; the service's error type is untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Http;

/// A layer's own refusal, as a problem document (status, type, detail, `Retry-After` and other headers).
pub trait Rejection {
    /// The problem+json document for this refusal.
    fn to_problem(&self) -> Problem;
}

/// Turns a layer's refusal `R` into the output of a service returning `Result<Res, E>`. Implemented by
/// [`Typed`] (for any `E: From<R>`) and [`Http`] (for `http::Response<B>` with any body buildable from bytes).
pub trait Refuse<R, Res, E> {
    /// The service's output for the refused call.
    fn refuse(&self, rejection: R) -> Result<Res, E>;
}

impl<R, Res, E: From<R>> Refuse<R, Res, E> for Typed {
    #[inline]
    fn refuse(&self, rejection: R) -> Result<Res, E> {
        Err(E::from(rejection))
    }
}

impl<R: Rejection, B: From<bytes::Bytes>, E> Refuse<R, http::Response<B>, E> for Http {
    fn refuse(&self, rejection: R) -> Result<http::Response<B>, E> {
        Ok(rejection.to_problem().into_response())
    }
}
