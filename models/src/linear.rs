//! [`LinearModel`]: one weight vector and intercept, learned one reading at a
//! time with any of the optimisers in [`crate::optim`].
//!
//! A feature row is a slice of `f64` in the order of the feature spec; NaN
//! means missing and is imputed as the feature's running mean. The model
//! owns its [`OnlineScaler`], so a snapshot carries everything needed to
//! predict and go on learning exactly where it left off.

use ndarray::{Array1, ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{check, ModelError};
use crate::loss::Loss;
use crate::optim::{OptimizerParams, OptimizerState};
use crate::scaler::{dot, OnlineScaler, Scaling};

/// How [`LinearModel::learn_batch`] treats a micro-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchMode {
    /// Learn the readings one by one, in order: the same model as a stream.
    #[default]
    PerReading,
    /// One step with the mean gradient of the batch (gradient optimisers only).
    MiniBatch,
}

/// Hyper-parameters of a linear model, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// The loss; `logistic` makes the model a classifier.
    #[serde(default)]
    pub loss: Loss,
    /// The optimiser and its hyper-parameters.
    #[serde(default)]
    pub optimizer: OptimizerParams,
    /// L1 penalty on the weights (not the intercept).
    #[serde(default)]
    pub l1: f64,
    /// L2 penalty on the weights (not the intercept).
    #[serde(default)]
    pub l2: f64,
    /// Per-reading (default) or mini-batch learning.
    #[serde(default)]
    pub batch_mode: BatchMode,
    /// Regression: learn the target standardised online (running mean and
    /// standard deviation) and map predictions back, so that learning rates
    /// mean the same whether the target is in minutes or in millions.
    #[serde(default = "yes")]
    pub standardize_target: bool,
    /// How the features marked for standardisation are scaled and bounded.
    #[serde(default)]
    pub scaling: Scaling,
    /// Models with sparse (text, hashed) features: multinomial naive Bayes
    /// with this additive smoothing, stacked under the logistic model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub naive_bayes: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for LinearParams {
    fn default() -> Self {
        LinearParams {
            loss: Loss::default(),
            optimizer: OptimizerParams::default(),
            l1: 0.0,
            l2: 0.0,
            batch_mode: BatchMode::default(),
            standardize_target: true,
            scaling: Scaling::default(),
            naive_bayes: None,
        }
    }
}

/// [`LinearParams`] that passed [`LinearParams::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValidLinearParams(LinearParams);

impl ValidLinearParams {
    /// The checked parameters.
    pub fn get(&self) -> &LinearParams {
        &self.0
    }
}

impl LinearParams {
    /// Checks every parameter once, before any learning.
    pub fn validate(self) -> Result<ValidLinearParams, ModelError> {
        self.loss.validate()?;
        self.optimizer.validate()?;
        self.scaling.validate()?;
        if let Some(alpha) = self.naive_bayes {
            check(
                alpha.is_finite() && alpha > 0.0,
                "naive_bayes",
                "a finite smoothing > 0 (1.0 is Laplace's)",
                alpha,
            )?;
        }
        check(
            self.l1.is_finite() && self.l1 >= 0.0,
            "l1",
            "a finite number >= 0",
            self.l1,
        )?;
        check(
            self.l2.is_finite() && self.l2 >= 0.0,
            "l2",
            "a finite number >= 0",
            self.l2,
        )?;
        check(
            self.batch_mode == BatchMode::PerReading || self.optimizer.is_gradient_based(),
            "batch_mode",
            "per_reading with the normalized and newton optimisers (mini_batch needs sgd, adagrad, adam or ftrl)",
            "mini_batch",
        )?;
        Ok(ValidLinearParams(self))
    }
}

/// An online linear (or logistic) regression model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    params: ValidLinearParams,
    /// Weights; the last one is the intercept.
    weights: Array1<f64>,
    state: OptimizerState,
    scaler: OnlineScaler,
    /// Labelled readings learned.
    learned: u64,
    /// Smallest and largest label learned (regression predictions are clipped to them).
    label_range: Option<(f64, f64)>,
    /// Running statistics of the regression target.
    target_stats: TargetStats,
    #[serde(skip)]
    scratch: Vec<f64>,
    #[serde(skip)]
    grad: Vec<f64>,
}

/// Running count, mean and sum of squared deviations of the regression
/// target (a snapshot holds these three), and the scale they give.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "(f64, f64, f64)", into = "(f64, f64, f64)")]
struct TargetStats {
    n: f64,
    mean: f64,
    m2: f64,
    /// The mean and standard deviation (1 while it is 0): computed once per
    /// label learned, not per prediction (a division and a square root).
    scale: (f64, f64),
}

impl Default for TargetStats {
    fn default() -> Self {
        (0.0, 0.0, 0.0).into()
    }
}

impl From<(f64, f64, f64)> for TargetStats {
    fn from((n, mean, m2): (f64, f64, f64)) -> Self {
        let scale = if n < 1.0 {
            (0.0, 1.0)
        } else {
            let var = m2 / n;
            (mean, if var > 0.0 { var.sqrt() } else { 1.0 })
        };
        TargetStats { n, mean, m2, scale }
    }
}

impl From<TargetStats> for (f64, f64, f64) {
    fn from(t: TargetStats) -> Self {
        (t.n, t.mean, t.m2)
    }
}

