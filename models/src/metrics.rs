//! Prequential (test-then-train) metrics.
//!
//! [`evaluate`] computes exact figures over stored predictions (what the
//! evaluation command reports). [`Prequential`] keeps running figures for a
//! live model: cumulative sums and a rolling window of the latest readings.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Probabilities are clipped to `[EPS, 1 - EPS]` for the log loss.
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A number.
    Regression,
    /// The probability of class 1.
    Classification,
    /// One of several classes, with a probability per class.
    Multiclass,
}

/// One set of metrics over some scored readings. Regression fills `mae`,
/// `rmse` and `r2`; classification fills `log_loss`, `accuracy` and
/// `roc_auc`; multiclass fills `log_loss`, `accuracy`, `macro_f1` and
/// `class_f1`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// Readings scored.
    pub count: u64,
    /// Mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Coefficient of determination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
    /// Mean log loss (natural log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
    /// Accuracy at a 0.5 threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Area under the ROC curve (ties count half).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Multiclass: the mean over classes of each class's F1 score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// Multiclass: each class's F1 score, in class order (0 for a class
    /// neither predicted nor seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_f1: Option<Vec<f64>>,
}

/// One scored reading of a multiclass model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    /// The class predicted (the most probable).
    pub predicted: u32,
    /// The class of the label.
    pub label: u32,
    /// The probability the model gave the label's class.
    pub p_label: f64,
}

impl ClassScore {
    /// `predicted` when the model knew no class yet (the first reading of a
    /// model that learns its classes): no class was predicted, so the
    /// label's class missed it and no class has a false positive.
    pub const NO_CLASS: u32 = u32::MAX;

    /// The class number of a prediction, [`ClassScore::NO_CLASS`] for NaN
    /// (no class known).
    pub fn class_of(prediction: f64) -> u32 {
        if prediction.is_nan() {
            Self::NO_CLASS
        } else {
            prediction as u32
        }
    }
}

/// Per class: true positives, false positives, false negatives.
type Confusion = Vec<[u64; 3]>;

fn confuse(c: &mut Confusion, s: &ClassScore) {
    let label = s.label as usize;
    let predicted = (s.predicted != ClassScore::NO_CLASS).then_some(s.predicted as usize);
    let need = predicted.unwrap_or(0).max(label) + 1;
    if c.len() < need {
        c.resize(need, [0; 3]);
    }
    match predicted {
        Some(p) if p == label => c[label][0] += 1,
        Some(p) => {
            c[p][1] += 1;
            c[label][2] += 1;
        }
        None => c[label][2] += 1,
    }
}

/// Per-class F1 and their mean (over the classes seen or predicted).
fn f1s(c: &Confusion) -> (Vec<f64>, Option<f64>) {
    let f1: Vec<f64> = c
        .iter()
        .map(|&[tp, fp, fn_]| {
            let d = 2 * tp + fp + fn_;
            if d == 0 {
                0.0
            } else {
                2.0 * tp as f64 / d as f64
            }
        })
        .collect();
    let live: Vec<f64> = c
        .iter()
        .zip(&f1)
        .filter(|(k, _)| k.iter().any(|&n| n > 0))
        .map(|(_, &f)| f)
        .collect();
    let mean = (!live.is_empty()).then(|| live.iter().sum::<f64>() / live.len() as f64);
    (f1, mean)
}

/// Exact multiclass metrics of scored readings.
pub fn evaluate_classes(scores: &[ClassScore]) -> MetricSet {
    let mut m = MetricSet {
        count: scores.len() as u64,
        ..Default::default()
    };
    if scores.is_empty() {
        return m;
    }
    let mut c = Confusion::new();
    let (mut ll, mut correct) = (0.0, 0u64);
    for s in scores {
        confuse(&mut c, s);
        ll -= s.p_label.clamp(LOG_LOSS_EPS, 1.0).ln();
        correct += u64::from(s.predicted == s.label);
    }
    let n = scores.len() as f64;
    let (f1, macro_f1) = f1s(&c);
    m.log_loss = Some(ll / n);
    m.accuracy = Some(correct as f64 / n);
    m.macro_f1 = macro_f1;
    m.class_f1 = Some(f1);
    m
}

