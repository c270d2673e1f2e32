//! JSON redaction: sensitive keys are dropped, every other string (and every number long enough to be a card)
//! goes through the scanner.

use std::borrow::Cow;

use serde_json::Value;

use crate::redactor::Redactor;

/// Keys whose values are dropped from JSON, compared after lower-casing and removing `_`, `-`, `.` and spaces
/// (`card_number`, `cardNumber`, `CARD-NUMBER` all match `cardnumber`).
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

/// True when `key` names card data whose value must never be logged (any case, any `_`/`-` spelling).
#[must_use]
pub fn is_sensitive_key(key: &str) -> bool {
    let mut norm = [0u8; 32];
    let mut n = 0;
    for b in key.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        if n == norm.len() {
            return false;
        }
        norm[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let norm = &norm[..n];
    SENSITIVE_KEYS.iter().any(|k| k.as_bytes() == norm)
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

    /// Redacts a JSON document given as bytes; input that is not JSON is redacted as text. Clean input is
    /// borrowed.
    #[must_use]
    pub fn redact_json_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(mut v) => {
                if self.redact_json(&mut v) {
                    match serde_json::to_vec(&v) {
                        Ok(out) => Cow::Owned(out),
                        Err(_) => self.redact_bytes(bytes),
                    }
                } else {
                    Cow::Borrowed(bytes)
                }
            }
            Err(_) => self.redact_bytes(bytes),
        }
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

    #[test]
    fn bytes_variant() {
        let r = Redactor::new();
        assert!(matches!(r.redact_json_bytes(br#"{"a":1}"#), Cow::Borrowed(_)));
        assert_eq!(&*r.redact_json_bytes(br#"{"cvv":"123","a":1}"#), br#"{"a":1}"#);
        assert_eq!(&*r.redact_json_bytes(b"not json 4111111111111111"), b"not json ************1111");
    }
}
