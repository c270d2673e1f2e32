//! Signature schemes. Each scheme is one file and can both sign and verify.
//!
//! | scheme | headers | signed bytes | secret | deduplicated by ([`Scheme::dedup_by`]) |
//! |---|---|---|---|---|
//! | [`Stripe`] | `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]` | `{t}.{body}` | the whole string, `whsec_` included | the event `id` in the signed body |
//! | [`StandardWebhooks`] | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …` | `{id}.{timestamp}.{body}` | `whsec_<base64>`, decoded | the signed `webhook-id` |
//! | [`GitHub`] | `X-Hub-Signature-256: sha256=<hex>` | `{body}` | the string's bytes | SHA-256 of the body (`X-GitHub-Delivery` is not signed) |

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{SecretError, SignError, VerifyError};
use crate::key::Key;

mod github;
mod standard;
mod stripe;

pub use github::{GitHub, parse_github_header};
pub use standard::{StandardWebhooks, parse_standard_signatures};
pub use stripe::{Stripe, StripeHeader, parse_stripe_header};

/// The schemes this crate ships, which the [`Verifier`](crate::Verifier) parses without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Stripe,
    Standard,
    GitHub,
}

impl Builtin {
    /// Which built-in scheme `S` is, if it is one (by type, so a user's scheme that borrows a name is not).
    pub(crate) fn of<S: Scheme>() -> Option<Self> {
        use std::any::TypeId;
        let t = TypeId::of::<S>();
        [(TypeId::of::<Stripe>(), Builtin::Stripe), (TypeId::of::<StandardWebhooks>(), Builtin::Standard)]
            .into_iter()
            .chain([(TypeId::of::<GitHub>(), Builtin::GitHub)])
            .find_map(|(id, b)| (id == t).then_some(b))
    }

    /// The scheme's `parse`, with the candidate signatures handed to `push` instead of a `Vec` in the result.
    pub(crate) fn parse_into<'h>(
        self,
        headers: &'h HeaderMap,
        push: &mut impl FnMut([u8; 32]),
    ) -> Result<Signed<'h>, VerifyError> {
        match self {
            Builtin::Stripe => stripe::parse_into(headers, push),
            Builtin::Standard => standard::parse_into(headers, push),
            Builtin::GitHub => github::parse_into(headers, push),
        }
    }
}

/// Candidate signatures for one verification: the first [`Candidates::INLINE`] on the stack (senders send one,
/// two during a rotation), any more in a `Vec`. Saves the heap allocation and free a `Vec` costs every request.
pub(crate) struct Candidates {
    inline: [[u8; 32]; Candidates::INLINE],
    len: usize,
    more: Vec<[u8; 32]>,
}

impl Candidates {
    const INLINE: usize = 4;

    pub(crate) fn new() -> Self {
        Candidates { inline: [[0; 32]; Self::INLINE], len: 0, more: Vec::new() }
    }

    pub(crate) fn push(&mut self, sig: [u8; 32]) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = sig,
            None => self.more.push(sig),
        }
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.inline[..self.len.min(Self::INLINE)].iter().chain(&self.more)
    }
}

/// The headers a scheme reads and writes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchemeHeaders {
    /// The header carrying the signature(s).
    pub signature: HeaderName,
    /// The header carrying the message id, if the scheme has one.
    pub id: Option<HeaderName>,
    /// The header carrying the timestamp, if the scheme sends it separately from the signature.
    pub timestamp: Option<HeaderName>,
}

/// What a scheme read out of a request's headers, before any cryptography.
/// Borrows from the request's headers, so parsing allocates only the list of candidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signed<'h> {
    /// The message id, where the scheme carries one in a header (`webhook-id`, `X-GitHub-Delivery`).
    pub id: Option<&'h str>,
    /// The signed timestamp exactly as sent (the MAC covers these bytes) and its value.
    pub timestamp: Option<(&'h str, i64)>,
    /// The candidate signatures (32-byte HMAC-SHA256 values) in the order they were sent.
    pub signatures: Vec<[u8; 32]>,
}

