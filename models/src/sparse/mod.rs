//! [`SparseModel`]: binary or multinomial (softmax) logistic regression over
//! rows with a sparse part (hashed text and category columns) and a dense
//! part (numbers, one-hot categories), learned one reading at a time.
//!
//! A reading touches only its non-zero sparse columns, so 2^20 hashed
//! columns cost what the reading's terms cost. Sparse weights live in a map
//! of the columns ever touched, each with its optimiser state, kept in
//! `f32` (16 bytes a column; worked out in `f64`: `SparseSlot`); dense
//! columns are standardised online (as in [`crate::LinearModel`]) and have
//! a weight vector of their own. Optimisers: the per-coordinate ones of
//! [`OptimizerParams`] (SGD, AdaGrad, FTRL-Proximal); the others keep state
//! that couples coordinates or grows with every column and are refused with
//! the reason. Snapshots list the sparse columns sorted, so they are
//! deterministic and round-trip exactly.
//!
//! Multiclass: one weight set per class, classes numbered 0.. in the order
//! the caller gives (declared or learned in order of appearance); a class
//! seen for the first time gets a fresh weight set, so the number of
//! classes may grow while learning.

use std::hash::Hasher;

use serde::{Deserialize, Serialize};

use crate::columns::ColumnMap;
use crate::error::ModelError;
use crate::linear::{LinearParams, ValidLinearParams};
use crate::loss::{sigmoid, Loss};
use crate::optim::OptimizerParams;
use crate::pages::{ColumnPage, PageSet, SparseColumns};
use crate::scaler::OnlineScaler;

mod naive_bayes;

use naive_bayes::NaiveBayes;

/// Naive Bayes log-odds are divided by this before they are an input.
const NB_SCALE: f64 = 5.0;

/// The most classes a multiclass model learns.
pub const MAX_CLASSES: usize = 1000;

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

/// One weight and its optimiser state: AdaGrad's sum of squared gradients
/// in `a`; FTRL's `z` in `a` and `n` in `b`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub(crate) w: f64,
    pub(crate) a: f64,
    pub(crate) b: f64,
}

/// A sparse column's [`Slot`] as its head's table keeps it: in `f32`, so
/// that a column and its slot fill 16 bytes, four to a cache line, and a
/// table of a few hundred thousand columns half the cache it would in
/// `f64`. Steps are worked out in `f64` and rounded once as they are kept;
/// snapshots write the kept values, so they round-trip exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SparseSlot {
    pub(crate) w: f32,
    pub(crate) a: f32,
    pub(crate) b: f32,
}

impl SparseSlot {
    /// `s`, rounded to the nearest `f32`s.
    #[inline(always)]
    pub(crate) fn of(s: Slot) -> SparseSlot {
        SparseSlot {
            w: s.w as f32,
            a: s.a as f32,
            b: s.b as f32,
        }
    }

    /// This slot in `f64` (exactly).
    #[inline(always)]
    pub(crate) fn get(self) -> Slot {
        Slot {
            w: f64::from(self.w),
            a: f64::from(self.a),
            b: f64::from(self.b),
        }
    }
}

/// The optimiser of a sparse model, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Sgd {
        lr: f64,
        power_t: f64,
        l2: f64,
    },
    Adagrad {
        lr: f64,
        eps: f64,
        l2: f64,
    },
    Ftrl {
        alpha: f64,
        beta: f64,
        l1: f64,
        l2: f64,
    },
    /// Diagonal online Newton (the extended Kalman filter of the logistic
    /// loss with a diagonal covariance): `a` is a weight's precision beyond
    /// the prior's, `prior` the prior precision.
    Newton {
        prior: f64,
    },
}

impl Step {
    fn of(p: &LinearParams) -> Result<Step, ModelError> {
        if p.l1 != 0.0 && !matches!(p.optimizer, OptimizerParams::Ftrl { .. }) {
            return Err(ModelError::InvalidParam {
                name: "l1",
                expected: "0 with sparse (text or hashed) features unless the optimizer is ftrl",
                actual: p.l1.to_string(),
            });
        }
        Ok(match p.optimizer {
            OptimizerParams::Sgd {
                learning_rate,
                power_t,
            } => Step::Sgd {
                lr: learning_rate,
                power_t,
                l2: p.l2,
            },
            OptimizerParams::Adagrad {
                learning_rate,
                epsilon,
            } => Step::Adagrad {
                lr: learning_rate,
                eps: epsilon,
                l2: p.l2,
            },
            OptimizerParams::Ftrl { alpha, beta } => Step::Ftrl {
                alpha,
                beta,
                l1: p.l1,
                l2: p.l2,
            },
            OptimizerParams::Newton {
                prior_variance,
                forgetting,
            } => {
                if forgetting != 1.0 {
                    return Err(ModelError::InvalidParam {
                        name: "optimizer.forgetting",
                        expected: "1 on a model with sparse (text or hashed) features or several classes (its Newton steps are diagonal and do not forget)",
                        actual: forgetting.to_string(),
                    });
                }
                Step::Newton {
                    prior: 1.0 / prior_variance,
                }
            }
            other => {
                let d = format!("{other:?}");
                return Err(ModelError::InvalidParam {
                    name: "optimizer.kind",
                    expected: "sgd, adagrad, ftrl or newton for a model with sparse (text or hashed) features or several classes (per-coordinate optimisers)",
                    actual: d
                        .split([' ', '{'])
                        .next()
                        .unwrap_or_default()
                        .to_lowercase(),
                });
            }
        })
    }

