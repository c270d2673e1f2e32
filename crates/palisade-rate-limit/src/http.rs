//! How a refusal reaches the caller: typed errors, or HTTP problem+json with the IETF `RateLimit` headers.
//!
//! Header format (draft-ietf-httpapi-ratelimit-headers-09/10, structured fields):
//!
//! ```text
//! RateLimit-Policy: "per-card";q=5;w=60      quota q units per window w seconds (the configured rate)
//! RateLimit: "per-card";r=0;t=12             r units remaining now; t seconds until they are back
//! ```
//!
//! On a refusal `t` is the retry time (the same as `Retry-After`); on an admitted response it is the time until
//! the key is back to a full burst.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use palisade_core::mode::{Http, Refuse, Rejection, Typed};
use palisade_core::{PaymentError, Problem};

use crate::defaults::DEFAULT_POLICY_NAME;
use crate::error::RateLimitError;
use crate::gcra::{Admitted, Quota};

/// The `RateLimit` header (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `"name";q=<rate>;w=<period in seconds>`.
#[must_use]
pub fn policy_value(name: &str, quota: Quota) -> HeaderValue {
    let v = format!("\"{}\";q={};w={}", sf_string(name), quota.rate(), ceil_secs(quota.period()).max(1));
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("\"default\""))
}

/// `"name";r=<remaining>;t=<seconds>`.
#[must_use]
pub fn ratelimit_value(name: &str, remaining: u32, reset: Duration) -> HeaderValue {
    let v = format!("\"{}\";r={remaining};t={}", sf_string(name), ceil_secs(reset));
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("\"default\""))
}

/// Keeps a policy name a valid structured-field string: printable ASCII without `"` or `\`.
fn sf_string(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect()
}

impl Rejection for RateLimitError {
    /// 429 with `Retry-After`, `RateLimit` and `RateLimit-Policy` when over the limit (named after the limit that
    /// refused, or [`DEFAULT_POLICY_NAME`]); 400 when the cost exceeds the burst; 503 when the store is down.
    fn to_problem(&self) -> Problem {
        let problem = Problem::from_error(&PaymentError::from(self.clone()));
        match self {
            RateLimitError::Limited(l) => {
                let name = l.policy.as_deref().unwrap_or(DEFAULT_POLICY_NAME);
                problem
                    .with_header(RATELIMIT.clone(), ratelimit_value(name, 0, l.retry_after))
                    .with_header(RATELIMIT_POLICY.clone(), policy_value(name, l.quota))
            }
            _ => problem,
        }
    }
}

/// The rate limit's part of a mode beyond refusing: whether and how an admitted response is decorated.
/// Implemented by [`Typed`] (never touches a response) and [`Http`] (adds `RateLimit` and `RateLimit-Policy`).
pub trait Decorate<Res, E>: Refuse<RateLimitError, Res, E> + Default {
    /// Whether admitted responses are touched (adds headers).
    const DECORATES: bool;
    /// The output for an admitted request (`admitted` is `None` in shadow mode or fail-open).
    fn admitted(name: &str, quota: Quota, res: Result<Res, E>, admitted: Option<Admitted>) -> Result<Res, E>;
}

impl<Res, E: From<RateLimitError>> Decorate<Res, E> for Typed {
    const DECORATES: bool = false;
    #[inline]
    fn admitted(_: &str, _: Quota, res: Result<Res, E>, _: Option<Admitted>) -> Result<Res, E> {
        res
    }
}

impl<B: From<bytes::Bytes>, E> Decorate<http::Response<B>, E> for Http {
    const DECORATES: bool = true;
    fn admitted(
        name: &str,
        quota: Quota,
        res: Result<http::Response<B>, E>,
        admitted: Option<Admitted>,
    ) -> Result<http::Response<B>, E> {
        res.map(|mut r| {
            if let Some(a) = admitted {
                r.headers_mut().insert(RATELIMIT.clone(), ratelimit_value(name, a.remaining(), a.reset()));
                r.headers_mut().insert(RATELIMIT_POLICY.clone(), policy_value(name, quota));
            }
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_the_draft() {
        let q = Quota::new(5, Duration::from_secs(60)).unwrap();
        assert_eq!(policy_value("per-card", q), "\"per-card\";q=5;w=60");
        assert_eq!(ratelimit_value("per-card", 0, Duration::from_millis(11_200)), "\"per-card\";r=0;t=12");
        assert_eq!(ratelimit_value("a\"b\\c\u{e9}", 3, Duration::ZERO), "\"a_b_c_\";r=3;t=0");
    }
}
