//! Card data: the PCI scanner ([`scan`]) and what core types do with it.
//!
//! There is one definition of card data in Palisade, the scanner here: PANs (13–19 digits that pass Luhn and the
//! IIN/length table of [`brand`]), track data, labelled CVVs and PINs. Core types run it to keep card data out of
//! what they display (messages, `Debug`, problem details) and to refuse it where it must never be (an order
//! reference, a token); `palisade-redaction` runs the same scanner for logs, streams and tracing, with its
//! choice of formats.

/// Returns true when `digits` (ASCII digits only) passes the Luhn checksum.
///
/// ```
/// assert!(palisade_core::card::luhn_valid(b"4242424242424242"));
/// assert!(!palisade_core::card::luhn_valid(b"4242424242424241"));
/// ```
#[must_use]
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        if !d.is_ascii_digit() {
            return false;
        }
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

pub mod scan;

pub use scan::{Brand, brand, is_pan};

use scan::{Findings, Kind, Rules};

/// Everything the scanner knows to look for: PANs, track data, labelled CVVs and PINs.
const ALL: Rules = Rules { cvv: true, track: true, pin: true };

/// The scanner's findings in `text` (sorted, never overlapping).
fn findings(text: &str) -> Findings {
    let mut f = Findings::default();
    if scan::has_digit(text.as_bytes()) {
        scan::scan(text.as_bytes(), 0, ALL, &mut f);
    }
    f
}

/// Byte ranges of card data in `text`, as the PCI scanner ([`scan`]) finds it: PANs (Luhn **and** the IIN/length
/// table, so timestamps and order ids are not cards), track data, labelled CVVs and PINs.
#[must_use]
pub fn card_like_spans(text: &str) -> Vec<(usize, usize)> {
    findings(text).list.iter().map(|f| (f.start, f.end)).collect()
}

/// True when `text` holds card data: a PAN, track data, or a labelled CVV or PIN.
#[must_use]
pub fn contains_card_like(text: &str) -> bool {
    !findings(text).list.is_empty()
}

/// Replaces every finding of the scanner in `text` with a marker (`[REDACTED_PAN]`, `[REDACTED_TRACK]`,
/// `[REDACTED_CVV]`, `[REDACTED_PIN]`). Returns the input unchanged when clean. For display (`Debug`, logs,
/// problem details): data that is sent on is never masked, it is refused where it must not hold a card.
#[must_use]
pub fn mask_card_like(text: &str) -> String {
    let f = findings(text);
    if f.list.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in &f.list {
        // Findings start and end at ASCII bytes, so these are char boundaries.
        out.push_str(&text[last..f.start]);
        out.push_str(match f.kind {
            Kind::Pan => "[REDACTED_PAN]",
            Kind::Cvv => "[REDACTED_CVV]",
            Kind::Pin => "[REDACTED_PIN]",
            Kind::Track1 | Kind::Track2 => "[REDACTED_TRACK]",
        });
        last = f.end;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_grouped_and_plain_cards() {
        assert!(contains_card_like("card 4242 4242 4242 4242 ok"));
        assert!(contains_card_like("pan=4111-1111-1111-1111"));
        assert!(contains_card_like("x4111111111111111y"));
        assert!(!contains_card_like("order 12345"));
        // a 20-digit run is not a card even if a prefix would be
        assert!(!contains_card_like("42424242424242424242"));
        // luhn-invalid
        assert!(!contains_card_like("4242424242424241"));
    }

    #[test]
    fn order_ids_and_timestamps_are_not_cards() {
        // Luhn-valid digit runs outside the IIN/length table: a minimal Luhn-only detector masked these.
        for id in ["order-1733270400000", "order-1733270400018", "order-1796343902980048107"] {
            assert!(!contains_card_like(id), "{id}");
            assert_eq!(mask_card_like(id), id);
        }
        assert!(luhn_valid(b"1733270400018"), "the case needs a Luhn-valid run to mean anything");
        assert!(contains_card_like("order-4242424242424242"));
        assert!(contains_card_like("%B4242424242424242^DOE/JOHN^2512101?"));
        assert!(contains_card_like("cvv=123"));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_card_like("a 4242424242424242 b"), "a [REDACTED_PAN] b");
        assert_eq!(mask_card_like("clean"), "clean");
        assert_eq!(mask_card_like("pan 4242424242424242 cvv: 123"), "pan [REDACTED_PAN] cvv: [REDACTED_CVV]");
    }
}
