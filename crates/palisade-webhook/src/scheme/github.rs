//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the raw body.
//!
//! GitHub signs no timestamp, so the timestamp window does not apply, and the signature does not cover
//! `X-GitHub-Delivery` either: a captured delivery can be resent under any delivery id. Replays are therefore
//! stopped by deduplicating on the SHA-256 of the signed body ([`DedupBy::BodyDigest`]), which a replay cannot
//! change and which GitHub's own redeliveries keep. `X-GitHub-Delivery` stays the event id handed to the handler
//! (it is what GitHub's delivery log shows), but it only identifies, it does not deduplicate.

use http::{HeaderMap, HeaderName};

use super::{DedupBy, Message, Scheme, SchemeHeaders, Signed, collected, header_str, hex32, raw_key};
use crate::error::{SecretError, SignError, VerifyError};
use crate::key::Key;

pub(crate) static HEADER: HeaderName = HeaderName::from_static("x-hub-signature-256");
pub(crate) static DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");

/// The GitHub scheme (`X-Hub-Signature-256`; the SHA-1 `X-Hub-Signature` is not supported).
#[derive(Debug, Clone, Copy, Default)]
pub struct GitHub;

/// Parses an `X-Hub-Signature-256` value: `sha256=` followed by 64 hex digits.
///
/// # Errors
/// [`VerifyError::HeaderMalformed`].
pub fn parse_github_header(value: &str) -> Result<[u8; 32], VerifyError> {
    let malformed = |reason| VerifyError::HeaderMalformed { header: HEADER.as_str(), reason };
    let Some(hex) = value.strip_prefix("sha256=") else { return Err(malformed("does not start with sha256=")) };
    hex32(hex).ok_or(malformed("the signature is not 64 hex digits"))
}

/// [`GitHub`]'s `parse` with the candidate handed to `push`; the returned [`Signed`] has none of its own.
pub(crate) fn parse_into<'h>(
    headers: &'h HeaderMap,
    push: &mut impl FnMut([u8; 32]),
) -> Result<Signed<'h>, VerifyError> {
    push(parse_github_header(header_str(headers, &HEADER)?)?);
    // The delivery id is the event id handed to the handler: optional (GitHub always sends one; deduplication
    // does not use it, see `dedup_by`), but never two, which the handler and the layer could read differently.
    let id = match header_str(headers, &DELIVERY) {
        Ok(id) if !id.is_empty() => Some(id),
        Err(e @ VerifyError::HeaderMalformed { .. }) if headers.get_all(&DELIVERY).iter().nth(1).is_some() => {
            return Err(e);
        }
        _ => None,
    };
    Ok(Signed { id, timestamp: None, signatures: Vec::new() })
}

impl Scheme for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn headers(&self) -> SchemeHeaders {
        SchemeHeaders { signature: HEADER.clone(), id: Some(DELIVERY.clone()), timestamp: None }
    }

    fn key(&self, secret: &str) -> Result<Key, SecretError> {
        raw_key(secret)
    }

    fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<Signed<'h>, VerifyError> {
        collected(|push| parse_into(headers, push))
    }

    fn mac(&self, key: &Key, _signed: &Signed<'_>, body: &[u8]) -> [u8; 32] {
        key.mac(&[body])
    }

    fn sign(&self, key: &Key, msg: &Message<'_>) -> Result<String, SignError> {
        Ok(format!("sha256={}", hex::encode(key.mac(&[msg.body]))))
    }

    /// The body's digest: the signature covers the body only, not the `X-GitHub-Delivery` id.
    fn dedup_by(&self) -> DedupBy {
        DedupBy::BodyDigest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's documented example (docs.github.com, "Validating webhook deliveries"): secret
    // "It's a Secret to Everybody", payload "Hello, World!" gives
    // sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17.
    // Cross-check: printf 'Hello, World!' | openssl dgst -sha256 -hmac "It's a Secret to Everybody"
    #[test]
    fn documented_vector() {
        let key = GitHub.key("It's a Secret to Everybody").unwrap();
        let sig = GitHub.sign(&key, &Message { id: None, timestamp: 0, body: b"Hello, World!" }).unwrap();
        assert_eq!(sig, "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }
}
