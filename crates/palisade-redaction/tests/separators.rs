//! Issue 16, finding 10: the separators between card digit groups, as decided by the measurement in
//! `examples/separators.rs` (figures in docs/redaction.md). Accepted: space and dash, their typographic forms
//! (no-break space, en dash, em dash) and a URL-encoded space. Not accepted: tab, double and thin space, dot,
//! slash, underscore (they join columns, dates, addresses and paths into false cards), JSON `\u0034` escapes and
//! full-width digits (see the docs).

use std::io::Write;

use palisade_redaction::{PanFormat, RedactingWriter, Redactor, TokenKey};

const PAN: [&str; 4] = ["4111", "1111", "1111", "1111"];

#[test]
fn accepted_separators_hide_the_card() {
    for sep in [" ", "-", "\u{a0}", "\u{2013}", "\u{2014}", "%20"] {
        let text = format!("card {} end", PAN.join(sep));
        let masked = Redactor::new().redact(&text).into_owned();
        assert_eq!(masked, format!("card {} end", ["****", "****", "****", "1111"].join(sep)), "{sep:?}");
        let full = Redactor::builder().pan_format(PanFormat::Full).build().redact(&text).into_owned();
        assert_eq!(full, "card [REDACTED_PAN] end", "{sep:?}");
    }
}

#[test]
fn a_url_encoded_card_tokenizes_like_the_plain_one() {
    let key = TokenKey::new([9u8; 32]).unwrap();
    let r = Redactor::builder().pan_format(PanFormat::Token(key)).build();
    assert_eq!(r.redact(&format!("q={}", PAN.join("%20"))), r.redact(&format!("q={}", PAN.join(""))));
}

#[test]
fn other_separators_are_not_read_as_card_groups() {
    for sep in ["\t", "  ", "\u{2009}", ".", "/", "_"] {
        let text = format!("ref {} end", PAN.join(sep));
        assert!(!Redactor::new().is_sensitive(text.as_bytes()), "{sep:?}: {text}");
    }
}

#[test]
fn a_stream_split_inside_a_separator_still_hides_the_card() {
    for sep in ["\u{a0}", "\u{2013}", "%20"] {
        let text = format!("log line: card {} end\n", PAN.join(sep));
        let whole = Redactor::new().redact(&text).into_owned();
        for cut in 1..text.len() {
            let mut w = RedactingWriter::new(Redactor::new(), Vec::new());
            w.write_all(&text.as_bytes()[..cut]).unwrap();
            w.write_all(&text.as_bytes()[cut..]).unwrap();
            w.flush().unwrap();
            let out = w.into_inner().unwrap();
            assert_eq!(String::from_utf8_lossy(&out), whole, "{sep:?} cut at {cut}");
        }
    }
}

/// Escaped digits are not read by the text scanner (decision in docs/redaction.md), but JSON redaction decodes
/// strings before it scans them, so a card spelled with `\u0034` escapes inside JSON is still hidden.
#[test]
fn escaped_digits_are_caught_by_json_redaction() {
    let escaped: String = "4111111111111111".chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
    let body = format!(r#"{{"note":"card {escaped}"}}"#);
    assert!(!Redactor::new().is_sensitive(body.as_bytes()), "the text scanner does not decode escapes");
    let out = Redactor::new().redact_json_bytes(body.as_bytes()).into_owned();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("************1111") && !text.contains("4111111111111111"), "{text}");
}