    /// Moves `s` against the gradient `g` of the loss by its weight; `t` is
    /// the number of steps taken (from 1); penalties unless `bias`.
    #[inline]
    fn apply(&self, s: &mut Slot, g: f64, t: f64, bias: bool) {
        match *self {
            Step::Sgd { lr, power_t, l2 } => {
                let g = if bias { g } else { g + l2 * s.w };
                s.w -= lr / t.powf(power_t) * g;
            }
            Step::Adagrad { lr, eps, l2 } => {
                let g = if bias { g } else { g + l2 * s.w };
                Step::adagrad(s, g, lr, eps);
            }
            Step::Ftrl {
                alpha,
                beta,
                l1,
                l2,
            } => {
                let (l1, l2) = if bias { (0.0, 0.0) } else { (l1, l2) };
                let sigma = ((s.b + g * g).sqrt() - s.b.sqrt()) / alpha;
                s.a += g - sigma * s.w;
                s.b += g * g;
                s.w = if s.a.abs() <= l1 {
                    0.0
                } else {
                    -(s.a - s.a.signum() * l1) / ((beta + s.b.sqrt()) / alpha + l2)
                };
            }
            // Newton steps need the whole row's variance: see `Head::newton`
            Step::Newton { .. } => {}
        }
    }

    /// AdaGrad's step of `s` for the gradient `g` (penalty included).
    #[inline(always)]
    fn adagrad(s: &mut Slot, g: f64, lr: f64, eps: f64) {
        s.a += g * g;
        s.w -= lr * g / (s.a.sqrt() + eps);
    }

    /// The prior precision of a Newton step, if this is one.
    fn newton_prior(&self) -> Option<f64> {
        match *self {
            Step::Newton { prior } => Some(prior),
            _ => None,
        }
    }
}

/// One class's weights: the sparse columns ever touched, the dense
/// columns, and a bias.
#[derive(Debug, Clone, Default, PartialEq)]
struct Head {
    sparse: ColumnMap<SparseSlot>,
    dense: Vec<Slot>,
    bias: Slot,
}

impl Head {
    fn new(dense: usize) -> Head {
        Head {
            dense: vec![Slot::default(); dense],
            ..Head::default()
        }
    }

    #[inline]
    fn score(&self, z: &[f64], x: &[(u32, f64)]) -> f64 {
        let sparse: f64 = x
            .iter()
            .map(|&(c, v)| self.sparse.get(c).map_or(0.0, |s| f64::from(s.w) * v))
            .sum();
        let dense: f64 = self.dense.iter().zip(z).map(|(s, v)| s.w * v).sum();
        sparse + dense + self.bias.w
    }

    /// The score and its variance under the weights' diagonal Gaussian
    /// (prior precision `prior`; each slot's `a` is its precision beyond).
    #[inline]
    fn score_variance(&self, z: &[f64], x: &[(u32, f64)], prior: f64) -> (f64, f64) {
        let (mut m, mut v) = (self.bias.w, 1.0 / (prior + self.bias.a));
        for &(c, x) in x {
            match self.sparse.get(c) {
                Some(s) => {
                    m += f64::from(s.w) * x;
                    v += x * x / (prior + f64::from(s.a));
                }
                None => v += x * x / prior,
            }
        }
        for (s, &x) in self.dense.iter().zip(z) {
            m += s.w * x;
            v += x * x / (prior + s.a);
        }
        (m, v)
    }

    /// A diagonal Newton (EKF) step for the gradient `g` and curvature `h`
    /// of the loss by the score, whose variance is `v`.
    fn newton(&mut self, z: &[f64], x: &[(u32, f64)], g: f64, h: f64, v: f64, prior: f64) {
        let k = g / (1.0 + h * v);
        let step = |s: &mut Slot, x: f64| {
            s.w -= x * k / (prior + s.a);
            s.a += h * x * x;
        };
        for &(c, x) in x {
            let kept = self.sparse.get_or_default(c);
            let mut s = kept.get();
            step(&mut s, x);
            *kept = SparseSlot::of(s);
        }
        for (s, &x) in self.dense.iter_mut().zip(z) {
            if x != 0.0 {
                step(s, x);
            }
        }
        step(&mut self.bias, 1.0);
    }

    /// Calls `apply` on each sparse column's slot with the column's value,
    /// first pushing the slot as it was onto `old`; false if a weight
    /// became non-finite.
    #[inline(always)]
    fn step_sparse(
        &mut self,
        x: &[(u32, f64)],
        old: &mut Vec<Slot>,
        mut apply: impl FnMut(&mut Slot, f64),
    ) -> bool {
        let mut ok = true;
        for &(c, v) in x {
            let kept = self.sparse.get_or_default(c);
            let mut s = kept.get();
            old.push(s);
            apply(&mut s, v);
            *kept = SparseSlot::of(s);
            // finite in f64 may be too large for f32
            ok &= kept.w.is_finite();
        }
        ok
    }