impl TargetStats {
    /// Adds one label (Welford).
    fn update(&mut self, y: f64) {
        let n = self.n + 1.0;
        let d = y - self.mean;
        let mean = self.mean + d / n;
        *self = (n, mean, self.m2 + d * (y - mean)).into();
    }
}

/// The weights as one slice (they always are: built by `Array1::zeros`).
fn contiguous(weights: &mut Array1<f64>) -> Result<&mut [f64], ModelError> {
    weights
        .as_slice_mut()
        .ok_or(ModelError::Internal("weights are not contiguous"))
}

fn soft_threshold(w: f64, t: f64) -> f64 {
    if w > t {
        w - t
    } else if w < -t {
        w + t
    } else {
        0.0
    }
}

impl LinearModel {
    /// A fresh model for `scale_mask.len()` features; the mask says which
    /// features are standardised online.
    pub fn new(params: ValidLinearParams, scale_mask: Vec<bool>) -> Self {
        let n = scale_mask.len();
        LinearModel {
            state: params.0.optimizer.new_state(n),
            params,
            weights: Array1::zeros(n + 1),
            scaler: OnlineScaler::with_scaling(scale_mask, params.0.scaling),
            learned: 0,
            label_range: None,
            target_stats: TargetStats::default(),
            scratch: Vec::new(),
            grad: Vec::new(),
        }
    }

    /// The model's parameters.
    pub fn params(&self) -> &LinearParams {
        self.params.get()
    }

    /// Takes new hyper-parameters (learning rate, penalties, ...) and keeps
    /// what the model has learned; refuses a change that the learned state
    /// does not carry over: another loss, optimiser kind, batch mode,
    /// target standardisation or feature scaling.
    pub fn retune(&mut self, params: ValidLinearParams) -> Result<(), ModelError> {
        let (old, new) = (self.params.get(), params.get());
        // the variant's name: "Adagrad" of "Adagrad { learning_rate: .. }"
        let kind = |o: &OptimizerParams| {
            let d = format!("{o:?}");
            d.split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_lowercase()
        };
        let checks: [(&'static str, String, String); 5] = [
            ("loss", format!("{:?}", old.loss), format!("{:?}", new.loss)),
            ("optimizer.kind", kind(&old.optimizer), kind(&new.optimizer)),
            (
                "batch_mode",
                format!("{:?}", old.batch_mode),
                format!("{:?}", new.batch_mode),
            ),
            (
                "standardize_target",
                old.standardize_target.to_string(),
                new.standardize_target.to_string(),
            ),
            (
                "scaling",
                format!("{:?}", old.scaling),
                format!("{:?}", new.scaling),
            ),
        ];
        for (name, kept, new) in checks {
            if kept != new {
                return Err(ModelError::Retune { name, kept, new });
            }
        }
        self.params = params;
        Ok(())
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.scaler.len()
    }

    /// Labelled readings learned so far.
    pub fn learned(&self) -> u64 {
        self.learned
    }

    /// Weights in the standardised feature space (without the intercept).
    pub fn weights(&self) -> ArrayView1<'_, f64> {
        self.weights.slice(ndarray::s![..self.n_features()])
    }

    /// The intercept.
    pub fn intercept(&self) -> f64 {
        self.weights[self.n_features()]
    }

    /// The scaler and its running statistics.
    pub fn scaler(&self) -> &OnlineScaler {
        &self.scaler
    }

    fn check_row(&self, x: &[f64]) -> Result<(), ModelError> {
        if x.len() != self.n_features() {
            return Err(ModelError::WrongFeatureCount {
                expected: self.n_features(),
                actual: x.len(),
            });
        }
        // the common case in one pass without early exits, then the culprit
        if x.iter().fold(false, |bad, v| bad | v.is_infinite()) {
            if let Some((index, &value)) = x.iter().enumerate().find(|(_, v)| v.is_infinite()) {
                return Err(ModelError::NonFinite { index, value });
            }
        }
        Ok(())
    }

    fn note_label(&mut self, y: f64) {
        if !self.params.0.loss.is_classification() {
            self.label_range = Some(match self.label_range {
                Some((lo, hi)) => (lo.min(y), hi.max(y)),
                None => (y, y),
            });
        }
    }

    fn check_label(&self, y: f64) -> Result<(), ModelError> {
        if self.params.0.loss.is_classification() {
            if y != 0.0 && y != 1.0 {
                return Err(ModelError::InvalidLabel {
                    expected: "0 or 1",
                    actual: y,
                });
            }
        } else if !y.is_finite() {
            return Err(ModelError::InvalidLabel {
                expected: "a finite number",
                actual: y,
            });
        }
        Ok(())
    }

    #[inline]
    fn raw_unchecked(&self, x: &[f64]) -> f64 {
        let w = self.weights.as_slice().unwrap_or(&[]);
        let n = x.len();
        w[n] + self.scaler.dot(x, &w[..n])
    }

    #[inline]
    fn raw_checked(&self, x: &[f64]) -> Result<f64, ModelError> {
        self.check_row(x)?;
        Ok(self.raw_unchecked(x))
    }

