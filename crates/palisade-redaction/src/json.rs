//! JSON redaction: sensitive keys are dropped, every other string (and every number long enough to be a card)
//! goes through the scanner.

use std::borrow::Cow;

use serde_json::Value;

use crate::redactor::Redactor;

/// Names of card data whose values are dropped from JSON. A key matches when its last words, lower-cased and
/// joined, spell one of these: words are separated by `_`, `-`, `.` and spaces and start at a camel-case capital,
/// so `card_number`, `cardNumber`, `CARD-NUMBER`, `customer_card_number`, `card_cvc` and `cardCvc` all match, and
/// `panel`, `card_brand`, `cvc_check` and `pinned` do not.
pub const SENSITIVE_KEYS: &[&str] = &[
    "pan",
    "cardnumber",
    "cardno",
    "ccnumber",
    "creditcardnumber",
    "primaryaccountnumber",
    "accountnumber",
    "cvv",
    "cvv2",
    "cvc",
    "cvc2",
    "cid",
    "csc",
    "cvn",
    "securitycode",
    "cardverificationcode",
    "verificationcode",
    "track",
    "track1",
    "track2",
    "trackdata",
    "magstripe",
    "pin",
    "pinblock",
];

/// The longest key [`is_sensitive_key`] reads word by word; a longer key is matched on its last 64 letters.
const MAX_KEY: usize = 64;

/// True when `key` names card data whose value must never be logged: its last words spell one of
/// [`SENSITIVE_KEYS`], in any case and any `_`/`-`/camel-case spelling.
#[must_use]
pub fn is_sensitive_key(key: &str) -> bool {
    let mut norm = [0u8; MAX_KEY];
    let mut word_start = [false; MAX_KEY];
    let mut n = 0;
    let mut prev_lower = false;
    let mut boundary = true;
    for b in key.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            boundary = true;
            prev_lower = false;
            continue;
        }
        if n == MAX_KEY {
            // Keep the tail: the last words decide.
            norm.copy_within(1.., 0);
            word_start.copy_within(1.., 0);
            n -= 1;
        }
        norm[n] = b.to_ascii_lowercase();
        word_start[n] = boundary || (prev_lower && b.is_ascii_uppercase());
        n += 1;
        boundary = false;
        prev_lower = b.is_ascii_lowercase();
    }
    (0..n).filter(|&i| word_start[i]).any(|i| SENSITIVE_KEYS.iter().any(|k| k.as_bytes() == &norm[i..n]))
}

impl Redactor {
    /// Redacts a JSON value in place: drops every key in [`SENSITIVE_KEYS`] (in any case), redacts every string,
    /// and turns a number that is a card into a redacted string. Returns true when anything changed.
    ///
    /// ```
    /// let mut v = serde_json::json!({"Card_Number": "4242424242424242", "note": "cvv 123", "amount": 1000});
    /// palisade_redaction::Redactor::new().redact_json(&mut v);
    /// assert_eq!(v, serde_json::json!({"note": "cvv ***", "amount": 1000}));
    /// ```
    pub fn redact_json(&self, value: &mut Value) -> bool {
        match value {
            Value::Object(map) => {
                let before = map.len();
                map.retain(|k, _| !is_sensitive_key(k));
                let mut changed = map.len() != before;
                // A key can hold a card too (`{"4111111111111111": …}`): it is renamed to its redaction.
                let renamed: Vec<(String, String)> = map
                    .keys()
                    .filter_map(|k| match self.redact(k) {
                        Cow::Owned(r) => Some((k.clone(), r)),
                        Cow::Borrowed(_) => None,
                    })
                    .collect();
                for (from, to) in renamed {
                    if let Some(v) = map.remove(&from) {
                        map.insert(to, v);
                        changed = true;
                    }
                }
                for v in map.values_mut() {
                    changed |= self.redact_json(v);
                }
                changed
            }
            Value::Array(items) => items.iter_mut().fold(false, |c, v| self.redact_json(v) | c),
            Value::String(s) => match self.redact(s) {
                Cow::Borrowed(_) => false,
                Cow::Owned(r) => {
                    *s = r;
                    true
                }
            },
            Value::Number(n) => {
                let text = n.to_string();
                match self.redact(&text) {
                    Cow::Borrowed(_) => false,
                    Cow::Owned(r) => {
                        *value = Value::String(r);
                        true
                    }
                }
            }
            Value::Null | Value::Bool(_) => false,
        }
    }