    /// One step; false, and the head as it was, if a weight it touched
    /// became non-finite (the old slots are kept in `old` to undo it).
    fn step(
        &mut self,
        z: &[f64],
        x: &[(u32, f64)],
        g: f64,
        t: f64,
        opt: &Step,
        old: &mut Vec<Slot>,
    ) -> bool {
        old.clear();
        let mut ok = match *opt {
            // the sparse columns of a text model without a penalty (the
            // shipped ones): the optimiser decided once, not per column
            Step::Adagrad { lr, eps, l2: 0.0 } => {
                self.step_sparse(x, old, |s, v| Step::adagrad(s, g * v, lr, eps))
            }
            _ => self.step_sparse(x, old, |s, v| opt.apply(s, g * v, t, false)),
        };
        let dense_from = old.len();
        old.extend_from_slice(&self.dense);
        for (s, &v) in self.dense.iter_mut().zip(z) {
            if v != 0.0 {
                opt.apply(s, g * v, t, false);
                ok &= s.w.is_finite();
            }
        }
        let bias = self.bias;
        opt.apply(&mut self.bias, g, t, true);
        ok &= self.bias.w.is_finite();
        if !ok {
            for (&(c, _), s) in x.iter().zip(old.iter()) {
                self.sparse.insert(c, SparseSlot::of(*s));
            }
            self.dense.copy_from_slice(&old[dense_from..]);
            self.bias = bias;
        }
        ok
    }
}

/// The plain form of a [`Head`]: sparse (column, weight, a, b) sorted by
/// column, the dense slots, the bias.
#[derive(Serialize, Deserialize)]
struct HeadData {
    sparse: Vec<(u32, f64, f64, f64)>,
    dense: Vec<Slot>,
    bias: Slot,
}

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut sparse: Vec<(u32, f64, f64, f64)> = self
            .sparse
            .iter()
            .map(|(c, x)| {
                let x = x.get();
                (c, x.w, x.a, x.b)
            })
            .collect();
        sparse.sort_unstable_by_key(|x| x.0);
        HeadData {
            sparse,
            dense: self.dense.clone(),
            bias: self.bias,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = HeadData::deserialize(d)?;
        Ok(Head {
            sparse: data
                .sparse
                .into_iter()
                .map(|(c, w, a, b)| (c, SparseSlot::of(Slot { w, a, b })))
                .collect(),
            dense: data.dense,
            bias: data.bias,
        })
    }
}

/// Logistic regression over a dense and a sparse part: binary (the
/// probability of class 1) or multinomial (a probability per class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseModel {
    params: ValidLinearParams,
    multiclass: bool,
    scaler: OnlineScaler,
    /// One (binary) or one per class seen or declared.
    heads: Vec<Head>,
    learned: u64,
    /// Steps taken (SGD's decay).
    steps: u64,
    /// Naive Bayes stacked under it (learner `naive_bayes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nb: Option<NaiveBayes>,
    #[serde(skip)]
    scratch: Scratch,
    /// The pages of the sparse columns learned since they were last taken
    /// (all, in a model read from a snapshot).
    #[serde(skip)]
    dirty: PageSet,
}

/// Reused buffers: not state, so equal whatever they hold.
#[derive(Debug, Clone, Default)]
struct Scratch(Vec<f64>, Vec<f64>, Vec<Slot>);

impl PartialEq for Scratch {
    fn eq(&self, _: &Scratch) -> bool {
        true
    }
}

impl SparseModel {
    /// A fresh model: binary, or `classes` classes to start with (more may
    /// come while learning). `scale_mask` says which dense columns are
    /// standardised online. The learner must use the logistic loss (the
    /// multinomial one with several classes) and a per-coordinate optimiser.
    pub fn new(
        params: ValidLinearParams,
        scale_mask: Vec<bool>,
        classes: Option<usize>,
    ) -> Result<SparseModel, ModelError> {
        Self::check(params.get(), classes.is_some())?;
        let dense = scale_mask.len();
        let heads = match classes {
            Some(k) => vec![Head::new(dense); k.min(MAX_CLASSES)],
            None => vec![Head::new(dense)],
        };
        let heads_len = heads.len();
        Ok(SparseModel {
            scaler: OnlineScaler::with_scaling(scale_mask, params.get().scaling),
            params,
            multiclass: classes.is_some(),
            heads,
            learned: 0,
            steps: 0,
            nb: params.get().naive_bayes.map(|alpha| {
                let k = classes.map_or(2, |k| k.min(MAX_CLASSES));
                let mut nb = NaiveBayes::new(alpha, k, heads_len);
                nb.ready();
                nb
            }),
            scratch: Scratch::default(),
            dirty: PageSet::none(),
        })
    }

    fn check(p: &LinearParams, multiclass: bool) -> Result<Step, ModelError> {
        if p.naive_bayes.is_some() && matches!(p.optimizer, OptimizerParams::Newton { .. }) {
            return Err(ModelError::InvalidParam {
                name: "naive_bayes",
                expected: "unset with the newton optimiser (its weight is learned by gradient steps: use sgd, adagrad or ftrl)",
                actual: format!("{:?}", p.naive_bayes),
            });
        }
        if p.loss != Loss::Logistic && !(multiclass && p.loss == Loss::default()) {
            return Err(ModelError::InvalidParam {
                name: "loss.kind",
                expected: "logistic with sparse (text or hashed) features or several classes",
                actual: format!("{:?}", p.loss).to_lowercase(),
            });
        }
        Step::of(p)
    }

