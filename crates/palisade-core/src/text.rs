//! Short text kept inline: the ids, codes and references a gateway answer carries.
//!
//! A response is cloned whenever a layer keeps a copy (the idempotency layer keeps every final result for its
//! retention time and replays clones of it). With `String` fields each copy is one heap allocation per field,
//! and each kept copy is freed much later, from memory that has left the cache. Gateway ids and
//! reason codes are short, so they live inside the value instead: cloning them is a copy, and dropping them
//! frees nothing.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer};

/// Longest text kept inline, in bytes. 40 covers the ids of the gateways we know of (Stripe's `ch_…`/`pi_…`
/// are 27, Checkout.com's `pay_…` 30, Adyen's pspReference 16, Braintree's 8), a UUID (36), and reason codes.
/// Longer text is kept on the heap, as a `String` would be.
pub const INLINE_TEXT: usize = 40;

/// Text of any length: inline up to [`INLINE_TEXT`] bytes, on the heap beyond. Constructors keep the two
/// apart (inline whenever it fits), and equality, ordering and hashing go through the text, so the
/// representation is never observable.
#[derive(Clone)]
pub(crate) enum Compact {
    Inline(ArrayString<INLINE_TEXT>),
    Heap(Box<str>),
}

impl Compact {
    pub(crate) fn new(s: &str) -> Compact {
        ArrayString::from(s).map_or_else(|_| Compact::Heap(s.into()), Compact::Inline)
    }

    /// Takes a `String`, keeping its buffer only when the text does not fit inline.
    pub(crate) fn from_string(s: String) -> Compact {
        if s.len() <= INLINE_TEXT { Compact::new(&s) } else { Compact::Heap(s.into_boxed_str()) }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Compact::Inline(s) => s,
            Compact::Heap(s) => s,
        }
    }
}

impl Default for Compact {
    fn default() -> Self {
        Compact::Inline(ArrayString::new())
    }
}

impl PartialEq for Compact {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Compact {}
impl PartialOrd for Compact {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Compact {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl std::hash::Hash for Compact {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Deserializes text from a borrowed or an owned string, without an intermediate `String` when borrowed.
pub(crate) fn deserialize_text<'de, D: Deserializer<'de>>(d: D) -> Result<Compact, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Compact;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Compact, E> {
            Ok(Compact::new(v))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Compact, E> {
            Ok(Compact::from_string(v))
        }
    }
    d.deserialize_string(Visitor)
}

/// `Display`, `Debug` (the text, quoted), `Serialize` (a plain string) and `From<$t> for String` for a type with
/// an `as_str()`: the same for every text type of this crate.
macro_rules! text_traits {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl From<$t> for String {
            fn from(text: $t) -> Self {
                text.as_str().to_owned()
            }
        }
    };
}
pub(crate) use text_traits;

/// A gateway's id for a payment object: a charge (`ch_…`), a payment intent (`pi_…`), an authorization, a
/// refund, an Adyen pspReference. Kept inline up to [`INLINE_TEXT`] bytes, so a response clones and drops
/// without touching the heap; longer ids work too, on the heap. Serializes as a plain string.
///
/// ```
/// use palisade_core::GatewayId;
/// let id = GatewayId::from("ch_3MqBz2LkdIwHu7ix0snN0B15");
/// assert_eq!(id, "ch_3MqBz2LkdIwHu7ix0snN0B15");
/// assert_eq!(id.len(), 27);
/// assert_eq!(serde_json::to_string(&id).unwrap(), r#""ch_3MqBz2LkdIwHu7ix0snN0B15""#);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayId(Compact);

impl GatewayId {
    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for GatewayId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}
impl AsRef<str> for GatewayId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
impl Borrow<str> for GatewayId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl From<&str> for GatewayId {
    fn from(s: &str) -> Self {
        GatewayId(Compact::new(s))
    }
}
impl From<&String> for GatewayId {
    fn from(s: &String) -> Self {
        GatewayId(Compact::new(s))
    }
}
impl From<String> for GatewayId {
    fn from(s: String) -> Self {
        GatewayId(Compact::from_string(s))
    }
}
impl PartialEq<str> for GatewayId {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for GatewayId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
impl PartialEq<String> for GatewayId {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}
text_traits!(GatewayId);
impl<'de> Deserialize<'de> for GatewayId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_text(d).map(GatewayId)
    }
}

/// Text a merchant sends to the gateway: an order reference, a customer id, a metadata value.
///
/// Kept and sent **exactly** as given: data sent to a gateway is never altered. Text that holds card data (as
/// the PCI scanner, [`crate::card`], finds it: a card number by Luhn **and** the IIN/length table, so
/// `order-1733270400018` is an ordinary id; track data; a labelled CVV or PIN) is refused when the reference is
/// made, with a [`ReferenceError`] (an `invalid_request`, HTTP 400, in a [`PaymentError`](crate::PaymentError)):
/// card data belongs in a payment token, never in a reference the gateway keeps. Short text is kept inline
/// (see [`GatewayId`]).
///
/// ```
/// use palisade_core::Reference;
/// let r = Reference::new("order-1733270400018").unwrap();
/// assert_eq!(r, "order-1733270400018");
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#""order-1733270400018""#);
/// assert!(Reference::new("order 4242 4242 4242 4242").is_err());
/// assert!(serde_json::from_str::<Reference>(r#""4242424242424242""#).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference(Compact);

/// A reference held card data, so it was refused. Converts into
/// [`PaymentError::InvalidRequest`](crate::PaymentError::InvalidRequest) (HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a reference or metadata value holds card data (a card number, track data, a CVV or PIN): send the card as a payment token, never in free text"
)]
#[non_exhaustive]
pub struct ReferenceError;