    /// The raw prediction (the margin, for a classifier).
    pub fn predict_raw(&self, x: ArrayView1<'_, f64>) -> Result<f64, ModelError> {
        match x.as_slice() {
            Some(s) => self.raw_checked(s),
            None => self.raw_checked(&x.to_vec()),
        }
    }

    /// [`LinearModel::predict`] of a row given as a slice.
    #[inline]
    pub fn predict_slice(&self, x: &[f64]) -> Result<f64, ModelError> {
        Ok(self.finish(self.raw_checked(x)?))
    }

    /// The prediction: a value for regression (clipped to the range of the
    /// labels learned so far, as Vowpal Wabbit does), the probability of
    /// class 1 for a classifier.
    pub fn predict(&self, x: ArrayView1<'_, f64>) -> Result<f64, ModelError> {
        Ok(self.finish(self.predict_raw(x)?))
    }

    #[inline]
    fn finish(&self, raw: f64) -> f64 {
        let (mean, std) = self.target_scale();
        match (self.params.0.loss, self.label_range) {
            (Loss::Logistic, _) => self.params.0.loss.output(raw),
            (_, Some((lo, hi))) => (raw * std + mean).clamp(lo, hi),
            (_, None) => raw * std + mean,
        }
    }

    /// Mean and standard deviation the regression target is learned in
    /// units of: (0, 1) when target standardisation is off or nothing has
    /// been learned yet.
    pub fn target_scale(&self) -> (f64, f64) {
        if !self.params.0.standardize_target || self.params.0.loss.is_classification() {
            return (0.0, 1.0);
        }
        self.target_stats.scale
    }

    /// The loss in standardised target units (Huber's `delta` rescaled).
    fn scaled_loss(&self) -> Loss {
        self.loss_in_units(self.target_scale().1)
    }

    /// The loss for a target in units of `std` (Huber's `delta` rescaled).
    fn loss_in_units(&self, std: f64) -> Loss {
        match self.params.0.loss {
            Loss::Huber { delta } => Loss::Huber { delta: delta / std },
            other => other,
        }
    }

    /// The loss in standardised target units, and the standardised label.
    fn scaled(&mut self, y: f64) -> (Loss, f64) {
        if !self.params.0.standardize_target || self.params.0.loss.is_classification() {
            return (self.params.0.loss, y);
        }
        self.target_stats.update(y);
        let (mean, std) = self.target_stats.scale;
        (self.loss_in_units(std), (y - mean) / std)
    }

    /// The smallest and largest label learned so far (regression).
    pub fn label_range(&self) -> Option<(f64, f64)> {
        self.label_range
    }

    /// Predicts every row of `x` into `out`.
    pub fn predict_batch(&self, x: ArrayView2<'_, f64>, out: &mut [f64]) -> Result<(), ModelError> {
        for (row, o) in x.rows().into_iter().zip(out.iter_mut()) {
            *o = self.predict(row)?;
        }
        Ok(())
    }

    /// Learns from one labelled row.
    pub fn learn_one(&mut self, x: ArrayView1<'_, f64>, y: f64) -> Result<(), ModelError> {
        match x.as_slice() {
            Some(s) => self.learn_slice(s, y),
            None => self.learn_slice(&x.to_vec(), y),
        }
    }

    /// Learns from one labelled row given as a slice.
    pub fn learn_slice(&mut self, x: &[f64], y: f64) -> Result<(), ModelError> {
        self.check_row(x)?;
        self.check_label(y)?;
        self.note_label(y);
        let (loss, y) = self.scaled(y);
        let n = x.len();
        let mut z = std::mem::take(&mut self.scratch);
        z.resize(n + 1, 0.0);
        self.scaler.update_transform(x, &mut z[..n]);
        z[n] = 1.0;
        let result = if let OptimizerParams::Newton { forgetting, .. } = self.params.0.optimizer {
            self.newton_step(&z, y, loss, forgetting)
        } else if let (
            OptimizerParams::Adagrad {
                learning_rate,
                epsilon,
            },
            0.0,
            0.0,
        ) = (self.params.0.optimizer, self.params.0.l1, self.params.0.l2)
        {
            self.adagrad_step(&z, y, loss, learning_rate, epsilon)
        } else if self.params.0.optimizer.is_gradient_based() {
            let raw = dot(self.weights.as_slice().unwrap_or(&[]), &z);
            let g = loss.gradient(raw, y);
            let mut grad = std::mem::take(&mut self.grad);
            grad.clear();
            grad.extend(z.iter().map(|&v| g * v));
            let r = self.gradient_step(&grad);
            self.grad = grad;
            r
        } else {
            self.normalized_step(&mut z, y, loss)
        };
        self.scratch = z;
        if result.is_ok() {
            self.learned += 1;
        }
        result
    }

    /// Learns from a micro-batch. `y[i]` NaN means row `i` is unlabelled and
    /// is skipped. In [`BatchMode::PerReading`] the result is exactly that of
    /// learning the labelled rows one by one.
    pub fn learn_batch(&mut self, x: ArrayView2<'_, f64>, y: &[f64]) -> Result<(), ModelError> {
        match self.params.0.batch_mode {
            BatchMode::PerReading => {
                for (row, &label) in x.rows().into_iter().zip(y) {
                    if !label.is_nan() {
                        self.learn_one(row, label)?;
                    }
                }
                Ok(())
            }
            BatchMode::MiniBatch => self.learn_mini_batch(x, y),
        }
    }

