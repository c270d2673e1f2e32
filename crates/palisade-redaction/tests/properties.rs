//! Property tests of the scanner: every table PAN in every grouping is masked wherever it sits; PAN-free,
//! label-free text comes back byte-identical (borrowed); streaming equals one-shot for every split.

use std::borrow::Cow;
use std::io::Write;

use palisade_redaction::{Redactor, is_pan, redact_bytes};
use proptest::prelude::*;

/// (IIN prefix, lengths) — the table, with Maestro and UATP as documented in the crate.
const TABLE: &[(&str, &[usize])] = &[
    ("4", &[13, 16, 19]),
    ("51", &[16]),
    ("53", &[16]),
    ("55", &[16]),
    ("2221", &[16]),
    ("2500", &[16]),
    ("2720", &[16]),
    ("34", &[15]),
    ("37", &[15]),
    ("6011", &[16, 17, 18, 19]),
    ("644", &[16, 19]),
    ("649", &[16]),
    ("65", &[16, 19]),
    ("622126", &[16]),
    ("622925", &[19]),
    ("300", &[14]),
    ("305", &[14, 16]),
    ("36", &[14, 19]),
    ("38", &[16]),
    ("39", &[14]),
    ("3528", &[16]),
    ("3589", &[19]),
    ("62", &[16, 17, 18, 19]),
    ("50", &[13, 16, 19]),
    ("56", &[16]),
    ("58", &[18]),
    ("639", &[16]),
    ("67", &[13, 19]),
    ("1", &[15]),
];

fn luhn_complete(payload: &[u8]) -> u8 {
    let mut sum = 0u32;
    for (i, &d) in payload.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

/// A valid PAN from the table: (digits).
fn pan() -> impl Strategy<Value = Vec<u8>> {
    (0..TABLE.len(), any::<u64>(), proptest::collection::vec(0u8..10, 19)).prop_map(|(t, pick, fill)| {
        let (prefix, lens) = TABLE[t];
        let len = lens[(pick % lens.len() as u64) as usize];
        let mut d: Vec<u8> = prefix.bytes().collect();
        let mut k = 0;
        while d.len() < len - 1 {
            d.push(b'0' + fill[k]);
            k += 1;
        }
        let check = luhn_complete(&d);
        d.push(check);
        d
    })
}

/// The PAN written in one of the groupings people use: plain, 4-4-4-4 with spaces or dashes, 4-6-5, or random
/// group sizes with random single separators.
fn grouped(digits: &[u8], style: u8, cuts: &[(u8, bool)]) -> Vec<u8> {
    let sizes: Vec<usize> = match style % 5 {
        0 => vec![digits.len()],
        1 | 2 => {
            let mut v = vec![4; digits.len() / 4];
            if !digits.len().is_multiple_of(4) {
                v.push(digits.len() % 4);
            }
            v
        }
        3 => vec![4, 6, digits.len() - 10],
        _ => {
            let mut v = Vec::new();
            let mut left = digits.len();
            for &(c, _) in cuts {
                if left == 0 {
                    break;
                }
                let s = (usize::from(c) % 6 + 1).min(left);
                v.push(s);
                left -= s;
            }
            if left > 0 {
                v.push(left);
            }
            v
        }
    };
    let mut out = Vec::new();
    let mut at = 0;
    for (i, s) in sizes.iter().enumerate() {
        if i > 0 {
            out.push(match style % 5 {
                1 | 3 => b' ',
                2 => b'-',
                _ => {
                    if cuts.get(i).is_some_and(|c| c.1) {
                        b' '
                    } else {
                        b'-'
                    }
                }
            });
        }
        out.extend_from_slice(&digits[at..at + s]);
        at += s;
    }
    out
}

const CONTEXTS: &[(&str, &str)] = &[
    ("", ""),
    ("pan=", "x"),
    ("id_", "_z"),
    ("{\"card\":\"", "\"}"),
    ("{\"n\":", "}"),
    ("https://pay.example/?c=", "&amt=100"),
    ("abc", "def"),
    ("note: ", "\n"),
    ("(", ")."),
    ("x\t", "\r\n"),
];

/// Digit-free filler with no label in it: letters without `c` and `p` (every CVV and PIN label holds one),
/// punctuation and spaces.
fn filler() -> impl Strategy<Value = String> {
    "[abdefghjkmoqrtuwxyzABDEFGHJKMOQRTUWXYZ_ .,:/&(){}\\[\\]\"'!\n]{0,60}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_table_pan_in_every_grouping_is_masked(
        digits in pan(),
        style in any::<u8>(),
        cuts in proptest::collection::vec((any::<u8>(), any::<bool>()), 19),
        ctx in 0..CONTEXTS.len(),
        before in filler(),
        after in filler(),
    ) {
        prop_assert!(is_pan(&digits));
        let g = grouped(&digits, style, &cuts);
        let (l, r) = CONTEXTS[ctx];
        let mut text = Vec::new();
        text.extend_from_slice(before.as_bytes());
        text.extend_from_slice(l.as_bytes());
        let at = text.len();
        text.extend_from_slice(&g);
        text.extend_from_slice(r.as_bytes());
        text.extend_from_slice(after.as_bytes());
        let out = redact_bytes(&text);
        // Mask keeps the length, and nothing else in the text is sensitive.
        prop_assert_eq!(out.len(), text.len());
        let region = &out[at..at + g.len()];
        let total = digits.len();
        let mut seen = 0;
        for (i, &c) in g.iter().enumerate() {
            if c.is_ascii_digit() {
                if seen + 4 < total {
                    prop_assert_eq!(region[i], b'*', "digit {} of {:?} visible in {:?}", seen,
                        String::from_utf8_lossy(&g), String::from_utf8_lossy(&out));
                } else {
                    prop_assert_eq!(region[i], c, "last four kept");
                }
                seen += 1;
            } else {
                prop_assert_eq!(region[i], c, "separators kept");
            }
        }
        // The one-shot str API agrees with the bytes API.
        if let Ok(s) = std::str::from_utf8(&text) {
            let via_str = palisade_redaction::redact(s);
            prop_assert_eq!(via_str.as_bytes(), &*out);
        }
    }
}