impl Reference {
    /// The reference, exactly as given, unless it holds card data.
    ///
    /// # Errors
    /// [`ReferenceError`] when the scanner finds a card number, track data, or a labelled CVV or PIN in `text`.
    pub fn new(text: impl Into<String>) -> Result<Self, ReferenceError> {
        let text = text.into();
        if crate::card::contains_card_like(&text) {
            return Err(ReferenceError);
        }
        Ok(Reference(Compact::from_string(text)))
    }

    /// The exact text, as it is sent to the gateway.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

text_traits!(Reference);
impl<'de> Deserialize<'de> for Reference {
    /// Refuses text holding card data, as [`Reference::new`] does.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = deserialize_text(d)?;
        if crate::card::contains_card_like(text.as_str()) {
            return Err(serde::de::Error::custom(ReferenceError));
        }
        Ok(Reference(text))
    }
}
impl TryFrom<&str> for Reference {
    type Error = ReferenceError;
    fn try_from(s: &str) -> Result<Self, ReferenceError> {
        Reference::new(s)
    }
}
impl TryFrom<String> for Reference {
    type Error = ReferenceError;
    fn try_from(s: String) -> Result<Self, ReferenceError> {
        Reference::new(s)
    }
}
impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, ReferenceError> {
        Reference::new(s)
    }
}
impl AsRef<str> for Reference {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}
impl PartialEq<str> for Reference {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Reference {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Masks an email address for logs: the local part's first character and the domain, `j***@example.com`. The
/// domain is kept only when it reads as one (ASCII letters, digits, `-` and `.`, with a dot, no run of five
/// digits); otherwise it is masked too, so a free-text field that holds more than an address (`x@4111… cvv 123`)
/// shows nothing of it. The split is at the last `@`.
///
/// ```
/// use palisade_core::mask_email;
/// assert_eq!(mask_email("jane.doe@example.com"), "j***@example.com");
/// assert_eq!(mask_email("x@4111111111111111 cvv 123"), "x***@***");
/// assert_eq!(mask_email("a@b@example.com"), "a***@example.com");
/// assert_eq!(mask_email("not an address"), "***");
/// ```
#[must_use]
pub fn mask_email(text: &str) -> String {
    let Some((local, domain)) = text.rsplit_once('@') else { return "***".to_owned() };
    let first = local.chars().next().filter(char::is_ascii_alphanumeric).map(String::from).unwrap_or_default();
    let mut digits = 0usize;
    let plausible = domain.contains('.')
        && !domain.starts_with('.')
        && domain.bytes().all(|b| {
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            (b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && digits < 5
        });
    if plausible { format!("{first}***@{domain}") } else { format!("{first}***@***") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_inline_and_long_text_on_the_heap() {
        let fits = "x".repeat(INLINE_TEXT);
        let over = "x".repeat(INLINE_TEXT + 1);
        assert!(matches!(Compact::new(&fits), Compact::Inline(_)));
        assert!(matches!(Compact::from_string(fits.clone()), Compact::Inline(_)));
        assert!(matches!(Compact::new(&over), Compact::Heap(_)));
        assert!(matches!(Compact::from_string(over.clone()), Compact::Heap(_)));
        // A `String` with spare capacity still goes inline when its text fits.
        let mut roomy = String::with_capacity(1024);
        roomy.push_str("ch_1");
        assert!(matches!(Compact::from_string(roomy), Compact::Inline(_)));
        // Multi-byte text is measured in bytes, never split.
        let accents = "é".repeat(INLINE_TEXT / 2 + 1);
        assert_eq!(Compact::new(&accents).as_str(), accents);
    }

    #[test]
    fn references_are_kept_exactly_and_refuse_card_numbers() {
        // Order ids with Luhn-valid digit runs that are not cards reach the gateway unchanged.
        for id in ["order-1733270400000", "order-1733270400018", "order-1796343902980048107"] {
            let r = Reference::new(id).unwrap();
            assert_eq!(r.as_str(), id);
            assert_eq!(r.to_string(), id);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{id}\""));
            assert_eq!(serde_json::from_str::<Reference>(&format!("\"{id}\"")).unwrap(), r);
        }
        for card in [
            "4242424242424242",
            "order-4111 1111 1111 1111",
            "%B4242424242424242^DOE/J^2512101?",
            "note cvv=123",
            "pin: 1234",
        ] {
            assert_eq!(Reference::new(card), Err(ReferenceError), "{card}");
            assert!(serde_json::from_str::<Reference>(&serde_json::to_string(card).unwrap()).is_err());
        }
    }

    proptest! {
        #[test]
        fn gateway_ids_round_trip_and_compare_as_their_text(a in "\\PC{0,60}", b in "\\PC{0,60}") {
            let (ia, ib) = (GatewayId::from(a.as_str()), GatewayId::from(b.clone()));
            prop_assert_eq!(ia.as_str(), a.as_str());
            prop_assert_eq!(ib.as_str(), b.as_str());
            prop_assert_eq!(ia == ib, a == b);
            prop_assert_eq!(ia.cmp(&ib), a.cmp(&b));
            let json = serde_json::to_string(&ia).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&a).unwrap());
            prop_assert_eq!(serde_json::from_str::<GatewayId>(&json).unwrap(), ia.clone());
            let hash = |v: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                use std::hash::Hasher;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                v(&mut h);
                h.finish()
            };
            use std::hash::Hash;
            prop_assert_eq!(hash(&|h| ia.hash(h)), hash(&|h| a.as_str().hash(h)));
        }
    }
}
