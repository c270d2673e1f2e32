//! A prepared HMAC-SHA256 key.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 with the key already absorbed: cloning it skips re-hashing the key pads on every verification.
///
/// `Debug` never prints key material.
#[derive(Clone)]
pub struct Key {
    mac: Hmac<Sha256>,
}

impl Key {
    /// A key from raw bytes (any length: HMAC hashes long keys and pads short ones).
    #[must_use]
    pub fn from_bytes(bytes: &[u8]) -> Self {
        // `Hmac` accepts keys of every length, so `new_from_slice` cannot fail; the fallback is unreachable and
        // exists only so there is no `expect` in library code.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(bytes)
            .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
        Key { mac }
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    #[must_use]
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.mac.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_fresh_hmac_and_hides_the_key() {
        let k = Key::from_bytes(b"secret");
        let mut fresh = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").unwrap();
        fresh.update(b"ab");
        let expect: [u8; 32] = fresh.finalize().into_bytes().into();
        assert_eq!(k.mac(&[b"a", b"b"]), expect);
        assert_eq!(k.mac(&[b"ab"]), expect);
        assert!(!format!("{k:?}").contains("secret"));
    }
}
