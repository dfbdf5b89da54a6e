//! Online standardisation: running mean and variance (Welford) per feature.
//!
//! Only the columns marked in the mask are standardised; the others (one-hot,
//! cyclical time) pass through, because standardising them online is what
//! makes other libraries diverge on the wait-time stream. NaN means missing:
//! it does not move the statistics and is imputed as the mean (0 after
//! standardisation; 0 for an unscaled column).
//!
//! [`Scaling`] says how far a standardised value goes: divided by `sds`
//! standard deviations (2 puts a numeric feature on the scale of a 0/1 one,
//! as Gelman (2008) recommends for regression inputs) and optionally clipped
//! to `±clip`, so that the first readings, whose running variance is still
//! tiny, cannot produce huge values.

use serde::{Deserialize, Serialize};

use crate::error::{check, ModelError};

/// How standardised values are scaled and bounded.
///
/// In TOML: `scaling = { sds = 2.0, clip = 5.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaling {
    /// A standardised value is `(x - mean) / (sds * std)`.
    #[serde(default = "one")]
    pub sds: f64,
    /// Standardised values are clipped to `[-clip, clip]` (none by default).
    #[serde(default)]
    pub clip: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            sds: 1.0,
            clip: None,
        }
    }
}

impl Scaling {
    /// Checks the parameters; errors name them and their valid range.
    pub fn validate(&self) -> Result<(), ModelError> {
        check(
            self.sds.is_finite() && self.sds > 0.0,
            "scaling.sds",
            "a finite number > 0",
            self.sds,
        )?;
        if let Some(clip) = self.clip {
            check(
                clip.is_finite() && clip > 0.0,
                "scaling.clip",
                "a finite number > 0",
                clip,
            )?;
        }
        Ok(())
    }
}

/// Running per-feature statistics and the mask of columns they apply to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScalerData")]
pub struct OnlineScaler {
    mask: Vec<bool>,
    count: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `1 / (sds * std)`, or 0 while the variance is 0; kept in step with `m2`.
    inv_std: Vec<f64>,
    /// Scaled in units of this many standard deviations.
    sds: f64,
    /// Standardised values are clipped to `±clip`.
    clip: Option<f64>,
    /// The indices of the columns marked in `mask`, ascending: a row is
    /// copied through and only these are revisited (a wait-time row has one
    /// of 31; a clinical row 6 of 18).
    #[serde(skip)]
    scaled: Vec<usize>,
}

/// An [`OnlineScaler`] as a snapshot holds it, checked before use.
#[derive(Deserialize)]
struct ScalerData {
    mask: Vec<bool>,
    count: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    inv_std: Vec<f64>,
    #[serde(default = "one")]
    sds: f64,
    #[serde(default)]
    clip: Option<f64>,
}

impl TryFrom<ScalerData> for OnlineScaler {
    type Error = String;

    fn try_from(d: ScalerData) -> Result<Self, String> {
        let n = d.mask.len();
        let lens = [d.count.len(), d.mean.len(), d.m2.len(), d.inv_std.len()];
        if lens.iter().any(|&l| l != n) {
            return Err(format!(
                "the scaler's statistics should each have {n} entries (one per feature), but have {lens:?} (count, mean, m2, inv_std)"
            ));
        }
        Scaling {
            sds: d.sds,
            clip: d.clip,
        }
        .validate()
        .map_err(|e| e.to_string())?;
        Ok(OnlineScaler {
            scaled: scaled_columns(&d.mask),
            mask: d.mask,
            count: d.count,
            mean: d.mean,
            m2: d.m2,
            inv_std: d.inv_std,
            sds: d.sds,
            clip: d.clip,
        })
    }
}

