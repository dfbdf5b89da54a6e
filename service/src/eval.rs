//! `streamfit eval`: the prequential protocol of BENCHMARKS.md over a data
//! set, through exactly the pipeline the service runs.
//!
//! Readings are serialised to JSON bytes before the clock starts, so the
//! figure includes JSON decoding, features, predict and learn. A second,
//! separately timed pass runs predict and learn alone over rows extracted
//! beforehand: the model-only figure.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use features::arrow_io::PredictionLog;
use features::datasets::{load_readings, KeyedReading};
use models::metrics::{evaluate, evaluate_classes, ClassScore, MetricSet, Task};
use models::Learner;
use serde::Serialize;

use crate::config::ModelConfig;
use crate::pipeline::{Contiguous, Input, LabelDelay, Outcome, Pipeline};

/// The figures of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Model name.
    pub model: String,
    /// Micro-batch size.
    pub batch: usize,
    /// `--label-delay` as given (none: labels learned at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_delay: Option<String>,
    /// Labelled readings learned; with a label delay, those whose label
    /// was revealed before the stream ended.
    pub learned: u64,
    /// With a `drift` detector: the drifts it signalled, and the latest
    /// (at most 20) with the labelled reading and event time of each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drifts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The latest drifts (at most 20).
    pub drift_events: Option<Vec<models::drift::DriftEvent>>,
    /// With challengers: the learner that was champion at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion: Option<String>,
    /// With challengers: every promotion, with the readings it happened
    /// at and the mean losses of the window that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotions: Option<Vec<crate::pipeline::Promotion>>,
    /// Timed passes over the stream; the speed figures are their medians.
    pub passes: usize,
    /// Readings in the stream.
    pub readings: usize,
    /// Readings scored (labelled and valid).
    pub scored: usize,
    /// Readings rejected by the decoder or features.
    pub invalid: usize,
    /// The first few of them (at most 5): which reading (1-based, in the
    /// data's order) and why, as the dead-letter topic would say.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_examples: Vec<InvalidReading>,
    /// Wall seconds of the median timed pass.
    pub seconds: f64,
    /// Readings per second, JSON decoding included.
    pub readings_per_second: f64,
    /// Readings per second of predict and learn alone, over rows extracted beforehand.
    pub model_only_readings_per_second: f64,
    /// Multiclass: the classes, in the order of `class_f1` (declared, or
    /// learned in order of appearance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Metrics over all scored readings.
    #[serde(flatten)]
    pub all: MetricSet,
    /// Metrics over the second half of the scored readings.
    pub second_half: MetricSet,
    /// Metrics over the last 20% of the scored readings.
    pub last_20pct: MetricSet,
    /// Metrics over the first 20% of the scored readings: the window
    /// hyper-parameters are chosen on.
    pub first_20pct: MetricSet,
    /// Metrics over the last 80%: held out from the choice.
    pub last_80pct: MetricSet,
    /// With `--hindsight`: a smartcore batch model fitted on the first 80%
    /// of the scored readings, scored on the last 20%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hindsight_last_20pct: Option<MetricSet>,
}

/// Every valid reading extracted in stream order (keyed state advancing as
/// in a run): a row-major matrix and, per row, its key, label, baseline
/// and sparse columns.
struct Extracted {
    rows: ndarray::Array2<f64>,
    keys: Vec<Option<String>>,
    labels: Vec<Option<f64>>,
    baselines: Vec<f64>,
    /// Every row's sparse columns back to back; row i's end at `ends[i]`.
    sparse: Vec<(u32, f64)>,
    ends: Vec<usize>,
    has_sparse: bool,
    classes: usize,
}

impl Extracted {
    fn sparse_of(&self, i: usize) -> &[(u32, f64)] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.sparse[from..self.ends[i]]
    }
}

