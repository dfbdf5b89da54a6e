//! Multinomial naive Bayes over a [`SparseModel`](super::SparseModel)'s
//! sparse columns, stacked under its logistic heads (learner
//! `naive_bayes = alpha`): counts per column and class, their logarithms
//! kept beside them, written sorted by column.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};

use super::{ColumnHasher, Slot};

/// Multinomial naive Bayes over the sparse columns, stacked under the
/// logistic model (learner `naive_bayes = alpha`): its class log-odds are
/// one more input of each class's score, with a weight learned like the
/// others. Naive Bayes learns from a handful of readings, logistic
/// regression goes further with many: together they start fast and end
/// well. Counts are of |value| (hashed columns may be signed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "NaiveBayesData")]
pub(super) struct NaiveBayes {
    pub(super) alpha: f64,
    /// Per column, per class: the count and ln(count + alpha), so that a
    /// prediction takes no logarithm per column.
    #[serde(with = "column_map")]
    pub(super) cells: HashMap<u32, Vec<(f64, f64)>, BuildHasherDefault<ColumnHasher>>,
    /// Per class: the sum of counts and the readings.
    pub(super) totals: Vec<f64>,
    pub(super) docs: Vec<f64>,
    /// The weight of each head's naive Bayes input.
    pub(super) weights: Vec<Slot>,
    /// ln(n + alpha) for whole counts n below its length.
    #[serde(skip)]
    table: LnTable,
}

/// [`NaiveBayes`] as written: its logarithms and table are worked out
/// again when it is read.
#[derive(Deserialize)]
struct NaiveBayesData {
    alpha: f64,
    #[serde(with = "column_map")]
    cells: HashMap<u32, Vec<(f64, f64)>, BuildHasherDefault<ColumnHasher>>,
    totals: Vec<f64>,
    docs: Vec<f64>,
    weights: Vec<Slot>,
}

impl From<NaiveBayesData> for NaiveBayes {
    fn from(d: NaiveBayesData) -> NaiveBayes {
        let mut nb = NaiveBayes {
            alpha: d.alpha,
            cells: d.cells,
            totals: d.totals,
            docs: d.docs,
            weights: d.weights,
            table: LnTable::default(),
        };
        nb.ready();
        nb
    }
}

/// ln(n + alpha) for n = 0..1024: counts of terms that occur once per text
/// are whole numbers, and a table look-up costs less than a logarithm.
#[derive(Debug, Clone, Default)]
struct LnTable(Vec<f64>);

impl PartialEq for LnTable {
    fn eq(&self, _: &LnTable) -> bool {
        true
    }
}

/// A column map written as a list sorted by column (deterministic).
mod column_map {
    use super::*;

    type Map = HashMap<u32, Vec<(f64, f64)>, BuildHasherDefault<ColumnHasher>>;

    pub fn serialize<S: serde::Serializer>(m: &Map, s: S) -> Result<S::Ok, S::Error> {
        let mut v: Vec<(u32, Vec<f64>)> = m
            .iter()
            .map(|(&c, cells)| (c, cells.iter().map(|x| x.0).collect()))
            .collect();
        v.sort_unstable_by_key(|x| x.0);
        v.serialize(s)
    }

    /// Counts only are written; their logarithms are worked out again.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map, D::Error> {
        Ok(Vec::<(u32, Vec<f64>)>::deserialize(d)?
            .into_iter()
            .map(|(c, counts)| (c, counts.into_iter().map(|n| (n, f64::NAN)).collect()))
            .collect())
    }
}

impl NaiveBayes {
    pub(super) fn new(alpha: f64, classes: usize, heads: usize) -> NaiveBayes {
        NaiveBayes {
            alpha,
            cells: HashMap::default(),
            totals: vec![0.0; classes],
            docs: vec![0.0; classes],
            weights: vec![Slot::default(); heads],
            table: LnTable::default(),
        }
    }

    /// Fills what is not written in a snapshot (the table, the logarithms).
    pub(super) fn ready(&mut self) {
        if self.table.0.is_empty() {
            self.table = LnTable((0..1024).map(|n| (n as f64 + self.alpha).ln()).collect());
            let alpha = self.alpha;
            for cells in self.cells.values_mut() {
                for (n, l) in cells.iter_mut() {
                    *l = (*n + alpha).ln();
                }
            }
        }
    }

    pub(super) fn grow(&mut self, classes: usize, heads: usize) {
        if self.totals.len() < classes {
            self.totals.resize(classes, 0.0);
            self.docs.resize(classes, 0.0);
            let unseen = (0.0, self.alpha.ln());
            for v in self.cells.values_mut() {
                v.resize(classes, unseen);
            }
        }
        if self.weights.len() < heads {
            self.weights.resize(heads, Slot::default());
        }
    }

    /// Each class's log-probability of `x` (up to a constant), into `out`,
    /// centred (their mean subtracted).
    pub(super) fn log_probs(&self, x: &[(u32, f64)], out: &mut [f64]) {
        let k = self.totals.len().min(out.len());
        let n: f64 = self.docs.iter().sum();
        let d = self.cells.len() as f64 + 1.0;
        let mass: f64 = x.iter().map(|(_, v)| v.abs()).sum();
        let unseen = self.alpha.ln();
        for (j, o) in out.iter_mut().enumerate().take(k) {
            let prior = ((self.docs[j] + 1.0) / (n + k as f64)).ln();
            *o = prior - mass * (self.totals[j] + self.alpha * d).ln();
        }
        for &(c, v) in x {
            let a = v.abs();
            match self.cells.get(&c) {
                Some(cells) => out
                    .iter_mut()
                    .zip(cells)
                    .for_each(|(o, (_, l))| *o += a * l),
                None => out[..k].iter_mut().for_each(|o| *o += a * unseen),
            }
        }
        let mean = out[..k].iter().sum::<f64>() / k.max(1) as f64;
        out[..k].iter_mut().for_each(|o| *o -= mean);
    }

    pub(super) fn count(&mut self, x: &[(u32, f64)], class: usize) {
        let k = self.totals.len();
        let unseen = (0.0, self.alpha.ln());
        for &(c, v) in x {
            let a = v.abs();
            let cells = self.cells.entry(c).or_insert_with(|| vec![unseen; k]);
            let n = cells[class].0 + a;
            let i = n as usize;
            let l = match self.table.0.get(i) {
                Some(&l) if i as f64 == n => l,
                _ => (n + self.alpha).ln(),
            };
            cells[class] = (n, l);
            self.totals[class] += a;
        }
        self.docs[class] += 1.0;
    }
}