/// What delivery deduplication keys on ([`Scheme::dedup_by`]).
///
/// It must be something the signature covers: whoever captured one signed delivery can resend it with any
/// unsigned header changed, and each change that reaches the deduplication key would run the handler again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupBy {
    /// The event id ([`Scheme::event_id`]). Right when the signature covers it: Stripe's is the `id` of the signed
    /// body, Standard Webhooks sign `webhook-id` with the body.
    EventId,
    /// `sha256:<hex>`, the SHA-256 digest of the verified body. For schemes whose signature covers the body and
    /// nothing that identifies the event (GitHub: its `X-GitHub-Delivery` id is unsigned, and it signs no timestamp
    /// either). A sender's redelivery carries the same body, so it is a duplicate as it should be; two different
    /// events with byte-identical bodies are one event to deduplication, as a replay of one would be.
    BodyDigest,
}

/// A message to sign.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The message id (required by Standard Webhooks; sent as `X-GitHub-Delivery` by GitHub; unused by Stripe).
    pub id: Option<&'a str>,
    /// Unix seconds (unused by GitHub).
    pub timestamp: i64,
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// A webhook signature scheme.
///
/// Implementations parse headers strictly enough to name what is wrong ([`VerifyError`]), never compare
/// signatures themselves (the [`Verifier`](crate::Verifier) compares in constant time against every configured
/// key), and never log secrets.
pub trait Scheme: fmt::Debug + Send + Sync + 'static {
    /// Stable lowercase name (`stripe`, `standard`, `github`), used in logs and metric labels.
    fn name(&self) -> &'static str;

    /// The headers this scheme uses.
    fn headers(&self) -> SchemeHeaders;

    /// Turns a configured secret into the HMAC key the scheme uses.
    ///
    /// # Errors
    /// [`SecretError`] when the secret is empty or not in the scheme's format.
    fn key(&self, secret: &str) -> Result<Key, SecretError>;

    /// Reads the id, timestamp and candidate signatures out of `headers`.
    ///
    /// # Errors
    /// [`VerifyError::HeaderMissing`], [`VerifyError::HeaderMalformed`] or [`VerifyError::TimestampMalformed`].
    fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<Signed<'h>, VerifyError>;

    /// The signature `key` would produce for `body` under what `signed` says (id, timestamp).
    fn mac(&self, key: &Key, signed: &Signed<'_>, body: &[u8]) -> [u8; 32];

    /// The signature header's value for `msg` (`t=…,v1=…`, `v1,…` or `sha256=…`).
    ///
    /// # Errors
    /// [`SignError`] when the scheme needs something `msg` lacks.
    fn sign(&self, key: &Key, msg: &Message<'_>) -> Result<String, SignError>;

    /// The event's id, handed to the handler as [`EventId`](crate::EventId): by default the id header; Stripe reads
    /// the event's JSON `id`. Deduplication keys on it unless [`dedup_by`](Self::dedup_by) says otherwise.
    /// Called only after the signature was verified.
    ///
    /// # Errors
    /// [`VerifyError::EventIdAmbiguous`] when the body names the event id twice.
    fn event_id(&self, signed: &Signed<'_>, _body: &[u8]) -> Result<Option<String>, VerifyError> {
        Ok(signed.id.map(str::to_owned))
    }

    /// What delivery deduplication keys on. Default [`DedupBy::EventId`], which is right only when the signature
    /// covers the event id (Stripe, Standard Webhooks). A scheme that signs the body and carries its id in an
    /// unsigned header (GitHub) returns [`DedupBy::BodyDigest`]: otherwise a captured delivery resent under a fresh
    /// id would run the handler again.
    fn dedup_by(&self) -> DedupBy {
        DedupBy::EventId
    }

    /// Every header a sender sets for `msg`: the signature, plus the id and timestamp headers the scheme uses.
    ///
    /// # Errors
    /// As [`Scheme::sign`]; [`SignError::InvalidId`] when the id cannot be a header value.
    fn sign_headers(&self, key: &Key, msg: &Message<'_>) -> Result<HeaderMap, SignError> {
        let names = self.headers();
        let mut map = HeaderMap::new();
        let sig = self.sign(key, msg)?;
        // Signature values are ASCII built from hex/base64/digits, always valid header values.
        map.insert(names.signature, HeaderValue::try_from(sig).map_err(|_| SignError::InvalidId)?);
        if let (Some(name), Some(id)) = (names.id, msg.id) {
            map.insert(name, header_id(id)?);
        }
        if let Some(name) = names.timestamp {
            map.insert(name, HeaderValue::from(msg.timestamp));
        }
        Ok(map)
    }

    /// The request headers a verifier would see, built from loose parts (the CLI's `--signature`, `--id`,
    /// `--timestamp`). Parts the scheme does not use are ignored.
    ///
    /// # Errors
    /// [`VerifyError::HeaderMalformed`] when a part cannot be an HTTP header value.
    fn headers_from_parts(
        &self,
        signature: &str,
        id: Option<&str>,
        timestamp: Option<&str>,
    ) -> Result<HeaderMap, VerifyError> {
        let names = self.headers();
        let mut map = HeaderMap::new();
        let value = |header: &'static str, v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| VerifyError::HeaderMalformed { header, reason: "not a valid header value" })
        };
        map.insert(names.signature.clone(), value(static_name(&names.signature), signature)?);
        if let (Some(name), Some(id)) = (names.id, id) {
            map.insert(name.clone(), value(static_name(&name), id)?);
        }
        if let (Some(name), Some(ts)) = (names.timestamp, timestamp) {
            map.insert(name.clone(), value(static_name(&name), ts)?);
        }
        Ok(map)
    }
}