fn extract_all(config: &ModelConfig, readings: &[KeyedReading]) -> Result<(Extracted, Vec<bool>)> {
    let mut extractor = config.extractor()?;
    let width = extractor.width();
    let mut row = vec![0.0; width];
    let mut flat = Vec::with_capacity(readings.len() * width);
    let (mut keys, mut labels, mut baselines) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sparse, mut one, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for r in readings {
        if let Ok(e) = extractor.extract_sparse(&r.json, r.key.as_deref(), &mut row, &mut one) {
            flat.extend_from_slice(&row);
            keys.push(e.key.map(|k| k.into_owned()));
            labels.push(e.label);
            baselines.push(e.baseline);
            sparse.extend_from_slice(&one);
            ends.push(sparse.len());
        }
    }
    let rows = ndarray::Array2::from_shape_vec((labels.len(), width), flat)?;
    let classes = (config.model_task() == Task::Multiclass).then(|| extractor.classes().len());
    Ok((
        Extracted {
            rows,
            keys,
            labels,
            baselines,
            sparse,
            ends,
            has_sparse: extractor.has_sparse(),
            classes: classes.unwrap_or(0),
        },
        extractor.scale_mask(),
    ))
}

/// Fits a smartcore batch model on the first 80% of the labelled readings and
/// scores it on the last 20% (the "hindsight" rows of BENCHMARKS.md).
pub fn hindsight(config: &ModelConfig, readings: &[KeyedReading]) -> Result<MetricSet> {
    let (all, _) = extract_all(config, readings)?;
    anyhow::ensure!(
        !all.has_sparse && config.model_task() != Task::Multiclass,
        "`--hindsight` fits a dense batch model: it is for models without `text` or `hashed` features and with two classes at most"
    );
    let labelled: Vec<usize> = (0..all.labels.len())
        .filter(|&i| all.labels[i].is_some())
        .collect();
    let x = all.rows.select(ndarray::Axis(0), &labelled);
    let y: Vec<f64> = labelled.iter().filter_map(|&i| all.labels[i]).collect();
    let base: Vec<f64> = labelled.iter().map(|&i| all.baselines[i]).collect();
    let n = y.len();
    let cut = n - n / 5;
    anyhow::ensure!(
        cut > 0 && cut < n,
        "too few labelled readings for a hindsight fit ({n})"
    );
    let classification = config.learner.loss.is_classification();
    let train = x.slice(ndarray::s![..cut, ..]);
    let test = x.slice(ndarray::s![cut.., ..]);
    let (preds, task) = if classification {
        let m = models::baseline::BatchModel::fit_classification(train, &y[..cut], 0.0)?;
        (m.predict(test), Task::Classification)
    } else {
        let target: Vec<f64> = y[..cut]
            .iter()
            .zip(&base[..cut])
            .map(|(y, b)| y - b)
            .collect();
        let m = models::baseline::BatchModel::fit_regression(train, &target)?;
        let p = m
            .predict(test)
            .iter()
            .zip(&base[cut..])
            .map(|(p, b)| p + b)
            .collect();
        (p, Task::Regression)
    };
    Ok(evaluate(task, &preds, &y[cut..]))
}

/// Loads the readings of a data set path.
pub fn load(path: &Path) -> Result<Vec<KeyedReading>> {
    load_readings(path).with_context(|| format!("cannot load readings from {}", path.display()))
}

/// Runs the prequential protocol over `readings` with micro-batches of
/// `batch`, `passes` times over fresh pipelines: the figures are the first
/// pass's (every pass must predict the same to the bit, or it is an error),
/// the speed is the median pass's. When `log` is given, every prediction
/// of the first pass is recorded there.
pub fn run(
    config: &ModelConfig,
    readings: &[KeyedReading],
    batch: usize,
    passes: usize,
    log: Option<&mut PredictionLog>,
) -> Result<EvalReport> {
    run_delayed(config, readings, batch, passes, LabelDelay::None, log)
}

