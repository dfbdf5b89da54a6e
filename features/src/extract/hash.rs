//! Fast non-cryptographic hashing for the extractor's hot path: the Fx hash
//! for maps of short keys, and FNV-1a for hashed categorical buckets.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-cryptographic hasher (the Fx hash of rustc) for the short
/// keys on the hot path: ride names, patient ids, category values.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        // the last 0..=7 bytes in at most three steps, not one per byte
        let mut rest = chunks.remainder();
        if let Some((four, tail)) = rest.split_first_chunk::<4>() {
            self.mix(u64::from(u32::from_le_bytes(*four)));
            rest = tail;
        }
        if let Some((two, tail)) = rest.split_first_chunk::<2>() {
            self.mix(u64::from(u16::from_le_bytes(*two)));
            rest = tail;
        }
        if let Some(&b) = rest.first() {
            self.mix(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, b: u8) {
        // `str`'s hash ends with one: a step, not a call to `write`
        self.mix(u64::from(b));
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map with [`FxHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// FNV-1a of `s`: a categorical value's bucket (`buckets`), stable across
/// processes and builds.
pub(super) fn fnv1a(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fx_hash_of_equal_strings_is_equal_and_of_lengths_differs(s in "[a-z_0-9]{0,40}") {
            let hash = |t: &str| {
                let mut h = FxHasher::default();
                std::hash::Hash::hash(t, &mut h);
                h.finish()
            };
            prop_assert_eq!(hash(&s), hash(&s.clone()));
            // every byte counts, whichever of the word, 4-, 2- or 1-byte steps it is in
            for i in 0..s.len() {
                let mut t = s.clone().into_bytes();
                t[i] = b'#';
                let t = String::from_utf8(t).expect("ascii");
                prop_assert_ne!(hash(&s), hash(&t), "{} {}", s, t);
            }
        }
    }
}