    /// Takes new hyper-parameters of the same kind, keeping what was learned.
    pub fn retune(&mut self, params: ValidLinearParams) -> Result<(), ModelError> {
        Self::check(params.get(), self.multiclass)?;
        let (old, new) = (self.params.get(), params.get());
        let kind = |o: &OptimizerParams| {
            std::mem::discriminant(o) == std::mem::discriminant(&new.optimizer)
        };
        if !kind(&old.optimizer) {
            return Err(ModelError::Retune {
                name: "optimizer.kind",
                kept: format!("{:?}", old.optimizer),
                new: format!("{:?}", new.optimizer),
            });
        }
        if old.naive_bayes != new.naive_bayes {
            return Err(ModelError::Retune {
                name: "naive_bayes",
                kept: format!("{:?}", old.naive_bayes),
                new: format!("{:?}", new.naive_bayes),
            });
        }
        if old.scaling != new.scaling {
            return Err(ModelError::Retune {
                name: "scaling",
                kept: format!("{:?}", old.scaling),
                new: format!("{:?}", new.scaling),
            });
        }
        self.params = params;
        Ok(())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &LinearParams {
        self.params.get()
    }

    /// True for a multinomial model.
    pub fn is_multiclass(&self) -> bool {
        self.multiclass
    }

    /// Classes with a weight set (multiclass), 2 for a binary model.
    pub fn classes(&self) -> usize {
        if self.multiclass {
            self.heads.len()
        } else {
            2
        }
    }

    /// Dense columns the model expects.
    pub fn n_dense(&self) -> usize {
        self.scaler.len()
    }

    /// Sparse columns with a weight (over all classes).
    pub fn sparse_columns(&self) -> usize {
        self.heads.iter().map(|h| h.sparse.len()).sum()
    }

    /// Labelled readings learned.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// The dense weights and bias of class `k` (0 for a binary model), on
    /// standardised columns.
    pub fn dense_weights(&self, k: usize) -> Option<(Vec<f64>, f64)> {
        self.heads
            .get(k)
            .map(|h| (h.dense.iter().map(|s| s.w).collect(), h.bias.w))
    }

    /// The weight of sparse column `c` for class `k`.
    pub fn sparse_weight(&self, k: usize, c: u32) -> f64 {
        self.heads
            .get(k)
            .and_then(|h| h.sparse.get(c))
            .map_or(0.0, |s| f64::from(s.w))
    }

    /// The pages (see [`crate::pages`]) of the sparse columns learned
    /// since the last call, ascending; every page the first time after the
    /// model was read from a snapshot.
    pub fn take_dirty_pages(&mut self) -> Vec<u32> {
        self.dirty.take()
    }

    /// Takes the sparse columns out of the model (of every class, and naive
    /// Bayes' counts), leaving it without them: a checkpoint writes them
    /// page by page beside the rest.
    pub fn take_columns(&mut self) -> SparseColumns {
        let heads = self
            .heads
            .iter_mut()
            .map(|h| std::mem::take(&mut h.sparse))
            .collect();
        let nb = match &mut self.nb {
            Some(nb) => {
                let mut v: Vec<(u32, Vec<f64>)> = std::mem::take(&mut nb.cells)
                    .into_iter()
                    .map(|(c, cells)| (c, cells.into_iter().map(|x| x.0).collect()))
                    .collect();
                v.sort_unstable_by_key(|x| x.0);
                v
            }
            None => Vec::new(),
        };
        SparseColumns { heads, nb }
    }

    /// Puts a page of columns taken by [`SparseModel::take_columns`] back.
    pub fn put_page(&mut self, page: ColumnPage) -> Result<(), ModelError> {
        if page.heads.len() > self.heads.len() {
            return Err(ModelError::InvalidParam {
                name: "page",
                expected: "no more classes than the model has",
                actual: format!(
                    "{} classes, the model {}",
                    page.heads.len(),
                    self.heads.len()
                ),
            });
        }
        for (head, columns) in self.heads.iter_mut().zip(page.heads) {
            for (c, w, a, b) in columns {
                head.sparse.insert(c, SparseSlot { w, a, b });
            }
        }
        match &mut self.nb {
            Some(nb) => {
                let alpha = nb.alpha;
                for (c, counts) in page.nb {
                    let cells = counts.into_iter().map(|n| (n, (n + alpha).ln())).collect();
                    nb.cells.insert(c, cells);
                }
            }
            None if !page.nb.is_empty() => {
                return Err(ModelError::InvalidParam {
                    name: "page",
                    expected: "no naive Bayes counts (the model has no naive Bayes)",
                    actual: format!("counts of {} columns", page.nb.len()),
                })
            }
            None => {}
        }
        Ok(())
    }

    fn check_row(&self, dense: &[f64]) -> Result<(), ModelError> {
        if dense.len() != self.scaler.len() {
            return Err(ModelError::WrongFeatureCount {
                expected: self.scaler.len(),
                actual: dense.len(),
            });
        }
        if let Some((index, &value)) = dense.iter().enumerate().find(|(_, v)| v.is_infinite()) {
            return Err(ModelError::NonFinite { index, value });
        }
        Ok(())
    }

    /// The naive Bayes input of each head, into `out` (empty without it).
    fn nb_inputs(&self, x: &[(u32, f64)], out: &mut Vec<f64>) {
        out.clear();
        let Some(nb) = &self.nb else { return };
        out.resize(nb.totals.len(), 0.0);
        let n = self.nb_terms(nb, x, out);
        out.truncate(n);
        out.iter_mut().for_each(|v| *v /= NB_SCALE);
    }

    /// Each head's naive Bayes input, unscaled, into `lp` (one per class
    /// long): the class log-probabilities, or for a binary model the
    /// log-odds in `lp[0]`; how many of `lp` are inputs.
    fn nb_terms(&self, nb: &NaiveBayes, x: &[(u32, f64)], lp: &mut [f64]) -> usize {
        nb.log_probs(x, lp);
        let n = if self.multiclass {
            lp.len()
        } else {
            lp[0] = lp.get(1).copied().unwrap_or(0.0) - lp.first().copied().unwrap_or(0.0);
            1.min(lp.len())
        };
        n
    }

    /// Adds each head's naive Bayes term to its score (nothing without it).
    fn add_nb(&self, x: &[(u32, f64)], out: &mut [f64]) {
        let Some(nb) = &self.nb else { return };
        let mut buf = [0.0; 8];
        let mut heap = Vec::new();
        let k = nb.totals.len();
        let lp: &mut [f64] = if k <= buf.len() {
            &mut buf[..k]
        } else {
            heap.resize(k, 0.0);
            &mut heap
        };
        let n = self.nb_terms(nb, x, lp);
        for ((o, v), w) in out.iter_mut().zip(&lp[..n]).zip(&nb.weights) {
            *o += w.w * v / NB_SCALE;
        }
    }

    /// Each head's probability (binary: the one), into `out`; `moderate`
    /// shrinks a Newton model's scores by their uncertainty (the probit
    /// approximation of the predictive probability) when predicting.
    fn probabilities(&self, z: &[f64], x: &[(u32, f64)], moderate: bool, out: &mut Vec<f64>) {
        match Step::of(self.params.get())
            .ok()
            .and_then(|s| s.newton_prior())
        {
            Some(prior) if moderate => {
                out.clear();
                out.extend(self.heads.iter().map(|h| {
                    let (m, v) = h.score_variance(z, x, prior);
                    m / (1.0 + std::f64::consts::PI * v / 8.0).sqrt()
                }));
                self.add_nb(x, out);
                if self.multiclass {
                    softmax(out);
                } else if let Some(p) = out.first_mut() {
                    *p = sigmoid(*p);
                }
            }
            _ => self.scores(z, x, out),
        }
    }

    fn scores(&self, z: &[f64], x: &[(u32, f64)], out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.heads.iter().map(|h| h.score(z, x)));
        self.add_nb(x, out);
        if self.multiclass {
            softmax(out);
        } else if let Some(p) = out.first_mut() {
            *p = sigmoid(*p);
        }
    }