fn log_loss_one(p: f64, y: f64) -> f64 {
    let p = p.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// Exact ROC AUC by ranks; `None` unless both classes are present.
pub fn roc_auc(scores: &[f64], labels: &[f64]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut pos) = (0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] > 0.5 {
                rank_sum += avg_rank;
                pos += 1.0;
            }
        }
        i = j + 1;
    }
    let neg = scores.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Exact metrics of `preds` against `labels`.
pub fn evaluate(task: Task, preds: &[f64], labels: &[f64]) -> MetricSet {
    let n = preds.len().min(labels.len());
    let mut m = MetricSet {
        count: n as u64,
        ..Default::default()
    };
    if n == 0 {
        return m;
    }
    let nf = n as f64;
    match task {
        Task::Regression => {
            let (mut abs, mut sq, mut sy, mut syy) = (0.0, 0.0, 0.0, 0.0);
            for (&p, &y) in preds.iter().zip(labels) {
                abs += (p - y).abs();
                sq += (p - y) * (p - y);
                sy += y;
                syy += y * y;
            }
            let var = syy / nf - (sy / nf) * (sy / nf);
            m.mae = Some(abs / nf);
            m.rmse = Some((sq / nf).sqrt());
            m.r2 = (var > 0.0).then(|| 1.0 - (sq / nf) / var);
        }
        Task::Classification => {
            let mut ll = 0.0;
            let mut correct = 0.0;
            for (&p, &y) in preds.iter().zip(labels) {
                ll += log_loss_one(p, y);
                if (p >= 0.5) == (y > 0.5) {
                    correct += 1.0;
                }
            }
            m.log_loss = Some(ll / nf);
            m.accuracy = Some(correct / nf);
            m.roc_auc = roc_auc(&preds[..n], &labels[..n]);
        }
        Task::Multiclass => {
            // the probabilities are not in `preds`: see `evaluate_classes`
            let correct = preds.iter().zip(labels).filter(|(p, y)| p == y).count();
            m.accuracy = Some(correct as f64 / nf);
        }
    }
    m
}

/// Running prequential metrics of a live model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prequential {
    task: Task,
    window: usize,
    count: u64,
    sum_abs: f64,
    sum_sq: f64,
    sum_y: f64,
    sum_yy: f64,
    sum_log_loss: f64,
    correct: u64,
    /// Scores histogram for a cumulative AUC: (negatives, positives) per bin.
    auc_bins: Vec<(u64, u64)>,
    recent: VecDeque<(f64, f64)>,
    /// Multiclass: the confusion counts per class.
    #[serde(default)]
    confusion: Confusion,
    /// Multiclass: the rolling window's scores (`recent` stays empty).
    #[serde(default)]
    recent_classes: VecDeque<ClassScore>,
}

const AUC_BINS: usize = 1000;

impl Prequential {
    /// Metrics for `task` with a rolling window of `window` readings.
    pub fn new(task: Task, window: usize) -> Self {
        Prequential {
            task,
            window: window.max(1),
            count: 0,
            sum_abs: 0.0,
            sum_sq: 0.0,
            sum_y: 0.0,
            sum_yy: 0.0,
            sum_log_loss: 0.0,
            correct: 0,
            auc_bins: if task == Task::Classification {
                vec![(0, 0); AUC_BINS]
            } else {
                Vec::new()
            },
            recent: VecDeque::new(),
            confusion: Confusion::new(),
            recent_classes: VecDeque::new(),
        }
    }

    /// Records one scored reading of a multiclass model.
    pub fn update_class(&mut self, score: ClassScore) {
        self.count += 1;
        self.sum_log_loss -= score.p_label.clamp(LOG_LOSS_EPS, 1.0).ln();
        self.correct += u64::from(score.predicted == score.label);
        confuse(&mut self.confusion, &score);
        if self.recent_classes.len() == self.window {
            self.recent_classes.pop_front();
        }
        self.recent_classes.push_back(score);
    }

