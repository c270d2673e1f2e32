//! A hash index in buckets of one cache line: from a 32-bit hash to a `u32` slot (an index into the caller's own
//! slab of records), for tables that outgrow the caches. The memory lease store files its records with it, and
//! the fraud crate's memory velocity store its (subject, value) counters.
//!
//! A lookup of a key the table has not seen reads one line: the bucket the hash names, which holds the hashes of
//! the entries filed there and how many of the entries filed at or before it live further on. An insert that
//! follows writes into that same line, and a lookup that finds its entry reads that line and then the caller's
//! record. A table whose control bytes and entries are two arrays (hashbrown's) touches two lines for the same
//! work, each one a cache miss once the table outgrows the caches.
//!
//! Open addressing with linear probing over buckets, and per bucket an overflow count (the number of entries
//! that passed it, full, on their way to a later bucket): a lookup stops at the first bucket with none, and a
//! removal clears its entry and takes one off the counts it had added, so no tombstone is ever left behind.
//!
//! The index keeps no keys: [`Index::find`] asks the caller whether a slot holds the key. Hashes must be keyed
//! (SipHash with a random key, as `std`'s `RandomState` gives) when clients choose the keys, so that they cannot
//! aim their keys at one bucket; the low bits place an entry, all 32 are compared.
//!
//! ```
//! use palisade_store::index::Index;
//!
//! let names = ["ada", "grace"];
//! let mut index = Index::default();
//! // The caller's hash of each name (a real table uses a keyed hash); here, its length.
//! for (slot, name) in names.iter().enumerate() {
//!     index.insert(name.len() as u32, slot as u32);
//! }
//! assert_eq!(index.find(5, |slot| names[slot as usize] == "grace"), Some(1));
//! assert_eq!(index.find(5, |slot| names[slot as usize] == "alan"), None);
//! assert!(index.remove(3, 0));
//! assert_eq!(index.len(), 1);
//! ```

/// Entries a bucket holds: seven (hash, slot) pairs and the overflow count fill one 64-byte cache line.
const WIDTH: usize = 7;

/// Lanes of a bucket's two arrays: the seven entries, and the overflow count in the hashes' last lane.
const LANES: usize = WIDTH + 1;

/// The entries' lanes of a lane mask.
const ENTRIES: u32 = (1 << WIDTH) - 1;

/// The slot of an empty entry: [`Index::insert`] refuses it.
const EMPTY: u32 = u32::MAX;

/// Buckets of a new, non-empty table.
const FIRST_BUCKETS: usize = 2;

/// Hashes and slots in two arrays of eight lanes, so that one compare of eight lanes (which the compiler makes a
/// vector compare) finds the entries with a given hash, or the empty ones.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    /// The entries' hashes, and in the last lane the overflow count: how many entries filed at this bucket or
    /// before it live in a later one (this one was full when they came).
    hashes: [u32; LANES],
    /// The entries' slots ([`EMPTY`]: no entry); the last lane is always [`EMPTY`].
    slots: [u32; LANES],
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { hashes: [0; LANES], slots: [EMPTY; LANES] }
    }
}

/// The lanes of `lanes` equal to `x`, as bits: two halves of four lanes, each of which the compiler makes one
/// vector compare and mask.
#[inline]
fn lanes_eq(lanes: &[u32; LANES], x: u32) -> u32 {
    #[inline]
    fn four(lanes: &[u32], x: u32) -> u32 {
        let mut mask = 0;
        for (i, &l) in lanes.iter().take(4).enumerate() {
            mask |= u32::from(l == x) << i;
        }
        mask
    }
    four(&lanes[..4], x) | four(&lanes[4..], x) << 4
}

