//! Standard Webhooks v1 (<https://www.standardwebhooks.com/>): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (space-separated `v1,<base64>` entries), HMAC-SHA256 over `{id}.{timestamp}.{body}`.
//!
//! The secret is `whsec_` followed by the base64 of the key bytes; the key is the decoded bytes. The reference
//! libraries also accept the base64 without the prefix, and so does this one. Entries of other versions
//! (`v1a` asymmetric signatures, future `v2`) are ignored, so a sender can add them without breaking us.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName};

use super::{Message, Scheme, SchemeHeaders, Signed, collected, header_str, parse_timestamp};
use crate::error::{SecretError, SignError, VerifyError};
use crate::key::Key;

pub(crate) static ID: HeaderName = HeaderName::from_static("webhook-id");
pub(crate) static TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub(crate) static SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The Standard Webhooks v1 symmetric scheme.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardWebhooks;

/// Parses a `webhook-signature` value into its well-formed `v1` signatures.
///
/// Rules: entries separated by spaces; each entry `<version>,<signature>`; `v1` signatures that are not base64
/// of 32 bytes are skipped, as are other versions; at least one `v1` must remain.
///
/// # Errors
/// [`VerifyError::HeaderMalformed`].
pub fn parse_standard_signatures(value: &str) -> Result<Vec<[u8; 32]>, VerifyError> {
    let mut out = Vec::new();
    parse_standard_with(value, &mut |sig| out.push(sig))?;
    Ok(out)
}

/// [`parse_standard_signatures`], handing each signature to `push` instead of collecting them, so the verifier's
/// hot path allocates nothing.
fn parse_standard_with(value: &str, push: &mut impl FnMut([u8; 32])) -> Result<(), VerifyError> {
    let malformed = |reason| VerifyError::HeaderMalformed { header: SIGNATURE.as_str(), reason };
    let mut found = 0usize;
    let mut saw_v1 = false;
    for entry in value.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, sig)) = entry.split_once(',') else {
            return Err(malformed("an entry is not <version>,<signature>"));
        };
        if version != "v1" {
            continue;
        }
        saw_v1 = true;
        let mut buf = [0u8; 33];
        if let Ok(32) = STANDARD.decode_slice(sig, &mut buf) {
            let mut sig = [0u8; 32];
            sig.copy_from_slice(&buf[..32]);
            push(sig);
            found += 1;
        }
    }
    if found == 0 {
        return Err(malformed(if saw_v1 { "no v1 signature is base64 of 32 bytes" } else { "no v1 signature" }));
    }
    Ok(())
}

/// [`StandardWebhooks`]' `parse` with the candidates handed to `push`; the returned [`Signed`] has none of its own.
pub(crate) fn parse_into<'h>(
    headers: &'h HeaderMap,
    push: &mut impl FnMut([u8; 32]),
) -> Result<Signed<'h>, VerifyError> {
    let id = header_str(headers, &ID)?;
    if id.is_empty() {
        return Err(VerifyError::HeaderMalformed { header: ID.as_str(), reason: "empty" });
    }
    let t = header_str(headers, &TIMESTAMP)?;
    let sigs = header_str(headers, &SIGNATURE)?;
    let ts = parse_timestamp(t)?;
    parse_standard_with(sigs, push)?;
    Ok(Signed { id: Some(id), timestamp: Some((t, ts)), signatures: Vec::new() })
}

impl Scheme for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard"
    }

    fn headers(&self) -> SchemeHeaders {
        SchemeHeaders { signature: SIGNATURE.clone(), id: Some(ID.clone()), timestamp: Some(TIMESTAMP.clone()) }
    }

    fn key(&self, secret: &str) -> Result<Key, SecretError> {
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        if b64.is_empty() {
            return Err(SecretError::Empty);
        }
        let bytes = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Key::from_bytes(&bytes))
    }

    fn parse<'h>(&self, headers: &'h HeaderMap) -> Result<Signed<'h>, VerifyError> {
        collected(|push| parse_into(headers, push))
    }

    fn mac(&self, key: &Key, signed: &Signed<'_>, body: &[u8]) -> [u8; 32] {
        let id = signed.id.unwrap_or("");
        let t = signed.timestamp.map_or("", |(t, _)| t);
        key.mac(&[id.as_bytes(), b".", t.as_bytes(), b".", body])
    }

    fn sign(&self, key: &Key, msg: &Message<'_>) -> Result<String, SignError> {
        let Some(id) = msg.id else { return Err(SignError::MissingId { scheme: "standard" }) };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SignError::InvalidId);
        }
        let t = msg.timestamp.to_string();
        let mac = key.mac(&[id.as_bytes(), b".", t.as_bytes(), b".", msg.body]);
        Ok(format!("v1,{}", STANDARD.encode(mac)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The spec's own vector, from the reference libraries' tests in standard-webhooks/standard-webhooks:
    // libraries/python/tests/test_webhooks.py (`test_sign_function`) and libraries/go/webhook_test.go
    // (`TestWebhookSign`): key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
    // timestamp 1614265330, payload `{"test": 2432232314}` signs as
    // v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
    #[test]
    fn spec_sign_vector() {
        for secret in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            let key = StandardWebhooks.key(secret).unwrap();
            let msg = Message {
                id: Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                timestamp: 1_614_265_330,
                body: br#"{"test": 2432232314}"#,
            };
            assert_eq!(StandardWebhooks.sign(&key, &msg).unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        }
    }

    #[test]
    fn secrets_must_be_base64() {
        assert_eq!(StandardWebhooks.key("whsec_").unwrap_err(), SecretError::Empty);
        assert_eq!(StandardWebhooks.key("whsec_not base64!").unwrap_err(), SecretError::NotBase64);
    }

    #[test]
    fn sign_needs_an_id() {
        let key = StandardWebhooks.key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let msg = Message { id: None, timestamp: 1, body: b"" };
        assert_eq!(StandardWebhooks.sign(&key, &msg), Err(SignError::MissingId { scheme: "standard" }));
        let msg = Message { id: Some("a b"), timestamp: 1, body: b"" };
        assert_eq!(StandardWebhooks.sign(&key, &msg), Err(SignError::InvalidId));
    }
}
