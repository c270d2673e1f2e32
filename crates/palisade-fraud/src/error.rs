//! The crate's errors: rule-file errors (load time), velocity store errors, and the layer's refusals.

use std::sync::Arc;

use palisade_core::mode::Rejection;
use palisade_core::{GatewayCode, PaymentError, Problem};

/// A rule file (or a rule expression) that cannot be loaded, with the line it is on. The engine keeps the rules
/// it had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule file line {line}: {message}")]
pub struct RuleFileError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The velocity store could not be reached or answered nonsense. The engine applies its
/// [`OnStoreDown`](crate::OnStoreDown) policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("velocity store unavailable: {0}; the fraud engine applies its store-down policy (review by default)")]
pub struct VelocityError(pub String);

/// The fraud layer's refusal of a charge: a block, or a demand for customer authentication.
///
/// Converts into [`PaymentError::FraudBlocked`] (HTTP 402, type `fraud_blocked`) or
/// [`PaymentError::AuthenticationRequired`] (HTTP 402, type `authentication_required`); both are `Terminal`
/// (never retried, never a breaker failure, replayed as-is by the idempotency layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FraudRejection {
    /// The charge was blocked by `rule`.
    #[error("payment blocked by fraud screening (rule {rule})")]
    Blocked {
        /// The rule that blocked (its name, or `block_threshold` / `velocity_store`).
        rule: Arc<str>,
    },
    /// The customer must authenticate (3-D Secure / SCA) first.
    #[error("customer authentication required by fraud screening (rule {rule})")]
    Challenge {
        /// The rule that asked for it.
        rule: Arc<str>,
        /// Where to send the customer, if configured.
        challenge_url: Option<String>,
    },
}

impl From<FraudRejection> for PaymentError {
    fn from(r: FraudRejection) -> Self {
        match r {
            FraudRejection::Blocked { rule } => PaymentError::FraudBlocked { rule: Some(GatewayCode::new(&rule)) },
            FraudRejection::Challenge { challenge_url, .. } => PaymentError::AuthenticationRequired { challenge_url },
        }
    }
}

impl Rejection for FraudRejection {
    fn to_problem(&self) -> Problem {
        let mut p = Problem::from_error(&PaymentError::from(self.clone()));
        p.detail = match self {
            FraudRejection::Blocked { .. } => {
                "The payment was declined by fraud screening. Do not retry it; ask the customer for another payment method.".to_owned()
            }
            FraudRejection::Challenge { .. } => {
                "The customer must authenticate (3-D Secure) before this payment; follow next_action, then send the payment again with the authentication result and a new idempotency key (this answer is final for this one).".to_owned()
            }
        };
        p
    }
}

impl FraudRejection {
    /// The problem+json body: the problem's members, plus `rule`, and `next_action` for a challenge.
    #[must_use]
    pub fn problem_json(&self) -> serde_json::Value {
        let p = self.to_problem();
        let mut v = serde_json::to_value(&p).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(obj) = v.as_object_mut() {
            match self {
                FraudRejection::Blocked { rule } => {
                    obj.insert("rule".into(), serde_json::Value::from(&**rule));
                }
                FraudRejection::Challenge { rule, challenge_url } => {
                    obj.insert("rule".into(), serde_json::Value::from(&**rule));
                    obj.insert(
                        "next_action".into(),
                        serde_json::json!({ "type": "authenticate", "challenge_url": challenge_url }),
                    );
                }
            }
        }
        v
    }

    /// The HTTP response: status 402, `application/problem+json`, [`FraudRejection::problem_json`] as body.
    #[must_use]
    pub fn into_response<B: From<bytes::Bytes>>(&self) -> http::Response<B> {
        let body = serde_json::to_vec(&self.problem_json()).unwrap_or_default();
        let mut res = http::Response::new(B::from(bytes::Bytes::from(body)));
        *res.status_mut() = http::StatusCode::PAYMENT_REQUIRED;
        res.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(palisade_core::problem::PROBLEM_JSON));
        res
    }
}