impl Bucket {
    #[inline]
    fn overflow(&self) -> u32 {
        self.hashes[WIDTH]
    }
    #[inline]
    fn overflow_mut(&mut self) -> &mut u32 {
        &mut self.hashes[WIDTH]
    }
    /// The first empty entry, if any.
    #[inline]
    fn free(&self) -> Option<usize> {
        let free = lanes_eq(&self.slots, EMPTY) & ENTRIES;
        (free != 0).then(|| free.trailing_zeros() as usize)
    }
    #[inline]
    fn put(&mut self, at: usize, hash: u32, slot: u32) {
        self.hashes[at] = hash;
        self.slots[at] = slot;
    }
}

/// (hash, slot) entries found by hash, in one-line buckets. See the [module](self).
#[derive(Debug, Default)]
pub struct Index {
    /// A power of two of them, or none before the first insert.
    buckets: Vec<Bucket>,
    len: usize,
}

impl Index {
    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot of the entry filed under `hash` for which `eq` (given the slot) holds.
    ///
    /// Bucket by bucket from the hash's own, every entry with this hash a candidate, until a bucket without
    /// overflow: usually the first. A key not filed (a new request) costs one bucket and no call of `eq`.
    #[inline]
    pub fn find(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.buckets.len().checked_sub(1)?;
        let mut b = hash as usize & mask;
        // At most every bucket once: a table is never full, so a bucket without overflow ends every probe long
        // before that; the bound only keeps a broken count from looping.
        for _ in 0..=mask {
            let bucket = &self.buckets[b];
            // All eight lanes: the last is the overflow count, but its slot lane is always empty, so a count equal
            // to the hash is skipped below like an empty entry.
            let mut hits = lanes_eq(&bucket.hashes, hash);
            while hits != 0 {
                let slot = bucket.slots[hits.trailing_zeros() as usize];
                if slot != EMPTY && eq(slot) {
                    return Some(slot);
                }
                hits &= hits - 1;
            }
            if bucket.overflow() == 0 {
                return None;
            }
            b = (b + 1) & mask;
        }
        None
    }

    /// Reads the bucket `hash` names, and nothing else: called for several hashes before working on them, it lets
    /// their cache misses overlap instead of following one another (a load whose value nothing waits for, so the
    /// processor issues the next at once; safe code has no prefetch instruction).
    #[inline]
    pub fn touch(&self, hash: u32) {
        if let Some(mask) = self.buckets.len().checked_sub(1) {
            std::hint::black_box(self.buckets[hash as usize & mask].overflow());
        }
    }

    /// Files `slot` under `hash`. The caller knows no entry for this slot is filed already.
    ///
    /// # Panics
    /// When `slot` is `u32::MAX`, which marks an empty entry.
    #[inline]
    pub fn insert(&mut self, hash: u32, slot: u32) {
        assert_ne!(slot, EMPTY, "u32::MAX marks an empty entry");
        // At most seven eighths full, as hashbrown's tables: 6.1 entries a bucket on average at the most, 4.6
        // over a doubling, so most lookups end in their first bucket (and a second is the next line).
        if (self.len + 1) * 8 > self.buckets.len() * WIDTH * 7 {
            self.grow();
        }
        Index::place(&mut self.buckets, hash, slot);
        self.len += 1;
    }

    /// Puts an entry in the first free place from its bucket on, counting it on every full bucket it passes.
    #[inline]
    fn place(buckets: &mut [Bucket], hash: u32, slot: u32) {
        let mask = buckets.len() - 1;
        let mut b = hash as usize & mask;
        loop {
            let bucket = &mut buckets[b];
            if let Some(at) = bucket.free() {
                bucket.put(at, hash, slot);
                return;
            }
            *bucket.overflow_mut() += 1;
            b = (b + 1) & mask;
        }
    }

