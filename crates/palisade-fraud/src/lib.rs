//! Fraud screening for Palisade: a rule engine whose rules are data, and a tower layer that screens charges
//! before any gateway call.
//!
//! ```
//! # tokio_test();
//! # fn tokio_test() {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! use palisade_core::{Currency, Money};
//! use palisade_fraud::{Attributes, Decision, FraudEngine};
//!
//! let engine = FraudEngine::builder()
//!     .rule_file(
//!         "block if card_country != ip_country and amount > 500 USD\n\
//!          challenge if attempts_per_card_1h > 3\n\
//!          score 30 if email_domain == \"mailinator.com\"\n\
//!          shadow block if cvv_result == \"fail\"  # trying this one out",
//!     )
//!     .unwrap()
//!     .build();
//! let charge = Attributes::new(Money::from_minor(60_000, Currency::USD))
//!     .card_fingerprint("fp_1")
//!     .card_country("US")
//!     .ip_country("RU");
//! let verdict = engine.assess(&charge).await;
//! assert_eq!(verdict.decision, Decision::Block);
//! assert_eq!(verdict.decided_by.as_deref(), Some("line_1"));
//! # });
//! # }
//! ```
//!
//! The layer screens each charge before the service below sees it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use palisade_core::{ErrorKind, GatewayRequest, PaymentError, Reference};
//! use palisade_fraud::{FraudEngine, FraudLayer};
//! use tower::{Layer, Service, ServiceExt};
//!
//! let engine = FraudEngine::builder().rule_file("block if email_domain == \"fraud.test\"").unwrap().build();
//! let gateway = tower::service_fn(|_req: GatewayRequest| async { Ok::<_, PaymentError>("charged") });
//! let mut svc = FraudLayer::new(engine.clone()).layer(gateway);
//!
//! let mut charge = palisade_testkit::charge("order-1").request();
//! charge.metadata.insert("email".into(), Reference::new("mallory@fraud.test").unwrap());
//! let err = svc.ready().await.unwrap().call(GatewayRequest::Charge(charge)).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::FraudBlocked); // 402, never sent to the gateway
//!
//! // New rules, live: a bad file is refused with its line and the old rules stay.
//! assert_eq!(engine.reload("review if true\nblock if nope").unwrap_err().line, 2);
//! # }
//! ```
//!
//! See `docs/fraud.md` for the attributes, the rule syntax, the built-in rules and how the layer fails.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod attributes;
mod decision;
pub mod defaults;
mod engine;
mod error;
mod expr;
mod future;
mod layer;
mod mode;
mod rules;
mod service;
mod text;
mod velocity;

pub use crate::attributes::{
    AUTHENTICATED, AttrType, AttributeDoc, Attributes, Field, FieldSet, Measure, Subject, THREE_D_SECURE,
    VELOCITY_ATTRIBUTES, Velocity, VelocityCounts, VelocitySet, Window, attribute_docs, mask_email,
};
pub use crate::decision::{Action, Assessment, Decision, RuleOutcome, RuleVerdict};
pub use crate::defaults::{DEFAULT_BLOCK_THRESHOLD, DEFAULT_REVIEW_THRESHOLD};
pub use crate::engine::{
    BLOCK_THRESHOLD_RULE, FraudEngine, FraudEngineBuilder, OnStoreDown, REVIEW_THRESHOLD_RULE, VELOCITY_STORE_RULE,
};
pub use crate::error::{FraudRejection, RuleFileError, VelocityError};
pub use crate::future::ResponseFuture;
pub use crate::layer::{FraudLayer, FraudLayerBuilder};
pub use crate::mode::{Annotate, DefaultExtract, Extract, ExtractFn, FraudMode, FraudVerdict};
pub use crate::rules::{CardTesting, FAILED_CHECK_RESULTS, Rule, RuleSet, RuleStats};
pub use crate::service::Fraud;
#[cfg(feature = "redis")]
pub use crate::velocity::RedisVelocityStore;
pub use crate::velocity::{Attempt, BoxFuture, MemoryVelocityStore, VelocityStore};
