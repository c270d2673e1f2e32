//! HTTP mode: retrying `http::Request<B>` whose body can be replayed.
//!
//! **Replayable bodies:** the layer keeps a clone of the request for the next attempt, so the request type must be
//! `Clone`; `http::Request<B>` is `Clone` when `B` is. That covers `http_body_util::Full<Bytes>`, `Bytes`,
//! `String` and `()`, which is what a gateway client sends (a small JSON or form body). A streaming body cannot be
//! replayed: buffer it first (`http_body_util::BodyExt::collect(body).await?.to_bytes()` into a `Full`), so a
//! retry can never send half a body. The gateway key rides the request's extensions as
//! [`palisade_core::GatewayKey`]; a key the layer assigns is also written as the `Idempotency-Key` header when the
//! request has none, so it is on the wire of every attempt when the inner service is a plain HTTP client.
//!
//! Classification is [`palisade_core::HttpClassifier`] (status + `Retry-After`); an attempt that times out is
//! answered with a `504 Gateway Timeout` `application/problem+json` response ([`palisade_core::Problem`]).

pub use palisade_core::mode::Http;