    /// Records one scored reading.
    pub fn update(&mut self, pred: f64, label: f64) {
        self.count += 1;
        match self.task {
            Task::Regression => {
                self.sum_abs += (pred - label).abs();
                self.sum_sq += (pred - label) * (pred - label);
                self.sum_y += label;
                self.sum_yy += label * label;
            }
            Task::Multiclass => {
                // a class without its probability: counted, not scored
                self.correct += u64::from(pred == label);
            }
            Task::Classification => {
                self.sum_log_loss += log_loss_one(pred, label);
                if (pred >= 0.5) == (label > 0.5) {
                    self.correct += 1;
                }
                let bin = ((pred.clamp(0.0, 1.0) * AUC_BINS as f64) as usize).min(AUC_BINS - 1);
                if label > 0.5 {
                    self.auc_bins[bin].1 += 1;
                } else {
                    self.auc_bins[bin].0 += 1;
                }
            }
        }
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back((pred, label));
    }

    /// Adds another stream's metrics to these (one model's partitions, say):
    /// cumulative figures become those of both streams together; the rolling
    /// window keeps the newest of each, up to the window.
    pub fn merge(&mut self, other: &Prequential) {
        self.merge_classes(other, &[]);
    }

    /// [`Prequential::merge`] of a multiclass stream that numbers its
    /// classes otherwise: its class `k` is this one's `to[k]` (a model's
    /// partitions each number the classes they learn in their own order of
    /// appearance); a class beyond `to` keeps its number.
    pub fn merge_classes(&mut self, other: &Prequential, to: &[u32]) {
        let map = |k: u32| to.get(k as usize).copied().unwrap_or(k);
        self.count += other.count;
        self.sum_abs += other.sum_abs;
        self.sum_sq += other.sum_sq;
        self.sum_y += other.sum_y;
        self.sum_yy += other.sum_yy;
        self.sum_log_loss += other.sum_log_loss;
        self.correct += other.correct;
        if self.auc_bins.len() == other.auc_bins.len() {
            for (a, b) in self.auc_bins.iter_mut().zip(&other.auc_bins) {
                a.0 += b.0;
                a.1 += b.1;
            }
        }
        self.recent.extend(other.recent.iter().copied());
        while self.recent.len() > self.window {
            self.recent.pop_front();
        }
        for (k, b) in other.confusion.iter().enumerate() {
            let j = map(k as u32) as usize;
            if self.confusion.len() <= j {
                self.confusion.resize(j + 1, [0; 3]);
            }
            for (x, y) in self.confusion[j].iter_mut().zip(b) {
                *x += y;
            }
        }
        self.recent_classes
            .extend(other.recent_classes.iter().map(|s| ClassScore {
                predicted: map(s.predicted),
                label: map(s.label),
                p_label: s.p_label,
            }));
        while self.recent_classes.len() > self.window {
            self.recent_classes.pop_front();
        }
    }

    /// No reading scored yet, with this one's task and window: what
    /// partitions' metrics are merged into.
    pub fn empty_like(&self) -> Prequential {
        Prequential::new(self.task, self.window)
    }

    /// Readings scored so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Metrics over every reading scored so far (AUC from a 1,000-bin histogram).
    pub fn cumulative(&self) -> MetricSet {
        let n = self.count as f64;
        let mut m = MetricSet {
            count: self.count,
            ..Default::default()
        };
        if self.count == 0 {
            return m;
        }
        match self.task {
            Task::Regression => {
                let var = self.sum_yy / n - (self.sum_y / n).powi(2);
                m.mae = Some(self.sum_abs / n);
                m.rmse = Some((self.sum_sq / n).sqrt());
                m.r2 = (var > 0.0).then(|| 1.0 - (self.sum_sq / n) / var);
            }
            Task::Classification => {
                m.log_loss = Some(self.sum_log_loss / n);
                m.accuracy = Some(self.correct as f64 / n);
                let (mut neg_below, mut area) = (0.0, 0.0);
                let (mut pos, mut neg) = (0.0, 0.0);
                for &(nb, pb) in &self.auc_bins {
                    area += pb as f64 * (neg_below + nb as f64 / 2.0);
                    neg_below += nb as f64;
                    pos += pb as f64;
                    neg += nb as f64;
                }
                m.roc_auc = (pos > 0.0 && neg > 0.0).then(|| area / (pos * neg));
            }
            Task::Multiclass => {
                let (f1, macro_f1) = f1s(&self.confusion);
                m.log_loss = Some(self.sum_log_loss / n);
                m.accuracy = Some(self.correct as f64 / n);
                m.macro_f1 = macro_f1;
                m.class_f1 = Some(f1);
            }
        }
        m
    }

