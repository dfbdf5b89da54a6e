//! Learners over sparse rows (hashed text columns, issue 17): a reading
//! touches only its non-zero columns, so 2^20 columns cost what the
//! reading's terms cost. Weights live in a map of the columns ever touched,
//! each with its AdaGrad accumulator; snapshots list them sorted.
//!
//! [`SparseLogistic`] (binary) and [`SparseSoftmax`] (multinomial) learn
//! one reading at a time with AdaGrad and an optional L2 penalty applied
//! to the touched columns. Not yet wired into the service's pipeline: the
//! `text` feature kind and the pipeline's sparse rows come with them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::loss::sigmoid;

/// A hasher for column numbers, which are hashes already: one multiply.
#[derive(Debug, Default, Clone, Copy)]
pub struct ColumnHasher(u64);

impl Hasher for ColumnHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One column's weight and the sum of its squared gradients.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    w: f64,
    g2: f64,
}

/// AdaGrad's step settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SparseParams {
    /// Base learning rate.
    pub learning_rate: f64,
    /// Added to the root of the accumulator.
    pub epsilon: f64,
    /// L2 penalty on the touched weights.
    pub l2: f64,
}

impl Default for SparseParams {
    fn default() -> Self {
        SparseParams {
            learning_rate: 0.1,
            epsilon: 1e-6,
            l2: 0.0,
        }
    }
}

impl SparseParams {
    /// Checks the ranges, naming the parameter at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "`learning_rate` should be a finite number > 0, not {}",
                self.learning_rate
            ));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(format!(
                "`epsilon` should be a finite number > 0, not {}",
                self.epsilon
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(format!(
                "`l2` should be a finite number >= 0, not {}",
                self.l2
            ));
        }
        Ok(())
    }
}

/// Weights of the columns ever touched, and a bias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseWeights {
    slots: HashMap<u32, Slot, BuildHasherDefault<ColumnHasher>>,
    bias: Slot,
}

impl SparseWeights {
    /// The raw score of a row: its columns' weights times their values, plus the bias.
    pub fn score(&self, x: &[(u32, f64)]) -> f64 {
        x.iter()
            .map(|&(c, v)| self.slots.get(&c).map_or(0.0, |s| s.w * v))
            .sum::<f64>()
            + self.bias.w
    }

    /// One AdaGrad step for the gradient `g` of the loss by the score.
    pub fn step(&mut self, x: &[(u32, f64)], g: f64, p: &SparseParams) {
        let adagrad = |s: &mut Slot, gi: f64| {
            s.g2 += gi * gi;
            s.w -= p.learning_rate * gi / (s.g2.sqrt() + p.epsilon);
        };
        for &(c, v) in x {
            let s = self.slots.entry(c).or_default();
            let gi = g * v + p.l2 * s.w;
            adagrad(s, gi);
        }
        adagrad(&mut self.bias, g);
    }

    /// Columns with a weight.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no column has a weight.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The weight of a column (0 if never touched).
    pub fn weight(&self, column: u32) -> f64 {
        self.slots.get(&column).map_or(0.0, |s| s.w)
    }
}

/// The plain form of [`SparseWeights`]: (column, weight, accumulator) sorted
/// by column, then the bias's pair.
#[derive(Serialize, Deserialize)]
struct SparseWeightsData {
    columns: Vec<(u32, f64, f64)>,
    bias: (f64, f64),
}

impl Serialize for SparseWeights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut columns: Vec<(u32, f64, f64)> =
            self.slots.iter().map(|(&c, x)| (c, x.w, x.g2)).collect();
        columns.sort_unstable_by_key(|x| x.0);
        SparseWeightsData {
            columns,
            bias: (self.bias.w, self.bias.g2),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SparseWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = SparseWeightsData::deserialize(d)?;
        Ok(SparseWeights {
            slots: data
                .columns
                .into_iter()
                .map(|(c, w, g2)| (c, Slot { w, g2 }))
                .collect(),
            bias: Slot {
                w: data.bias.0,
                g2: data.bias.1,
            },
        })
    }
}

/// Binary logistic regression over sparse rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseLogistic {
    params: SparseParams,
    weights: SparseWeights,
}

impl SparseLogistic {
    /// A fresh model (the parameters checked).
    pub fn new(params: SparseParams) -> Result<SparseLogistic, String> {
        params.validate()?;
        Ok(SparseLogistic {
            params,
            weights: SparseWeights::default(),
        })
    }

    /// The probability of class 1.
    pub fn predict(&self, x: &[(u32, f64)]) -> f64 {
        sigmoid(self.weights.score(x))
    }

    /// Learns one reading labelled 0 or 1.
    pub fn learn(&mut self, x: &[(u32, f64)], y: f64) {
        let g = self.predict(x) - y;
        self.weights.step(x, g, &self.params);
    }