fn header_id(id: &str) -> Result<HeaderValue, SignError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignError::InvalidId);
    }
    HeaderValue::from_str(id).map_err(|_| SignError::InvalidId)
}

/// The `'static` spelling of one of the header names the schemes use (for error values).
fn static_name(name: &HeaderName) -> &'static str {
    let known: [&'static HeaderName; 6] = [
        &stripe::HEADER,
        &standard::ID,
        &standard::TIMESTAMP,
        &standard::SIGNATURE,
        &github::HEADER,
        &github::DELIVERY,
    ];
    known.into_iter().find(|k| *k == name).map_or("signature", HeaderName::as_str)
}

/// [`Scheme::parse`] from a built-in scheme's allocation-free `parse_into`: its candidate signatures collected.
pub(crate) fn collected<'h>(
    parse_into: impl FnOnce(&mut &mut dyn FnMut([u8; 32])) -> Result<Signed<'h>, VerifyError>,
) -> Result<Signed<'h>, VerifyError> {
    let mut signatures = Vec::new();
    let mut push = |sig| signatures.push(sig);
    let mut push: &mut dyn FnMut([u8; 32]) = &mut push;
    let signed = parse_into(&mut push)?;
    Ok(Signed { signatures, ..signed })
}

/// A key made of a secret's own bytes (Stripe's whole `whsec_…` string, GitHub's string); refused when empty.
pub(crate) fn raw_key(secret: &str) -> Result<Key, SecretError> {
    if secret.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(Key::from_bytes(secret.as_bytes()))
}

/// Reads one header as visible-ASCII text.
pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &'static HeaderName) -> Result<&'h str, VerifyError> {
    let name_str = name.as_str();
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else { return Err(VerifyError::HeaderMissing { header: name_str }) };
    if values.next().is_some() {
        return Err(VerifyError::HeaderMalformed { header: name_str, reason: "sent more than once" });
    }
    v.to_str().map_err(|_| VerifyError::HeaderMalformed { header: name_str, reason: "not visible ASCII" })
}

/// Most digits of a signed Unix timestamp, on both sides: a verifier reads at most this many, and a signer refuses
/// a timestamp that would need more (15 digits reach far past any real clock, and bound what is parsed).
pub(crate) const TIMESTAMP_DIGITS: u32 = 15;

/// The one rule for signed timestamps, used by the signer ([`Signer`](crate::Signer) refuses the others) and the
/// verifier ([`parse_timestamp`] refuses the others): Unix seconds from 0 to the largest
/// [`TIMESTAMP_DIGITS`]-digit number.
pub(crate) fn signable_timestamp(ts: i64) -> bool {
    (0..10i64.pow(TIMESTAMP_DIGITS)).contains(&ts)
}

