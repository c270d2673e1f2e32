//! [`Redactor`]: the configured scanner, and the one-shot `redact` functions.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use palisade_core::card::scan::{self, Findings, Kind, Rules};

/// How a PAN is written out. One configuration emits one format only.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PanFormat {
    /// Every digit but the last four becomes `*`; separators stay, so the length is unchanged:
    /// `4242 4242 4242 4242` → `**** **** **** 4242`. The default (the seed's format).
    #[default]
    Mask,
    /// The first six and the last four digits stay (`424242******4242`): the most PCI DSS allows to display.
    BinLast4,
    /// The whole number becomes `[REDACTED_PAN]`.
    Full,
    /// The number becomes `[PAN_TOKEN:<16 letters>]`, the first 64 bits of HMAC-SHA256(key, digits) written with
    /// the letters `a`–`p`. One card gives one token under one key, so lines about the same card correlate, but
    /// the number cannot be recovered without brute-forcing the key. The token holds no digit, so it never looks
    /// like a card to a later scan.
    Token(TokenKey),
}

impl fmt::Debug for PanFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PanFormat::Mask => f.write_str("Mask"),
            PanFormat::BinLast4 => f.write_str("BinLast4"),
            PanFormat::Full => f.write_str("Full"),
            PanFormat::Token(_) => f.write_str("Token(<key>)"),
        }
    }
}

/// The secret key of [`PanFormat::Token`]. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey(Arc<[u8]>);

/// The shortest [`TokenKey`]: 32 bytes, HMAC-SHA256's output length, the key length RFC 2104 recommends for it.
/// A card number has well under 40 bits of entropy once its brand and check digit are known, so a token is only
/// as safe as its key: anyone with a short (guessable) key can test guesses of card numbers against tokens.
pub const MIN_TOKEN_KEY: usize = 32;

impl TokenKey {
    /// A key from secret bytes: at least [`MIN_TOKEN_KEY`] (32) of them, random (`openssl rand -hex 32` gives
    /// 64 characters of text).
    ///
    /// # Errors
    /// [`RedactionError::TokenKeyTooShort`] when `key` is shorter than [`MIN_TOKEN_KEY`].
    pub fn new(key: impl AsRef<[u8]>) -> Result<Self, RedactionError> {
        let key = key.as_ref();
        if key.len() < MIN_TOKEN_KEY {
            return Err(RedactionError::TokenKeyTooShort { len: key.len() });
        }
        Ok(TokenKey(Arc::from(key)))
    }

    fn token(&self, digits: &[u8], out: &mut Vec<u8>) {
        // HMAC accepts keys of any length, so this cannot fail; fall back to a fixed mask rather than panic.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            out.extend_from_slice(b"[REDACTED_PAN]");
            return;
        };
        mac.update(digits);
        let tag = mac.finalize().into_bytes();
        out.extend_from_slice(b"[PAN_TOKEN:");
        for byte in &tag[..8] {
            out.push(b'a' + (byte >> 4));
            out.push(b'a' + (byte & 0x0f));
        }
        out.push(b']');
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedactionError {
    /// A token key was shorter than [`MIN_TOKEN_KEY`].
    #[error(
        "the token key is {len} bytes: HMAC-SHA256 tokens need a key of at least 32 random bytes (e.g. `openssl rand -hex 32`)"
    )]
    TokenKeyTooShort {
        /// The key's length in bytes.
        len: usize,
    },
    /// A `--mode` or format name was not recognised.
    #[error("unknown PAN format {0:?}: use mask, bin-last4, full or token")]
    UnknownFormat(String),
}

/// Replacement written for a labelled CVV/CVC/CID/security code value.
pub const CVV_REPLACEMENT: &str = "***";
/// Replacement written for a labelled PIN or PIN block value.
pub const PIN_REPLACEMENT: &str = "****";
/// Replacement written for Track 1 data.
pub const TRACK1_REPLACEMENT: &str = "[REDACTED_TRACK1]";
/// Replacement written for Track 2 data.
pub const TRACK2_REPLACEMENT: &str = "[REDACTED_TRACK2]";
/// Replacement written for a PAN under [`PanFormat::Full`].
pub const PAN_REPLACEMENT: &str = "[REDACTED_PAN]";

