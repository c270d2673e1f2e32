//! [`Sensitive<T>`]: a value that never shows itself by accident.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What `Debug`, `Display` and serialization of a [`Sensitive`] write.
pub const SENSITIVE_PLACEHOLDER: &str = "[REDACTED]";

/// Wraps a value (a card number, a secret) so that `Debug`, `Display` and serialization write
/// `[REDACTED]`. Reading it takes an explicit [`expose`](Self::expose); serializing it for real takes
/// [`exposed`](Self::exposed) or `#[serde(serialize_with = "palisade_redaction::serialize_exposed")]`.
/// Deserialization reads the plain value.
///
/// ```
/// use palisade_redaction::Sensitive;
///
/// let pan = Sensitive::new("4242424242424242".to_string());
/// assert_eq!(format!("{pan:?} {pan}"), "[REDACTED] [REDACTED]");
/// assert_eq!(serde_json::to_string(&pan).unwrap(), "\"[REDACTED]\"");
/// assert_eq!(serde_json::to_string(&pan.exposed()).unwrap(), "\"4242424242424242\"");
/// assert_eq!(pan.expose(), "4242424242424242");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Sensitive(value)
    }
    /// The value. Grep for `expose` to audit every place the secret is read.
    pub const fn expose(&self) -> &T {
        &self.0
    }
    /// The value, unwrapped.
    pub fn into_exposed(self) -> T {
        self.0
    }
    /// A view that serializes the real value.
    pub const fn exposed(&self) -> Exposed<'_, T> {
        Exposed(&self.0)
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Sensitive(value)
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SENSITIVE_PLACEHOLDER)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SENSITIVE_PLACEHOLDER)
    }
}

impl<T> Serialize for Sensitive<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(SENSITIVE_PLACEHOLDER)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sensitive<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Sensitive)
    }
}

/// A [`Sensitive`] value explicitly opened for serialization.
#[derive(Clone, Copy)]
pub struct Exposed<'a, T>(&'a T);

impl<T> fmt::Debug for Exposed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exposure is for serialization only; Debug stays redacted.
        f.write_str(SENSITIVE_PLACEHOLDER)
    }
}

impl<T: Serialize> Serialize for Exposed<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// For `#[serde(serialize_with = "palisade_redaction::serialize_exposed")]` on a `Sensitive<T>` field that must
/// be written for real (a request to a vault, never a log).
///
/// # Errors
/// The inner value's serialization error.
pub fn serialize_exposed<T: Serialize, S: Serializer>(value: &Sensitive<T>, s: S) -> Result<S::Ok, S::Error> {
    value.0.serialize(s)
}