/// [`run`] with each label revealed to the learner only after `delay`
/// (`--label-delay`): every reading is still predicted, and scored, on
/// arrival.
pub fn run_delayed(
    config: &ModelConfig,
    readings: &[KeyedReading],
    batch: usize,
    passes: usize,
    delay: LabelDelay,
    log: Option<&mut PredictionLog>,
) -> Result<EvalReport> {
    if let LabelDelay::EventTime(_) = delay {
        anyhow::ensure!(
            config.timestamp.is_some(),
            "a label delay in time (30m, 1d) needs event times: model {} names no `timestamp` field; give the delay in readings",
            config.name
        );
    }
    anyhow::ensure!(batch >= 1, "`--batch` should be at least 1, but is {batch}");
    anyhow::ensure!(
        passes >= 1,
        "`--passes` should be at least 1, but is {passes}"
    );
    let contiguous = Contiguous::new(readings);
    let inputs = contiguous.inputs();
    let first = timed_pass(config, &inputs, batch, delay, log)?;
    if first.preds.is_empty() {
        anyhow::bail!("{}", nothing_scored(config, readings.len(), &first));
    }
    let mut seconds = vec![first.seconds];
    for _ in 1..passes {
        let again = timed_pass(config, &inputs, batch, delay, None)?;
        let same = again.preds.len() == first.preds.len()
            && again
                .preds
                .iter()
                .zip(&first.preds)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        anyhow::ensure!(
            same,
            "pass {} predicted differently from the first: the pipeline is not deterministic",
            seconds.len() + 1
        );
        seconds.push(again.seconds);
    }
    let seconds = median(&mut seconds);
    let (rows, scale_mask) = extract_all(config, readings)?;
    let mut model_only = (0..passes)
        .map(|_| model_only_rate(config, &rows, &scale_mask, batch))
        .collect::<Result<Vec<_>>>()?;
    let n = first.preds.len();
    let half = n / 2;
    let last = n - n / 5;
    let fifth = n / 5;
    let invalid = first.invalid;
    let invalid_examples = first.invalid_examples.clone();
    Ok(EvalReport {
        model: config.name.clone(),
        batch,
        label_delay: match delay {
            LabelDelay::None => None,
            LabelDelay::Readings(n) => Some(format!("{n} readings")),
            LabelDelay::EventTime(ms) => Some(format!("{} s of event time", ms / 1000)),
        },
        learned: first.learned,
        drifts: first.drift.as_ref().map(|d| d.count),
        drift_events: first.drift.as_ref().map(|d| d.events.clone()),
        champion: (!config.challenger.is_empty()).then(|| first.champion.clone()),
        promotions: (!config.challenger.is_empty()).then(|| first.promotions.clone()),
        passes,
        readings: readings.len(),
        scored: n,
        invalid,
        invalid_examples,
        seconds,
        readings_per_second: readings.len() as f64 / seconds.max(1e-9),
        model_only_readings_per_second: median(&mut model_only),
        classes: (first.task == Task::Multiclass).then(|| first.classes.clone()),
        all: first.metrics(0..n),
        second_half: first.metrics(half..n),
        last_20pct: first.metrics(last..n),
        first_20pct: first.metrics(0..fifth),
        last_80pct: first.metrics(fifth..n),
        hindsight_last_20pct: None,
    })
}

/// Why a pass over `readings` readings scored none: how many were
/// invalid (the first reason) and how many had no label in the target field.
fn nothing_scored(config: &ModelConfig, readings: usize, pass: &Pass) -> String {
    let unlabelled = readings - pass.invalid;
    let mut why = format!(
        "none of the {readings} readings could be scored: {unlabelled} without a label in `{}` (model `{}`'s target field)",
        config.target.field, config.name
    );
    if pass.invalid > 0 {
        why.push_str(&format!(", {} invalid", pass.invalid));
        if let Some(e) = pass.invalid_examples.first() {
            why.push_str(&format!(" (reading {}: {})", e.reading, e.error));
        }
    }
    why
}

/// The median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// One timed run of the protocol over a fresh pipeline.
struct Pass {
    learned: u64,
    /// Multiclass: the classes, in their numbers' order.
    classes: Vec<String>,
    drift: Option<models::drift::DriftDetector>,
    champion: String,
    promotions: Vec<crate::pipeline::Promotion>,
    preds: Vec<f64>,
    labels: Vec<f64>,
    /// Multiclass: each scored reading's classes and the label's probability.
    scores: Vec<ClassScore>,
    invalid: usize,
    invalid_examples: Vec<InvalidReading>,
    seconds: f64,
    task: Task,
}

