//! Timestamps: RFC 3339 text to Unix seconds and back, without allocating.
//!
//! The reconciler needs a record's time only to second precision (to place it inside or outside the lag window),
//! so fractions of a second are checked and dropped.

/// Unix seconds for `YYYY-MM-DD[T| ]HH:MM:SS[.fraction](Z|±HH:MM)` (RFC 3339; `t`/`z` in lower case too).
/// When `offset_optional`, a time without an offset is read as UTC (Stripe's `created_utc`, Adyen's dates).
///
/// Leap seconds (`:60`) are refused, as most systems never write them.
#[must_use]
pub fn parse_rfc3339(text: &[u8], offset_optional: bool) -> Option<i64> {
    if text.len() < 19 {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &text[range] {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + i64::from(d);
        }
        Some(v)
    };
    if text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b't' | b' ') || text[13] != b':' {
        return None;
    }
    if text[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some((b'.', frac)) = rest.split_first() {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [] if offset_optional => 0,
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
                (a <= 9 && b <= 9).then(|| i64::from(a) * 10 + i64::from(b))
            };
            let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = oh * 60 + om;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Unix seconds as RFC 3339 in UTC: `2024-05-01T12:00:00Z`.
#[must_use]
pub fn format_rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    #[test]
    fn examples() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z", false), Some(0));
        assert_eq!(parse_rfc3339(b"2024-05-01T12:00:00Z", false), Some(1_714_564_800));
        assert_eq!(parse_rfc3339(b"2024-05-01T14:00:00.123+02:00", false), Some(1_714_564_800));
        assert_eq!(parse_rfc3339(b"2024-05-01 12:00:00", true), Some(1_714_564_800));
        assert_eq!(parse_rfc3339(b"2024-05-01 12:00:00", false), None);
        for bad in ["2024-02-30T00:00:00Z", "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01", "yesterday"] {
            assert_eq!(parse_rfc3339(bad.as_bytes(), true), None, "{bad}");
        }
        assert_eq!(format_rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
    }

    proptest! {
        /// Agrees with the `time` crate's RFC 3339 parser on valid and off-by-one dates, times and offsets.
        #[test]
        fn agrees_with_time(y in 1i32..=9999, mo in 0u8..=13, d in 0u8..=32, h in 0u8..=24, mi in 0u8..=60,
                            s in 0u8..=59, frac in proptest::option::of("[0-9]{1,9}"),
                            off in proptest::option::of((any::<bool>(), 0u8..=23, 0u8..=59))) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let off = off.map_or_else(|| "Z".to_owned(), |(neg, oh, om)| format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' }));
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}");
            let expected = OffsetDateTime::parse(&text, &Rfc3339).ok().map(OffsetDateTime::unix_timestamp);
            prop_assert_eq!(parse_rfc3339(text.as_bytes(), false), expected, "{}", text);
        }

        #[test]
        fn formats_what_it_parses(unix in -62_135_596_800i64..253_402_300_799) {
            prop_assert_eq!(parse_rfc3339(format_rfc3339(unix).as_bytes(), false), Some(unix));
        }
    }
}
