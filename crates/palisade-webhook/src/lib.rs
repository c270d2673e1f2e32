//! Webhook signatures verified on the raw body, under several schemes, with secret rotation; and
//! effectively-once delivery of each event to your handler.
//!
//! - [`Verifier`]: a [`Scheme`] ([`Stripe`], [`StandardWebhooks`], [`GitHub`]), one or more secrets (rotation),
//!   a timestamp window into the past and the future ([`DEFAULT_TOLERANCE`] each), an injectable [`Clock`].
//!   Signatures are compared in constant time; failures are a typed [`VerifyError`] naming the failed check.
//! - [`Signer`]: the sending side of each scheme (tests, the `palisade webhook sign` command).
//! - [`WebhookLayer`]: a tower layer for axum/hyper that reads the raw body (bounded, 413 beyond the limit),
//!   verifies it (400 `application/problem+json` on failure) and hands exactly the verified bytes on, with the
//!   [`EventId`] in the request extensions. With a store ([`MemoryStore`], or `RedisStore` behind the `redis`
//!   feature: the lease protocol of `palisade-store`) each event runs the handler effectively once, keyed on what
//!   its signature covers ([`Verifier::dedup_id`]: the event id, or for [`GitHub`], whose delivery id is
//!   unsigned, the body's SHA-256; give each endpoint a [`namespace`](WebhookLayerBuilder::namespace) when
//!   several share a store): a duplicate of a running event gets 503 + `Retry-After`, a duplicate of a handled
//!   one gets 200 without running the handler, and a handler that fails or dies leaves the event to the sender's
//!   redelivery. The claim is renewed while the handler runs, so its short lease ([`DEFAULT_LEASE`]) only bounds
//!   how long a crashed instance blocks an event. Methods other than POST get 405.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use palisade_webhook::{
//!     EventId, ManualClock, MemoryStore, Message, Signer, StandardWebhooks, Verifier, WebhookLayer,
//! };
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
//! let now = 1_700_000_000;
//! let verifier = Verifier::builder(StandardWebhooks).secret(secret).clock(ManualClock::new(now)).build()?;
//! let layer = WebhookLayer::builder(verifier).dedup(MemoryStore::new()).build();
//!
//! // The handler sees the verified bytes and the event id.
//! let handler = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.extensions().get::<EventId>().map(EventId::as_str), Some("msg_1"));
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::from("ok")))
//! }));
//!
//! let body = r#"{"type":"charge.succeeded"}"#;
//! let signed = Signer::new(StandardWebhooks, secret)?
//!     .headers(&Message { id: Some("msg_1"), timestamp: now, body: body.as_bytes() })?;
//! let request = || {
//!     let mut req = Request::post("/webhooks").body(Full::new(Bytes::from(body))).unwrap();
//!     req.headers_mut().extend(signed.clone());
//!     req
//! };
//! assert_eq!(handler.clone().oneshot(request()).await?.status(), StatusCode::OK);
//! // A redelivery is answered 200 without running the handler again.
//! let again = handler.clone().oneshot(request()).await?;
//! assert_eq!(again.headers()["palisade-webhook-duplicate"], "done");
//! // A tampered body is refused with 400 problem+json.
//! let mut tampered = request();
//! *tampered.body_mut() = Full::new(Bytes::from(body.replace("succeeded", "refunded")));
//! assert_eq!(handler.oneshot(tampered).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(()) }
//! ```
//!
//! Features: `redis` (the Redis store), `metrics` (counters). See `docs/webhooks.md`.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod clock;
pub mod defaults;
mod error;
mod key;
mod layer;
mod rejection;
pub mod scheme;
mod service;
mod telemetry;
mod verifier;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{SecretError, SignError, VerifyError};
pub use key::Key;
pub use layer::{DEFAULT_BODY_LIMIT, DEFAULT_LEASE, DEFAULT_RETENTION, WebhookLayer, WebhookLayerBuilder};
/// The delivery store: the lease protocol of `palisade-store`.
#[cfg(feature = "postgres")]
pub use palisade_store::lease::PostgresStore;
#[cfg(feature = "redis")]
pub use palisade_store::lease::RedisStore;
pub use palisade_store::lease::{LeaseStore, MemoryStore};
pub use rejection::WebhookRejection;
pub use scheme::{DedupBy, GitHub, Message, Scheme, StandardWebhooks, Stripe};
pub use service::{DUPLICATE_HEADER, EventId, ResponseFuture, WebhookService};
pub use verifier::{DEFAULT_TOLERANCE, Signer, Tolerance, Verified, Verifier, VerifierBuilder};
