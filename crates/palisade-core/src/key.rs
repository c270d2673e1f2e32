//! `IdempotencyKey` and how a key travels from the edge to the gateway.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty key (or an empty sf-string `""`).
    #[error("idempotency key is empty: send 1 to 255 visible ASCII characters")]
    Empty,
    /// Longer than 255 characters.
    #[error("idempotency key is {0} characters long: at most 255 are allowed")]
    TooLong(usize),
    /// A character outside visible ASCII (control characters, spaces, non-ASCII).
    #[error("idempotency key contains a character outside visible ASCII at position {0}")]
    InvalidCharacter(usize),
    /// A quoted (sf-string) key that is not closed or has a bad escape.
    #[error("idempotency key is a malformed structured-field string: {0}")]
    MalformedQuoted(&'static str),
}

/// A validated idempotency key: 1–255 visible ASCII characters (`!`..=`~`).
///
/// Accepts both forms seen in the wild: a bare token (Stripe: `Idempotency-Key: 8e03978e-...`) and the RFC 8941
/// sf-string the IETF draft specifies (`Idempotency-Key: "8e03978e-..."`). Both parse to the same key.
/// Cheap to clone (shared string).
///
/// ```
/// use palisade_core::IdempotencyKey;
/// let a = IdempotencyKey::parse("\"order-1\"").unwrap();
/// let b = IdempotencyKey::parse("order-1").unwrap();
/// assert_eq!(a, b);
/// assert!(IdempotencyKey::parse("has space").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// Maximum length (Stripe's limit, and the draft's recommendation).
    pub const MAX_LEN: usize = 255;

    /// How the gateway keys Palisade derives itself begin: the idempotency layer's keys for a scoped request
    /// (`pal-`) and the saga's step and compensation keys (`sg-`). A client's key that begins so is never sent to
    /// the gateway as it is (see `palisade_idempotency::gateway_key_for`): otherwise a client could send, as its
    /// own, the key of another tenant's charge or of a saga's refund, and the gateway would answer one with the
    /// other's result.
    pub const DERIVED_PREFIXES: [&'static str; 2] = [Self::SCOPED_PREFIX, Self::SAGA_PREFIX];
    /// How the idempotency layer's gateway key for a scoped request begins.
    pub const SCOPED_PREFIX: &'static str = "pal-";
    /// How a saga's step and compensation keys begin.
    pub const SAGA_PREFIX: &'static str = "sg-";

    /// Whether this key is spelled as a key Palisade derives (begins with one of [`Self::DERIVED_PREFIXES`]).
    #[must_use]
    pub fn looks_derived(&self) -> bool {
        Self::DERIVED_PREFIXES.iter().any(|p| self.as_str().starts_with(p))
    }

    /// Parses a header value: an sf-string (`"abc"`, with `\"` and `\\` escapes) or a bare token.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        let v = value.trim_matches(|c| c == ' ' || c == '\t');
        if let Some(inner) = v.strip_prefix('"') {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.char_indices();
            let mut closed = false;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e @ ('"' | '\\'))) => out.push(e),
                        _ => return Err(KeyError::MalformedQuoted("only \\\" and \\\\ escapes are allowed")),
                    },
                    '"' => {
                        if i + 1 != inner.len() {
                            return Err(KeyError::MalformedQuoted("characters after the closing quote"));
                        }
                        closed = true;
                        break;
                    }
                    c => out.push(c),
                }
            }
            if !closed {
                return Err(KeyError::MalformedQuoted("missing closing quote"));
            }
            return Self::new(out);
        }
        Self::new(v)
    }

    /// Validates an already-unquoted key.
    ///
    /// # Errors
    /// A [`KeyError`] saying what is wrong.
    pub fn new(key: impl AsRef<str>) -> Result<Self, KeyError> {
        let k = key.as_ref();
        if k.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(pos) = k.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(KeyError::InvalidCharacter(pos));
        }
        if k.len() > Self::MAX_LEN {
            return Err(KeyError::TooLong(k.len()));
        }
        Ok(IdempotencyKey(Arc::from(k)))
    }

    /// A fresh random key (UUID v4), for requests that arrive without one.
    #[must_use]
    pub fn generate() -> Self {
        IdempotencyKey(Arc::from(uuid::Uuid::new_v4().to_string()))
    }

    /// The key text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an `Idempotency-Key` header value that [`IdempotencyKey::parse`] reads back as this key: the
    /// bare key, or an sf-string when the key itself begins with `"` (sent bare, `"abc"` would be read as the
    /// different key `abc`, and two callers' keys would meet at the gateway).
    ///
    /// ```
    /// use palisade_core::IdempotencyKey;
    /// let quoted = IdempotencyKey::new("\"abc\"").unwrap();
    /// assert_eq!(quoted.header_value(), r#""\"abc\"""#);
    /// assert_eq!(IdempotencyKey::parse(&quoted.header_value()).unwrap(), quoted);
    /// assert_eq!(IdempotencyKey::new("abc").unwrap().header_value(), "abc");
    /// ```
    #[must_use]
    pub fn header_value(&self) -> std::borrow::Cow<'_, str> {
        if !self.0.starts_with('"') {
            return std::borrow::Cow::Borrowed(&self.0);
        }
        let mut out = String::with_capacity(self.0.len() + 8);
        out.push('"');
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        std::borrow::Cow::Owned(out)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", &*self.0)
    }
}
impl std::str::FromStr for IdempotencyKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdempotencyKey::parse(s)
    }
}
impl Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IdempotencyKey::new(s).map_err(serde::de::Error::custom)
    }
}

