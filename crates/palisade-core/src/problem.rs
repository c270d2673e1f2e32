//! RFC 9457 `application/problem+json` responses, shared by every layer's HTTP mode so a rejection looks the
//! same whichever layer made it.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::error::PaymentError;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A problem document (RFC 9457) plus the headers that go with it (`Retry-After`, `RateLimit-*`, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:palisade:problem:<kind>`: stable, machine-readable.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short human summary, the same for every occurrence of this type.
    pub title: String,
    /// The HTTP status.
    #[serde(serialize_with = "ser_status")]
    pub status: StatusCode,
    /// This occurrence, in words that say what to do.
    pub detail: String,
    /// Seconds to wait, repeated in the body for clients that do not read headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Extra headers for the response.
    #[serde(skip)]
    pub headers: HeaderMap,
}

fn ser_status<S: serde::Serializer>(s: &StatusCode, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u16(s.as_u16())
}

impl Problem {
    /// A problem of `kind` (a stable snake_case name) with a status, title and detail.
    #[must_use]
    pub fn new(status: StatusCode, kind: &str, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:palisade:problem:{kind}"),
            title: title.into(),
            status,
            detail: crate::card::mask_card_like(&detail.into()),
            retry_after: None,
            headers: HeaderMap::new(),
        }
    }

    /// The problem for a [`PaymentError`]: its status, kind and message, and `Retry-After` where it has one.
    #[must_use]
    pub fn from_error(err: &PaymentError) -> Self {
        let kind = err.kind();
        let title = kind.as_str().replace('_', " ");
        let p = Problem::new(err.http_status(), kind.as_str(), title, err.to_string());
        match err.retry_after() {
            Some(d) => p.with_retry_after(d),
            None => p,
        }
    }

    /// Adds `Retry-After` (whole seconds, rounded up so a client never comes back too early).
    #[must_use]
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        self.retry_after = Some(secs);
        self.headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// The JSON body.
    #[must_use]
    pub fn body_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The response, with any body type that can be built from [`Bytes`](bytes::Bytes): axum's `Body`,
    /// `http_body_util::Full<Bytes>`, `Vec<u8>`, `Bytes`, or a service's own body type (the idempotency layer's
    /// `B: From<Bytes>`), so every layer builds its refusals here.
    #[must_use]
    pub fn into_response<B: From<bytes::Bytes>>(self) -> Response<B> {
        let body = bytes::Bytes::from(self.body_bytes());
        let mut res = Response::new(B::from(body));
        *res.status_mut() = self.status;
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res.headers_mut().extend(self.headers);
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_error_carries_status_type_and_retry_after() {
        let e = PaymentError::RateLimited { retry_after: Some(Duration::from_millis(1500)) };
        let res: Response<Vec<u8>> = Problem::from_error(&e).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["type"], "urn:palisade:problem:rate_limited");
        assert_eq!(v["status"], 429);
        assert_eq!(v["retry_after"], 2);
    }

    #[test]
    fn detail_never_carries_card_numbers() {
        let p = Problem::new(StatusCode::BAD_REQUEST, "x", "x", "card 4242424242424242");
        assert!(!String::from_utf8(p.body_bytes()).unwrap().contains("4242424242424242"));
    }
}