    /// Twice the buckets, every entry placed again from its hash (the records are not visited).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(FIRST_BUCKETS);
        let mut buckets = vec![Bucket::default(); n];
        for bucket in &self.buckets {
            let mut full = !lanes_eq(&bucket.slots, EMPTY) & ENTRIES;
            while full != 0 {
                let at = full.trailing_zeros() as usize;
                Index::place(&mut buckets, bucket.hashes[at], bucket.slots[at]);
                full &= full - 1;
            }
        }
        self.buckets = buckets;
    }

    /// Removes the entry of `slot` filed under `hash`; false when there is none.
    pub fn remove(&mut self, hash: u32, slot: u32) -> bool {
        let Some(mask) = self.buckets.len().checked_sub(1) else { return false };
        let home = hash as usize & mask;
        let mut b = home;
        for passed in 0..=mask {
            let bucket = &mut self.buckets[b];
            let at = lanes_eq(&bucket.slots, slot) & lanes_eq(&bucket.hashes, hash) & ENTRIES;
            if at != 0 {
                bucket.put(at.trailing_zeros() as usize, 0, EMPTY);
                self.len -= 1;
                // The buckets it passed (full when it came) no longer have it after them.
                for i in 0..passed {
                    *self.buckets[(home + i) & mask].overflow_mut() -= 1;
                }
                return true;
            }
            if bucket.overflow() == 0 {
                return false;
            }
            b = (b + 1) & mask;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_eq_marks_the_equal_lanes() {
        let lanes = [7, 0, 7, u32::MAX, 1, 7, 2, 7];
        assert_eq!(lanes_eq(&lanes, 7), 0b1010_0101);
        assert_eq!(lanes_eq(&lanes, u32::MAX), 0b0000_1000);
        assert_eq!(lanes_eq(&lanes, 3), 0);
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(size_of::<Bucket>(), 64);
        assert_eq!(align_of::<Bucket>(), 64);
    }

    /// Every entry colliding on one bucket: the overflow counts carry lookups past full buckets, removals take
    /// them back, and a lookup of an absent hash still ends.
    #[test]
    fn colliding_entries_overflow_and_are_found_and_removed() {
        let mut index = Index::default();
        // Every hash's low bits are zero: one home bucket, whatever the table's size.
        let hash = |i: u32| i << 20;
        for i in 0..100 {
            index.insert(hash(i), i);
        }
        assert_eq!(index.len(), 100);
        for i in 0..100 {
            assert_eq!(index.find(hash(i), |s| s == i), Some(i));
        }
        assert_eq!(index.find(hash(1000), |_| true), None);
        for i in (0..100).step_by(2) {
            assert!(index.remove(hash(i), i));
            assert!(!index.remove(hash(i), i), "removed twice");
        }
        assert_eq!(index.len(), 50);
        for i in 0..100 {
            assert_eq!(index.find(hash(i), |s| s == i).is_some(), i % 2 == 1, "{i}");
        }
        for i in (1..100).step_by(2) {
            assert!(index.remove(hash(i), i));
        }
        assert_eq!(index.len(), 0);
        assert!(index.buckets.iter().all(|b| b.overflow() == 0 && b.slots.iter().all(|&s| s == EMPTY)));
    }

    /// The index against a model (a map), through random inserts, lookups and removals, including equal hashes
    /// for different slots.
    #[test]
    fn behaves_like_a_map() {
        let mut index = Index::default();
        let mut model = std::collections::HashMap::new();
        // A small LCG: seeded, so a failure repeats.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u32
        };
        let mut free_slot = 0u32;
        for _ in 0..20_000 {
            let r = next();
            if r % 3 != 0 || model.is_empty() {
                // Hashes from a small set, so equal hashes for different slots are common.
                let hash = next() % 512;
                index.insert(hash, free_slot);
                model.insert(free_slot, hash);
                free_slot += 1;
            } else {
                let slot = *model.keys().nth(r as usize % model.len()).unwrap();
                let hash = model.remove(&slot).unwrap();
                assert!(index.remove(hash, slot));
            }
            let probe = next() % free_slot.max(1);
            let expect = model.get(&probe).copied();
            let hash = expect.unwrap_or(next() % 512);
            assert_eq!(index.find(hash, |s| s == probe), expect.map(|_| probe));
        }
        assert_eq!(index.len(), model.len());
        for (&slot, &hash) in &model {
            assert_eq!(index.find(hash, |s| s == slot), Some(slot));
        }
    }
}