/// The scanner with its configuration: which PAN format to emit and what else to look for. Cheap to clone.
///
/// ```
/// use palisade_redaction::{PanFormat, Redactor};
///
/// let r = Redactor::builder().pan_format(PanFormat::BinLast4).build();
/// assert_eq!(r.redact("card 4111 1111 1111 1111, cvv: 123"), "card 4111 11** **** 1111, cvv: ***");
/// assert!(matches!(r.redact("nothing here"), std::borrow::Cow::Borrowed(_)));
/// ```
#[derive(Clone, Debug)]
pub struct Redactor {
    format: PanFormat,
    rules: Rules,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::builder().build()
    }
}

/// Builds a [`Redactor`]. Defaults: [`PanFormat::Mask`], CVV, track data and PIN detection on.
#[derive(Debug, Clone)]
#[must_use]
pub struct RedactorBuilder {
    format: PanFormat,
    rules: Rules,
}

impl RedactorBuilder {
    /// The PAN format (default [`PanFormat::Mask`]).
    pub fn pan_format(mut self, format: PanFormat) -> Self {
        self.format = format;
        self
    }
    /// Whether labelled CVV/CVC/CID/security code values are masked (default on).
    pub fn cvv(mut self, on: bool) -> Self {
        self.rules.cvv = on;
        self
    }
    /// Whether Track 1 / Track 2 data is replaced as a whole (default on; off, the PAN inside is still masked).
    pub fn track_data(mut self, on: bool) -> Self {
        self.rules.track = on;
        self
    }
    /// Whether labelled PINs and PIN blocks are masked (default on).
    pub fn pin(mut self, on: bool) -> Self {
        self.rules.pin = on;
        self
    }
    /// The redactor.
    pub fn build(self) -> Redactor {
        Redactor { format: self.format, rules: self.rules }
    }
}

impl Redactor {
    /// A redactor with the defaults (mask, CVV, tracks, PINs).
    #[must_use]
    pub fn new() -> Self {
        Redactor::default()
    }
    /// A builder.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder { format: PanFormat::Mask, rules: Rules { cvv: true, track: true, pin: true } }
    }
    /// The PAN format.
    #[must_use]
    pub fn pan_format(&self) -> &PanFormat {
        &self.format
    }

    /// Redacts `text`. Clean text comes back borrowed, without allocating.
    #[must_use]
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut f = Findings::default();
        scan::scan(text.as_bytes(), 0, self.rules, &mut f);
        if f.list.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = Vec::with_capacity(text.len() + 16);
        self.render(text.as_bytes(), 0, text.len(), &f.list, &mut out);
        // Findings start and end at ASCII bytes and replacements are ASCII, so the output is UTF-8; the lossy
        // conversion is never taken and only guards the invariant.
        match String::from_utf8(out) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// Redacts bytes (any encoding; non-UTF-8 bytes pass through). Clean input comes back borrowed.
    #[must_use]
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut f = Findings::default();
        scan::scan(bytes, 0, self.rules, &mut f);
        if f.list.is_empty() {
            return Cow::Borrowed(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len() + 16);
        self.render(bytes, 0, bytes.len(), &f.list, &mut out);
        Cow::Owned(out)
    }

    /// True when `bytes` holds something this redactor would replace.
    #[must_use]
    pub fn is_sensitive(&self, bytes: &[u8]) -> bool {
        if !scan::has_digit(bytes) {
            return false;
        }
        let mut f = Findings::default();
        scan::scan(bytes, 0, self.rules, &mut f);
        !f.list.is_empty()
    }

    pub(crate) fn rules(&self) -> Rules {
        self.rules
    }

    /// Writes `b[from..to]` to `out` with every finding (sorted, inside the range) replaced.
    pub(crate) fn render(&self, b: &[u8], from: usize, to: usize, findings: &[scan::Finding], out: &mut Vec<u8>) {
        let mut last = from;
        for f in findings {
            out.extend_from_slice(&b[last..f.start]);
            self.render_one(&b[f.start..f.end], f.kind, out);
            last = f.end;
        }
        out.extend_from_slice(&b[last..to]);
    }

    fn render_one(&self, region: &[u8], kind: Kind, out: &mut Vec<u8>) {
        match kind {
            Kind::Cvv => out.extend_from_slice(CVV_REPLACEMENT.as_bytes()),
            Kind::Pin => out.extend_from_slice(PIN_REPLACEMENT.as_bytes()),
            Kind::Track1 => out.extend_from_slice(TRACK1_REPLACEMENT.as_bytes()),
            Kind::Track2 => out.extend_from_slice(TRACK2_REPLACEMENT.as_bytes()),
            Kind::Pan => {
                let mut total = 0;
                scan::pan_bytes(region, |_, digit| total += usize::from(digit));
                let keep = |i: usize, lead: usize| i < lead || i + 4 >= total;
                match &self.format {
                    PanFormat::Mask | PanFormat::BinLast4 => {
                        let lead = if matches!(self.format, PanFormat::BinLast4) { 6 } else { 0 };
                        let mut i = 0;
                        scan::pan_bytes(region, |c, digit| {
                            if digit {
                                out.push(if keep(i, lead) { c } else { b'*' });
                                i += 1;
                            } else {
                                out.push(c);
                            }
                        });
                    }
                    PanFormat::Full => out.extend_from_slice(PAN_REPLACEMENT.as_bytes()),
                    PanFormat::Token(key) => {
                        let mut digits = Vec::with_capacity(total);
                        scan::pan_bytes(region, |c, digit| {
                            if digit {
                                digits.push(c);
                            }
                        });
                        key.token(&digits, out);
                    }
                }
            }
        }
    }
}

