//! PCI redaction for payment services: a single-pass scanner that finds card numbers (PANs), track data, CVVs
//! and PINs in text, and the plumbing that puts it on every path a card number could leak through — log
//! formatters, span fields, `Debug` strings, HTTP audit trails, log files.
//!
//! ```
//! use palisade_redaction::{redact, PanFormat, Redactor, TokenKey};
//!
//! // The default keeps the last four digits and the length (the seed's format).
//! assert_eq!(redact("card 4111-1111-1111-1111 cvv: 123"), "card ****-****-****-1111 cvv: ***");
//! // Letters and underscores next to the digits do not hide a card; longer digit runs and timestamps are not cards.
//! assert_eq!(redact("id_4242424242424242x ts=1700000000000"), "id_************4242x ts=1700000000000");
//! // Clean text is returned borrowed, without a copy.
//! assert!(matches!(redact("order 1234 paid"), std::borrow::Cow::Borrowed(_)));
//! // A keyed token correlates one card across lines without revealing it.
//! let r = Redactor::builder().pan_format(PanFormat::Token(TokenKey::new(b"a 32-byte secret from your vault").unwrap())).build();
//! assert_eq!(r.redact("4111111111111111"), r.redact("4111 1111 1111 1111"));
//! ```
//!
//! # What counts as a card number
//!
//! 13–19 digits, contiguous or grouped by single spaces or dashes, that pass Luhn **and** match the IIN/length
//! table ([`brand`]): Visa 4 (13/16/19); Mastercard 51–55, 2221–2720 (16); Amex 34/37 (15); Discover 6011,
//! 644–649, 65, 622126–622925 (16–19); Diners 300–305, 36, 38–39 (14–19); JCB 3528–3589 (16–19); UnionPay 62
//! (16–19); **Maestro** 50, 56–58, 639, 67 (13–19 — 12-digit Maestro cards are not detected: a 12-digit rule
//! would mask a great many ordinary ids for a card length that is almost extinct); **UATP** 1 (15 — included:
//! airline cards are in PCI scope, and the 15-digit rule keeps 13-digit millisecond and 16-digit microsecond
//! timestamps out). A run of more than 19 digits is an id, not a card. Overlapping candidates are merged, so
//! a number next to a card (`qty 2 4111 1111 1111 1111`) never hides part of it.
//!
//! Track 1 (`%B…^…^…?`) and Track 2 (`;PAN=…?`, also without sentinels when the PAN is valid) are replaced
//! whole. Labelled CVV/CVC/CVV2/CVC2/CID/CSC/security code values of 3–4 digits are masked in `k: v`, `k=v`,
//! JSON and `security code 123` forms. **PIN blocks:** labelled (`pin`, `pin_block`, `pinblock`, `pin block`)
//! values are masked when they are 4–12 digits (a clear PIN) or 16 hex characters (an ISO 9564 PIN block);
//! the scanner wakes only at digits, so a PIN block made of letters alone (about 1 in 6.6 million random
//! blocks) is not found in free text — JSON redaction drops `pin`/`pin_block` keys whatever their value.
//!
//! # Where it plugs in
//!
//! - [`redact`] / [`redact_bytes`] / [`Redactor`]: one-shot, four [`PanFormat`]s.
//! - [`RedactingWriter`] / [`AsyncRedactingWriter`]: streams, catching a card split across writes.
//! - [`Redactor::redact_json`]: drops sensitive keys ([`SENSITIVE_KEYS`]) and scrubs every string.
//! - [`install`], [`RedactingMakeWriter`], [`RedactingFields`]: tracing.
//! - [`Sensitive`]: values whose `Debug`, `Display` and serialization are redacted.
//! - [`AuditLayer`] / [`HttpAuditLayer`]: the audit trail.
//! - [`Tokenizer`] / [`EphemeralTokenizer`]: vault tokens.

#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod defaults;
mod http;
mod json;
mod layer;
mod redactor;
mod sensitive;
mod stream;
mod tokenizer;
mod trace;

pub use http::{
    DEFAULT_BODY_BUFFER_LIMIT, DEFAULT_BODY_LOG_LIMIT, DEFAULT_SENSITIVE_HEADERS, HEADER_PLACEHOLDER, HttpAudit,
    HttpAuditLayer, HttpAuditLayerBuilder,
};
pub use json::{SENSITIVE_KEYS, is_sensitive_key};
pub use layer::{
    AUDIT_TARGET, Audit, AuditFuture, AuditLayer, AuditLayerBuilder, CANCELLED, DEFAULT_SERVICE_NAME,
    DURATION_HISTOGRAM,
};
pub use palisade_core::card::{Brand, brand, is_pan};
pub use redactor::{
    CVV_REPLACEMENT, MIN_TOKEN_KEY, PAN_REPLACEMENT, PIN_REPLACEMENT, PanFormat, RedactionError, Redactor,
    RedactorBuilder, TRACK1_REPLACEMENT, TRACK2_REPLACEMENT, TokenKey, redact, redact_bytes,
};
pub use sensitive::{Exposed, SENSITIVE_PLACEHOLDER, Sensitive, serialize_exposed};
pub use stream::{AsyncRedactingWriter, HOLD_BACK, MAX_PENDING, RedactingWriter};
pub use tokenizer::{CardToken, EphemeralTokenizer, TokenizeError, Tokenizer};
pub use trace::{
    InstallError, RedactingFields, RedactingFmtLayer, RedactingMakeWriter, SensitiveNameFields, fmt_layer, install,
    install_with,
};