/// The key a request sends to the gateway as the gateway's own idempotency key, stored in
/// `http::Extensions` for HTTP requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayKey(pub IdempotencyKey);

/// A request that can carry a gateway idempotency key. This is how keys flow outward: the idempotency layer
/// sets the edge key, the retry layer makes sure one is present before the first attempt, and the gateway adapter
/// sends it.
pub trait GatewayKeyed {
    /// The key this request will send to the gateway, if any.
    fn gateway_key(&self) -> Option<&IdempotencyKey>;
    /// Sets the key.
    fn set_gateway_key(&mut self, key: IdempotencyKey);
    /// Makes sure a key is present, assigning a fresh one if not, and returns it.
    fn ensure_gateway_key(&mut self) -> IdempotencyKey {
        if let Some(k) = self.gateway_key() {
            return k.clone();
        }
        let k = IdempotencyKey::generate();
        self.set_gateway_key(k.clone());
        k
    }
}

/// An HTTP request's gateway key is the [`GatewayKey`] in its extensions (what a handler that calls the gateway
/// reads). Setting one also writes it as the `Idempotency-Key` header when the request has none, so a request
/// that goes to the gateway as it is (a retry layer around a plain HTTP client) carries on the wire the key every
/// attempt shares: a key kept only in the extensions would make its retries look keyed while each attempt went
/// out unkeyed, and a gateway that charged and lost its answer would charge again. A header already there (the
/// client's own key) is left alone: it is what goes on the wire, the same on every attempt.
impl<B> GatewayKeyed for http::Request<B> {
    fn gateway_key(&self) -> Option<&IdempotencyKey> {
        self.extensions().get::<GatewayKey>().map(|k| &k.0)
    }
    fn set_gateway_key(&mut self, key: IdempotencyKey) {
        if !self.headers().contains_key(IDEMPOTENCY_KEY)
            && let Ok(value) = http::HeaderValue::from_str(&key.header_value())
        {
            self.headers_mut().insert(IDEMPOTENCY_KEY, value);
        }
        self.extensions_mut().insert(GatewayKey(key));
    }
}

/// The header a key travels in: `Idempotency-Key` (Stripe, Adyen, and the IETF draft).
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(IdempotencyKey::parse("abc").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse("\"abc\"").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse(" abc ").unwrap().as_str(), "abc");
        assert_eq!(IdempotencyKey::parse(r#""a\"b\\c""#).unwrap().as_str(), r#"a"b\c"#);
        assert_eq!(IdempotencyKey::parse("\"\""), Err(KeyError::Empty));
        // A valid sf-string, but a space cannot go on to the gateway as part of a key.
        assert_eq!(IdempotencyKey::parse("\"a b\""), Err(KeyError::InvalidCharacter(1)));
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert!(matches!(IdempotencyKey::parse("\"abc"), Err(KeyError::MalformedQuoted(_))));
        assert!(matches!(IdempotencyKey::parse("\"a\"b"), Err(KeyError::MalformedQuoted(_))));
        assert!(matches!(IdempotencyKey::parse(r#""a\nb""#), Err(KeyError::MalformedQuoted(_))));
    }

    #[test]
    fn limits_and_characters() {
        assert!(IdempotencyKey::new("x".repeat(255)).is_ok());
        assert_eq!(IdempotencyKey::new("x".repeat(256)), Err(KeyError::TooLong(256)));
        assert_eq!(IdempotencyKey::new("a\u{0}b"), Err(KeyError::InvalidCharacter(1)));
        assert_eq!(IdempotencyKey::new("a\nb"), Err(KeyError::InvalidCharacter(1)));
        assert_eq!(IdempotencyKey::new("a b"), Err(KeyError::InvalidCharacter(1)));
        assert_eq!(IdempotencyKey::new("é"), Err(KeyError::InvalidCharacter(0)));
        assert_eq!(IdempotencyKey::new("\u{7f}"), Err(KeyError::InvalidCharacter(0)));
        assert!(IdempotencyKey::new("!~").is_ok());
    }

    proptest::proptest! {
        /// Every key survives the trip through a header: `parse(header_value(k)) == k`, quotes and backslashes
        /// anywhere included.
        #[test]
        fn header_values_parse_back_to_the_key(k in "[!-~]{1,254}") {
            for k in [k.clone(), format!("\"{k}")] {
                let key = IdempotencyKey::new(&k).unwrap();
                proptest::prop_assert_eq!(IdempotencyKey::parse(&key.header_value()).unwrap(), key);
            }
        }
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = IdempotencyKey::generate();
        assert!(IdempotencyKey::new(a.as_str()).is_ok());
        assert_ne!(a, IdempotencyKey::generate());
    }

    #[test]
    fn http_requests_carry_keys() {
        let mut req = http::Request::new(());
        assert!(req.gateway_key().is_none());
        let k = req.ensure_gateway_key();
        assert_eq!(req.gateway_key(), Some(&k));
        assert_eq!(req.ensure_gateway_key(), k);
    }
}
