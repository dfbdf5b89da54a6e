//! Online standardisation: running mean and variance (Welford) per feature.
//!
//! Only the columns marked in the mask are standardised; the others (one-hot,
//! cyclical time) pass through, because standardising them online is what
//! makes other libraries diverge on the wait-time stream. NaN means missing:
//! it does not move the statistics and is imputed as the mean (0 after
//! standardisation; 0 for an unscaled column).

use serde::{Deserialize, Serialize};

/// Running per-feature statistics and the mask of columns they apply to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineScaler {
    mask: Vec<bool>,
    count: Vec<f64>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// `1 / std`, or 0 while the variance is 0; kept in step with `m2`.
    inv_std: Vec<f64>,
}

impl OnlineScaler {
    /// A scaler for `mask.len()` features, standardising those marked `true`.
    pub fn new(mask: Vec<bool>) -> Self {
        let n = mask.len();
        OnlineScaler {
            mask,
            count: vec![0.0; n],
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            inv_std: vec![0.0; n],
        }
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.mask.len()
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

    /// Adds one row to the statistics.
    pub fn update(&mut self, x: &[f64]) {
        for (i, &v) in x.iter().enumerate() {
            if !self.mask[i] || v.is_nan() {
                continue;
            }
            self.count[i] += 1.0;
            let d = v - self.mean[i];
            self.mean[i] += d / self.count[i];
            self.m2[i] += d * (v - self.mean[i]);
            let var = self.m2[i] / self.count[i];
            self.inv_std[i] = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
        }
    }

    /// The transformed value of feature `i`.
    #[inline]
    pub fn transform_one(&self, i: usize, v: f64) -> f64 {
        if v.is_nan() {
            0.0
        } else if self.mask[i] {
            (v - self.mean[i]) * self.inv_std[i]
        } else {
            v
        }
    }

    /// Transforms a row into `out` (same length).
    pub fn transform(&self, x: &[f64], out: &mut [f64]) {
        for (i, (&v, o)) in x.iter().zip(out.iter_mut()).enumerate() {
            *o = self.transform_one(i, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

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
    fn constant_column_maps_to_zero() {
        let mut s = OnlineScaler::new(vec![true]);
        s.update(&[4.0]);
        s.update(&[4.0]);
        assert_eq!(s.transform_one(0, 4.0), 0.0);
        assert_eq!(s.transform_one(0, 9.0), 0.0);
    }
}
