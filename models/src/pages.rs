//! Pages of a sparse model's columns, so that a checkpoint can write only
//! the part of a large model that learning changed.
//!
//! Every sparse column belongs to one of [`PAGES`] pages (a hash of the
//! column: pages hold about as many columns each). A [`crate::SparseModel`]
//! (crate::SparseModel) marks the pages of the columns it learns in a
//! [`PageSet`]; [`SparseColumns`] are a model's sparse columns taken out of
//! it, written one [`ColumnPage`] at a time, and read back page by page.

use serde::{Deserialize, Serialize};

/// log2 of [`PAGES`].
pub const PAGE_BITS: u32 = 12;

/// Pages a model's sparse columns are split into: enough that a commit of
/// a few readings touches few of them, few enough that writing all of them
/// (a model's first checkpoint) is a few thousand records.
pub const PAGES: usize = 1 << PAGE_BITS;

/// The page of sparse column `c`.
#[inline]
pub fn page_of(c: u32) -> u32 {
    ((c as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - PAGE_BITS)) as u32
}

/// A set of pages: those learning changed since they were last taken.
/// Not state: equal whatever it holds, and all pages once read back (a
/// model read from a snapshot says nothing of what its reader wrote).
#[derive(Debug, Clone)]
pub struct PageSet(Box<[u64; PAGES / 64]>);

impl PageSet {
    /// No page.
    pub fn none() -> PageSet {
        PageSet(Box::new([0; PAGES / 64]))
    }

    /// Every page.
    pub fn all() -> PageSet {
        PageSet(Box::new([u64::MAX; PAGES / 64]))
    }

    /// Marks the page of column `c`.
    #[inline]
    pub fn mark(&mut self, c: u32) {
        let p = page_of(c) as usize;
        self.0[p / 64] |= 1 << (p % 64);
    }

