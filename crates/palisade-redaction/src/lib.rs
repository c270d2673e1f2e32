//! PCI redaction: a single-pass PAN/CVV/track scanner, tracing integration and a scrubbed audit layer.
//!
//! ```
//! use palisade_redaction::redact;
//!
//! assert_eq!(redact("card 4111-1111-1111-1111 cvv: 123"), "card ****-****-****-1111 cvv: ***");
//! ```

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod json;
mod redactor;
mod scan;
mod stream;

pub use json::{SENSITIVE_KEYS, is_sensitive_key};
pub use redactor::{
    CVV_REPLACEMENT, PAN_REPLACEMENT, PIN_REPLACEMENT, PanFormat, RedactionError, Redactor, RedactorBuilder,
    TRACK1_REPLACEMENT, TRACK2_REPLACEMENT, TokenKey, redact, redact_bytes,
};
pub use scan::{Brand, brand, is_pan};
pub use stream::{AsyncRedactingWriter, HOLD_BACK, MAX_PENDING, RedactingWriter};
