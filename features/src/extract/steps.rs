//! What a feature spec compiles to: the steps that fill a row's dense
//! columns and a reading's sparse ones, and the keyed histories they read.

use crate::decode::Names;
use crate::spec::Reset;
use crate::text::TextHasher;

use super::hash::FastMap;

/// One dense feature: which columns of the row it fills, and from what.
#[derive(Debug, Clone)]
pub(super) enum Step {
    Numeric {
        slot: usize,
        missing: Vec<f64>,
        indicator: bool,
        optional: bool,
        min: f64,
        max: f64,
    },
    Fixed {
        slot: usize,
        values: FixedValues,
        optional: bool,
    },
    Learned {
        slot: usize,
        vocab: usize,
        max: usize,
        optional: bool,
    },
    Hashed {
        slot: usize,
        buckets: usize,
        optional: bool,
    },
    Hour {
        harmonics: usize,
    },
    Weekday,
    DayOfYear,
    Lag {
        hist: usize,
        order: usize,
    },
    Mean {
        hist: usize,
    },
    Profile {
        hist: usize,
    },
}

/// The values of a fixed categorical, in column order (the column after
/// the last is the unknown bucket): up to [`FixedValues::SCAN`] values are
/// found by scanning ([`Names`]), more by hashing.
#[derive(Debug, Clone)]
pub(super) enum FixedValues {
    Scanned(Names),
    Hashed(FastMap<Vec<u8>, usize>),
}

impl FixedValues {
    pub(super) const SCAN: usize = 32;

    /// `values` must be distinct.
    pub(super) fn new(values: &[String]) -> Self {
        if values.len() <= Self::SCAN {
            let mut names = Names::default();
            values.iter().for_each(|v| names.push(v));
            FixedValues::Scanned(names)
        } else {
            let map = values
                .iter()
                .enumerate()
                .map(|(j, v)| (v.as_bytes().to_vec(), j));
            FixedValues::Hashed(map.collect())
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            FixedValues::Scanned(names) => names.len(),
            FixedValues::Hashed(map) => map.len(),
        }
    }

    /// The index of `value`, if it is one of the values.
    #[inline]
    pub(super) fn position(&self, value: &[u8]) -> Option<usize> {
        match self {
            FixedValues::Scanned(names) => names.position(value),
            FixedValues::Hashed(map) => map.get(value).copied(),
        }
    }

    /// The column of `value`: its index, or the unknown bucket.
    #[inline]
    pub(super) fn column(&self, value: &[u8]) -> usize {
        self.position(value).unwrap_or(self.len())
    }
}

/// Divides `columns` by their L2 norm to the power `power` (0..=1); an
/// empty text stays empty.
pub(super) fn normalize_length(columns: &mut [(u32, f64)], power: f64) {
    let squares: f64 = columns.iter().map(|(_, v)| v * v).sum();
    if squares > 0.0 {
        // (Σv²)^(power/2) = ‖v‖^power
        let scale = squares.powf(-0.5 * power);
        for (_, v) in columns.iter_mut() {
            *v *= scale;
        }
    }
}

/// A feature of sparse columns.
#[derive(Debug, Clone)]
pub(super) enum SparseStep {
    Text {
        slot: usize,
        /// (boxed: its buffers make it several times a `Hashed`'s size)
        hasher: Box<TextHasher>,
        optional: bool,
        base: u32,
        /// Its [`DocFreq`], with `idf`.
        idf: Option<usize>,
        /// The power of the L2 norm the columns are divided by (0: none).
        normalize: f64,
    },
    Hashed {
        slot: usize,
        bits: u32,
        optional: bool,
        base: u32,
    },
}

/// The keyed history one lag, running-mean or profile feature keeps.
#[derive(Debug, Clone)]
pub(super) struct HistSpec {
    pub(super) slot: usize,
    pub(super) missing: Vec<f64>,
    pub(super) reset: Reset,
    pub(super) keep: usize,
    /// A profile: slots a day and the latest day's weight.
    pub(super) profile: Option<(usize, f64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_find_their_column_scanned_or_hashed() {
        // short, equal-prefix and equal-length values; then the same as a
        // list long enough to be hashed
        let mut names: Vec<String> = [
            "a",
            "ab",
            "soarin",
            "soarin_",
            "soarin_x",
            "soarin_y",
            "dinosaur",
            "dinosaurs",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for long in [false, true] {
            if long {
                names.extend((0..40).map(|i| format!("ride_{i:03}")));
            }
            let values = FixedValues::new(&names);
            assert_eq!(matches!(values, FixedValues::Hashed(_)), long);
            for (j, v) in names.iter().enumerate() {
                assert_eq!(values.column(v.as_bytes()), j, "{v}");
            }
            for unknown in [
                "",
                "b",
                "soari",
                "soarin_z",
                "dinosaur_",
                "Soarin",
                "ride_999",
            ] {
                assert_eq!(values.column(unknown.as_bytes()), names.len(), "{unknown}");
            }
        }
    }
}
