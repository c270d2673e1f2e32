//! HTTP mode: retrying `http::Request<B>` whose body can be replayed.
//!
//! **Replayable bodies:** the layer keeps a clone of the request for the next attempt, so the request type must be
//! `Clone`; `http::Request<B>` is `Clone` when `B` is. That covers `http_body_util::Full<Bytes>`, `Bytes`,
//! `String` and `()`, which is what a gateway client sends (a small JSON or form body). A streaming body cannot be
//! replayed: buffer it first (`http_body_util::BodyExt::collect(body).await?.to_bytes()` into a `Full`), so a
//! retry can never send half a body. The gateway key rides the request's extensions as
//! [`palisade_core::GatewayKey`].
//!
//! Classification is [`palisade_core::HttpClassifier`] (status + `Retry-After`); an attempt that times out is
//! answered with a `504 Gateway Timeout` `application/problem+json` response ([`palisade_core::Problem`]).

use palisade_core::{PaymentError, Problem};

use crate::error::{AttemptTimedOut, Mode};

/// HTTP mode: a timed-out last attempt is answered with a `504` problem+json response instead of an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl<B: From<Vec<u8>>, E> Mode<http::Response<B>, E> for Http {
    fn timed_out(&self, err: AttemptTimedOut) -> Result<http::Response<B>, E> {
        Ok(Problem::from_error(&PaymentError::from(err)).into_response())
    }
}