/// How many invalid readings an eval report shows.
const INVALID_EXAMPLES: usize = 5;

/// One invalid reading of an eval: its place in the data and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidReading {
    /// Its place in the data, from 1 (a JSONL file's line, not counting blank lines).
    pub reading: usize,
    /// Why it was refused.
    pub error: String,
}

impl Pass {
    /// Exact metrics over a range of the scored readings.
    fn metrics(&self, r: std::ops::Range<usize>) -> MetricSet {
        match self.task {
            Task::Multiclass => evaluate_classes(&self.scores[r]),
            task => evaluate(task, &self.preds[r.clone()], &self.labels[r]),
        }
    }
}

fn timed_pass(
    config: &ModelConfig,
    inputs: &[Input<'_>],
    batch: usize,
    delay: LabelDelay,
    mut log: Option<&mut PredictionLog>,
) -> Result<Pass> {
    // `--batch B`: B readings predicted by the model as it was before them
    // (B = 1: each by the model that learned every label revealed so far)
    let mut whole = config.clone();
    whole.test_then_train = if batch == 1 {
        crate::config::TestThenTrain::Reading
    } else {
        crate::config::TestThenTrain::Batch
    };
    let mut pipeline = Pipeline::new(&whole)?;
    pipeline.set_label_delay(delay);
    let mut learned = 0;
    let mut preds = Vec::with_capacity(inputs.len());
    let mut labels = Vec::with_capacity(inputs.len());
    let mut scores = Vec::new();
    let multiclass = pipeline.task() == Task::Multiclass;
    let mut outcomes = Vec::with_capacity(batch);
    let mut invalid = 0;
    let mut invalid_examples = Vec::new();
    let start = Instant::now();
    for (c, chunk) in inputs.chunks(batch).enumerate() {
        learned += pipeline.process(chunk, &mut outcomes).learned as u64;
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                Outcome::Predicted(p) => {
                    if let Some(y) = p.label {
                        preds.push(p.prediction);
                        labels.push(y);
                        if multiclass {
                            scores.push(ClassScore {
                                predicted: ClassScore::class_of(p.prediction),
                                label: y as u32,
                                p_label: p.probabilities.get(y as usize).copied().unwrap_or(0.0),
                            });
                        }
                    }
                    if let Some(log) = log.as_deref_mut() {
                        log.push(
                            (c * batch + i) as u64,
                            p.key.as_deref(),
                            p.event_time,
                            p.prediction,
                            p.label,
                        );
                    }
                }
                Outcome::Invalid(e) => {
                    invalid += 1;
                    if invalid_examples.len() < INVALID_EXAMPLES {
                        invalid_examples.push(InvalidReading {
                            reading: c * batch + i + 1,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    if let Some(log) = log {
        log.classes = pipeline.classes().to_vec();
    }
    Ok(Pass {
        learned,
        classes: pipeline.classes().to_vec(),
        drift: pipeline.drift().cloned(),
        champion: pipeline.champion().to_owned(),
        promotions: pipeline.promotions().to_vec(),
        preds,
        labels,
        scores,
        invalid,
        invalid_examples,
        seconds: start.elapsed().as_secs_f64(),
        task: pipeline.task(),
    })
}

/// Predict-then-learn over rows extracted beforehand (not timed), per
/// micro-batch, on a fresh model.
fn model_only_rate(
    config: &ModelConfig,
    all: &Extracted,
    scale_mask: &[bool],
    batch: usize,
) -> Result<f64> {
    let rows = &all.rows;
    let task = config.model_task();
    let mut model = Learner::new(
        config.learner.validate()?,
        scale_mask.to_vec(),
        config.per_key,
        all.has_sparse,
        (task == Task::Multiclass).then_some(all.classes),
    )?;
    let mut probs = Vec::new();
    let mut sink = 0.0;
    let start = Instant::now();
    let indices: Vec<usize> = (0..all.labels.len()).collect();
    for chunk in indices.chunks(batch) {
        for &i in chunk {
            let key = all.keys[i].as_deref();
            let row = rows.row(i);
            let dense = row.as_slice().unwrap_or(&[]);
            sink += model.predict(key, dense, all.sparse_of(i), &mut probs)? + all.baselines[i];
        }
        for &i in chunk {
            if let Some(y) = all.labels[i] {
                let target = if task == Task::Regression {
                    y - all.baselines[i]
                } else {
                    y
                };
                // a refused step is counted in the main run; here only speed matters
                let _ = model.learn(
                    all.keys[i].as_deref(),
                    rows.row(i).as_slice().unwrap_or(&[]),
                    all.sparse_of(i),
                    target,
                );
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    Ok(indices.len() as f64 / seconds.max(1e-9))
}

fn fmt_metrics(task: Task, m: &MetricSet) -> String {
    let f = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.4}"));
    match task {
        Task::Regression => format!("MAE {}  RMSE {}  R² {}", f(m.mae), f(m.rmse), f(m.r2)),
        Task::Classification => format!(
            "log loss {}  accuracy {}  ROC AUC {}",
            f(m.log_loss),
            f(m.accuracy),
            f(m.roc_auc)
        ),
        Task::Multiclass => format!(
            "log loss {}  accuracy {}  macro-F1 {}",
            f(m.log_loss),
            f(m.accuracy),
            f(m.macro_f1)
        ),
    }
}

impl EvalReport {
    /// The report as text for a terminal.
    pub fn to_text(&self, task: Task) -> String {
        let examples: String = self
            .invalid_examples
            .iter()
            .map(|r| format!("\n    reading {}: {}", r.reading, r.error))
            .collect();
        let examples = if examples.is_empty() {
            examples
        } else {
            let first = if self.invalid > self.invalid_examples.len() {
                format!(
                    "the first {} of {}",
                    self.invalid_examples.len(),
                    self.invalid
                )
            } else {
                format!("all {}", self.invalid)
            };
            format!("\n  invalid readings ({first}; `streamfit run` dead-letters them):{examples}")
        };
        let hindsight = self
            .hindsight_last_20pct
            .as_ref()
            .map(|m| {
                format!(
                    "\n  hindsight batch fit (smartcore, first 80%), last 20%: {}",
                    fmt_metrics(task, m)
                )
            })
            .unwrap_or_default();
        let per_class = match (&self.classes, &self.all.class_f1) {
            (Some(classes), Some(f1)) => {
                let each: Vec<String> = classes
                    .iter()
                    .zip(f1)
                    .map(|(c, f)| format!("{c} {f:.4}"))
                    .collect();
                format!("\n  F1 by class     {}", each.join("  "))
            }
            _ => String::new(),
        };
        format!(
            "model {}  batch {}{}  readings {}  scored {}  learned {}  invalid {}\n  all scored      {}{per_class}\n  second half     {}\n  last 20%        {}\n  first 20%       {}  (the tuning window)\n  last 80%        {}  (held out)\n  {:.3} s  {:.0} readings/s (JSON decoding included)  {:.0} readings/s (predict and learn only), {}{}{}",
            self.model,
            self.batch,
            self.label_delay
                .as_ref()
                .map(|d| format!("  label delay {d}"))
                .unwrap_or_default(),
            self.readings,
            self.scored,
            self.learned,
            self.invalid,
            fmt_metrics(task, &self.all),
            fmt_metrics(task, &self.second_half),
            fmt_metrics(task, &self.last_20pct),
            fmt_metrics(task, &self.first_20pct),
            fmt_metrics(task, &self.last_80pct),
            self.seconds,
            self.readings_per_second,
            self.model_only_readings_per_second,
            match self.passes {
                1 => "one pass".to_string(),
                n => format!("medians of {n} passes"),
            },
            hindsight,
            examples,
        )
    }
}
