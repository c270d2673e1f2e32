//! SipHash-1-3 with a secret random key over one contiguous byte string: what std's `RandomState` computes
//! (keyed SipHash-1-3, real hash-flooding resistance), without the streaming hasher's per-write buffering. The
//! memory store hashes each attempt's key, encoded into one buffer, with it.

use std::hash::{BuildHasher, RandomState};

/// A SipHash-1-3 key: 128 random bits, drawn from std's `RandomState` (seeded by the OS), secret to the process.
#[derive(Clone, Copy)]
pub(crate) struct SipKey {
    k0: u64,
    k1: u64,
}

impl SipKey {
    /// A fresh random key. The halves are std's keyed SipHash of two constants under a fresh `RandomState`:
    /// as unpredictable as its own random key.
    pub(crate) fn random() -> Self {
        let s = RandomState::new();
        SipKey { k0: s.hash_one(0x5eed_u64), k1: s.hash_one(0x5eed_0001_u64) }
    }

    /// A fixed key (tests compare with std's `DefaultHasher`, SipHash-1-3 under the zero key).
    #[cfg(test)]
    pub(crate) const fn fixed(k0: u64, k1: u64) -> Self {
        SipKey { k0, k1 }
    }

    /// SipHash-1-3 of `m` under this key.
    pub(crate) fn hash(&self, m: &[u8]) -> u64 {
        let mut v = [
            self.k0 ^ 0x736f_6d65_7073_6575,
            self.k1 ^ 0x646f_7261_6e64_6f6d,
            self.k0 ^ 0x6c79_6765_6e65_7261,
            self.k1 ^ 0x7465_6462_7974_6573,
        ];
        let mut chunks = m.chunks_exact(8);
        for c in &mut chunks {
            // `chunks_exact(8)` yields 8 bytes: the conversion cannot fail.
            let x = c.try_into().map_or(0, u64::from_le_bytes);
            v[3] ^= x;
            round(&mut v);
            v[0] ^= x;
        }
        // The last block: the remaining bytes, little-endian, with the length's low byte on top.
        let last = chunks
            .remainder()
            .iter()
            .enumerate()
            .fold((m.len() as u64) << 56, |acc, (i, &b)| acc | u64::from(b) << (8 * i));
        v[3] ^= last;
        round(&mut v);
        v[0] ^= last;
        v[2] ^= 0xff;
        round(&mut v);
        round(&mut v);
        round(&mut v);
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use std::hash::{DefaultHasher, Hasher};

    use super::SipKey;

    /// std's `DefaultHasher::new()` is SipHash-1-3 under the zero key: the same function, byte for byte, on every
    /// length around the block size.
    #[test]
    fn matches_std_siphash_1_3() {
        let data: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(37) ^ 0xa5) as u8).collect();
        for len in 0..data.len() {
            let mut h = DefaultHasher::new();
            h.write(&data[..len]);
            assert_eq!(SipKey::fixed(0, 0).hash(&data[..len]), h.finish(), "length {len}");
        }
    }

    #[test]
    fn keys_differ_and_change_the_hash() {
        let (a, b) = (SipKey::random(), SipKey::random());
        assert_ne!((a.k0, a.k1), (b.k0, b.k1));
        assert_ne!(a.hash(b"card:4242"), b.hash(b"card:4242"));
        assert_ne!(a.hash(b"card:4242"), a.hash(b"card:4243"));
    }
}