    /// The weights.
    pub fn weights(&self) -> &SparseWeights {
        &self.weights
    }
}

/// Multinomial (softmax) logistic regression over sparse rows: one weight
/// set per class, classes numbered 0..k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseSoftmax {
    params: SparseParams,
    classes: Vec<SparseWeights>,
}

impl SparseSoftmax {
    /// A fresh model for `k` classes (at least 2).
    pub fn new(k: usize, params: SparseParams) -> Result<SparseSoftmax, String> {
        params.validate()?;
        if k < 2 {
            return Err(format!("a softmax model needs at least 2 classes, not {k}"));
        }
        Ok(SparseSoftmax {
            params,
            classes: vec![SparseWeights::default(); k],
        })
    }

    /// Classes.
    pub fn k(&self) -> usize {
        self.classes.len()
    }

    /// Each class's probability, into `out` (length k).
    pub fn predict(&self, x: &[(u32, f64)], out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.classes.iter().map(|w| w.score(x)));
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for v in out.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in out.iter_mut() {
            *v /= sum;
        }
    }

    /// Learns one reading of class `y` (< k).
    pub fn learn(
        &mut self,
        x: &[(u32, f64)],
        y: usize,
        scratch: &mut Vec<f64>,
    ) -> Result<(), String> {
        if y >= self.classes.len() {
            return Err(format!(
                "class {y} is not one of the model's {} classes",
                self.classes.len()
            ));
        }
        self.predict(x, scratch);
        for (k, w) in self.classes.iter_mut().enumerate() {
            let g = scratch[k] - if k == y { 1.0 } else { 0.0 };
            w.step(x, g, &self.params);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of two classes: class 1 has column 7, class 0 column 9; both have noise columns.
    fn row(i: u32, class1: bool) -> Vec<(u32, f64)> {
        let mut x = vec![(if class1 { 7 } else { 9 }, 1.0), (1000 + i % 50, 1.0)];
        x.sort_unstable_by_key(|c| c.0);
        x
    }

    #[test]
    fn logistic_learns_the_column_that_separates_and_touches_only_its_columns() {
        let mut m = SparseLogistic::new(SparseParams::default()).expect("valid");
        for i in 0..400 {
            m.learn(&row(i, i % 2 == 0), if i % 2 == 0 { 1.0 } else { 0.0 });
        }
        assert!(
            m.predict(&row(1, true)) > 0.75,
            "{}",
            m.predict(&row(1, true))
        );
        assert!(
            m.predict(&row(2, false)) < 0.25,
            "{}",
            m.predict(&row(2, false))
        );
        assert!(m.weights().weight(7) > 0.0 && m.weights().weight(9) < 0.0);
        assert_eq!(
            m.weights().len(),
            52,
            "columns 7, 9 and 50 noise columns, nothing else"
        );
    }

    #[test]
    fn softmax_probabilities_sum_to_one_and_it_learns_three_classes() {
        let mut m = SparseSoftmax::new(3, SparseParams::default()).expect("valid");
        let (mut p, mut scratch) = (Vec::new(), Vec::new());
        m.predict(&[(1, 1.0)], &mut p);
        assert_eq!(p, vec![1.0 / 3.0; 3], "untrained: uniform");
        for i in 0..600u32 {
            let y = (i % 3) as usize;
            m.learn(&[(y as u32 * 10, 1.0), (500 + i % 7, 1.0)], y, &mut scratch)
                .expect("a known class");
        }
        for y in 0..3usize {
            m.predict(&[(y as u32 * 10, 1.0)], &mut p);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|x| x.0);
            assert_eq!(best, Some(y), "{p:?}");
        }
        let e = m
            .learn(&[(1, 1.0)], 3, &mut scratch)
            .expect_err("no class 3");
        assert!(e.contains("class 3"), "{e}");
    }

    #[test]
    fn snapshots_are_sorted_and_round_trip_exactly() {
        let mut m = SparseLogistic::new(SparseParams::default()).expect("valid");
        for i in 0..50 {
            m.learn(&row(i, i % 3 == 0), (i % 3 == 0) as u8 as f64);
        }
        let json = serde_json::to_string(&m).expect("serialises");
        let back: SparseLogistic = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, m);
        assert_eq!(
            serde_json::to_string(&back).expect("again"),
            json,
            "deterministic"
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let cols: Vec<u64> = v["weights"]["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c[0].as_u64().expect("column"))
            .collect();
        assert!(cols.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        let e = SparseLogistic::new(SparseParams {
            learning_rate: 0.0,
            ..SparseParams::default()
        })
        .expect_err("no rate");
        assert!(e.contains("`learning_rate`"), "{e}");
        let e = SparseSoftmax::new(1, SparseParams::default()).expect_err("one class");
        assert!(e.contains("2 classes"), "{e}");
    }
}
