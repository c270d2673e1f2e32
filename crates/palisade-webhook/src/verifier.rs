//! [`Verifier`]: a scheme, one or more secrets, a timestamp window and a clock. [`Signer`]: the sending side.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use subtle::{Choice, ConstantTimeEq};

use crate::clock::{Clock, SystemClock};
pub use crate::defaults::DEFAULT_TOLERANCE;
use crate::error::{SecretError, SignError, VerifyError};
use crate::key::Key;
use crate::scheme::{Builtin, Candidates, DedupBy, Message, Scheme, Signed, body_digest};

/// How far a signed timestamp may lie from now. Bounds are inclusive: a timestamp exactly `past` old passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerance {
    /// How old a timestamp may be.
    pub past: Duration,
    /// How far ahead of this host's clock a timestamp may be.
    pub future: Duration,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { past: DEFAULT_TOLERANCE, future: DEFAULT_TOLERANCE }
    }
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The scheme's name.
    pub scheme: &'static str,
    /// The event id (`webhook-id`, the Stripe event's `id`, `X-GitHub-Delivery`), if any: what the handler sees
    /// as [`EventId`](crate::EventId). Deduplication keys on [`Verifier::dedup_id`], which is this id only where
    /// the signature covers it (not for GitHub).
    pub event_id: Option<String>,
    /// The signed timestamp, if the scheme signs one.
    pub timestamp: Option<i64>,
    /// Which configured secret matched (0 = the first given): during a rotation, shows when the old one can go.
    pub secret_index: usize,
}

/// Verifies webhook signatures under one scheme with one or more secrets.
///
/// ```
/// use palisade_webhook::{Verifier, Stripe, Signer, Message, ManualClock};
///
/// let clock = ManualClock::new(1_700_000_000);
/// let verifier = Verifier::builder(Stripe)
///     .secret("whsec_new")
///     .secret("whsec_old") // rotation: both are accepted until the old one is removed
///     .clock(clock.clone())
///     .build()?;
/// let body = br#"{"id":"evt_1"}"#;
/// let headers = Signer::new(Stripe, "whsec_old")?
///     .headers(&Message { id: None, timestamp: 1_700_000_000, body })?;
/// let verified = verifier.verify(&headers, body)?;
/// assert_eq!(verified.secret_index, 1);
/// assert_eq!(verified.event_id.as_deref(), Some("evt_1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    scheme: Arc<dyn Scheme>,
    /// Set when `scheme` is one of this crate's, whose headers are then parsed without allocating.
    builtin: Option<Builtin>,
    keys: Arc<[Key]>,
    tolerance: Tolerance,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme.name())
            .field("secrets", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .field("clock", &self.clock)
            .finish()
    }
}