    /// Redacts a JSON document given as bytes; input that is not JSON is redacted as text. A document
    /// [`redact_json`](Self::redact_json) leaves unchanged is still scanned as text before it is returned: what
    /// the parsed value does not show (a key given twice, whose first value the parser drops) is in the bytes
    /// that get logged. Clean input is borrowed.
    #[must_use]
    pub fn redact_json_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if let Ok(mut v) = serde_json::from_slice::<Value>(bytes)
            && self.redact_json(&mut v)
            && let Ok(out) = serde_json::to_vec(&v)
        {
            return Cow::Owned(out);
        }
        self.redact_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_keys_in_any_spelling_and_nesting() {
        let mut v = json!({
            "payment": {"CardNumber": "4111111111111111", "CVC": 123, "track_2": ";4111=25?", "pin-block": "x",
                        "SECURITY_CODE": "999", "brand": "visa"},
            "items": [{"pan": "5555555555554444"}, {"ref": 4111111111111111u64}, {"ts": 1700000000000u64}],
            "note": "call me, card 4111 1111 1111 1111"
        });
        assert!(Redactor::new().redact_json(&mut v));
        assert_eq!(
            v,
            json!({
                "payment": {"brand": "visa"},
                "items": [{}, {"ref": "************1111"}, {"ts": 1700000000000u64}],
                "note": "call me, card **** **** **** 1111"
            })
        );
        for k in ["cvv", "CVV2", "card-number", "Track1", "pinBlock", "security code"] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in ["panel", "amount", "card_brand", "pinned"] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }

    /// A sensitive name as the last word(s) of a longer key is dropped too; a key that holds a card is renamed.
    #[test]
    fn prefixed_keys_and_keys_holding_cards() {
        for k in [
            "card_cvc",
            "cardCvc",
            "CardCVC",
            "customer_card_number",
            "billing.cardNumber",
            "source-security-code",
            "card_pin_block",
            "payment_method_cvv2",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in ["cvc_check", "panel_id", "acid", "spin", "japan", "pinned", "card_brand", "tracking", "cvcx"] {
            assert!(!is_sensitive_key(k), "{k}");
        }
        assert!(is_sensitive_key(&format!("{}_cvc", "long".repeat(40))));
        let mut v = json!({"card_cvc": "987", "cardCvc": 987, "4111111111111111": {"a": 1}, "cvc_check": "pass"});
        assert!(Redactor::new().redact_json(&mut v));
        assert_eq!(v, json!({"************1111": {"a": 1}, "cvc_check": "pass"}));
    }

    /// Bytes the parsed value does not show are still scanned: with a key given twice, the parser keeps the
    /// last value, but the log would show the whole document.
    #[test]
    fn a_document_the_value_leaves_unchanged_is_scanned_as_text() {
        let r = Redactor::new();
        let doc = br#"{"note":"4111111111111111","note":"ok","nested":{"memo":"cvc 987","memo":"ok"}}"#;
        let out = r.redact_json_bytes(doc);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("4111111111111111") && !text.contains("987"), "{text}");
        assert!(matches!(r.redact_json_bytes(br#"{"note":"ok","amount":1000}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn bytes_variant() {
        let r = Redactor::new();
        assert!(matches!(r.redact_json_bytes(br#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(&*r.redact_json_bytes(br#"{"cvv":"123","a":1}"#), br#"{"a":1}"#);
        assert_eq!(&*r.redact_json_bytes(b"not json 4111111111111111"), b"not json ************1111");
    }
}