fn scaled_columns(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

impl OnlineScaler {
    /// A scaler for `mask.len()` features, standardising those marked `true`
    /// to unit variance, unbounded.
    pub fn new(mask: Vec<bool>) -> Self {
        Self::with_scaling(mask, Scaling::default())
    }

    /// A scaler for `mask.len()` features, standardising those marked `true`
    /// as `scaling` says (validated by the caller).
    pub fn with_scaling(mask: Vec<bool>, scaling: Scaling) -> Self {
        let n = mask.len();
        OnlineScaler {
            scaled: scaled_columns(&mask),
            mask,
            count: vec![0.0; n],
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            inv_std: vec![0.0; n],
            sds: scaling.sds,
            clip: scaling.clip,
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.mask.len()
    }

    /// True if some column is standardised (its values change as the
    /// scaler learns).
    pub fn scales_any(&self) -> bool {
        !self.scaled.is_empty()
    }

    /// True when there are no features.
    pub fn is_empty(&self) -> bool {
        self.mask.is_empty()
    }

    /// Which columns are standardised.
    pub fn mask(&self) -> &[bool] {
        &self.mask
    }

    /// The running means (0 for unscaled columns).
    pub fn means(&self) -> &[f64] {
        &self.mean
    }

    /// Adds one row to the statistics (only its standardised columns move).
    pub fn update(&mut self, x: &[f64]) {
        for k in 0..self.scaled.len() {
            let i = self.scaled[k];
            match x.get(i) {
                Some(&v) => self.update_one(i, v),
                None => break,
            }
        }
    }

    /// Adds `v` to the statistics of standardised column `i`.
    #[inline]
    fn update_one(&mut self, i: usize, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count[i] += 1.0;
        let d = v - self.mean[i];
        self.mean[i] += d / self.count[i];
        self.m2[i] += d * (v - self.mean[i]);
        let var = self.m2[i] / self.count[i];
        self.inv_std[i] = if var > 0.0 {
            1.0 / (self.sds * var.sqrt())
        } else {
            0.0
        };
    }

    /// [`OnlineScaler::update`] with `x`, then [`OnlineScaler::transform`]
    /// of `x` into `out`.
    pub fn update_transform(&mut self, x: &[f64], out: &mut [f64]) {
        self.update(x);
        self.transform(x, out);
    }

    /// The transformed value of feature `i`.
    #[inline]
    pub fn transform_one(&self, i: usize, v: f64) -> f64 {
        z(v, self.mask[i], self.mean[i], self.inv_std[i], self.bound())
    }

    /// The clip bound, infinite when values are not clipped.
    #[inline]
    fn bound(&self) -> f64 {
        self.clip.unwrap_or(f64::INFINITY)
    }

    /// Transforms a row into `out` (same length).
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        let n = x.len().min(out.len()).min(self.mask.len());
        self.transform_range(x, out, 0, n);
    }

    /// Transforms `x[start..end]` into `out[..end - start]`.
    #[inline]
    fn transform_range(&self, x: &[f64], out: &mut [f64], start: usize, end: usize) {
        pass_through(&x[start..end], &mut out[..end - start]);
        let bound = self.bound();
        let first = self.scaled.partition_point(|&i| i < start);
        for &i in self.scaled[first..].iter().take_while(|&&i| i < end) {
            out[i - start] = z(x[i], true, self.mean[i], self.inv_std[i], bound);
        }
    }

    /// `Σ w[i] · transform(x[i])` over the shorter of `x` and `w`, in the
    /// order of `dot`: the row is transformed a block at a time into a
    /// buffer on the stack (copied through, then its few standardised
    /// columns overwritten), so the products run over two plain arrays.
    #[inline]
    pub fn dot(&self, x: &[f64], w: &[f64]) -> f64 {
        const BLOCK: usize = 32; // a multiple of dot's four sums
        let n = x.len().min(w.len()).min(self.mask.len());
        let mut sums = Sums::default();
        let mut buf = [0.0; BLOCK];
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            self.transform_range(x, &mut buf, start, end);
            sums.add(&buf[..end - start], &w[start..end]);
            start = end;
        }
        sums.total()
    }
}

/// Copies `x` into `out`, NaN (missing) as 0: the transform of every
/// column that is not standardised.
#[inline]
fn pass_through(x: &[f64], out: &mut [f64]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = if v.is_nan() { 0.0 } else { v };
    }
}

/// A dot product in four independent sums (a single running sum is one
/// long chain of dependent additions: the bottleneck of a prediction), fed
/// in pieces whose lengths are multiples of four except the last.
#[derive(Default)]
struct Sums {
    acc: [f64; 4],
    tail: f64,
}