/// A piece of PAN-free, label-free text: a word, a number that is not a card, a date, a long id, raw bytes.
fn clean_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[abdefghjkmoqrtuwxyzABDEFGHJKMOQRTUWXYZ_]{1,12}".prop_map(String::into_bytes),
        "[0-9]{1,12}".prop_map(String::into_bytes),
        "[0-9]{20,40}".prop_map(String::into_bytes),
        "[0-9]{13,19}".prop_filter("not a card", |s| !is_pan(s.as_bytes())).prop_map(String::into_bytes),
        "1[67][0-9]{11}".prop_map(String::into_bytes),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]".prop_map(String::into_bytes),
        "[0-9]{3} [0-9]{4}-[0-9]{4}".prop_map(String::into_bytes),
        proptest::collection::vec(128u8..=255, 1..6),
    ]
}

fn clean_text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        (clean_token(), prop::sample::select(vec![", ", "; ", " | ", "\n", " / ", "&", "\t", " = ", "\"}"])),
        0..40,
    )
    .prop_map(|parts| {
        let mut out = Vec::new();
        for (tok, delim) in parts {
            out.extend_from_slice(&tok);
            out.extend_from_slice(delim.as_bytes());
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pan_free_label_free_text_is_returned_borrowed(text in clean_text()) {
        let out = redact_bytes(&text);
        prop_assert!(matches!(out, Cow::Borrowed(_)), "changed: {:?} -> {:?}",
            String::from_utf8_lossy(&text), String::from_utf8_lossy(&out));
        // and streaming passes it through unchanged too
        let mut w = Redactor::new().writer(Vec::new());
        for chunk in text.chunks(7) {
            w.write_all(chunk).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(w.into_inner().map_err(|e| TestCaseError::fail(e.to_string()))?, text);
    }
}

/// Text full of things to find: cards in groupings, labels, tracks, PIN blocks, clean tokens, long stretches.
fn dirty_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (pan(), any::<u8>(), proptest::collection::vec((any::<u8>(), any::<bool>()), 19))
            .prop_map(|(d, s, c)| grouped(&d, s, &c)),
        clean_token(),
        prop::sample::select(vec![
            "cvv: ",
            "\"cvc\":\"",
            "security code ",
            "CVV2=",
            "pin_block=",
            "%B",
            ";",
            "^DOE/JOHN^2512101?",
            "=2512101?",
            "\"}",
            "\n",
            " ",
            "-",
            "AB12CD34EF567890",
        ])
        .prop_map(|s: &str| s.as_bytes().to_vec()),
        "[0-9]{3,4}".prop_map(String::into_bytes),
        "[a-z ]{100,200}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn stream(chunks: &[&[u8]]) -> Result<Vec<u8>, TestCaseError> {
    let mut w = Redactor::new().writer(Vec::new());
    for c in chunks {
        w.write_all(c).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    w.into_inner().map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn streaming_equals_one_shot_for_every_split(text in dirty_text(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let want = redact_bytes(&text).into_owned();
        for i in 0..=text.len() {
            let got = stream(&[&text[..i], &text[i..]])?;
            prop_assert_eq!(&got, &want, "split at {} of {:?}", i, String::from_utf8_lossy(&text));
        }
        // and a random many-way split
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&text[last..p]);
            last = p;
        }
        chunks.push(&text[last..]);
        prop_assert_eq!(stream(&chunks)?, want);
    }
}

/// Bytes biased towards what the scanner reacts to (digits, separators, label and track characters).
fn scanner_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => b'0'..=b'9',
            2 => prop::sample::select(b" -=^%;?:\"\nBcvpinABCDEF".to_vec()),
            1 => any::<u8>(),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The fuzz target's invariants (fuzz/fuzz_targets/scan.rs), run in every `cargo test`.
    #[test]
    fn no_card_survives_as_a_digit_run_and_streaming_agrees(data in scanner_bytes(), split in any::<usize>()) {
        let out = redact_bytes(&data);
        for run in out.split(|b| !b.is_ascii_digit()) {
            prop_assert!(!is_pan(run), "card survived: {:?} in {:?}", String::from_utf8_lossy(run),
                String::from_utf8_lossy(&data));
        }
        let split = split % (data.len() + 1);
        prop_assert_eq!(stream(&[&data[..split], &data[split..]])?, out.into_owned());
    }
}