fn default_redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(Redactor::default)
}

/// Redacts `text` with the default [`Redactor`] (mask, keeping the last four). Clean text is borrowed.
///
/// ```
/// use palisade_redaction::redact;
/// assert_eq!(redact("pan=4242424242424242x"), "pan=************4242x");
/// assert_eq!(redact("{\"cvv\":\"123\"}"), "{\"cvv\":\"***\"}");
/// ```
#[must_use]
pub fn redact(text: &str) -> Cow<'_, str> {
    default_redactor().redact(text)
}

/// Redacts bytes with the default [`Redactor`]. Clean input is borrowed.
#[must_use]
pub fn redact_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    default_redactor().redact_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let key = TokenKey::new([7u8; MIN_TOKEN_KEY]).unwrap_or_else(|e| panic!("{e}"));
        let text = "a 4242-4242-4242-4242 b";
        let with = |f: PanFormat| Redactor::builder().pan_format(f).build().redact(text).into_owned();
        assert_eq!(with(PanFormat::Mask), "a ****-****-****-4242 b");
        assert_eq!(with(PanFormat::BinLast4), "a 4242-42**-****-4242 b");
        assert_eq!(with(PanFormat::Full), "a [REDACTED_PAN] b");
        let t1 = with(PanFormat::Token(key.clone()));
        assert!(t1.starts_with("a [PAN_TOKEN:") && t1.ends_with("] b"), "{t1}");
        assert!(!t1.bytes().any(|b| b.is_ascii_digit()));
        // the same card grouped differently gives the same token; another key gives another one
        let r = Redactor::builder().pan_format(PanFormat::Token(key)).build();
        assert_eq!(r.redact("a 4242424242424242 b"), t1);
        let other = Redactor::builder()
            .pan_format(PanFormat::Token(TokenKey::new([8u8; MIN_TOKEN_KEY]).unwrap_or_else(|e| panic!("{e}"))))
            .build();
        assert_ne!(other.redact(text), t1);
        assert_eq!(TokenKey::new(b""), Err(RedactionError::TokenKeyTooShort { len: 0 }));
        // Issue 16, finding 11: a 5-byte key was accepted.
        assert_eq!(TokenKey::new(b"12345"), Err(RedactionError::TokenKeyTooShort { len: 5 }));
        assert!(TokenKey::new([0u8; MIN_TOKEN_KEY - 1]).is_err());
        assert!(TokenKey::new([0u8; MIN_TOKEN_KEY]).is_ok());
        assert_eq!(format!("{:?}", r.pan_format()), "Token(<key>)");
    }

    #[test]
    fn clean_is_borrowed_and_idempotent() {
        assert!(matches!(redact("no card here, id 12345"), Cow::Borrowed(_)));
        assert!(matches!(redact_bytes(b"\xff\xfe 1700000000000"), Cow::Borrowed(_)));
        let once = redact("pan 4111111111111111 cvv: 123 %B4111111111111111^DOE/J^2512?").into_owned();
        assert!(matches!(redact(&once), Cow::Borrowed(_)), "{once}");
    }

    #[test]
    fn bytes_pass_non_utf8_through() {
        let out = redact_bytes(b"\xff4111111111111111\xfe");
        assert_eq!(&*out, b"\xff************1111\xfe");
    }
}