impl Verifier {
    /// Starts a verifier for `scheme`. Defaults: tolerance [`DEFAULT_TOLERANCE`] both ways, the system clock.
    pub fn builder<S: Scheme>(scheme: S) -> VerifierBuilder {
        VerifierBuilder {
            scheme: Arc::new(scheme),
            builtin: Builtin::of::<S>(),
            secrets: Vec::new(),
            tolerance: Tolerance::default(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The scheme.
    #[must_use]
    pub fn scheme(&self) -> &dyn Scheme {
        &*self.scheme
    }

    /// The timestamp window.
    #[must_use]
    pub fn tolerance(&self) -> Tolerance {
        self.tolerance
    }

    /// Verifies `body` (the raw bytes, exactly as received) against the signature `headers`.
    ///
    /// Every configured secret's MAC is compared with every candidate signature in constant time, without
    /// stopping at the first match; then the timestamp is checked against the window.
    ///
    /// # Errors
    /// [`VerifyError`] naming the check that failed.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let result = self.verify_inner(headers, body);
        crate::telemetry::verified(self.scheme.name(), result.as_ref().map(|v| v.secret_index));
        result
    }

    fn verify_inner(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, VerifyError> {
        let mut candidates = Candidates::new();
        let signed = match self.builtin {
            Some(builtin) => builtin.parse_into(headers, &mut |sig| candidates.push(sig))?,
            None => {
                let signed = self.scheme.parse(headers)?;
                for sig in &signed.signatures {
                    candidates.push(*sig);
                }
                signed
            }
        };
        let secret_index = self.matching_key(&signed, &candidates, body).ok_or(VerifyError::NoSignatureMatched)?;
        let timestamp = signed.timestamp.map(|(_, t)| t);
        if let Some(ts) = timestamp {
            self.check_window(ts)?;
        }
        Ok(Verified {
            scheme: self.scheme.name(),
            event_id: self.scheme.event_id(&signed, body)?,
            timestamp,
            secret_index,
        })
    }

    /// What deduplication keys a verified delivery on: something its signature covers, so a replay of a captured
    /// delivery cannot change it. Under [`DedupBy::EventId`] schemes (Stripe, Standard Webhooks) the event id
    /// (`None` without one); under [`DedupBy::BodyDigest`] (GitHub) `sha256:<hex>` of `body`, whatever the
    /// unsigned `X-GitHub-Delivery` says. `verified` and `body` must come from one successful
    /// [`verify`](Self::verify). The layer calls it only when it deduplicates, so verification alone never pays
    /// for the digest.
    ///
    /// ```
    /// use palisade_webhook::{GitHub, Message, Signer, Verifier};
    ///
    /// let verifier = Verifier::builder(GitHub).secret("s").build()?;
    /// let body = br#"{"zen":"Keep it logically awesome."}"#;
    /// let mut headers = Signer::new(GitHub, "s")?.headers(&Message { id: Some("d-1"), timestamp: 0, body })?;
    /// let first = verifier.dedup_id(&verifier.verify(&headers, body)?, body);
    /// // A replay under a fresh delivery id still verifies, and is the same delivery to deduplication.
    /// headers.insert("x-github-delivery", "d-2".parse()?);
    /// let replay = verifier.verify(&headers, body)?;
    /// assert_eq!(replay.event_id.as_deref(), Some("d-2"));
    /// assert_eq!(verifier.dedup_id(&replay, body), first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn dedup_id(&self, verified: &Verified, body: &[u8]) -> Option<String> {
        match self.scheme.dedup_by() {
            DedupBy::EventId => verified.event_id.clone(),
            DedupBy::BodyDigest => Some(body_digest(body)),
        }
    }

    /// Verifies loose parts (a signature header value, and the id and timestamp where the scheme sends them
    /// separately), as the CLI does.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_parts(
        &self,
        signature: &str,
        id: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
    ) -> Result<Verified, VerifyError> {
        let headers = self.scheme.headers_from_parts(signature, id, timestamp)?;
        self.verify(&headers, body)
    }

    fn matching_key(&self, signed: &Signed<'_>, candidates: &Candidates, body: &[u8]) -> Option<usize> {
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            let mac = self.scheme.mac(key, signed, body);
            let mut ok = Choice::from(0);
            for candidate in candidates.iter() {
                ok |= equal_32(&mac, candidate);
            }
            if bool::from(ok) && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    fn check_window(&self, ts: i64) -> Result<(), VerifyError> {
        let now = self.clock.now_unix();
        let past = self.tolerance.past.as_secs();
        let future = self.tolerance.future.as_secs();
        if ts <= now {
            let age = now.abs_diff(ts);
            if age > past {
                return Err(VerifyError::TooOld { age_secs: age, tolerance_secs: past });
            }
        } else {
            let ahead = ts.abs_diff(now);
            if ahead > future {
                return Err(VerifyError::TooFarInFuture { ahead_secs: ahead, tolerance_secs: future });
            }
        }
        Ok(())
    }
}

/// Constant-time equality of two MACs: the XOR of every byte pair is OR-ed together without branching, and
/// only the final byte goes through `subtle` (one optimisation barrier instead of one per byte, which
/// `<[u8]>::ct_eq` costs).
fn equal_32(a: &[u8; 32], b: &[u8; 32]) -> Choice {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff.ct_eq(&0)
}

/// Builds a [`Verifier`].
#[must_use]
pub struct VerifierBuilder {
    scheme: Arc<dyn Scheme>,
    builtin: Option<Builtin>,
    secrets: Vec<String>,
    tolerance: Tolerance,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("scheme", &self.scheme.name())
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// Adds a secret. Add several to rotate: every one is accepted; [`Verified::secret_index`] says which matched.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(secret.into());
        self
    }

    /// Sets both the past and the future tolerance (default [`DEFAULT_TOLERANCE`]).
    pub fn tolerance(mut self, d: Duration) -> Self {
        self.tolerance = Tolerance { past: d, future: d };
        self
    }

    /// How old a timestamp may be (default [`DEFAULT_TOLERANCE`]).
    pub fn past_tolerance(mut self, d: Duration) -> Self {
        self.tolerance.past = d;
        self
    }

    /// How far in the future a timestamp may be (default [`DEFAULT_TOLERANCE`]).
    pub fn future_tolerance(mut self, d: Duration) -> Self {
        self.tolerance.future = d;
        self
    }

    /// The clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Builds the verifier.
    ///
    /// # Errors
    /// [`SecretError::NoSecrets`] without a secret, or the scheme's refusal of one.
    pub fn build(self) -> Result<Verifier, SecretError> {
        if self.secrets.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        let keys = self.secrets.iter().map(|s| self.scheme.key(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier {
            scheme: self.scheme,
            builtin: self.builtin,
            keys: keys.into(),
            tolerance: self.tolerance,
            clock: self.clock,
        })
    }
}

/// Signs webhooks: for tests, for the CLI, and for services that send webhooks themselves.
#[derive(Clone)]
pub struct Signer {
    scheme: Arc<dyn Scheme>,
    key: Key,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer").field("scheme", &self.scheme.name()).finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `scheme` with `secret`.
    ///
    /// # Errors
    /// The scheme's refusal of the secret.
    pub fn new(scheme: impl Scheme, secret: &str) -> Result<Self, SecretError> {
        let key = scheme.key(secret)?;
        Ok(Signer { scheme: Arc::new(scheme), key })
    }

    /// Checks that `timestamp` can be signed: the verifier's own rule (Unix seconds, 0 to 15 digits), so a
    /// signer never emits what no verifier accepts. [`signature`](Self::signature) and
    /// [`headers`](Self::headers) check it too; this lets a caller refuse early (the CLI, before reading the body).
    ///
    /// # Errors
    /// [`SignError::TimestampOutOfRange`].
    pub fn check_timestamp(timestamp: i64) -> Result<(), SignError> {
        if crate::scheme::signable_timestamp(timestamp) {
            Ok(())
        } else {
            Err(SignError::TimestampOutOfRange { timestamp })
        }
    }

    /// The signature header's value (`t=…,v1=…`, `v1,…` or `sha256=…`).
    ///
    /// # Errors
    /// [`SignError`] when the scheme needs something `msg` lacks, or [`SignError::TimestampOutOfRange`].
    pub fn signature(&self, msg: &Message<'_>) -> Result<String, SignError> {
        check_timestamp(msg)?;
        self.scheme.sign(&self.key, msg)
    }

    /// Every header a sender sets for `msg`.
    ///
    /// # Errors
    /// [`SignError`] when the scheme needs something `msg` lacks, or [`SignError::TimestampOutOfRange`].
    pub fn headers(&self, msg: &Message<'_>) -> Result<HeaderMap, SignError> {
        check_timestamp(msg)?;
        self.scheme.sign_headers(&self.key, msg)
    }
}

/// A signer never emits a timestamp a verifier would refuse as malformed.
fn check_timestamp(msg: &Message<'_>) -> Result<(), SignError> {
    Signer::check_timestamp(msg.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_beyond_the_inline_ones_are_compared() {
        use crate::clock::ManualClock;
        use crate::scheme::{GitHub, StandardWebhooks, Stripe};
        assert_eq!(Builtin::of::<Stripe>(), Some(Builtin::Stripe));
        assert_eq!(Builtin::of::<StandardWebhooks>(), Some(Builtin::Standard));
        assert_eq!(Builtin::of::<GitHub>(), Some(Builtin::GitHub));
        let body = br#"{"id":"evt_1"}"#;
        let good =
            Signer::new(Stripe, "whsec_a").unwrap().signature(&Message { id: None, timestamp: 5, body }).unwrap();
        let good = good.split_once(",v1=").unwrap().1;
        let verifier = Verifier::builder(Stripe).secret("whsec_a").clock(ManualClock::new(5)).build().unwrap();
        for position in 0..7 {
            let mut value = String::from("t=5");
            for i in 0..7 {
                let v1 = if i == position { good.to_owned() } else { format!("{i}").repeat(64) };
                value.push_str(&format!(",v1={v1}"));
            }
            let mut headers = HeaderMap::new();
            headers.insert("stripe-signature", value.parse().unwrap());
            assert!(verifier.verify(&headers, body).is_ok(), "match at {position}");
            let wrong = value.replace(good, &"f".repeat(64));
            headers.insert("stripe-signature", wrong.parse().unwrap());
            assert_eq!(verifier.verify(&headers, body).unwrap_err(), VerifyError::NoSignatureMatched, "{position}");
        }
    }

    /// A scheme from outside the crate goes through `Scheme::parse` and its `Vec` of candidates.
    #[test]
    fn a_users_scheme_is_parsed_through_the_trait() {
        use crate::clock::ManualClock;
        use crate::error::SignError;
        use crate::scheme::{SchemeHeaders, Stripe};
        #[derive(Debug)]
        struct Mine;
        impl Scheme for Mine {
            fn name(&self) -> &'static str {
                "stripe"
            }
            fn headers(&self) -> SchemeHeaders {
                Stripe.headers()
            }
            fn key(&self, secret: &str) -> Result<Key, SecretError> {
                Stripe.key(secret)
            }
            fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<Signed<'h>, VerifyError> {
                let mut signed = Stripe.parse(headers)?;
                signed.signatures.reverse();
                Ok(signed)
            }
            fn mac(&self, key: &Key, signed: &Signed<'_>, body: &[u8]) -> [u8; 32] {
                Stripe.mac(key, signed, body)
            }
            fn sign(&self, key: &Key, msg: &Message<'_>) -> Result<String, SignError> {
                Stripe.sign(key, msg)
            }
        }
        assert_eq!(Builtin::of::<Mine>(), None);
        let body = br#"{"id":"evt_1"}"#;
        let msg = Message { id: None, timestamp: 5, body };
        let verifier = Verifier::builder(Mine).secret("whsec_a").clock(ManualClock::new(5)).build().unwrap();
        let headers = Signer::new(Mine, "whsec_a").unwrap().headers(&msg).unwrap();
        assert_eq!(verifier.verify(&headers, body).unwrap().secret_index, 0);
        let headers = Signer::new(Mine, "whsec_b").unwrap().headers(&msg).unwrap();
        assert_eq!(verifier.verify(&headers, body).unwrap_err(), VerifyError::NoSignatureMatched);
    }

    #[test]
    fn equal_32_sees_every_byte_and_bit() {
        let a = [0x5a; 32];
        assert!(bool::from(equal_32(&a, &a)));
        for i in 0..32 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!bool::from(equal_32(&a, &b)), "byte {i} bit {bit}");
            }
        }
    }
}
