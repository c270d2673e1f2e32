//! The outcome model every Palisade layer decides from.
//!
//! | outcome | retry | breaker | idempotency record |
//! |---|---|---|---|
//! | `Success` | no | success | stored, replayed |
//! | `Terminal` | never | not a failure (a decline is not an outage) | stored, replayed |
//! | `Retriable` | yes, honouring `retry_after` | failure | released |
//! | `Unknown` | only with the same gateway idempotency key | failure | released for re-execution |

use std::time::{Duration, SystemTime};

use crate::error::{OutcomeClass, PaymentError};

/// What a call's result means for money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The gateway answered and the answer is final (card declined, invalid request, 4xx except 408/409/429).
    Terminal,
    /// Certainly no effect happened; try again later, not before `retry_after` if given.
    Retriable {
        /// The wait the other side asked for (`Retry-After`, a rate limiter's or breaker's hint).
        retry_after: Option<Duration>,
    },
    /// It may have taken effect (timeout or reset after the request left, 500/502/504). Retry only with the same
    /// gateway idempotency key.
    Unknown,
}

impl Outcome {
    /// A retriable outcome with no wait hint.
    pub const RETRIABLE: Outcome = Outcome::Retriable { retry_after: None };

    /// The outcome without its data.
    #[must_use]
    pub const fn class(&self) -> OutcomeClass {
        match self {
            Outcome::Success => OutcomeClass::Success,
            Outcome::Terminal => OutcomeClass::Terminal,
            Outcome::Retriable { .. } => OutcomeClass::Retriable,
            Outcome::Unknown => OutcomeClass::Unknown,
        }
    }
    /// True for `Retriable` and `Unknown`: the outcomes a circuit breaker counts as failures.
    #[must_use]
    pub const fn is_failure(&self) -> bool {
        matches!(self, Outcome::Retriable { .. } | Outcome::Unknown)
    }
    /// True for `Success` and `Terminal`: the outcomes an idempotency layer stores and replays.
    #[must_use]
    pub const fn is_final(&self) -> bool {
        matches!(self, Outcome::Success | Outcome::Terminal)
    }
    /// The `retry_after` of a `Retriable` outcome.
    #[must_use]
    pub const fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retriable { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// Decides the [`Outcome`] of a call's result. Implemented for closures `Fn(&Result<Res, E>) -> Outcome`.
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// Errors that know their own outcome. Implemented for [`PaymentError`] and for `tower::BoxError`-style boxed
/// errors (which are downcast to a `PaymentError`; anything else is `Unknown`, the only safe assumption about a
/// failure we cannot see into).
pub trait ErrorOutcome {
    /// The outcome of this error.
    fn outcome(&self) -> Outcome;
}

impl ErrorOutcome for PaymentError {
    fn outcome(&self) -> Outcome {
        PaymentError::outcome(self)
    }
}

impl ErrorOutcome for Box<dyn std::error::Error + Send + Sync> {
    fn outcome(&self) -> Outcome {
        match self.downcast_ref::<PaymentError>() {
            Some(e) => e.outcome(),
            None => Outcome::Unknown,
        }
    }
}

/// Services that cannot fail (axum's `Router`, `Error = Infallible`): there is no error to classify, so
/// [`HttpClassifier`] and [`DefaultClassifier`] work for them too.
impl ErrorOutcome for std::convert::Infallible {
    fn outcome(&self) -> Outcome {
        match *self {}
    }
}

/// The default classifier for typed services: `Ok` is `Success`, an error is classified by its kind
/// ([`ErrorOutcome`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<Res, E: ErrorOutcome> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => e.outcome(),
        }
    }
}

/// Classifier for `http::Response`: the status decides, `Retry-After` (delta-seconds or HTTP-date) rides along;
/// a transport error is classified by [`ErrorOutcome`].
///
/// | status | outcome |
/// |---|---|
/// | 1xx, 2xx, 3xx | Success |
/// | 408, 425, 429 | Retriable (with `Retry-After`) |
/// | 409 | Retriable: the usual meaning at a gateway is "a request with this key is in flight" |
/// | other 4xx | Terminal |
/// | 503 | Retriable (with `Retry-After`) |
/// | 500, 502, 504 and other 5xx | Unknown |
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// Classifies a status and headers, reading `Retry-After` against `now` (for the HTTP-date form).
    #[must_use]
    pub fn classify_parts(status: http::StatusCode, headers: &http::HeaderMap, now: SystemTime) -> Outcome {
        let retry_after = || headers.get(http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v, now));
        match status.as_u16() {
            100..=399 => Outcome::Success,
            408 | 409 | 425 | 429 | 503 => Outcome::Retriable { retry_after: retry_after() },
            400..=499 => Outcome::Terminal,
            _ => Outcome::Unknown,
        }
    }
}