    /// Predicts one reading: for a binary model the probability of class 1
    /// (and `probs` empty); for a multiclass one the most probable class's
    /// number, with each class's probability in `probs` (empty before any
    /// class is known).
    pub fn predict(
        &self,
        dense: &[f64],
        sparse: &[(u32, f64)],
        probs: &mut Vec<f64>,
    ) -> Result<f64, ModelError> {
        self.check_row(dense)?;
        let mut z = [0.0; 64];
        let mut heap = Vec::new();
        let z: &mut [f64] = if dense.len() <= z.len() {
            &mut z[..dense.len()]
        } else {
            heap.resize(dense.len(), 0.0);
            &mut heap
        };
        self.scaler.transform(dense, z);
        let newton = matches!(self.params.get().optimizer, OptimizerParams::Newton { .. });
        if self.multiclass {
            self.probabilities(z, sparse, true, probs);
            Ok(argmax(probs).map_or(f64::NAN, |k| k as f64))
        } else if self.nb.is_some() || newton {
            self.probabilities(z, sparse, true, probs);
            let p = probs.first().copied().unwrap_or(0.5);
            probs.clear();
            Ok(p)
        } else {
            probs.clear();
            Ok(self
                .heads
                .first()
                .map_or(0.5, |h| sigmoid(h.score(z, sparse))))
        }
    }

    /// Learns one reading: `y` is 0 or 1 (binary) or the class number.
    pub fn learn(
        &mut self,
        dense: &[f64],
        sparse: &[(u32, f64)],
        y: f64,
    ) -> Result<(), ModelError> {
        self.learn_predicted(dense, sparse, y, None)
    }

    /// [`SparseModel::learn`] of a reading this model has just predicted,
    /// unchanged since: `predicted` is what [`SparseModel::predict`] gave
    /// (the probability of class 1, or each class's probability), reused
    /// instead of predicting again when no dense column is standardised
    /// (then learning sees the very same row and weights).
    pub fn learn_predicted(
        &mut self,
        dense: &[f64],
        sparse: &[(u32, f64)],
        y: f64,
        predicted: Option<(f64, &[f64])>,
    ) -> Result<(), ModelError> {
        self.check_row(dense)?;
        let opt = Step::of(self.params.get())?;
        if self.multiclass {
            if !(y >= 0.0 && y.fract() == 0.0 && (y as usize) < MAX_CLASSES) {
                return Err(ModelError::InvalidLabel {
                    expected: "a class number below 1000",
                    actual: y,
                });
            }
            let k = y as usize;
            if k >= self.heads.len() {
                let n = self.scaler.len();
                self.heads.resize_with(k + 1, || Head::new(n));
            }
            if let Some(nb) = &mut self.nb {
                nb.grow(self.heads.len(), self.heads.len());
            }
        } else if y != 0.0 && y != 1.0 {
            return Err(ModelError::InvalidLabel {
                expected: "0 or 1",
                actual: y,
            });
        }
        for &(c, _) in sparse {
            self.dirty.mark(c);
        }
        let mut z = std::mem::take(&mut self.scratch.0);
        let mut p = std::mem::take(&mut self.scratch.1);
        let mut new = std::mem::take(&mut self.scratch.2);
        z.resize(dense.len(), 0.0);
        self.scaler.update_transform(dense, &mut z);
        // a Newton model's prediction is moderated; its step wants the mean's
        let newton = opt.newton_prior();
        let known = predicted.filter(|_| !self.scaler.scales_any() && newton.is_none());
        match known {
            Some((_, probs)) if self.multiclass && probs.len() == self.heads.len() => {
                p.clear();
                p.extend_from_slice(probs);
            }
            Some((p1, _)) if !self.multiclass => {
                p.clear();
                p.push(p1);
            }
            _ => self.scores(&z, sparse, &mut p),
        }
        let t = (self.steps + 1) as f64;
        let mut ok = true;
        for (k, head) in self.heads.iter_mut().enumerate() {
            let target = if self.multiclass {
                f64::from(u8::from(k as f64 == y))
            } else {
                y
            };
            if let Some(prior) = newton {
                let (_, v) = head.score_variance(&z, sparse, prior);
                let h = if self.multiclass {
                    p[k] * (1.0 - p[k])
                } else {
                    p[0] * (1.0 - p[0])
                };
                head.newton(&z, sparse, p[k] - target, h, v, prior);
                continue;
            }
            // a head refused leaves the others stepped: rare enough (a
            // weight overflowing) that the model is then reported diverged
            ok &= head.step(&z, sparse, p[k] - target, t, &opt, &mut new);
        }
        if ok && self.nb.is_some() {
            let mut inputs = Vec::new();
            self.nb_inputs(sparse, &mut inputs);
            if let Some(nb) = &mut self.nb {
                for (k, (w, v)) in nb.weights.iter_mut().zip(&inputs).enumerate() {
                    let target = if self.multiclass {
                        f64::from(u8::from(k as f64 == y))
                    } else {
                        y
                    };
                    opt.apply(w, (p[k] - target) * v, t, false);
                }
                nb.count(sparse, y as usize);
            }
        }
        self.scratch = Scratch(z, p, new);
        if !ok {
            return Err(ModelError::Diverged {
                value: f64::INFINITY,
            });
        }
        self.steps += 1;
        self.learned += 1;
        Ok(())
    }
}