impl Sums {
    #[inline]
    fn add(&mut self, a: &[f64], b: &[f64]) {
        let n = a.len().min(b.len());
        let (mut a, mut b) = (a[..n].chunks_exact(4), b[..n].chunks_exact(4));
        // fixed-size chunks: no bounds checks, and the four sums become
        // two vector registers
        for (x, y) in (&mut a).zip(&mut b) {
            for k in 0..4 {
                self.acc[k] += x[k] * y[k];
            }
        }
        for (x, y) in a.remainder().iter().zip(b.remainder()) {
            self.tail += x * y;
        }
    }

    #[inline]
    fn total(&self) -> f64 {
        (self.acc[0] + self.acc[1]) + (self.acc[2] + self.acc[3]) + self.tail
    }
}

/// `Σ a[i] · b[i]` over the shorter of the two, in four independent sums.
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut sums = Sums::default();
    sums.add(a, b);
    sums.total()
}

/// [`dot`] of each of `rows` with `b` (all of one length), in one pass:
/// each result is summed exactly as [`dot`] sums it, but the rows'
/// additions interleave, so the processor is not waiting on one row's
/// chain of sums (a matrix-vector product's bottleneck).
#[inline(always)]
pub(crate) fn dots<const R: usize>(rows: [&[f64]; R], b: &[f64]) -> [f64; R] {
    let n = rows.iter().map(|r| r.len()).fold(b.len(), usize::min);
    let mut sums: [Sums; R] = std::array::from_fn(|_| Sums::default());
    let mut start = 0;
    while start + 4 <= n {
        let y = &b[start..start + 4];
        for (s, r) in sums.iter_mut().zip(rows) {
            let x = &r[start..start + 4];
            for k in 0..4 {
                s.acc[k] += x[k] * y[k];
            }
        }
        start += 4;
    }
    for j in start..n {
        for (s, r) in sums.iter_mut().zip(rows) {
            s.tail += r[j] * b[j];
        }
    }
    sums.map(|s| s.total())
}

