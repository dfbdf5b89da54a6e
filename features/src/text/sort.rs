//! Sorting a text's packed terms: [`TermSort::sort_terms`], a bucket sort
//! for the hashed keys of one text.
//!
//! A tweet makes about a hundred terms, whose keys are hashes below
//! 2^(bits + 2), and sorting them was the largest single part of
//! tokenising a tweet. Hashes spread evenly, so sending each key to one of
//! about n buckets by its top bits leaves buckets of zero, one or two
//! keys, which one insertion pass puts in order: fewer passes over the
//! keys than a comparison sort's. The output is exactly the comparison
//! sort's, so the columns and their values do not change
//! (`cargo bench -p streamfit-features --bench text`: README, Text
//! streams).

/// Fewer keys than this are sorted by comparison: the buckets would cost
/// more than they save.
const MIN_KEYS: usize = 24;

/// The most buckets (and so keys, about) sorted by bucket.
const MAX_BUCKET_BITS: u32 = 12;

/// A bucket holding more keys than this (hashes that clustered, or a key
/// range too small for the keys) hands the whole sort to the comparison
/// sort, so that the insertion pass stays linear.
const MAX_BUCKET: u32 = 8;

/// Buffers kept between calls.
#[derive(Debug, Clone, Default)]
pub(super) struct TermSort {
    counts: Vec<u32>,
    out: Vec<u64>,
}

impl TermSort {
    /// Sorts `keys`, each below 2^`key_bits` (1..=64), ascending.
    pub(super) fn sort_terms(&mut self, keys: &mut Vec<u64>, key_bits: u32) {
        let n = keys.len();
        // buckets: the power of two above n (about one key each), at most
        // one bucket per key value
        let bits = (usize::BITS - n.leading_zeros()).min(key_bits);
        if n < MIN_KEYS || bits > MAX_BUCKET_BITS {
            keys.sort_unstable();
            return;
        }
        let shift = key_bits - bits;
        let buckets = 1usize << bits;
        let bucket = |k: u64| (k >> shift) as usize & (buckets - 1);
        self.counts.clear();
        self.counts.resize(buckets + 1, 0);
        // slices, not the vectors: a store through one cannot move the
        // other's length, so the loops keep them in registers
        let counts = &mut self.counts[..];
        let mut largest = 0;
        for &k in keys.iter() {
            debug_assert!(
                key_bits == 64 || k >> key_bits == 0,
                "key {k} of {key_bits} bits"
            );
            let c = &mut counts[bucket(k) + 1];
            *c += 1;
            largest = largest.max(*c);
        }
        if largest > MAX_BUCKET {
            keys.sort_unstable();
            return;
        }
        // each bucket's start: the keys in the buckets before it
        let mut sum = 0;
        for c in counts.iter_mut() {
            sum += *c;
            *c = sum;
        }
        self.out.clear();
        self.out.resize(n, 0);
        let out = &mut self.out[..];
        for &k in keys.iter() {
            let at = &mut counts[bucket(k)];
            out[*at as usize] = k;
            *at += 1;
        }
        // in bucket order: a key moves back only past keys of its bucket
        for i in 1..n {
            let k = out[i];
            let mut j = i;
            while j > 0 && out[j - 1] > k {
                out[j] = out[j - 1];
                j -= 1;
            }
            out[j] = k;
        }
        std::mem::swap(keys, &mut self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sorts `keys` both ways; true if the buckets sorted them (the
    /// swapped-out buffer is left in `out`), false if the comparison sort
    /// did.
    fn check(keys: &[u64], key_bits: u32) -> bool {
        let mut sorter = TermSort::default();
        let mut ours = keys.to_vec();
        sorter.sort_terms(&mut ours, key_bits);
        let mut theirs = keys.to_vec();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "{} keys below 2^{key_bits}", keys.len());
        sorter.out.len() == keys.len() && !keys.is_empty()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn sorts_as_a_comparison_sort_does_at_any_size_and_key_range(
            key_bits in 1u32..=64,
            raw in proptest::collection::vec(any::<u64>(), 0..5000),
        ) {
            let mask = u64::MAX >> (64 - key_bits);
            let keys: Vec<u64> = raw.iter().map(|k| k & mask).collect();
            check(&keys, key_bits);
        }
    }

    #[test]
    fn a_tweets_worth_of_hashes_is_bucketed_and_repeats_and_clusters_are_not() {
        // a hundred hashed keys of 22 bits (a tweet's terms at 2^20)
        let hashed: Vec<u64> = (0..100u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 42)
            .collect();
        assert!(check(&hashed, 22), "bucketed");
        // spread evenly, a few to a bucket: bucketed too
        let sorted: Vec<u64> = (0..200).map(|i| i << 12).collect();
        let reversed: Vec<u64> = sorted.iter().rev().copied().collect();
        assert!(check(&sorted, 22) && check(&reversed, 22), "bucketed");
        // one word a hundred times, two words, all in one bucket, and too
        // few keys: the comparison sort
        let same = vec![12_345u64; 100];
        let two: Vec<u64> = (0..100).map(|i| [7u64, 1 << 20][i % 2]).collect();
        let clustered: Vec<u64> = (0..100).map(|i| 1000 - i).collect();
        for keys in [same, two, clustered, hashed[..23].to_vec()] {
            assert!(!check(&keys, 22), "compared");
        }
    }
}