impl<B, E: ErrorOutcome> Classify<http::Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(res) => HttpClassifier::classify_parts(res.status(), res.headers(), SystemTime::now()),
            Err(e) => e.outcome(),
        }
    }
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`), the
/// latter measured from `now`. A date in the past gives zero. Malformed values give `None`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderValue;
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400); // Wed, 21 Oct 2015 07:26:40 GMT
/// let v = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
/// assert_eq!(palisade_core::parse_retry_after(&v, now), Some(Duration::from_secs(80)));
/// assert_eq!(palisade_core::parse_retry_after(&HeaderValue::from_static("120"), now), Some(Duration::from_secs(120)));
/// ```
#[must_use]
pub fn parse_retry_after(value: &http::HeaderValue, now: SystemTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok().map(Duration::from_secs);
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use http::{HeaderMap, HeaderValue, StatusCode};

    #[test]
    fn http_status_table() {
        let now = SystemTime::UNIX_EPOCH;
        let h = HeaderMap::new();
        let table: &[(u16, OutcomeClass)] = &[
            (200, OutcomeClass::Success),
            (201, OutcomeClass::Success),
            (204, OutcomeClass::Success),
            (302, OutcomeClass::Success),
            (400, OutcomeClass::Terminal),
            (401, OutcomeClass::Terminal),
            (402, OutcomeClass::Terminal),
            (403, OutcomeClass::Terminal),
            (404, OutcomeClass::Terminal),
            (408, OutcomeClass::Retriable),
            (409, OutcomeClass::Retriable),
            (422, OutcomeClass::Terminal),
            (425, OutcomeClass::Retriable),
            (429, OutcomeClass::Retriable),
            (500, OutcomeClass::Unknown),
            (502, OutcomeClass::Unknown),
            (503, OutcomeClass::Retriable),
            (504, OutcomeClass::Unknown),
        ];
        for &(code, want) in table {
            let got = HttpClassifier::classify_parts(StatusCode::from_u16(code).unwrap(), &h, now).class();
            assert_eq!(got, want, "status {code}");
        }
    }

    #[test]
    fn retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_400);
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            HttpClassifier::classify_parts(StatusCode::TOO_MANY_REQUESTS, &h, now),
            Outcome::Retriable { retry_after: Some(Duration::from_secs(7)) }
        );
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(
            HttpClassifier::classify_parts(StatusCode::SERVICE_UNAVAILABLE, &h, now),
            Outcome::Retriable { retry_after: Some(Duration::from_secs(80)) }
        );
        // past date → zero; garbage → none
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"));
        assert_eq!(
            HttpClassifier::classify_parts(StatusCode::SERVICE_UNAVAILABLE, &h, now).retry_after(),
            Some(Duration::ZERO)
        );
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(HttpClassifier::classify_parts(StatusCode::SERVICE_UNAVAILABLE, &h, now).retry_after(), None);
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("-5"));
        assert_eq!(HttpClassifier::classify_parts(StatusCode::SERVICE_UNAVAILABLE, &h, now).retry_after(), None);
    }

    #[test]
    fn payment_error_table() {
        use OutcomeClass::*;
        let want = |k: ErrorKind| match k {
            ErrorKind::NetworkBeforeSend
            | ErrorKind::GatewayUnavailable
            | ErrorKind::RateLimited
            | ErrorKind::IdempotencyInFlight
            | ErrorKind::CircuitOpen
            | ErrorKind::StoreUnavailable => Retriable,
            ErrorKind::GatewayTimeout | ErrorKind::GatewayServerError | ErrorKind::SagaCompensationFailed => Unknown,
            _ => Terminal,
        };
        for k in ErrorKind::ALL {
            assert_eq!(k.outcome_class(), want(k), "{k}");
        }
        let r: Result<(), PaymentError> = Err(PaymentError::CircuitOpen { retry_after: Some(Duration::from_secs(3)) });
        assert_eq!(DefaultClassifier.classify(&r), Outcome::Retriable { retry_after: Some(Duration::from_secs(3)) });
        let r: Result<(), PaymentError> = Err(PaymentError::declined("x"));
        assert_eq!(DefaultClassifier.classify(&r), Outcome::Terminal);
        let r: Result<(), PaymentError> = Ok(());
        assert_eq!(DefaultClassifier.classify(&r), Outcome::Success);
    }

    #[test]
    fn boxed_errors_downcast() {
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        let e: BoxError = Box::new(PaymentError::InsufficientFunds);
        assert_eq!(ErrorOutcome::outcome(&e), Outcome::Terminal);
        let e: BoxError = "some io failure".into();
        assert_eq!(ErrorOutcome::outcome(&e), Outcome::Unknown);
    }

    #[test]
    fn closures_classify() {
        let c = |r: &Result<u32, ()>| if matches!(r, Ok(0)) { Outcome::Terminal } else { Outcome::Success };
        assert_eq!(c.classify(&Ok(0)), Outcome::Terminal);
        fn takes<C: Classify<u32, ()>>(c: &C) -> Outcome {
            c.classify(&Err(()))
        }
        assert_eq!(takes(&c), Outcome::Success);
    }
}
