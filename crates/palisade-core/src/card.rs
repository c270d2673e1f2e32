//! A minimal card-number detector used by core types to refuse and mask card-like input.
//!
//! This is deliberately small: it recognises runs of 13–19 digits (optionally separated by single spaces or
//! dashes) that pass the Luhn check. The full PCI scanner, with IIN tables, track data and CVV labels, lives in
//! `palisade-redaction`; core only needs enough to keep a card number out of a token, a message or a `Debug`.

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

/// Finds card-like digit runs in `text`: byte ranges of 13–19 digits (single space or dash separators allowed
/// between digits) that pass Luhn and are not part of a longer digit run.
pub fn card_like_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Collect a maximal run of digits with single separators between digits.
        let start = i;
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        let mut end = i;
        let mut j = i;
        while j < b.len() {
            if b[j].is_ascii_digit() {
                digits.push(b[j]);
                j += 1;
                end = j;
            } else if (b[j] == b' ' || b[j] == b'-') && j + 1 < b.len() && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        if (13..=19).contains(&digits.len()) && luhn_valid(&digits) {
            spans.push((start, end));
        }
        i = end.max(start + 1);
    }
    spans
}

/// True when `text` contains something that looks like a card number.
#[must_use]
pub fn contains_card_like(text: &str) -> bool {
    !card_like_spans(text).is_empty()
}

/// Replaces every card-like run in `text` with `[REDACTED_PAN]`. Returns the input unchanged when clean.
#[must_use]
pub fn mask_card_like(text: &str) -> String {
    let spans = card_like_spans(text);
    if spans.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in spans {
        out.push_str(&text[last..s]);
        out.push_str("[REDACTED_PAN]");
        last = e;
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
    fn masks() {
        assert_eq!(mask_card_like("a 4242424242424242 b"), "a [REDACTED_PAN] b");
        assert_eq!(mask_card_like("clean"), "clean");
    }
}
