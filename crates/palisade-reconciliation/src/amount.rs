//! Amounts: decimal text in major units to an `i64` count of minor units, exactly as [`Money::parse`] reads it.
//!
//! The hot path reads the digits itself (no `Decimal`, no allocation) when the text has at most 18 digits, which
//! covers every real amount; anything longer goes through [`Money::parse`]. Refusals are always explained by
//! [`Money::parse`]'s own error, so the messages are the core's. A property test holds the two to one answer.

use palisade_core::{Currency, Money, MoneyError};

/// Digits that always fit an `i64` count of minor units after scaling by at most 10^4 in an `i128`.
const FAST_DIGITS: usize = 18;

/// Reads `text` (major units, `-?(0|[1-9][0-9]*)(\.[0-9]+)?`) as a count of `currency`'s minor units.
///
/// Accepts and refuses exactly what [`Money::parse`] does, with the same error: decimals beyond the currency's
/// exponent must be zeros (`12.340` USD is 1234; `12.345` USD is refused as finer than a cent, never rounded).
///
/// # Errors
/// The [`MoneyError`] that [`Money::parse`] gives for `text`.
pub fn parse_minor(text: &[u8], currency: Currency) -> Result<i64, MoneyError> {
    match fast_minor(text, currency.exponent()) {
        Fast::Minor(m) => Ok(m),
        Fast::Refused | Fast::Long => slow_minor(text, currency),
    }
}

enum Fast {
    Minor(i64),
    /// Malformed, finer than the minor unit, or out of range: [`Money::parse`] says which.
    Refused,
    /// Grammatical but long: [`Money::parse`] decides.
    Long,
}

#[inline]
fn fast_minor(text: &[u8], exponent: u8) -> Fast {
    let (negative, unsigned) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let dot = unsigned.iter().position(|&c| c == b'.');
    let (int, frac) = match dot {
        Some(d) => (&unsigned[..d], &unsigned[d + 1..]),
        None => (unsigned, &[][..]),
    };
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') || (dot.is_some() && frac.is_empty()) {
        return Fast::Refused;
    }
    if int.len() + frac.len() > FAST_DIGITS {
        let digits = int.iter().chain(frac).all(u8::is_ascii_digit);
        return if digits { Fast::Long } else { Fast::Refused };
    }
    let mut magnitude: u64 = 0;
    for &c in int {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Fast::Refused;
        }
        magnitude = magnitude * 10 + u64::from(d);
    }
    let exponent = usize::from(exponent);
    let mut kept = 0usize;
    for (i, &c) in frac.iter().enumerate() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Fast::Refused;
        }
        if i < exponent {
            magnitude = magnitude * 10 + u64::from(d);
            kept += 1;
        } else if d != 0 {
            // A non-zero digit finer than the minor unit.
            return Fast::Refused;
        }
    }
    // At most 18 digits read (< 10^18), times at most 10^4 (the largest exponent): fits an i128 with room.
    let mut scaled = i128::from(magnitude);
    for _ in kept..exponent {
        scaled *= 10;
    }
    let signed = if negative { -scaled } else { scaled };
    i64::try_from(signed).map_or(Fast::Refused, Fast::Minor)
}

#[cold]
fn slow_minor(text: &[u8], currency: Currency) -> Result<i64, MoneyError> {
    let Ok(text) = std::str::from_utf8(text) else {
        return Err(MoneyError::InvalidAmount(String::from_utf8_lossy(text).into_owned()));
    };
    Money::parse(text, currency)?.to_minor()
}

/// `minor` units of a currency with `exponent` decimals as canonical decimal text (`1234`, 2 → `12.34`;
/// `-5`, 2 → `-0.05`; `500`, 0 → `500`), as [`Money`] prints amounts.
#[must_use]
pub fn format_minor(minor: i128, exponent: u8) -> String {
    let digits = minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = exponent + 1);
    let (int, frac) = padded.split_at(padded.len() - exponent);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn currencies() -> [Currency; 4] {
        [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").expect("ISO code")]
    }

    fn core(text: &str, cur: Currency) -> Result<i64, MoneyError> {
        Money::parse(text, cur).and_then(|m| m.to_minor())
    }

    #[test]
    fn exponents() {
        assert_eq!(parse_minor(b"12.34", Currency::USD), Ok(1234));
        assert_eq!(parse_minor(b"12.3", Currency::USD), Ok(1230));
        assert_eq!(parse_minor(b"12.340", Currency::USD), Ok(1234));
        assert_eq!(parse_minor(b"500", Currency::JPY), Ok(500));
        assert_eq!(parse_minor(b"500.000", Currency::JPY), Ok(500));
        assert_eq!(parse_minor(b"1.234", Currency::BHD), Ok(1234));
        assert_eq!(parse_minor(b"-0.05", Currency::USD), Ok(-5));
        assert!(matches!(parse_minor(b"12.345", Currency::USD), Err(MoneyError::SubMinorAmount { .. })));
        assert!(matches!(parse_minor(b"1.5", Currency::JPY), Err(MoneyError::SubMinorAmount { .. })));
        assert!(matches!(parse_minor(b"1.2345", Currency::BHD), Err(MoneyError::SubMinorAmount { .. })));
        assert!(matches!(parse_minor(b"12,34", Currency::USD), Err(MoneyError::InvalidAmount(_))));
        assert!(matches!(parse_minor(b"\xff", Currency::USD), Err(MoneyError::InvalidAmount(_))));
        assert_eq!(parse_minor(b"92233720368547758.07", Currency::USD), Ok(i64::MAX));
        assert!(matches!(parse_minor(b"92233720368547758.08", Currency::USD), Err(MoneyError::OutOfRange { .. })));
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_minor(1234, 2), "12.34");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(500, 0), "500");
        assert_eq!(format_minor(1230, 3), "1.230");
        assert_eq!(format_minor(-500, 0), "-500");
    }

    proptest! {
        /// Text of the grammar, with decimals up to past every exponent and up to 24 digits: the same count or
        /// the same refusal as `Money::parse`.
        #[test]
        fn agrees_with_money_parse_on_the_grammar(text in "-?(0|[1-9][0-9]{0,23})(\\.[0-9]{1,7})?", idx in 0usize..4) {
            let cur = currencies()[idx];
            prop_assert_eq!(parse_minor(text.as_bytes(), cur), core(&text, cur), "{}", text);
        }

        /// Near-grammatical and arbitrary text: accepted and refused exactly as `Money::parse` does.
        #[test]
        fn agrees_with_money_parse_off_the_grammar(text in "[-+ .0-9eE,]{0,12}", idx in 0usize..4) {
            let cur = currencies()[idx];
            prop_assert_eq!(parse_minor(text.as_bytes(), cur), core(&text, cur), "{:?}", text);
        }

        /// Any count prints as text that reads back to it.
        #[test]
        fn format_round_trips(minor in any::<i64>(), idx in 0usize..4) {
            let cur = currencies()[idx];
            let text = format_minor(i128::from(minor), cur.exponent());
            prop_assert_eq!(&text, &Money::from_minor(minor, cur).amount().to_string());
            prop_assert_eq!(parse_minor(text.as_bytes(), cur), Ok(minor));
        }
    }
}