/// Probabilities from scores, in place (stable: the largest score subtracted).
fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The index of the largest value (the first of ties).
pub fn argmax(v: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &x) in v.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|b| b.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(opt: OptimizerParams) -> ValidLinearParams {
        LinearParams {
            loss: Loss::Logistic,
            optimizer: opt,
            ..LinearParams::default()
        }
        .validate()
        .expect("valid")
    }

    fn with_nb(alpha: Option<f64>) -> ValidLinearParams {
        LinearParams {
            loss: Loss::Logistic,
            naive_bayes: alpha,
            ..LinearParams::default()
        }
        .validate()
        .expect("valid")
    }

    fn adagrad() -> ValidLinearParams {
        params(OptimizerParams::Adagrad {
            learning_rate: 0.1,
            epsilon: 1e-6,
        })
    }

    #[test]
    fn adagrad_without_a_penalty_steps_as_the_general_step_does() {
        // the loop written out for AdaGrad without l2 against the one that
        // asks the optimiser for each column, on the same head and row
        let opt = Step::Adagrad {
            lr: 0.3,
            eps: 1e-6,
            l2: 0.0,
        };
        let x: Vec<(u32, f64)> = (0..40u32)
            .map(|i| (i * 7919, 0.1 * f64::from(i) - 1.55))
            .collect();
        let mut fast = Head::new(0);
        let mut general = Head::new(0);
        let mut old = Vec::new();
        for (i, g) in [0.7, -0.2, 0.05, -0.9].into_iter().enumerate() {
            let t = (i + 1) as f64;
            assert!(fast.step(&[], &x, g, t, &opt, &mut old));
            for &(c, v) in &x {
                let kept = general.sparse.get_or_default(c);
                let mut s = kept.get();
                opt.apply(&mut s, g * v, t, false);
                *kept = SparseSlot::of(s);
            }
            opt.apply(&mut general.bias, g, t, true);
        }
        assert_eq!(fast, general);
        assert!(fast.sparse.iter().all(|(_, s)| s.w != 0.0 && s.a > 0.0));
    }

    #[test]
    fn a_step_too_large_for_the_kept_f32_is_undone_and_kept_slots_are_rounded_once() {
        let opt = Step::Sgd {
            lr: 1.0,
            power_t: 0.0,
            l2: 0.0,
        };
        let x = [(3u32, 1.0), (u32::MAX, 1.0)];
        let mut head = Head::new(0);
        let mut old = Vec::new();
        // a weight of 0.1 rounds to the nearest f32, as kept
        assert!(head.step(&[], &x, -0.1, 1.0, &opt, &mut old));
        let kept = head.clone();
        assert_eq!(head.sparse.get(3).map(|s| s.w), Some(0.1f32));
        assert_eq!(head.sparse.get(u32::MAX).map(|s| s.w), Some(0.1f32));
        // 1e39 is finite in f64 but not in f32: the step is undone
        assert!(!head.step(&[], &x, -1e39, 2.0, &opt, &mut old));
        assert_eq!(head, kept, "undone");
    }

    /// Rows of two classes: class 1 has column 7, class 0 column 9; both have noise columns.
    fn row(i: u32, class1: bool) -> Vec<(u32, f64)> {
        let mut x = vec![(if class1 { 7 } else { 9 }, 1.0), (1000 + i % 50, 1.0)];
        x.sort_unstable_by_key(|c| c.0);
        x
    }

    #[test]
    fn binary_learns_the_column_that_separates_and_touches_only_its_columns() {
        for opt in [
            OptimizerParams::Adagrad {
                learning_rate: 0.1,
                epsilon: 1e-6,
            },
            OptimizerParams::Sgd {
                learning_rate: 0.5,
                power_t: 0.25,
            },
            OptimizerParams::Ftrl {
                alpha: 0.5,
                beta: 1.0,
            },
        ] {
            let mut m = SparseModel::new(params(opt), vec![], None).expect("valid");
            let mut probs = Vec::new();
            for i in 0..400 {
                let y = f64::from(u8::from(i % 2 == 0));
                m.learn(&[], &row(i, i % 2 == 0), y).expect("learns");
            }
            let p1 = m.predict(&[], &row(1, true), &mut probs).expect("p");
            let p0 = m.predict(&[], &row(2, false), &mut probs).expect("p");
            assert!(p1 > 0.75 && p0 < 0.25, "{opt:?}: {p1} {p0}");
            assert!(m.sparse_weight(0, 7) > 0.0 && m.sparse_weight(0, 9) < 0.0);
            assert_eq!(m.sparse_columns(), 52, "7, 9 and 50 noise columns");
            assert!(probs.is_empty(), "binary: no class list");
        }
    }

    #[test]
    fn dense_and_sparse_columns_learn_together() {
        // class 1 when the dense column is large (in its own units: 1000s)
        let mut m = SparseModel::new(adagrad(), vec![true, false], None).expect("valid");
        for i in 0..2000u32 {
            let y = i % 2 == 0;
            let dense = [if y { 3000.0 } else { 1000.0 } + f64::from(i % 7), 1.0];
            m.learn(&dense, &[(1000 + i % 50, 1.0)], f64::from(u8::from(y)))
                .expect("learns");
        }
        let mut probs = Vec::new();
        let hi = m.predict(&[3100.0, 1.0], &[], &mut probs).expect("p");
        let lo = m.predict(&[900.0, 1.0], &[], &mut probs).expect("p");
        assert!(hi > 0.9 && lo < 0.1, "{hi} {lo}");
        let e = m.predict(&[1.0], &[], &mut probs).expect_err("width");
        assert!(e.to_string().contains("2 values"), "{e}");
    }

    #[test]
    fn softmax_sums_to_one_grows_its_classes_and_learns_them() {
        let mut m = SparseModel::new(adagrad(), vec![], Some(0)).expect("valid");
        let mut p = Vec::new();
        assert!(m.predict(&[], &[(1, 1.0)], &mut p).expect("p").is_nan());
        assert!(p.is_empty(), "no class known yet");
        for i in 0..600u32 {
            let y = i % 3;
            m.learn(&[], &[(y * 10, 1.0), (500 + i % 7, 1.0)], f64::from(y))
                .expect("learns");
        }
        assert_eq!(m.classes(), 3);
        for y in 0..3u32 {
            let best = m.predict(&[], &[(y * 10, 1.0)], &mut p).expect("p");
            assert_eq!(p.len(), 3);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            assert_eq!(best, f64::from(y), "{p:?}");
        }
        let e = m.learn(&[], &[], 2.5).expect_err("not a class");
        assert!(e.to_string().contains("class number"), "{e}");
    }

    #[test]
    fn snapshots_are_sorted_and_round_trip_exactly() {
        let mut m = SparseModel::new(adagrad(), vec![true], Some(2)).expect("valid");
        for i in 0..50 {
            m.learn(&[f64::from(i)], &row(i, i % 3 == 0), f64::from(i % 3))
                .expect("learns");
        }
        let json = serde_json::to_string(&m).expect("serialises");
        let mut back: SparseModel = serde_json::from_str(&json).expect("deserialises");
        assert!(back == m, "the same model");
        assert_eq!(serde_json::to_string(&back).expect("again"), json);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let cols: Vec<u64> = v["heads"][0]["sparse"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c[0].as_u64().expect("column"))
            .collect();
        assert!(cols.windows(2).all(|w| w[0] < w[1]));
        // and it goes on learning the same
        let (mut p, mut q) = (Vec::new(), Vec::new());
        for i in 50..80 {
            m.learn(&[f64::from(i)], &row(i, true), 1.0)
                .expect("learns");
            back.learn(&[f64::from(i)], &row(i, true), 1.0)
                .expect("learns");
        }
        m.predict(&[3.0], &row(3, true), &mut p).expect("p");
        back.predict(&[3.0], &row(3, true), &mut q).expect("p");
        assert_eq!(p, q);
    }

    #[test]
    fn learning_marks_its_columns_pages_and_pages_put_back_make_the_model_again() {
        for (classes, nb) in [(None, None), (Some(3), Some(0.5)), (None, Some(1.0))] {
            let mut m = SparseModel::new(with_nb(nb), vec![], classes).expect("valid");
            let k = classes.unwrap_or(2) as u32;
            for i in 0..2000u32 {
                let y = i % k;
                m.learn(&[], &[(y * 10, 1.0), (500 + i, 0.5)], f64::from(y))
                    .expect("learns");
            }
            assert!(m.take_dirty_pages().len() > 1000, "most of 4096 pages");
            assert!(m.take_dirty_pages().is_empty(), "taken");
            // one reading marks the pages of its columns, no others
            let row = [(3u32, 1.0), (77_777, 1.0)];
            m.learn(&[], &row, 0.0).expect("learns");
            let mut want: Vec<u32> = row.iter().map(|x| crate::pages::page_of(x.0)).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(m.take_dirty_pages(), want);
            // taken apart and put back page by page: the same model
            let whole = m.clone();
            let cols = m.take_columns();
            assert_eq!(m.sparse_columns(), 0, "the columns are out");
            assert!(m != whole);
            let pages = cols.by_page();
            assert_eq!(pages.len(), crate::pages::PAGES);
            for p in pages.iter().filter(|p| !p.is_empty()) {
                let page = cols.page(p);
                assert!(!page.is_empty());
                let json = serde_json::to_vec(&page).expect("encodes");
                m.put_page(serde_json::from_slice(&json).expect("decodes"))
                    .expect("fits");
            }
            assert!(m == whole, "{classes:?} {nb:?}: rebuilt as it was");
            let (mut p, mut q) = (Vec::new(), Vec::new());
            let a = m.predict(&[], &[(10, 1.0), (900, 1.0)], &mut p).expect("p");
            let b = whole
                .predict(&[], &[(10, 1.0), (900, 1.0)], &mut q)
                .expect("p");
            assert_eq!((a.to_bits(), &p), (b.to_bits(), &q));
            // a model read from a snapshot has every page to write
            let back: SparseModel =
                serde_json::from_str(&serde_json::to_string(&whole).expect("json")).expect("reads");
            assert_eq!(back.clone().take_dirty_pages().len(), crate::pages::PAGES);
        }
        // a page of more classes than the model, or naive Bayes counts for a
        // model without, is refused
        let mut m = SparseModel::new(adagrad(), vec![], None).expect("valid");
        let two = ColumnPage {
            heads: vec![vec![], vec![(1, 0.5, 1.0, 0.0)]],
            nb: vec![],
        };
        assert!(m.put_page(two).is_err());
        let nb = ColumnPage {
            heads: vec![],
            nb: vec![(1, vec![1.0, 0.0])],
        };
        assert!(m.put_page(nb).is_err());
    }

    #[test]
    fn naive_bayes_learns_with_the_regression_and_its_snapshot_round_trips() {
        for classes in [None, Some(3)] {
            let mut m = SparseModel::new(with_nb(Some(0.5)), vec![], classes).expect("valid");
            let k = classes.unwrap_or(2) as u32;
            for i in 0..300u32 {
                let y = i % k;
                m.learn(&[], &[(y * 10, 1.0), (500 + i % 7, 1.0)], f64::from(y))
                    .expect("learns");
            }
            let nb = m.nb.as_ref().expect("naive Bayes");
            assert!(
                nb.weights.iter().all(|w| w.w > 0.0),
                "its input is used: {:?}",
                nb.weights
            );
            let json = serde_json::to_string(&m).expect("json");
            let back: SparseModel = serde_json::from_str(&json).expect("reads");
            assert!(back == m, "the logarithms are worked out again exactly");
            let (mut p, mut q) = (Vec::new(), Vec::new());
            for y in 0..k {
                let a = m.predict(&[], &[(y * 10, 1.0)], &mut p).expect("p");
                let b = back.predict(&[], &[(y * 10, 1.0)], &mut q).expect("p");
                assert_eq!((a.to_bits(), &p), (b.to_bits(), &q));
            }
        }
        let newton = LinearParams {
            loss: Loss::Logistic,
            naive_bayes: Some(1.0),
            optimizer: OptimizerParams::Newton {
                prior_variance: 1.0,
                forgetting: 1.0,
            },
            ..LinearParams::default()
        }
        .validate()
        .expect("valid");
        let e = SparseModel::new(newton, vec![], None).expect_err("newton");
        assert!(e.to_string().contains("`naive_bayes`"), "{e}");
    }

    #[test]
    fn diagonal_newton_learns_and_moderates_what_it_has_not_seen_much() {
        let newton = params(OptimizerParams::Newton {
            prior_variance: 1.0,
            forgetting: 1.0,
        });
        let mut m = SparseModel::new(newton, vec![], None).expect("valid");
        let mut probs = Vec::new();
        for i in 0..400 {
            m.learn(&[], &row(i, i % 2 == 0), f64::from(u8::from(i % 2 == 0)))
                .expect("learns");
        }
        let p1 = m.predict(&[], &row(1, true), &mut probs).expect("p");
        let p0 = m.predict(&[], &row(2, false), &mut probs).expect("p");
        assert!(p1 > 0.75 && p0 < 0.25, "{p1} {p0}");
        // a column never seen adds variance: the prediction moves towards 1/2
        let unseen = m
            .predict(&[], &[(7, 1.0), (99_999, 1.0)], &mut probs)
            .expect("p");
        let seen = m.predict(&[], &[(7, 1.0)], &mut probs).expect("p");
        assert!(unseen < seen && unseen > 0.5, "{unseen} {seen}");
        let forgetting = params(OptimizerParams::Newton {
            prior_variance: 1.0,
            forgetting: 0.99,
        });
        let e = SparseModel::new(forgetting, vec![], None).expect_err("forgetting");
        assert!(e.to_string().contains("`optimizer.forgetting`"), "{e}");
    }

    #[test]
    fn other_losses_and_optimisers_are_refused_naming_the_key() {
        let adam = params(OptimizerParams::Adam {
            learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        });
        let e = SparseModel::new(adam, vec![], None).expect_err("adam");
        assert!(e.to_string().contains("`optimizer.kind`"), "{e}");
        let squared = LinearParams::default().validate().expect("valid");
        let e = SparseModel::new(squared, vec![], None).expect_err("squared");
        assert!(e.to_string().contains("`loss.kind`"), "{e}");
        SparseModel::new(squared, vec![], Some(3)).expect("the default loss is fine for softmax");
        let mut m = SparseModel::new(adagrad(), vec![], None).expect("valid");
        let e = m
            .retune(params(OptimizerParams::Ftrl {
                alpha: 0.1,
                beta: 1.0,
            }))
            .expect_err("another kind");
        assert!(e.to_string().contains("optimizer.kind"), "{e}");
        m.retune(params(OptimizerParams::Adagrad {
            learning_rate: 0.3,
            epsilon: 1e-6,
        }))
        .expect("same kind");
    }
}