    fn learn_mini_batch(&mut self, x: ArrayView2<'_, f64>, y: &[f64]) -> Result<(), ModelError> {
        let n = self.n_features();
        let mut rows = Vec::new();
        for (row, &label) in x.rows().into_iter().zip(y) {
            if label.is_nan() {
                continue;
            }
            let row = row.to_vec();
            self.check_row(&row)?;
            self.check_label(label)?;
            self.note_label(label);
            let (_, label) = self.scaled(label);
            self.scaler.update(&row);
            rows.push((row, label));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut grad = vec![0.0; n + 1];
        let mut z = vec![0.0; n + 1];
        for (row, label) in &rows {
            self.scaler.transform(row, &mut z[..n]);
            z[n] = 1.0;
            let raw = dot(self.weights.as_slice().unwrap_or(&[]), &z);
            let g = self.scaled_loss().gradient(raw, *label);
            for (acc, v) in grad.iter_mut().zip(&z) {
                *acc += g * v;
            }
        }
        let m = rows.len() as f64;
        grad.iter_mut().for_each(|g| *g /= m);
        self.gradient_step(&grad)?;
        self.learned += rows.len() as u64;
        Ok(())
    }

    /// One optimiser step along `grad` (the loss gradient, without penalties).
    fn gradient_step(&mut self, grad: &[f64]) -> Result<(), ModelError> {
        let p = self.params.0;
        let n = grad.len() - 1;
        let w = contiguous(&mut self.weights)?;
        let (l1, l2) = (p.l1, p.l2);
        let penalised = |i: usize| i < n && (l1 > 0.0 || l2 > 0.0);
        match (&mut self.state, p.optimizer) {
            (
                OptimizerState::Sgd { t },
                OptimizerParams::Sgd {
                    learning_rate,
                    power_t,
                },
            ) => {
                *t += 1;
                let eta = learning_rate / (*t as f64).powf(power_t);
                for i in 0..=n {
                    if grad[i] == 0.0 && !penalised(i) {
                        continue;
                    }
                    let pen = if i < n { l2 * w[i] } else { 0.0 };
                    w[i] -= eta * (grad[i] + pen);
                    if i < n && l1 > 0.0 {
                        w[i] = soft_threshold(w[i], eta * l1);
                    }
                }
            }
            (
                OptimizerState::Adagrad { g2 },
                OptimizerParams::Adagrad {
                    learning_rate,
                    epsilon,
                },
            ) => {
                for i in 0..=n {
                    let pen = if i < n { l2 * w[i] } else { 0.0 };
                    let g = grad[i] + pen;
                    if g == 0.0 {
                        continue;
                    }
                    g2[i] += g * g;
                    let step = learning_rate / (g2[i].sqrt() + epsilon);
                    w[i] -= step * g;
                    if i < n && l1 > 0.0 {
                        w[i] = soft_threshold(w[i], step * l1);
                    }
                }
            }
            (
                OptimizerState::Adam { m, v, t },
                OptimizerParams::Adam {
                    learning_rate,
                    beta1,
                    beta2,
                    epsilon,
                },
            ) => {
                *t += 1;
                let c1 = 1.0 - beta1.powf(*t as f64);
                let c2 = 1.0 - beta2.powf(*t as f64);
                for i in 0..=n {
                    let pen = if i < n { l2 * w[i] } else { 0.0 };
                    let g = grad[i] + pen;
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                    let step = learning_rate / ((v[i] / c2).sqrt() + epsilon);
                    w[i] -= step * m[i] / c1;
                    if i < n && l1 > 0.0 {
                        w[i] = soft_threshold(w[i], step * l1);
                    }
                }
            }
            (OptimizerState::Ftrl { z, n: acc }, OptimizerParams::Ftrl { alpha, beta }) => {
                for i in 0..=n {
                    let g = grad[i];
                    if g == 0.0 {
                        continue;
                    }
                    let sigma = ((acc[i] + g * g).sqrt() - acc[i].sqrt()) / alpha;
                    z[i] += g - sigma * w[i];
                    acc[i] += g * g;
                    let (l1, l2) = if i < n { (l1, l2) } else { (0.0, 0.0) };
                    w[i] = if z[i].abs() <= l1 {
                        0.0
                    } else {
                        -(z[i] - z[i].signum() * l1) / ((beta + acc[i].sqrt()) / alpha + l2)
                    };
                }
            }
            _ => {
                return Err(ModelError::Internal(
                    "optimiser state does not match its parameters",
                ))
            }
        }
        check_finite(w)
    }

    /// [`LinearModel::gradient_step`] for AdaGrad without penalties, fused
    /// with the gradient: only the coordinates whose gradient is not zero
    /// move (most of a row with one-hot columns is zero), and no gradient
    /// vector is written. The same arithmetic in the same order, so the
    /// same model to the bit.
    fn adagrad_step(
        &mut self,
        z: &[f64],
        y: f64,
        loss: Loss,
        learning_rate: f64,
        epsilon: f64,
    ) -> Result<(), ModelError> {
        let OptimizerState::Adagrad { g2 } = &mut self.state else {
            return Err(ModelError::Internal(
                "optimiser state does not match its parameters",
            ));
        };
        let w = contiguous(&mut self.weights)?;
        let n = z.len().min(w.len()).min(g2.len());
        let (z, w, g2) = (&z[..n], &mut w[..n], &mut g2[..n]);
        let g = loss.gradient(dot(w, z), y);
        // only a weight that moved can have become non-finite
        let mut finite = true;
        for i in 0..n {
            let gi = g * z[i];
            if gi == 0.0 {
                continue;
            }
            g2[i] += gi * gi;
            w[i] -= learning_rate / (g2[i].sqrt() + epsilon) * gi;
            finite &= w[i].is_finite();
        }
        if finite {
            Ok(())
        } else {
            check_finite(w)
        }
    }

    /// One online Newton step on the standardised row `z` (intercept last).
    fn newton_step(
        &mut self,
        z: &[f64],
        y: f64,
        loss: Loss,
        forgetting: f64,
    ) -> Result<(), ModelError> {
        let OptimizerState::Newton { cov } = &mut self.state else {
            return Err(ModelError::Internal(
                "optimiser state does not match its parameters",
            ));
        };
        let w = contiguous(&mut self.weights)?;
        let d = z.len();
        let raw = dot(w, z);
        let g = loss.gradient(raw, y);
        let h = loss.curvature(raw, y);
        // px = P z, s = z' P z
        let mut px = std::mem::take(&mut self.grad);
        px.clear();
        px.resize(d, 0.0);
        let Some(p) = cov.get(..d * d) else {
            self.grad = px;
            return Err(ModelError::Internal(
                "the Newton state's matrix does not match the features",
            ));
        };
        crate::newton::p_times(p, z, &mut px);
        let s = dot(z, &px);
        let denom = 1.0 + h * s;
        let step = g / denom;
        if !step.is_finite() || denom.is_nan() || denom <= 0.0 {
            self.grad = px;
            return Err(ModelError::Diverged { value: step });
        }
        for (wi, pi) in w.iter_mut().zip(&px) {
            *wi -= step * pi;
        }
        let k = h / denom;
        crate::newton::rank_one_down(&mut cov[..d * d], &px, k);
        if forgetting < 1.0 {
            // forget, but never beyond the prior: directions no reading
            // excites would otherwise inflate without bound (RLS wind-up)
            let OptimizerParams::Newton { prior_variance, .. } = self.params.0.optimizer else {
                unreachable!("newton_step is only called for the newton optimiser")
            };
            let inflate: Vec<f64> = (0..d)
                .map(|i| {
                    (prior_variance / cov[i * d + i].max(f64::MIN_POSITIVE))
                        .min(1.0 / forgetting)
                        .max(1.0)
                        .sqrt()
                })
                .collect();
            for i in 0..d {
                for j in 0..d {
                    cov[i * d + j] *= inflate[i] * inflate[j];
                }
            }
        }
        self.grad = px;
        check_finite(w)
    }

    /// One normalised (Vowpal Wabbit style) step on the standardised row `z`
    /// (its last entry is the intercept's constant 1).
    fn normalized_step(&mut self, z: &mut [f64], y: f64, loss: Loss) -> Result<(), ModelError> {
        let p = self.params.0;
        let OptimizerParams::Normalized {
            learning_rate,
            power_t,
            adaptive,
            invariant,
        } = p.optimizer
        else {
            return Err(ModelError::Internal("optimiser is not normalized"));
        };
        let OptimizerState::Normalized { s, g2, t, sum_norm } = &mut self.state else {
            return Err(ModelError::Internal(
                "optimiser state does not match its parameters",
            ));
        };
        let w = contiguous(&mut self.weights)?;
        let n = z.len() - 1;
        // 1. grow each feature's scale, shrinking its weight to keep the prediction
        let mut norm_x = 0.0;
        for i in 0..=n {
            let a = z[i].abs();
            if a == 0.0 {
                continue;
            }
            if a > s[i] {
                if s[i] > 0.0 {
                    let r = s[i] / a;
                    w[i] *= r * r;
                }
                s[i] = a;
            }
            let q = z[i] / s[i];
            norm_x += q * q;
        }
        *t += 1.0;
        *sum_norm += norm_x;
        let mult = *t / *sum_norm;
        // 2. predict with the current weights
        let raw = dot(w, z);
        let g = loss.gradient(raw, y);
        // 3. per-feature rates and the prediction's sensitivity to an update
        let mut ppu = 0.0;
        for i in 0..=n {
            let v = z[i];
            if v == 0.0 {
                continue;
            }
            let mut rate = 1.0 / (s[i] * s[i]);
            if adaptive {
                g2[i] += g * g * v * v;
                rate = if g2[i] > 0.0 {
                    rate / g2[i].sqrt()
                } else {
                    0.0
                };
            }
            // keep the rate times x in z: the update direction
            z[i] = rate * v;
            ppu += v * z[i];
        }
        ppu *= mult;
        let eta = if adaptive {
            learning_rate
        } else {
            learning_rate * t.powf(-power_t)
        };
        let u = if invariant {
            loss.invariant_update(raw, y, eta, ppu)
        } else {
            -eta * g
        };
        if !u.is_finite() {
            return Err(ModelError::Diverged { value: u });
        }
        let step = u * mult;
        for i in 0..=n {
            if z[i] != 0.0 {
                w[i] += step * z[i];
            }
            if i < n && (p.l2 > 0.0 || p.l1 > 0.0) && w[i] != 0.0 {
                w[i] -= eta * p.l2 * w[i];
                w[i] = soft_threshold(w[i], eta * p.l1);
            }
        }
        check_finite(w)
    }
}

/// `Diverged` if any weight is not finite (one pass, then the culprit).
fn check_finite(w: &[f64]) -> Result<(), ModelError> {
    if w.iter().fold(false, |bad, v| bad | !v.is_finite()) {
        if let Some(&bad) = w.iter().find(|v| !v.is_finite()) {
            return Err(ModelError::Diverged { value: bad });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;
    use ndarray::{array, Array2};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn model(loss: Loss, optimizer: OptimizerParams, n: usize) -> LinearModel {
        let params = LinearParams {
            loss,
            optimizer,
            standardize_target: false,
            ..Default::default()
        }
        .validate()
        .expect("valid params");
        LinearModel::new(params, vec![false; n])
    }

    fn sgd(lr: f64) -> OptimizerParams {
        OptimizerParams::Sgd {
            learning_rate: lr,
            power_t: 0.0,
        }
    }

    #[test]
    fn sgd_step_by_hand() {
        // w = 0, x = [2, -1], y = 3: raw 0, gradient -3; w <- -lr * g * x
        let mut m = model(Loss::Squared, sgd(0.1), 2);
        m.learn_one(array![2.0, -1.0].view(), 3.0).expect("learns");
        assert_relative_eq!(m.weights()[0], 0.6, epsilon = 1e-12);
        assert_relative_eq!(m.weights()[1], -0.3, epsilon = 1e-12);
        assert_relative_eq!(m.intercept(), 0.3, epsilon = 1e-12);
    }

    #[test]
    fn sgd_decays_its_step() {
        let opt = OptimizerParams::Sgd {
            learning_rate: 0.1,
            power_t: 0.5,
        };
        let mut m = model(Loss::Squared, opt, 1);
        m.learn_one(array![1.0].view(), 1.0).expect("learns");
        // step 1: eta 0.1, w = 0.1, b = 0.1
        m.learn_one(array![1.0].view(), 1.0).expect("learns");
        // step 2: raw 0.2, g = -0.8, eta = 0.1 / sqrt 2
        let expected = 0.1 + 0.1 / 2f64.sqrt() * 0.8;
        assert_relative_eq!(m.weights()[0], expected, epsilon = 1e-12);
    }

    #[test]
    fn adagrad_step_by_hand() {
        let opt = OptimizerParams::Adagrad {
            learning_rate: 0.5,
            epsilon: 1e-12,
        };
        let mut m = model(Loss::Squared, opt, 1);
        m.learn_one(array![2.0].view(), 1.0).expect("learns");
        // g = -1 * 2 = -2; G = 4; w = 0.5 * 2 / 2 = 0.5; intercept g = -1, G = 1, b = 0.5
        assert_relative_eq!(m.weights()[0], 0.5, epsilon = 1e-9);
        assert_relative_eq!(m.intercept(), 0.5, epsilon = 1e-9);
        m.learn_one(array![2.0].view(), 1.0).expect("learns");
        // raw = 1.5, g = 0.5; w grad 1, G = 5: w = 0.5 - 0.5 * 1 / sqrt 5
        assert_relative_eq!(m.weights()[0], 0.5 - 0.5 / 5f64.sqrt(), epsilon = 1e-9);
    }

    #[test]
    fn fused_adagrad_is_the_generic_step_to_the_bit() {
        // rows like a wait-time row: one-hot blocks (mostly zeros), a
        // standardised column and missing values; Huber so that some
        // gradients are clipped
        let opt = OptimizerParams::Adagrad {
            learning_rate: 0.1,
            epsilon: 1e-8,
        };
        let params = LinearParams {
            loss: Loss::Huber { delta: 1.0 },
            optimizer: opt,
            ..Default::default()
        }
        .validate()
        .expect("valid params");
        let mask: Vec<bool> = (0..9).map(|i| i == 4).collect();
        let mut fused = LinearModel::new(params, mask.clone());
        let mut generic = LinearModel::new(params, mask);
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..500 {
            let mut x = [0.0; 9];
            x[rng.random_range(0..4)] = 1.0;
            x[4] = if rng.random_bool(0.1) {
                f64::NAN
            } else {
                rng.random_range(0.0..100.0)
            };
            x[5 + rng.random_range(0..4)] = rng.random_range(-1.0..1.0);
            let y = rng.random_range(0.0..100.0);
            fused.learn_slice(&x, y).expect("learns");
            // what learn_slice did before the fused step
            generic.note_label(y);
            let (loss, y) = generic.scaled(y);
            let mut z = vec![0.0; 10];
            generic.scaler.update_transform(&x, &mut z[..9]);
            z[9] = 1.0;
            let g = loss.gradient(dot(generic.weights.as_slice().expect("contiguous"), &z), y);
            let grad: Vec<f64> = z.iter().map(|v| g * v).collect();
            generic.gradient_step(&grad).expect("steps");
        }
        let bits = |m: &LinearModel| m.weights.iter().map(|w| w.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&generic));
        assert_eq!(fused.state, generic.state);
    }

    #[test]
    fn adam_step_by_hand() {
        let opt = OptimizerParams::Adam {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-12,
        };
        let mut m = model(Loss::Squared, opt, 1);
        // first Adam step moves each weight by -lr * sign(g)
        m.learn_one(array![3.0].view(), 2.0).expect("learns");
        assert_relative_eq!(m.weights()[0], 0.1, epsilon = 1e-9);
        assert_relative_eq!(m.intercept(), 0.1, epsilon = 1e-9);
    }

    #[test]
    fn ftrl_step_by_hand() {
        let opt = OptimizerParams::Ftrl {
            alpha: 0.5,
            beta: 1.0,
        };
        let params = LinearParams {
            loss: Loss::Logistic,
            optimizer: opt,
            l1: 0.1,
            l2: 1.0,
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let mut m = LinearModel::new(params, vec![false]);
        m.learn_one(array![1.0].view(), 1.0).expect("learns");
        // raw 0 -> p 0.5, g = -0.5; sigma = 0.5 / 0.5 = 1, z = -0.5, n = 0.25
        // w = -(z + l1) / ((beta + sqrt n) / alpha + l2) = 0.4 / 4
        assert_relative_eq!(m.weights()[0], 0.1, epsilon = 1e-12);
        // intercept: no penalties: 0.5 / 3
        assert_relative_eq!(m.intercept(), 0.5 / 3.0, epsilon = 1e-12);
    }

    #[test]
    fn normalized_step_by_hand() {
        let opt = OptimizerParams::Normalized {
            learning_rate: 0.5,
            power_t: 0.5,
            adaptive: false,
            invariant: false,
        };
        let mut m = model(Loss::Squared, opt, 1);
        m.learn_one(array![4.0].view(), 10.0).expect("learns");
        // s = [4, 1], norm_x = 1 + 1 = 2, mult = 1 / 2; raw 0, g = -10, eta 0.5
        // u = 5; w += u * mult * x / s^2 = 5 * 0.5 * 4 / 16; b += 5 * 0.5
        assert_relative_eq!(m.weights()[0], 0.625, epsilon = 1e-12);
        assert_relative_eq!(m.intercept(), 2.5, epsilon = 1e-12);
        // a larger x rescales the old weight by (4/8)^2 before the next step
        let opt_inv = OptimizerParams::Normalized {
            learning_rate: 100.0,
            power_t: 0.5,
            adaptive: false,
            invariant: true,
        };
        let mut m = model(Loss::Squared, opt_inv, 1);
        m.learn_one(array![4.0].view(), 10.0).expect("learns");
        let p = m.predict(array![4.0].view()).expect("predicts");
        assert!(p <= 10.0 + 1e-9, "invariant update overshot: {p}");
    }

    #[test]
    fn newton_step_by_hand() {
        let opt = OptimizerParams::Newton {
            prior_variance: 1.0,
            forgetting: 1.0,
        };
        let mut m = model(Loss::Squared, opt, 1);
        m.learn_one(array![1.0].view(), 2.0).expect("learns");
        // P = I, z = [1, 1]: s = 2, step = -2 / 3, w = [2/3, 2/3]
        assert_relative_eq!(m.weights()[0], 2.0 / 3.0, epsilon = 1e-12);
        assert_relative_eq!(m.intercept(), 2.0 / 3.0, epsilon = 1e-12);
        // recursive least squares equals ridge regression in closed form
        let mut m = model(Loss::Squared, opt, 1);
        let data = [(1.0, 2.0), (2.0, 2.5), (-1.0, 0.0), (0.5, 1.4)];
        for (x, y) in data {
            m.learn_one(array![x].view(), y).expect("learns");
        }
        // ridge with lambda = 1 on [x, 1]: solve (X'X + I) w = X'y
        let (sxx, sx, n, sxy, sy) = data.iter().fold((0.0, 0.0, 0.0, 0.0, 0.0), |a, (x, y)| {
            (a.0 + x * x, a.1 + x, a.2 + 1.0, a.3 + x * y, a.4 + y)
        });
        let (a, b, c, dd) = (sxx + 1.0, sx, sx, n + 1.0);
        let det = a * dd - b * c;
        let w0 = (dd * sxy - b * sy) / det;
        let w1 = (a * sy - c * sxy) / det;
        assert_relative_eq!(m.weights()[0], w0, epsilon = 1e-10);
        assert_relative_eq!(m.intercept(), w1, epsilon = 1e-10);
    }

    #[test]
    fn mini_batch_is_one_step_of_the_mean_gradient() {
        let params = LinearParams {
            optimizer: sgd(0.1),
            batch_mode: BatchMode::MiniBatch,
            standardize_target: false,
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let mut m = LinearModel::new(params, vec![false]);
        let x = array![[1.0], [3.0]];
        m.learn_batch(x.view(), &[1.0, 3.0]).expect("learns");
        // mean gradient at w = 0: -(1*1 + 3*3)/2 = -5; intercept -(1 + 3)/2 = -2
        assert_relative_eq!(m.weights()[0], 0.5, epsilon = 1e-12);
        assert_relative_eq!(m.intercept(), 0.2, epsilon = 1e-12);
        assert!(LinearParams {
            batch_mode: BatchMode::MiniBatch,
            optimizer: OptimizerParams::Newton {
                prior_variance: 1.0,
                forgetting: 1.0
            },
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    fn all_optimizers() -> Vec<OptimizerParams> {
        vec![
            sgd(0.01),
            OptimizerParams::Adagrad {
                learning_rate: 0.1,
                epsilon: 1e-8,
            },
            OptimizerParams::Adam {
                learning_rate: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
            },
            OptimizerParams::Ftrl {
                alpha: 0.1,
                beta: 1.0,
            },
            OptimizerParams::default(),
            OptimizerParams::Normalized {
                learning_rate: 0.5,
                power_t: 0.5,
                adaptive: true,
                invariant: true,
            },
            OptimizerParams::Newton {
                prior_variance: 1.0,
                forgetting: 1.0,
            },
        ]
    }

    #[test]
    fn per_reading_batch_equals_one_by_one() {
        let mut rng = StdRng::seed_from_u64(7);
        let x = Array2::from_shape_fn((200, 4), |_| rng.random_range(-3.0..3.0));
        let y: Vec<f64> = x
            .rows()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if i % 7 == 0 {
                    f64::NAN
                } else {
                    2.0 * r[0] - r[2] + 1.0
                }
            })
            .collect();
        for opt in all_optimizers() {
            let params = LinearParams {
                optimizer: opt,
                l2: 0.01,
                ..Default::default()
            }
            .validate()
            .expect("valid");
            let mut a = LinearModel::new(params, vec![true, false, true, false]);
            let mut b = a.clone();
            for chunk in (0..200).collect::<Vec<_>>().chunks(32) {
                let rows = x.slice(ndarray::s![chunk[0]..chunk[0] + chunk.len(), ..]);
                a.learn_batch(rows, &y[chunk[0]..chunk[0] + chunk.len()])
                    .expect("learns");
            }
            for (row, &label) in x.rows().into_iter().zip(&y) {
                if !label.is_nan() {
                    b.learn_one(row, label).expect("learns");
                }
            }
            assert_eq!(a.weights, b.weights, "{opt:?}");
            assert_eq!(a.learned(), b.learned());
        }
    }

    #[test]
    fn every_optimizer_learns_a_linear_target() {
        let mut rng = StdRng::seed_from_u64(11);
        for opt in all_optimizers() {
            let mut m = model(Loss::Squared, opt, 2);
            let mut late_err = 0.0;
            for i in 0..20_000 {
                let x = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)];
                let y = 3.0 * x[0] - 2.0 * x[1] + 0.5;
                let p = m.predict(ndarray::ArrayView1::from(&x)).expect("predicts");
                if i >= 19_000 {
                    late_err += (p - y).abs() / 1000.0;
                }
                m.learn_slice(&x, y).expect("learns");
            }
            assert!(late_err < 0.2, "{opt:?}: mean error {late_err}");
        }
    }

    #[test]
    fn standardised_target_lets_one_learning_rate_fit_any_scale() {
        // a target in the thousands: AdaGrad(0.1) moves each weight by at most
        // about 0.1 * sqrt(t), so on the raw target it cannot get there; on the
        // standardised target the same learning rate fits it
        let mut rng = StdRng::seed_from_u64(3);
        let data: Vec<([f64; 2], f64)> = (0..5000)
            .map(|_| {
                let x = [rng.random_range(0.0..100.0), rng.random_range(-1.0..1.0)];
                (x, 30.0 * x[0] + 500.0 * x[1] + 2000.0)
            })
            .collect();
        let run = |standardize_target: bool| {
            let params = LinearParams {
                standardize_target,
                ..Default::default()
            }
            .validate()
            .expect("valid");
            let mut m = LinearModel::new(params, vec![true, false]);
            let mut late = 0.0;
            for (i, (x, y)) in data.iter().enumerate() {
                let p = m.predict(ndarray::ArrayView1::from(x)).expect("predicts");
                if i >= 4000 {
                    late += (p - y).abs() / 1000.0;
                }
                m.learn_slice(x, *y).expect("learns");
            }
            late
        };
        let (raw, standardised) = (run(false), run(true));
        assert!(
            standardised < 20.0,
            "standardised target: mean error {standardised}"
        );
        assert!(
            raw > 10.0 * standardised,
            "raw target: mean error {raw}, standardised {standardised}"
        );
    }

    #[test]
    fn bad_rows_and_labels_are_errors() {
        let mut m = model(Loss::Logistic, OptimizerParams::default(), 2);
        assert!(matches!(
            m.learn_slice(&[1.0], 1.0),
            Err(ModelError::WrongFeatureCount {
                expected: 2,
                actual: 1
            })
        ));
        assert!(matches!(
            m.learn_slice(&[1.0, f64::INFINITY], 1.0),
            Err(ModelError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            m.learn_slice(&[1.0, 2.0], 0.5),
            Err(ModelError::InvalidLabel { .. })
        ));
        assert_eq!(m.learned(), 0);
        // NaN is missing, not an error
        m.learn_slice(&[f64::NAN, 2.0], 1.0)
            .expect("missing is fine");
    }
}
