//! RFC 9457 `application/problem+json` responses, shared by every layer's HTTP mode so a rejection looks the
//! same whichever layer made it.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use serde::Serialize;

use crate::error::{ErrorKind, PaymentError};

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Marks a response as a Palisade layer's own refusal rather than the gateway's answer: a problem whose kind
/// [`is_layer_rejection`](ErrorKind::is_layer_rejection) (rate limited, idempotency conflict or in flight, key
/// missing, circuit open, store unavailable). [`Problem::into_response`] puts it in the response's extensions, so
/// an outer layer in HTTP mode (the circuit breaker) tells "an inner layer said no" from "the gateway failed"
/// without reading the body, as it does from the typed error. Extensions stay in the process: a response that
/// crossed the network carries none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayerRefusal {
    /// The refusal's kind.
    pub kind: ErrorKind,
}

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
        if let Some(kind) = layer_rejection_kind(&self.type_uri) {
            res.extensions_mut().insert(LayerRefusal { kind });
        }
        res
    }
}

/// The layer-rejection kind named by a problem `type`, if it names one.
fn layer_rejection_kind(type_uri: &str) -> Option<ErrorKind> {
    let name = type_uri.strip_prefix("urn:palisade:problem:")?;
    ErrorKind::ALL.into_iter().find(|k| k.is_layer_rejection() && k.as_str() == name)
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
    fn layer_refusals_are_marked_in_the_extensions_and_gateway_failures_are_not() {
        let limited: Response<Vec<u8>> =
            Problem::from_error(&PaymentError::RateLimited { retry_after: None }).into_response();
        assert_eq!(limited.extensions().get(), Some(&LayerRefusal { kind: ErrorKind::RateLimited }));
        let in_flight: Response<Vec<u8>> =
            Problem::new(StatusCode::CONFLICT, "idempotency_in_flight", "request in flight", "x").into_response();
        assert_eq!(in_flight.extensions().get(), Some(&LayerRefusal { kind: ErrorKind::IdempotencyInFlight }));
        for e in [PaymentError::timeout("t"), PaymentError::declined("do_not_honor")] {
            let res: Response<Vec<u8>> = Problem::from_error(&e).into_response();
            assert_eq!(res.extensions().get::<LayerRefusal>(), None, "{e}");
        }
        let other: Response<Vec<u8>> = Problem::new(StatusCode::NOT_FOUND, "not_found", "x", "x").into_response();
        assert_eq!(other.extensions().get::<LayerRefusal>(), None);
    }

    #[test]
    fn detail_never_carries_card_numbers() {
        let p = Problem::new(StatusCode::BAD_REQUEST, "x", "x", "card 4242424242424242");
        assert!(!String::from_utf8(p.body_bytes()).unwrap().contains("4242424242424242"));
    }
}