/// Parses a Unix timestamp: ASCII digits only (no sign, no spaces, no fraction) whose value
/// [`signable_timestamp`] accepts. The length is checked first only to bound the work.
pub(crate) fn parse_timestamp(s: &str) -> Result<i64, VerifyError> {
    if s.is_empty() || s.len() > TIMESTAMP_DIGITS as usize || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::TimestampMalformed);
    }
    s.parse::<i64>().ok().filter(|&ts| signable_timestamp(ts)).ok_or(VerifyError::TimestampMalformed)
}

/// `sha256:<64 lowercase hex digits>`: the deduplication id of [`DedupBy::BodyDigest`] schemes. One allocation;
/// computed only when a layer deduplicates, never by [`Verifier::verify`](crate::Verifier::verify).
pub(crate) fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(sha2::Sha256::digest(body), &mut hex);
    let mut id = String::with_capacity(7 + hex.len());
    id.push_str("sha256:");
    id.extend(hex.iter().map(|&b| char::from(b)));
    id
}

/// Decodes exactly 32 bytes of hex.
///
/// Table-driven: this runs on every verification and `hex::decode_to_slice` costs about as much as hashing a
/// block. Signatures are public values, so data-dependent lookups leak nothing.
pub(crate) fn hex32(s: &str) -> Option<[u8; 32]> {
    const INVALID: u8 = 0xff;
    static NIBBLE: [u8; 256] = {
        let mut t = [INVALID; 256];
        let mut i = 0;
        while i < 256 {
            let c = i as u8;
            t[i] = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => INVALID,
            };
            i += 1;
        }
        t
    };
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut seen = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        seen |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // Valid nibbles are below 16; INVALID sets the high bits.
    if seen & 0xf0 == 0 { Some(out) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_matches_the_hex_crate() {
        let lower = "00ff10a0b1c2d3e4f5a6b7c8d9eaFBfc0d1e2f3a4b5c6d7e8f90123456789abc";
        let mut expect = [0u8; 32];
        hex::decode_to_slice(lower, &mut expect).unwrap();
        assert_eq!(hex32(lower), Some(expect));
        for bad in
            ["", "0", &lower[..63], &format!("{lower}00"), &lower.replace('a', "g"), &lower.replacen('0', " ", 1)]
        {
            assert_eq!(hex32(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Issue 16, finding 14: sign and verify follow one rule: a timestamp can be signed exactly when the
        /// verifier reads what the signer writes (`i64`'s decimal form), whatever the value.
        #[test]
        fn sign_and_verify_accept_the_same_timestamps(
            ts in proptest::prop_oneof![
                proptest::num::i64::ANY,
                -10i64..10,
                (10i64.pow(TIMESTAMP_DIGITS) - 10)..(10i64.pow(TIMESTAMP_DIGITS) + 10),
            ],
        ) {
            proptest::prop_assert_eq!(signable_timestamp(ts), parse_timestamp(&ts.to_string()).is_ok(), "{}", ts);
        }
    }

    #[test]
    fn body_digest_is_the_prefixed_lowercase_sha256() {
        // printf 'Hello, World!' | sha256sum
        assert_eq!(
            body_digest(b"Hello, World!"),
            "sha256:dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f"
        );
        use sha2::Digest;
        assert_eq!(body_digest(b""), format!("sha256:{}", hex::encode(sha2::Sha256::digest(b""))));
    }

    #[test]
    fn only_github_deduplicates_on_the_body() {
        assert_eq!(Stripe.dedup_by(), DedupBy::EventId);
        assert_eq!(StandardWebhooks.dedup_by(), DedupBy::EventId);
        assert_eq!(GitHub.dedup_by(), DedupBy::BodyDigest);
    }

    #[test]
    fn timestamps_are_digits_only() {
        assert_eq!(parse_timestamp("1614265330"), Ok(1_614_265_330));
        for bad in ["", "-1", "+1", " 1", "1.5", "1e9", "abc", "9999999999999999"] {
            assert_eq!(parse_timestamp(bad), Err(VerifyError::TimestampMalformed), "{bad:?}");
        }
    }
}
