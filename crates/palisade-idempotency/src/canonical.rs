//! The canonical form of a JSON body, for fingerprints: the same JSON value gives the same bytes whatever its
//! member order, whitespace or string escapes, so a client that re-serializes its request (a map with another
//! iteration order, a pretty printer) is replayed instead of refused with 422.
//!
//! In the spirit of RFC 8785 (JCS): members sorted by key, no insignificant whitespace, strings in one escape
//! form. Unlike JCS, numbers are never reinterpreted: an integer is kept exactly, and a body holding any other
//! number (a fraction, an exponent, an integer beyond 64 bits) has no canonical form here, so its fingerprint
//! stays the raw bytes. Reading `12.34` and `12.340000000000000001` as one double would make two different
//! amounts the same request; refusing a reordered body is the safe failure, replaying the wrong amount is not.
//! A body with a duplicate member name has no canonical form either (which value counts depends on the
//! parser).

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// The canonical bytes of `body`, or `None` when it is not JSON, or holds a number other than a 64-bit integer
/// or a duplicate member name (then the raw bytes are fingerprinted).
pub(crate) fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut work = Work { members: Vec::new(), moved: Vec::new() };
    Canonical { out: &mut out, work: &mut work }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(out)
}

/// Buffers shared by every object of one body, so that nested objects allocate nothing of their own: each
/// object's members go on top of `members` and come off when the object is written.
struct Work<'de> {
    /// Per member of the objects being read: its name, and where its canonical value lies in the output.
    members: Vec<(Cow<'de, str>, usize, usize)>,
    /// An object's values while they are written back in member order.
    moved: Vec<u8>,
}

/// Writes the canonical form of one JSON value at the end of `out`.
struct Canonical<'a, 'de> {
    out: &'a mut Vec<u8>,
    work: &'a mut Work<'de>,
}

impl<'de> DeserializeSeed<'de> for Canonical<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// An integer's decimal digits (writing into a Vec cannot fail; no string is allocated).
fn integer(out: &mut Vec<u8>, v: impl fmt::Display) {
    use std::io::Write as _;
    let _ = write!(out, "{v}");
}

impl<'de> Visitor<'de> for Canonical<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        integer(self.out, v);
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        integer(self.out, v);
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("a number that is not a 64-bit integer has no exact canonical form"))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        string(self.out, v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        loop {
            let mark = self.out.len();
            if !first {
                self.out.push(b',');
            }
            if seq.next_element_seed(Canonical { out: self.out, work: self.work })?.is_none() {
                self.out.truncate(mark);
                break;
            }
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Every member's canonical value is written at the end of the output as it is read (its name kept
        // aside); then the values are moved out and written back after their names, sorted.
        let (out, work) = (self.out, self.work);
        let base = out.len();
        let first = work.members.len();
        while let Some(key) = map.next_key_seed(Key)? {
            let start = out.len();
            map.next_value_seed(Canonical { out: &mut *out, work: &mut *work })?;
            work.members.push((key, start - base, out.len() - base));
        }
        let members = &mut work.members[first..];
        // RFC 8785 sorts by UTF-16 code units; sorting by the UTF-8 bytes orders every key the same way each
        // time, which is all a fingerprint needs.
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if members.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(A::Error::custom("duplicate member name"));
        }
        work.moved.clear();
        work.moved.extend_from_slice(&out[base..]);
        out.truncate(base);
        out.push(b'{');
        for (i, (key, start, end)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, key);
            out.push(b':');
            out.extend_from_slice(&work.moved[*start..*end]);
        }
        out.push(b'}');
        work.members.truncate(first);
        Ok(())
    }
}

/// A member name, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Option<String> {
        canonical_json(s.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn member_order_whitespace_and_escapes_do_not_matter() {
        let a = canon(r#"{"amount":"12.34","currency":"USD","meta":{"b":1,"a":[true,null,"x"]}}"#);
        let b = canon(
            "{ \"meta\" : { \"a\" : [ true , null , \"\\u0078\" ], \"b\" : 1 },\n \"currency\":\"USD\", \"amount\":\"12.34\" }",
        );
        assert_eq!(a, b);
        assert_eq!(a.as_deref(), Some(r#"{"amount":"12.34","currency":"USD","meta":{"a":[true,null,"x"],"b":1}}"#));
        assert_eq!(canon("[]").as_deref(), Some("[]"));
        assert_eq!(canon("{}").as_deref(), Some("{}"));
    }

    /// Objects nested in arrays and objects, names with escapes, every kind of value: the canonical form is the
    /// compact, key-sorted serialization of the parsed value (serde_json's `Value` keeps its members sorted),
    /// byte for byte, so the buffers shared across nested objects leave nothing of one in another.
    #[test]
    fn nested_objects_are_each_sorted_in_place() {
        for body in [
            r#"{"z":{"b":[{"y":1,"x":{"q":[],"p":{}}},2],"a":"\u00e9"},"a\"b":null,"m":[[{"d":true,"c":false}]]}"#,
            r#"[{"b":1,"a":2},{"d":{"f":-3,"e":"x"},"c":[{"h":0,"g":18446744073709551615}]}]"#,
            r#"{"items":[{"sku":"sku_1","qty":1}],"order_id":"o1","amount":"12.34","fail_shipment":false}"#,
            r#"{"\n":1,"\t":{"\u0001":2,"A":3,"a":4},"":5}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(canon(body), Some(serde_json::to_string(&value).unwrap()), "{body}");
        }
        assert_eq!(canon(r#"{"a":{"b":1,"b":2}}"#), None, "a duplicate in a nested object");
    }

    #[test]
    fn values_that_differ_stay_different() {
        assert_ne!(canon(r#"{"amount":1000}"#), canon(r#"{"amount":1001}"#));
        assert_ne!(canon(r#"{"a":"1"}"#), canon(r#"{"a":1}"#));
        assert_ne!(canon(r#"[1,2]"#), canon(r#"[2,1]"#), "array order is meaning");
        assert!(canon(r#"{"n":-9223372036854775808,"m":18446744073709551615}"#).is_some());
    }

    #[test]
    fn no_canonical_form_for_inexact_numbers_duplicates_or_non_json() {
        for body in [
            r#"{"amount":12.34}"#,
            r#"{"amount":1e3}"#,
            r#"{"amount":18446744073709551616}"#,
            r#"{"id":1,"id":2}"#,
            "not json",
            r#"{"a":1} trailing"#,
        ] {
            assert_eq!(canon(body), None, "{body}");
        }
    }
}