    /// Exact metrics over the rolling window.
    pub fn rolling(&self) -> MetricSet {
        if self.task == Task::Multiclass {
            let scores: Vec<ClassScore> = self.recent_classes.iter().copied().collect();
            return evaluate_classes(&scores);
        }
        let (p, y): (Vec<f64>, Vec<f64>) = self.recent.iter().copied().unzip();
        evaluate(self.task, &p, &y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_relative_eq;

    #[test]
    fn regression_by_hand() {
        let m = evaluate(Task::Regression, &[1.0, 2.0, 5.0], &[1.0, 4.0, 2.0]);
        assert_relative_eq!(m.mae.expect("mae"), 5.0 / 3.0);
        assert_relative_eq!(m.rmse.expect("rmse"), (13.0f64 / 3.0).sqrt());
    }

    #[test]
    fn merged_streams_equal_one_stream() {
        let data = [(0.9, 1.0), (0.2, 0.0), (0.6, 0.0), (0.7, 1.0), (0.1, 1.0)];
        let mut all = Prequential::new(Task::Classification, 100);
        let (mut a, mut b) = (all.clone(), all.clone());
        for (i, &(p, y)) in data.iter().enumerate() {
            all.update(p, y);
            if i % 2 == 0 {
                a.update(p, y)
            } else {
                b.update(p, y)
            }
        }
        a.merge(&b);
        let (m, want) = (a.cumulative(), all.cumulative());
        assert_relative_eq!(m.log_loss.expect("ll"), want.log_loss.expect("ll"));
        assert_eq!(m.accuracy, want.accuracy);
        assert_eq!(m.roc_auc, want.roc_auc);
        assert_eq!(a.count(), 5);
    }

    #[test]
    fn multiclass_by_hand_and_live_equals_exact() {
        let s = |predicted, label, p_label| ClassScore {
            predicted,
            label,
            p_label,
        };
        // class 0: tp 2, fp 1, fn 0; class 1: tp 1, fp 0, fn 1; class 2: tp 0, fp 1, fn 1
        let scores = [
            s(0, 0, 0.8),
            s(0, 0, 0.6),
            s(1, 1, 0.7),
            s(0, 1, 0.2),
            s(2, 2, 0.5),
            s(2, 2, 0.4),
        ];
        let scores = [&scores[..4], &[s(1, 2, 0.3), s(2, 0, 0.1)]].concat();
        let m = evaluate_classes(&scores);
        let f1 = m.class_f1.clone().expect("f1");
        // class 0: tp 2 fp 1 fn 1 = 4/6; class 1: tp 1 fp 1 fn 1 = 2/4; class 2: tp 0 fp 1 fn 1 = 0
        assert_relative_eq!(f1[0], 4.0 / 6.0);
        assert_relative_eq!(f1[1], 0.5);
        assert_relative_eq!(f1[2], 0.0);
        assert_relative_eq!(m.macro_f1.expect("macro"), (4.0 / 6.0 + 0.5) / 3.0);
        assert_relative_eq!(m.accuracy.expect("acc"), 0.5);
        let ll = -[0.8f64, 0.6, 0.7, 0.2, 0.3, 0.1]
            .iter()
            .map(|p| p.ln())
            .sum::<f64>()
            / 6.0;
        assert_relative_eq!(m.log_loss.expect("ll"), ll, epsilon = 1e-12);

        let mut live = Prequential::new(Task::Multiclass, 4);
        let (mut a, mut b) = (live.clone(), live.clone());
        for (i, x) in scores.iter().enumerate() {
            live.update_class(*x);
            if i % 2 == 0 {
                a.update_class(*x)
            } else {
                b.update_class(*x)
            }
        }
        let cum = live.cumulative();
        assert_eq!(cum.class_f1, m.class_f1);
        assert_eq!(cum.macro_f1, m.macro_f1);
        assert_relative_eq!(cum.log_loss.expect("ll"), ll, epsilon = 1e-12);
        assert_eq!(live.rolling(), evaluate_classes(&scores[2..]));
        a.merge(&b);
        assert_eq!(a.cumulative().class_f1, m.class_f1, "merged");

        // b numbers the classes otherwise (2, 0, 1 for 0, 1, 2): merged
        // through its numbering they are the same figures, and not without
        let renumber = [1u32, 2, 0];
        let (mut a, mut b) = (
            Prequential::new(Task::Multiclass, 4),
            Prequential::new(Task::Multiclass, 4),
        );
        for (i, x) in scores.iter().enumerate() {
            if i % 2 == 0 {
                a.update_class(*x)
            } else {
                b.update_class(s(
                    renumber[x.predicted as usize],
                    renumber[x.label as usize],
                    x.p_label,
                ))
            }
        }
        let mut plain = a.clone();
        plain.merge(&b);
        assert_ne!(
            plain.cumulative().class_f1,
            m.class_f1,
            "the renumbering matters"
        );
        a.merge_classes(&b, &[2, 0, 1]);
        assert_eq!(a.cumulative().class_f1, m.class_f1, "merged by class");
        assert_eq!(a.cumulative().macro_f1, m.macro_f1);
        // the window keeps the newest of each: a's last, then b's three
        let rolling: Vec<ClassScore> = a.recent_classes.iter().copied().collect();
        let want = [scores[4], scores[1], scores[3], scores[5]];
        assert_eq!(rolling, want, "the rolling window's classes renumbered too");
    }

    #[test]
    fn a_prediction_of_no_class_misses_the_label_and_blames_no_class() {
        // the first reading of a model that learns its classes: none known
        let first = ClassScore {
            predicted: ClassScore::class_of(f64::NAN),
            label: 0,
            p_label: 0.0,
        };
        let right = ClassScore {
            predicted: 0,
            label: 0,
            p_label: 0.9,
        };
        let mut live = Prequential::new(Task::Multiclass, 10);
        live.update_class(first);
        live.update_class(right);
        let m = live.cumulative();
        // class 0: tp 1, fp 0, fn 1
        assert_eq!(m.class_f1, Some(vec![2.0 / 3.0]));
        assert_eq!(m.accuracy, Some(0.5));
        assert_eq!(live.rolling().class_f1, Some(vec![2.0 / 3.0]));
        let mut merged = live.empty_like();
        merged.merge_classes(&live, &[0]);
        assert_eq!(merged.cumulative(), m);
    }

    #[test]
    fn auc_counts_ties_half() {
        assert_relative_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]).expect("auc"),
            0.75
        );
        assert_relative_eq!(roc_auc(&[0.5, 0.5], &[0.0, 1.0]).expect("auc"), 0.5);
        assert!(roc_auc(&[0.5, 0.6], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn log_loss_is_clipped() {
        let m = evaluate(Task::Classification, &[0.0, 1.0], &[1.0, 1.0]);
        assert_relative_eq!(
            m.log_loss.expect("ll"),
            -(LOG_LOSS_EPS.ln()) / 2.0,
            max_relative = 1e-9
        );
        assert_relative_eq!(m.accuracy.expect("acc"), 0.5);
    }

    #[test]
    fn running_metrics_agree_with_exact_ones() {
        let preds = [0.1, 0.9, 0.35, 0.72, 0.55, 0.2];
        let labels = [0.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        let mut live = Prequential::new(Task::Classification, 4);
        for (&p, &y) in preds.iter().zip(&labels) {
            live.update(p, y);
        }
        let exact = evaluate(Task::Classification, &preds, &labels);
        let cum = live.cumulative();
        assert_relative_eq!(
            cum.log_loss.expect("ll"),
            exact.log_loss.expect("ll"),
            epsilon = 1e-12
        );
        assert_relative_eq!(
            cum.roc_auc.expect("auc"),
            exact.roc_auc.expect("auc"),
            epsilon = 1e-12
        );
        assert_eq!(
            live.rolling(),
            evaluate(Task::Classification, &preds[2..], &labels[2..])
        );
    }
}