    /// The pages marked, ascending, leaving none marked.
    pub fn take(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, word) in self.0.iter_mut().enumerate() {
            let mut w = std::mem::take(word);
            while w != 0 {
                out.push((i * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        out
    }
}

impl Default for PageSet {
    fn default() -> Self {
        PageSet::all()
    }
}

impl PartialEq for PageSet {
    fn eq(&self, _: &PageSet) -> bool {
        true
    }
}

/// One page of a model's sparse columns, as written: per class (head),
/// its columns in the page with their weight and optimiser state, sorted by
/// column; and naive Bayes' counts of the page's columns, if it has them.
///
/// The weight and state are the `f32`s the model keeps, written as `f32`
/// (the fewest digits that read back to the same `f32`, about 9, not the
/// 17 of an `f64`): a page record is 25-30% smaller (README, checkpoint
/// table). They read back exactly when read as `f32` straight from the
/// JSON (serde_json's `float_roundtrip`, as the checkpoint reads a page
/// record), and pages written by earlier builds, in `f64`, read back to
/// the same `f32`s. (Read as `f64` and then rounded to `f32`, two would
/// not: +-7.038531e-26.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnPage {
    /// Per head: (column, weight, a, b), sorted by column.
    pub heads: Vec<Vec<(u32, f32, f32, f32)>>,
    /// Naive Bayes' counts per class of each column, sorted by column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nb: Vec<(u32, Vec<f64>)>,
}

impl ColumnPage {
    /// True when the page holds no column.
    pub fn is_empty(&self) -> bool {
        self.heads.iter().all(Vec::is_empty) && self.nb.is_empty()
    }
}

/// A model's sparse columns, taken out of it ([`crate::SparseModel::take_columns`]).
#[derive(Debug, Clone, Default)]
pub struct SparseColumns {
    /// Per head: column -> (weight, a, b).
    pub(crate) heads: Vec<crate::columns::ColumnMap<crate::sparse::SparseSlot>>,
    /// Naive Bayes' counts per class of each column.
    pub(crate) nb: Vec<(u32, Vec<f64>)>,
}

impl SparseColumns {
    /// Each page's columns (of any head or naive Bayes), sorted: index by
    /// page. Walks every column once.
    pub fn by_page(&self) -> Vec<Vec<u32>> {
        let mut pages = vec![Vec::new(); PAGES];
        for h in &self.heads {
            for (c, _) in h.iter() {
                pages[page_of(c) as usize].push(c);
            }
        }
        for (c, _) in &self.nb {
            pages[page_of(*c) as usize].push(*c);
        }
        for p in &mut pages {
            p.sort_unstable();
            p.dedup();
        }
        pages
    }

    /// The page holding `columns` (one entry of [`SparseColumns::by_page`]).
    pub fn page(&self, columns: &[u32]) -> ColumnPage {
        let heads = self
            .heads
            .iter()
            .map(|h| {
                columns
                    .iter()
                    .filter_map(|&c| h.get(c).map(|s| (c, s.w, s.a, s.b)))
                    .collect()
            })
            .collect();
        let nb = if self.nb.is_empty() {
            Vec::new()
        } else {
            columns
                .iter()
                .filter_map(|&c| {
                    self.nb
                        .binary_search_by_key(&c, |x| x.0)
                        .ok()
                        .map(|i| self.nb[i].clone())
                })
                .collect()
        };
        ColumnPage { heads, nb }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_set_gives_each_marked_page_once_then_none() {
        let mut s = PageSet::none();
        assert!(s.take().is_empty());
        for c in [7u32, 7, 123_456, 1 << 20] {
            s.mark(c);
        }
        let mut want: Vec<u32> = [7u32, 123_456, 1 << 20]
            .iter()
            .map(|&c| page_of(c))
            .collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(s.take(), want);
        assert!(s.take().is_empty(), "taken");
        assert_eq!(PageSet::all().take().len(), PAGES);
    }

    #[test]
    fn a_page_reads_back_the_same_f32s_whether_written_in_f32_or_by_earlier_builds_in_f64() {
        // hard cases (one that reading as f64 then rounding gets wrong,
        // the extremes, a subnormal) and a spread of bit patterns
        let mut values = vec![
            7.038531e-26f32,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::MAX,
            -f32::MAX,
            0.1,
            -0.0,
        ];
        let mut bits = 0x9E37_79B9u32;
        while values.len() < 30_000 {
            bits = bits.wrapping_mul(0x0101_0101).wrapping_add(0x7F4A_7C15);
            let x = f32::from_bits(bits);
            if x.is_finite() {
                values.push(x);
            }
        }
        let page = ColumnPage {
            heads: vec![values
                .chunks(3)
                .enumerate()
                .map(|(c, v)| (c as u32, v[0], v[1 % v.len()], v[2 % v.len()]))
                .collect()],
            nb: vec![],
        };
        let json = serde_json::to_string(&page).expect("encodes");
        // why a page is read as f32 straight from its digits
        let hard = serde_json::to_string(&values[0]).expect("encodes");
        assert_ne!(
            (hard.parse::<f64>().expect("a number") as f32).to_bits(),
            values[0].to_bits(),
            "{hard}, read as f64 and rounded"
        );
        let back: ColumnPage = serde_json::from_str(&json).expect("decodes");
        let same = |a: &ColumnPage, b: &ColumnPage| {
            a.heads[0].iter().zip(&b.heads[0]).all(|(x, y)| {
                x.0 == y.0
                    && x.1.to_bits() == y.1.to_bits()
                    && x.2.to_bits() == y.2.to_bits()
                    && x.3.to_bits() == y.3.to_bits()
            }) && a.heads[0].len() == b.heads[0].len()
        };
        assert!(same(&page, &back), "f32 pages read back exactly");
        // an earlier build wrote each kept f32 as an f64
        let old: Vec<(u32, f64, f64, f64)> = page.heads[0]
            .iter()
            .map(|&(c, w, a, b)| (c, f64::from(w), f64::from(a), f64::from(b)))
            .collect();
        let old_json = serde_json::json!({ "heads": [old] }).to_string();
        assert!(old_json.len() > json.len() * 5 / 4, "f64 pages are longer");
        let old_back: ColumnPage = serde_json::from_str(&old_json).expect("decodes");
        assert!(same(&page, &old_back), "f64 pages read as the same f32s");
    }

    #[test]
    fn columns_spread_over_the_pages() {
        // 2^20 hashed columns: every page holds some, none many more than
        // its share (256)
        let mut count = vec![0u32; PAGES];
        for c in 0..1u32 << 20 {
            count[page_of(c) as usize] += 1;
        }
        let (lo, hi) = (
            *count.iter().min().unwrap_or(&0),
            *count.iter().max().unwrap_or(&0),
        );
        assert!(lo >= 200 && hi <= 320, "{lo}..{hi} columns a page");
    }
}