/// One standardised (or passed-through) value; NaN (missing) becomes 0.
/// Written without branches on the column kind so that loops over a row
/// compile to straight-line code.
/// `bound` is infinite when values are not clipped; the test on it is the
/// same for every column of every row, so it costs nothing predicted.
#[inline(always)]
fn z(v: f64, masked: bool, mean: f64, inv_std: f64, bound: f64) -> f64 {
    let scaled = (v - mean) * inv_std;
    // max/min, not clamp: v is finite or NaN here, and NaN is replaced below
    let scaled = if bound < f64::INFINITY {
        scaled.max(-bound).min(bound)
    } else {
        scaled
    };
    let out = if masked { scaled } else { v };
    if v.is_nan() {
        0.0
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dots_are_dots_to_the_bit(
            rows in (0usize..40).prop_flat_map(|n| (
                proptest::collection::vec(-1e3f64..1e3, n),
                proptest::collection::vec(-1e3f64..1e3, n),
                proptest::collection::vec(-1e3f64..1e3, n),
            ))
        ) {
            let (a1, a2, b) = rows;
            let [x, y] = dots([&a1, &a2], &b);
            prop_assert_eq!(x.to_bits(), dot(&a1, &b).to_bits());
            prop_assert_eq!(y.to_bits(), dot(&a2, &b).to_bits());
        }
    }

    #[test]
    fn matches_batch_mean_and_population_std() {
        let mut s = OnlineScaler::new(vec![true, false]);
        let rows = [[1.0, 5.0], [2.0, 6.0], [f64::NAN, 7.0], [6.0, 8.0]];
        for r in &rows {
            s.update(r);
        }
        // mean 3, population variance ((4 + 1 + 9) / 3)
        let std = (14.0f64 / 3.0).sqrt();
        assert_relative_eq!(s.transform_one(0, 6.0), 3.0 / std, epsilon = 1e-12);
        assert_eq!(s.transform_one(0, f64::NAN), 0.0);
        assert_eq!(s.transform_one(1, 7.5), 7.5);
        assert_eq!(s.transform_one(1, f64::NAN), 0.0);
    }

    #[test]
    fn scaling_divides_by_sds_and_clips() {
        let scaling = Scaling {
            sds: 2.0,
            clip: Some(1.5),
        };
        scaling.validate().expect("valid");
        let mut s = OnlineScaler::with_scaling(vec![true, false], scaling);
        for r in [[1.0, 0.0], [3.0, 1.0]] {
            s.update(&r);
        }
        // mean 2, std 1: 3 is one standard deviation, i.e. 0.5 in units of two
        assert_relative_eq!(s.transform_one(0, 3.0), 0.5, epsilon = 1e-12);
        assert_eq!(s.transform_one(0, 100.0), 1.5);
        assert_eq!(s.transform_one(0, -100.0), -1.5);
        // one-hot and other unscaled columns are untouched
        assert_eq!(s.transform_one(1, 1.0), 1.0);
    }

    #[test]
    fn scaling_errors_name_the_parameter() {
        let bad = Scaling {
            sds: 0.0,
            clip: None,
        };
        let e = bad.validate().expect_err("invalid");
        assert!(e.to_string().contains("scaling.sds"), "{e}");
        let bad = Scaling {
            sds: 1.0,
            clip: Some(-1.0),
        };
        let e = bad.validate().expect_err("invalid");
        assert!(e.to_string().contains("scaling.clip"), "{e}");
    }

    #[test]
    fn old_snapshots_without_scaling_still_load() {
        let mut s = OnlineScaler::new(vec![true]);
        s.update(&[1.0]);
        s.update(&[3.0]);
        let mut json = serde_json::to_value(&s).expect("serialises");
        let obj = json.as_object_mut().expect("an object");
        obj.remove("sds");
        obj.remove("clip");
        let back: OnlineScaler = serde_json::from_value(json).expect("loads");
        assert_eq!(back, s);
    }

    #[test]
    fn blocked_dot_is_the_column_by_column_one() {
        // 75 columns: three blocks, a tail, standardised columns in each
        // block, clipping and missing values
        let n = 75;
        let mask: Vec<bool> = (0..n).map(|i| i % 7 == 3 || i == 74).collect();
        let scaling = Scaling {
            sds: 2.0,
            clip: Some(1.0),
        };
        let mut s = OnlineScaler::with_scaling(mask, scaling);
        let row = |r: usize| -> Vec<f64> {
            (0..n)
                .map(|i| match (i * 31 + r * 17) % 11 {
                    0 => f64::NAN,
                    k => k as f64 * if i % 2 == 0 { 1.5 } else { -0.25 },
                })
                .collect()
        };
        let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut out = vec![0.0; n];
        for r in 0..20 {
            let x = row(r);
            s.update_transform(&x, &mut out);
            let z: Vec<f64> = (0..n).map(|i| s.transform_one(i, x[i])).collect();
            // update_transform gives each column's transform after the update
            assert_eq!(out, z);
            let mut acc = [0.0; 4];
            let mut tail = 0.0;
            for j in 0..n {
                if j < n / 4 * 4 {
                    acc[j % 4] += w[j] * z[j];
                } else {
                    tail += w[j] * z[j];
                }
            }
            let expected = (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
            assert_eq!(s.dot(&x, &w).to_bits(), expected.to_bits());
        }
    }

    #[test]
    fn snapshots_with_inconsistent_statistics_are_refused() {
        let s = OnlineScaler::new(vec![true, false]);
        let mut json = serde_json::to_value(&s).expect("serialises");
        json["mean"] = serde_json::json!([0.0]);
        let e = serde_json::from_value::<OnlineScaler>(json).expect_err("refused");
        assert!(e.to_string().contains("2 entries"), "{e}");
        let mut json = serde_json::to_value(&s).expect("serialises");
        json["sds"] = serde_json::json!(-1.0);
        let e = serde_json::from_value::<OnlineScaler>(json).expect_err("refused");
        assert!(e.to_string().contains("scaling.sds"), "{e}");
    }

    #[test]
    fn constant_column_maps_to_zero() {
        let mut s = OnlineScaler::new(vec![true]);
        s.update(&[4.0]);
        s.update(&[4.0]);
        assert_eq!(s.transform_one(0, 4.0), 0.0);
        assert_eq!(s.transform_one(0, 9.0), 0.0);
    }
}
