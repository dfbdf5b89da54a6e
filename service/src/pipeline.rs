//! [`Pipeline`]: one model's per-reading work, bytes in and predictions out,
//! synchronous and free of Kafka so that tests and `streamfit eval` call
//! exactly what the service runs.
//!
//! A micro-batch is processed test-then-train: every reading is extracted
//! (keyed state advances in stream order) and predicted by the model that
//! has learned every earlier reading (or, with `test_then_train = "batch"`,
//! by the model as it was before the batch), then learned; a batch that
//! learned moves the version up by one. Challengers (`contest`) process
//! the same batch in shadow.

use std::borrow::Cow;
use std::collections::VecDeque;

use features::{FeatureError, FeatureExtractor, FeatureState, LabelKind};
use models::drift::{DriftDetector, DriftEvent};
use models::metrics::{ClassScore, MetricSet, Prequential, Task};
use models::{Learner, ModelError, ModelSnapshot};

use crate::keys::{Changed, Recency};
use serde::{Deserialize, Serialize};

use crate::config::{ModelConfig, TestThenTrain, BASE_LEARNER};

mod contest;
mod labels;
use contest::Contest;
pub use contest::{ContestSnapshot, Promotion, Refused, Standing, Window};
pub(crate) use labels::describe as describe_json;
pub use labels::{label_id_of, JoinSnapshot};

/// One reading of a micro-batch: its Kafka key and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Kafka key, if any.
    pub key: Option<&'a str>,
    /// The message value.
    pub bytes: &'a [u8],
}

impl<'a> From<&'a features::datasets::KeyedReading> for Input<'a> {
    /// A reading of a data set as it would arrive from Kafka.
    fn from(r: &'a features::datasets::KeyedReading) -> Self {
        Input {
            key: r.key.as_deref(),
            bytes: &r.json,
        }
    }
}

/// Readings of a data set laid out as a Kafka fetch holds a batch of
/// messages: the values back to back in one buffer, in stream order (and
/// the keys in another), rather than one heap allocation each. `eval` and
/// the benches time the pipeline over these.
#[derive(Debug, Default)]
pub struct Contiguous {
    values: Vec<u8>,
    keys: String,
    /// Per reading: the value's end in `values`, the key's span in `keys`.
    spans: Vec<(usize, Option<(usize, usize)>)>,
}

impl Contiguous {
    /// Copies `readings` into one buffer.
    pub fn new(readings: &[features::datasets::KeyedReading]) -> Self {
        let mut c = Contiguous {
            values: Vec::with_capacity(readings.iter().map(|r| r.json.len()).sum()),
            ..Default::default()
        };
        for r in readings {
            c.values.extend_from_slice(&r.json);
            let key = r.key.as_deref().map(|k| {
                let start = c.keys.len();
                c.keys.push_str(k);
                (start, c.keys.len())
            });
            c.spans.push((c.values.len(), key));
        }
        c
    }

    /// The readings as pipeline inputs.
    pub fn inputs(&self) -> Vec<Input<'_>> {
        let mut start = 0;
        self.spans
            .iter()
            .map(|&(end, key)| {
                let bytes = &self.values[start..end];
                start = end;
                Input {
                    key: key.map(|(a, b)| &self.keys[a..b]),
                    bytes,
                }
            })
            .collect()
    }
}

/// What became of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// Predicted (and learned from, when labelled).
    Predicted(Prediction<'a>),
    /// Invalid: goes to the dead-letter topic.
    Invalid(FeatureError),
}

/// A prediction for one reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction<'a> {
    /// The entity key (borrowed from the reading or its Kafka key).
    pub key: Option<Cow<'a, str>>,
    /// The predicted value, the probability of class 1, or (multiclass)
    /// the number of the most probable class.
    pub prediction: f64,
    /// Multiclass: each class's probability, in class order (else empty).
    pub probabilities: Vec<f64>,
    /// The label (multiclass: its class number), if the reading had one.
    pub label: Option<f64>,
    /// Event time, Unix milliseconds.
    pub event_time: Option<i64>,
    /// What a regression's answer is added to: the place of the baseline
    /// feature that had a value in the config's list, and its value
    /// (`None`: no baseline feature had one, or the model has none).
    pub basis: Option<(usize, f64)>,
}

/// When a labelled reading's label becomes known to the learner
/// (`streamfit eval --label-delay`): at once, once `n` more readings have
/// arrived, or once event time has moved on by so many milliseconds. The
/// reading is predicted on arrival either way, and scored against its label
/// then; only the learning waits. Features are as they arrive (a lag of the
/// target field is the previous reading's value, known when it was read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelDelay {
    /// Learned at once.
    #[default]
    None,
    /// Learned once this many more readings have arrived.
    Readings(u64),
    /// Learned once a reading this many milliseconds later (event time) has arrived.
    EventTime(i64),
}

impl std::str::FromStr for LabelDelay {
    type Err = String;

    /// `100` (readings) or a time: `90s`, `30m`, `2h`, `1d`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("a label delay is a number of readings (100) or a time (90s, 30m, 2h, 1d), not {s:?}")
        };
        let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let n: i64 = num.parse().map_err(|_| bad())?;
        let ms = match unit {
            "" => {
                return Ok(if n == 0 {
                    LabelDelay::None
                } else {
                    LabelDelay::Readings(n as u64)
                })
            }
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        Ok(if n == 0 {
            LabelDelay::None
        } else {
            LabelDelay::EventTime(n * ms)
        })
    }
}

/// A labelled reading waiting for its label to be revealed.
#[derive(Debug, Clone)]
struct Delayed {
    /// Its position in the stream (valid readings before it).
    at: u64,
    event_time: Option<i64>,
    key: Option<String>,
    row: Vec<f64>,
    sparse: Vec<(u32, f64)>,
    target: f64,
}

/// A pipeline's full state: what a checkpoint or export carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSnapshot {
    /// The model's name.
    pub name: String,
    /// Version (micro-batches learned).
    pub version: u64,
    /// Readings processed (valid ones).
    pub seen: u64,
    /// The model.
    pub model: ModelSnapshot,
    /// Keyed feature state.
    pub features: FeatureState,
    /// Live metrics.
    pub metrics: Prequential,
    /// The feature columns the weights stand for, in order; a restore
    /// checks them against the config (empty in checkpoints written before
    /// they were recorded: then only the width is checked).
    #[serde(default)]
    pub columns: Vec<String>,
    /// When keys are capped (`max_keys`): when each key was last used.
    #[serde(default)]
    pub recency: Recency,
    /// The drift detector's state and the drifts it signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftDetector>,
    /// Which of the config's learners this is: a challenger's name (absent:
    /// the model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learner: Option<String>,
    /// The challengers, their windows and the promotions on record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contest: Option<ContestSnapshot>,
    /// `labels_topic`: the readings waiting for their labels, and labels
    /// waiting for their readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<JoinSnapshot>,
}

/// A model with its feature extractor and live metrics.
#[derive(Debug)]
pub struct Pipeline {
    name: String,
    task: Task,
    extractor: FeatureExtractor,
    model: Learner,
    round_to: Option<f64>,
    metrics: Prequential,
    version: u64,
    seen: u64,
    learn_errors: u64,
    rows: Vec<f64>,
    /// The batch's sparse columns, back to back (see `Pending::sparse`).
    sparse: Vec<(u32, f64)>,
    pending: Vec<Pending>,
    /// Keys whose state a checkpoint must write (when any state is keyed).
    changed: Option<Changed>,
    /// The cap on keys (`max_keys`), and when each was last used.
    max_keys: Option<usize>,
    recency: Recency,
    /// This batch's evictions: the reading that caused each, and the key.
    evicted: Vec<(usize, String)>,
    /// Each reading predicted by the model that has learned every earlier
    /// one (true), or the whole batch by the model as it was before it.
    per_reading: bool,
    /// `eval --label-delay`: labelled readings wait here until their label
    /// is revealed (not state: eval only, never checkpointed).
    delay: LabelDelay,
    delayed: VecDeque<Delayed>,
    /// The drift detector on the prequential losses (`drift` in the config).
    drift: Option<DriftDetector>,
    /// Which learner of the config this is: `base` (the model's own) or a
    /// challenger's name.
    learner_name: String,
    /// The challengers learning in shadow (none in challengers themselves).
    contest: Option<Box<Contest>>,
    /// `labels_topic`: the readings waiting for their labels.
    join: Option<labels::Join>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    label: Option<f64>,
    baseline: f64,
    /// The reading's sparse columns: a range of `Pipeline::sparse`.
    sparse: (usize, usize),
}

impl Clone for Pipeline {
    /// Copies the state, not the scratch buffers: the worker clones the
    /// pipeline after every learned batch to publish it to HTTP readers.
    fn clone(&self) -> Self {
        Pipeline {
            name: self.name.clone(),
            task: self.task,
            extractor: self.extractor.clone(),
            model: self.model.clone(),
            round_to: self.round_to,
            metrics: self.metrics.clone(),
            version: self.version,
            seen: self.seen,
            learn_errors: self.learn_errors,
            rows: Vec::new(),
            sparse: Vec::new(),
            pending: Vec::new(),
            // readers need neither the checkpoint's bookkeeping nor the cap's
            changed: None,
            max_keys: None,
            recency: Recency::default(),
            evicted: Vec::new(),
            per_reading: self.per_reading,
            delay: self.delay,
            delayed: VecDeque::new(),
            drift: self.drift.clone(),
            learner_name: self.learner_name.clone(),
            // readers get the standings, not the challengers' pipelines
            contest: self.contest.as_ref().map(|c| Box::new(c.summary())),
            join: self.join.as_ref().map(labels::Join::summary),
        }
    }
}

/// One reading to learn: its key, dense row, sparse columns and, when the
/// model predicted it just before and has not changed since, what it said.
struct Learning<'r> {
    key: Option<&'r str>,
    row: &'r [f64],
    sparse: &'r [(u32, f64)],
    predicted: Option<(f64, &'r [f64])>,
    /// Its position in the stream and event time (for a label delay).
    at: u64,
    event_time: Option<i64>,
}

/// Counts of one processed batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Readings predicted.
    pub predicted: usize,
    /// Readings learned from.
    pub learned: usize,
    /// Readings rejected.
    pub invalid: usize,
    /// Keys evicted to keep within `max_keys`.
    pub evicted: usize,
}

impl Pipeline {
    /// Builds a fresh pipeline from a `[[model]]` table.
    pub fn new(config: &ModelConfig) -> anyhow::Result<Pipeline> {
        let task = config.model_task();
        let label = match task {
            Task::Regression => LabelKind::Number,
            Task::Classification => LabelKind::Binary,
            Task::Multiclass => LabelKind::Classes,
        };
        let extractor = FeatureExtractor::for_label(config.feature_spec(), label)?;
        let params = config.learner.validate()?;
        let model = Learner::new(
            params,
            extractor.scale_mask(),
            config.per_key,
            extractor.has_sparse(),
            (task == Task::Multiclass).then(|| extractor.classes().len()),
        )?;
        let keyed = extractor.keeps_key_state() || config.per_key;
        Ok(Pipeline {
            name: config.name.clone(),
            task,
            metrics: Prequential::new(task, config.metrics_window),
            extractor,
            model,
            round_to: config.round_to,
            version: 0,
            seen: 0,
            learn_errors: 0,
            rows: Vec::new(),
            sparse: Vec::new(),
            pending: Vec::new(),
            changed: keyed.then(Changed::default),
            max_keys: config.max_keys.filter(|_| keyed),
            recency: Recency::default(),
            evicted: Vec::new(),
            per_reading: config.test_then_train == TestThenTrain::Reading,
            delay: LabelDelay::None,
            delayed: VecDeque::new(),
            drift: config.drift.map(DriftDetector::new).transpose()?,
            learner_name: BASE_LEARNER.to_owned(),
            contest: None,
            join: config
                .labels_topic
                .as_ref()
                .map(|_| config.label_window().map(|w| labels::Join::new(config, w)))
                .transpose()?,
        })
        .and_then(|mut p| {
            if !config.challenger.is_empty() {
                let entrants = config
                    .challenger
                    .iter()
                    .map(|c| {
                        let mut e = Pipeline::new(&config.challenger_config(c)?)?;
                        e.learner_name = c.name.clone();
                        Ok(e)
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                p.contest = Some(Box::new(Contest::new(config.promotion, entrants)));
            }
            Ok(p)
        })
    }

    /// The drift detector, when the config has one.
    pub fn drift(&self) -> Option<&DriftDetector> {
        self.drift.as_ref()
    }

    /// Delays learning each labelled reading (`eval --label-delay`).
    pub fn set_label_delay(&mut self, delay: LabelDelay) {
        self.delay = delay;
        if let Some(c) = &mut self.contest {
            c.set_label_delay(delay);
        }
    }

    /// Labelled readings predicted but not learned yet (their label is
    /// still to be revealed).
    pub fn awaiting_labels(&self) -> usize {
        self.delayed.len()
    }

    /// Learns the waiting readings whose labels are revealed by the time
    /// the reading at stream position `at` (event time `now`) arrives.
    fn reveal(&mut self, at: u64, now: Option<i64>, stats: &mut BatchStats) {
        while let Some(d) = self.delayed.front() {
            let due = match self.delay {
                LabelDelay::None => true,
                LabelDelay::Readings(n) => d.at + n <= at,
                LabelDelay::EventTime(ms) => match (d.event_time, now) {
                    (Some(t), Some(now)) => t + ms <= now,
                    // without event times a time delay cannot pass
                    _ => false,
                },
            };
            if !due {
                break;
            }
            let Some(d) = self.delayed.pop_front() else {
                break;
            };
            match self
                .model
                .learn_predicted(d.key.as_deref(), &d.row, &d.sparse, d.target, None)
            {
                Ok(()) => stats.learned += 1,
                Err(e) => {
                    self.learn_errors += 1;
                    tracing::warn!(model = %self.name, error = %e, "learning step refused");
                }
            }
        }
    }

    /// The keys whose state changed since the last call (none when no
    /// state is keyed): what an incremental checkpoint writes.
    pub fn take_changed(&mut self) -> Vec<String> {
        self.changed.as_mut().map(Changed::take).unwrap_or_default()
    }

    /// The pages of sparse columns learned, or whose document frequencies
    /// (`idf`) were counted, since the last call, ascending (none for a
    /// dense model; all of them the first time after a restore): what an
    /// incremental checkpoint writes of a sparse model.
    pub fn take_changed_pages(&mut self) -> Vec<u32> {
        let mut pages = self
            .model
            .sparse_mut()
            .map(models::SparseModel::take_dirty_pages)
            .unwrap_or_default();
        let counted = self.extractor.take_changed_pages();
        if !counted.is_empty() {
            pages.extend(counted);
            pages.sort_unstable();
            pages.dedup();
        }
        pages
    }

    /// Keys with state of their own (lags or a model).
    pub fn key_count(&self) -> usize {
        // each set holds the others' keys or is empty (learning a key
        // extracts it first; the cap tracks every keyed reading), so the
        // largest is their union
        self.extractor
            .key_count()
            .max(self.model.key_count())
            .max(self.recency.len())
    }

    /// Notes a keyed reading: its key changed, and under a cap the least
    /// recently used key goes (its lags now, its model before the learning
    /// step of reading `i`, so learning sees evictions in reading order).
    fn note_key(&mut self, i: usize, key: &str) {
        if let Some(c) = &mut self.changed {
            c.note(key);
        }
        let Some(max) = self.max_keys else { return };
        if let Some(victim) = self.recency.touch(key, max) {
            self.extractor.forget_key(&victim);
            if let Some(c) = &mut self.changed {
                c.note(&victim);
            }
            self.evicted.push((i, victim));
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Regression or classification.
    pub fn task(&self) -> Task {
        self.task
    }

    /// Makes the version greater than `v`, keeping it if it is already:
    /// a model swapped in for one at version `v` must not look older.
    pub fn raise_version_past(&mut self, v: u64) {
        self.version = self.version.max(v + 1);
    }

    /// The model version: micro-batches learned so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Valid readings processed.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Readings learned from.
    pub fn learned(&self) -> u64 {
        self.model.learned()
    }

    /// Labelled readings whose learning step was refused (see the log).
    pub fn learn_errors(&self) -> u64 {
        self.learn_errors
    }

    /// The model.
    pub fn model(&self) -> &Learner {
        &self.model
    }

    /// Multiclass: the classes known, numbered in this order (else empty).
    pub fn classes(&self) -> &[String] {
        self.extractor.classes()
    }

    /// The feature extractor.
    pub fn extractor(&self) -> &FeatureExtractor {
        &self.extractor
    }

    /// True if this pipeline holds state for `key` (its own model or lags):
    /// the pipeline of the partition the key's readings arrive on.
    pub fn knows_key(&self, key: &str) -> bool {
        self.extractor.knows_key(key) || self.model.has_key(key)
    }

    /// The live metrics' state.
    pub fn prequential(&self) -> &Prequential {
        &self.metrics
    }

    /// Live metrics: cumulative and rolling.
    pub fn metrics(&self) -> (MetricSet, MetricSet) {
        (self.metrics.cumulative(), self.metrics.rolling())
    }

    /// The model's output for a reading: the value, the probability of
    /// class 1, or the most probable class with each class's probability
    /// in `probs`.
    fn output(
        &self,
        key: Option<&str>,
        row: &[f64],
        sparse: &[(u32, f64)],
        baseline: f64,
        probs: &mut Vec<f64>,
    ) -> Result<f64, ModelError> {
        let y = self.model.predict(key, row, sparse, probs)?;
        Ok(match (self.task, self.round_to) {
            (Task::Regression, Some(step)) => ((baseline + y) / step).round() * step,
            (Task::Regression, None) => baseline + y,
            (Task::Classification | Task::Multiclass, _) => y,
        })
    }

    /// Scores one labelled prediction in the live metrics and watches its
    /// loss for drift (absolute error; log loss for classifiers).
    fn score(&mut self, prediction: f64, probs: &[f64], label: f64, event_time: Option<i64>) {
        if let Some(d) = &mut self.drift {
            let loss = loss(self.task, prediction, probs, label);
            if let Some(e) = d.update(loss, event_time) {
                log_drift(&self.name, &e);
            }
        }
        if self.task == Task::Multiclass {
            let k = label as usize;
            self.metrics.update_class(ClassScore {
                // no class known before this one: NO_CLASS
                predicted: ClassScore::class_of(prediction),
                label: k as u32,
                p_label: probs.get(k).copied().unwrap_or(0.0),
            });
        } else {
            self.metrics.update(prediction, label);
        }
    }

    /// Processes one micro-batch test-then-train; `out` gets one outcome per
    /// input. Each reading is predicted by the model that has learned every
    /// earlier reading, so the outcomes do not depend on where batches
    /// begin (`test_then_train = "reading"`), or, with `"batch"`, every
    /// reading by the model as it was before the batch.
    pub fn process<'a>(&mut self, batch: &[Input<'a>], out: &mut Vec<Outcome<'a>>) -> BatchStats {
        if self.contest.is_some() {
            return contest::process(self, batch, out);
        }
        let stats = self.process_own(batch, out);
        if stats.learned > 0 {
            self.version += 1;
        }
        stats
    }

    /// [`Pipeline::process`] without the challengers, and without moving
    /// the version (the caller does, once per batch).
    fn process_own<'a>(&mut self, batch: &[Input<'a>], out: &mut Vec<Outcome<'a>>) -> BatchStats {
        let width = self.extractor.width();
        out.clear();
        self.pending.clear();
        let mut rows = std::mem::take(&mut self.rows);
        rows.resize(batch.len() * width, 0.0);
        let mut sparse_all = std::mem::take(&mut self.sparse);
        sparse_all.clear();
        let mut sparse = Vec::new();
        let mut stats = BatchStats::default();
        // 1. extract and predict (and, reading by reading, learn)
        for (i, input) in batch.iter().enumerate() {
            let row = &mut rows[i * width..(i + 1) * width];
            let extracted =
                match self
                    .extractor
                    .extract_sparse(input.bytes, input.key, row, &mut sparse)
                {
                    Ok(e) => e,
                    Err(e) => {
                        stats.invalid += 1;
                        out.push(Outcome::Invalid(e));
                        continue;
                    }
                };
            if let Some(k) = extracted.key.as_deref() {
                if self.changed.is_some() {
                    self.note_key(i, k);
                }
            }
            if self.per_reading {
                // a key this reading pushed out goes before anything is learned
                for (_, victim) in self.evicted.drain(..) {
                    self.model.forget_key(&victim);
                    stats.evicted += 1;
                }
            }
            if self.delay != LabelDelay::None && self.per_reading {
                // the labels revealed by now are learned before this reading is predicted
                let at = self.seen + stats.predicted as u64;
                self.reveal(at, extracted.event_time, &mut stats);
            }
            let key = extracted.key.as_deref();
            let mut probabilities = Vec::new();
            let prediction =
                match self.output(key, row, &sparse, extracted.baseline, &mut probabilities) {
                    Ok(p) => p,
                    Err(e) => {
                        stats.invalid += 1;
                        out.push(Outcome::Invalid(FeatureError::Json(format!(
                            "the model refused it: {e}"
                        ))));
                        continue;
                    }
                };
            if self.join.is_some() {
                // learned in turn, once its label is known
                if let Some(label) = extracted.label {
                    self.score(prediction, &probabilities, label, extracted.event_time);
                }
                let seq = self.seen + stats.predicted as u64;
                let arrived = labels::Arrived {
                    input,
                    key,
                    event_time: extracted.event_time,
                    row,
                    sparse: &sparse,
                    baseline: extracted.baseline,
                    prediction,
                    probabilities: &probabilities,
                    label: extracted.label,
                };
                self.wait_for_label(seq, arrived, &mut stats);
            } else if let Some(label) = extracted.label {
                self.score(prediction, &probabilities, label, extracted.event_time);
                if self.per_reading {
                    // the model predicted this very reading just now
                    let predicted = Some((prediction, probabilities.as_slice()));
                    let l = Learning {
                        key,
                        row,
                        sparse: &sparse,
                        predicted,
                        at: self.seen + stats.predicted as u64,
                        event_time: extracted.event_time,
                    };
                    self.learn(l, label, extracted.baseline, &mut stats);
                }
            }
            let from = sparse_all.len();
            if !self.per_reading {
                sparse_all.extend_from_slice(&sparse);
            }
            self.pending.push(Pending {
                label: extracted.label,
                baseline: extracted.baseline,
                sparse: (from, sparse_all.len()),
            });
            out.push(Outcome::Predicted(Prediction {
                key: extracted.key,
                prediction,
                probabilities,
                label: extracted.label,
                event_time: extracted.event_time,
                basis: extracted.basis.map(|j| (j, extracted.baseline)),
            }));
            stats.predicted += 1;
        }
        // 2. the whole batch predicted: learn the labelled readings, in order
        let mut row_index = 0;
        let mut pending = std::mem::take(&mut self.pending);
        let evicted = std::mem::take(&mut self.evicted);
        let mut evictions = evicted.iter().peekable();
        let whole_batch = !self.per_reading;
        for (i, outcome) in out.iter().enumerate().filter(|_| whole_batch) {
            while let Some((_, victim)) = evictions.next_if(|(at, _)| *at <= i) {
                self.model.forget_key(victim);
            }
            let Outcome::Predicted(prediction) = outcome else {
                continue;
            };
            let p = &pending[row_index];
            row_index += 1;
            let Some(label) = p.label else { continue };
            let row = &rows[i * width..(i + 1) * width];
            let (from, to) = p.sparse;
            let at = self.seen + row_index as u64 - 1;
            if self.delay != LabelDelay::None {
                self.reveal(at, prediction.event_time, &mut stats);
            }
            let l = Learning {
                key: prediction.key.as_deref(),
                row,
                sparse: &sparse_all[from..to],
                predicted: None,
                at,
                event_time: prediction.event_time,
            };
            self.learn(l, label, p.baseline, &mut stats);
        }
        for (_, victim) in evictions {
            self.model.forget_key(victim);
        }
        stats.evicted += evicted.len();
        let mut evicted = evicted;
        evicted.clear();
        self.evicted = evicted;
        pending.clear();
        self.pending = pending;
        self.rows = rows;
        self.sparse = sparse_all;
        self.seen += stats.predicted as u64;
        stats
    }

    /// Learns one labelled reading (its target relative to the baseline,
    /// for regression); a refused step is counted and logged.
    fn learn(&mut self, l: Learning<'_>, label: f64, baseline: f64, stats: &mut BatchStats) {
        let Learning {
            key,
            row,
            sparse,
            predicted,
            at,
            event_time,
        } = l;
        let target = match self.task {
            Task::Regression => label - baseline,
            Task::Classification | Task::Multiclass => label,
        };
        if self.delay != LabelDelay::None {
            self.delayed.push_back(Delayed {
                at,
                event_time,
                key: key.map(str::to_owned),
                row: row.to_vec(),
                sparse: sparse.to_vec(),
                target,
            });
            return;
        }
        match self
            .model
            .learn_predicted(key, row, sparse, target, predicted)
        {
            Ok(()) => stats.learned += 1,
            Err(e) => {
                self.learn_errors += 1;
                tracing::warn!(model = %self.name, error = %e, "learning step refused");
            }
        }
    }

    /// Predicts one reading without learning or touching any state.
    pub fn predict_one<'a>(
        &self,
        bytes: &'a [u8],
        key: Option<&'a str>,
    ) -> Result<Prediction<'a>, FeatureError> {
        let mut row = vec![0.0; self.extractor.width()];
        let mut sparse = Vec::new();
        let e = self
            .extractor
            .extract_readonly_sparse(bytes, key, &mut row, &mut sparse)?;
        let mut probabilities = Vec::new();
        let prediction = self
            .output(
                e.key.as_deref(),
                &row,
                &sparse,
                e.baseline,
                &mut probabilities,
            )
            .map_err(|err| FeatureError::Json(format!("the model refused it: {err}")))?;
        Ok(Prediction {
            key: e.key,
            prediction,
            probabilities,
            label: e.label,
            event_time: e.event_time,
            basis: e.basis.map(|j| (j, e.baseline)),
        })
    }

    /// The columns the weights stand for: the dense ones by name, then
    /// each sparse feature described.
    fn columns(&self) -> Vec<String> {
        let mut c = self.extractor.resolved_names();
        c.extend(self.extractor.sparse_names().iter().cloned());
        c
    }

    /// The pipeline's state as plain data.
    pub fn snapshot(&self) -> PipelineSnapshot {
        PipelineSnapshot {
            name: self.name.clone(),
            version: self.version,
            seen: self.seen,
            model: ModelSnapshot::of(&self.model),
            features: self.extractor.state().clone(),
            metrics: self.metrics.clone(),
            columns: self.columns(),
            recency: self.recency.clone(),
            drift: self.drift.clone(),
            learner: (self.learner_name != BASE_LEARNER).then(|| self.learner_name.clone()),
            contest: self.contest.as_ref().map(|c| c.snapshot()),
            labels: self.join.as_ref().map(labels::Join::snapshot),
        }
    }

    /// Restores a snapshot taken of a pipeline with the same config. The
    /// config wins over the snapshot where that is well defined: new
    /// learner hyper-parameters of the same kind (a learning rate, a
    /// penalty) are taken over, keeping what the model learned, and the log
    /// says so. A snapshot whose feature columns differ from the config's
    /// (another order, a category added or removed) or whose learner is of
    /// another kind is refused with an error that names the difference: its
    /// weights would stand for other features.
    pub fn restore(&mut self, snap: PipelineSnapshot) -> anyhow::Result<()> {
        if snap.name != self.name {
            anyhow::bail!(
                "the snapshot is of model {:?}, not {:?}",
                snap.name,
                self.name
            );
        }
        // the pipeline of the checkpoint's champion takes the champion's place
        self.restore_champion(snap.learner.as_deref().unwrap_or(BASE_LEARNER));
        let model = snap.model.restore()?;
        if kind_of(&model) != kind_of(&self.model) {
            anyhow::bail!(
                "the checkpoint's model is {} but the config's is {} (text or hashed features, or the task, changed); start this model afresh (another `service.group_id`, or `streamfit replay`)",
                kind_of(&model),
                kind_of(&self.model)
            );
        }
        if model.n_features() != self.extractor.width() {
            anyhow::bail!(
                "the snapshot's model has {} features, but the config's spec gives {}; was the spec changed?",
                model.n_features(),
                self.extractor.width()
            );
        }
        let mut model = model;
        let fresh = self.extractor.clone();
        self.extractor.set_state(snap.features)?;
        if !snap.columns.is_empty() {
            let now = self.columns();
            if now != snap.columns {
                self.extractor = fresh;
                anyhow::bail!("{}", describe_column_change(&snap.columns, &now));
            }
        }
        let want = *self.model.params();
        let had = *model.params();
        if want != had {
            let valid = want.validate()?;
            if let Err(e) = model.retune(valid) {
                self.extractor = fresh;
                anyhow::bail!(
                    "the checkpoint was learned with another learner than the config's: {e}; keep the checkpoint's learner ({had:?}), or start this model afresh (another `service.group_id`, or `streamfit replay`)"
                );
            }
            tracing::warn!(model = %self.name, checkpoint = ?had, config = ?want, "learner settings changed since the checkpoint: the restored model goes on learning with the config's (migrated)");
        }
        self.model = model;
        self.recency = snap.recency;
        self.recency.reindex();
        self.metrics = snap.metrics;
        if let (Some(now), Some(was)) = (&mut self.drift, snap.drift) {
            if now.params() == was.params() {
                *now = was;
            } else {
                // new settings watch afresh; the drifts signalled stay on record
                now.count = was.count;
                now.events = was.events;
            }
        }
        self.version = snap.version;
        self.seen = snap.seen;
        self.restore_contest(snap.contest);
        if let (Some(j), Some(s)) = (self.join.as_mut(), snap.labels) {
            j.restore(s);
        }
        Ok(())
    }
}

/// What a model's events topic gets: a drift signalled, a champion changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelEvent {
    /// The drift detector signalled.
    Drift {
        /// Labelled readings the detector had scored.
        at: u64,
        /// Event time of the reading that signalled it (Unix ms).
        event_time_ms: Option<i64>,
        /// The mean loss since the detector's previous reset.
        mean_loss: f64,
        /// The learner that was champion.
        champion: String,
    },
    /// A challenger took over.
    Promotion(Promotion),
}

impl Pipeline {
    /// Drifts and promotions so far: pass them to
    /// [`Pipeline::events_since`] after processing a batch.
    pub fn event_counts(&self) -> (u64, u64) {
        (
            self.drift.as_ref().map_or(0, |d| d.count),
            self.promotions_total(),
        )
    }

    /// The events signalled since the counts were `before` (those still on
    /// record: the detector keeps its latest drifts), oldest first.
    pub fn events_since(&self, before: (u64, u64)) -> Vec<ModelEvent> {
        let (drifts, promotions) = self.event_counts();
        let mut out = Vec::new();
        if let Some(d) = &self.drift {
            let new = (drifts.saturating_sub(before.0) as usize).min(d.events.len());
            out.extend(
                d.events[d.events.len() - new..]
                    .iter()
                    .map(|e| ModelEvent::Drift {
                        at: e.at,
                        event_time_ms: e.event_time,
                        mean_loss: e.mean_loss,
                        champion: self.learner_name.clone(),
                    }),
            );
        }
        let kept = self.promotions();
        let new = (promotions.saturating_sub(before.1) as usize).min(kept.len());
        out.extend(
            kept[kept.len() - new..]
                .iter()
                .cloned()
                .map(ModelEvent::Promotion),
        );
        out
    }
}

/// The loss of one prediction, as drift detection and challengers compare
/// them: the absolute error, or the log loss for classifiers.
fn loss(task: Task, prediction: f64, probs: &[f64], label: f64) -> f64 {
    let eps = models::metrics::LOG_LOSS_EPS;
    match task {
        Task::Regression => (prediction - label).abs(),
        Task::Classification => {
            let p = prediction.clamp(eps, 1.0 - eps);
            -(label * p.ln() + (1.0 - label) * (1.0 - p).ln())
        }
        Task::Multiclass => -probs
            .get(label as usize)
            .copied()
            .unwrap_or(0.0)
            .max(eps)
            .ln(),
    }
}

fn log_drift(model: &str, e: &DriftEvent) {
    tracing::warn!(model = %model, at = e.at, event_time = ?e.event_time, mean_loss = e.mean_loss, "drift: the prequential loss rose beyond the detector's threshold");
}

fn kind_of(m: &Learner) -> &'static str {
    match m {
        Learner::Dense(_) => "dense",
        Learner::Sparse(s) if s.is_multiclass() => "sparse multiclass",
        Learner::Sparse(_) => "sparse binary",
    }
}

/// What changed between a checkpoint's feature columns and the config's,
/// in words that say what to do.
fn describe_column_change(was: &[String], now: &[String]) -> String {
    let mut a = was.to_vec();
    let mut b = now.to_vec();
    a.sort();
    b.sort();
    if a == b {
        let (i, (x, y)) = was
            .iter()
            .zip(now)
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .unwrap_or((0, (&was[0], &now[0])));
        return format!(
            "the config lists the features in another order than the checkpoint (column {i} was `{x}`, is now `{y}`): the learned weights would go to the wrong features; put the config's lists back in the checkpoint's order, or start this model afresh (another `service.group_id`, or `streamfit replay`)"
        );
    }
    let added: Vec<&String> = now.iter().filter(|c| !was.contains(c)).collect();
    let dropped: Vec<&String> = was.iter().filter(|c| !now.contains(c)).collect();
    format!(
        "the config's features differ from the checkpoint's: the config adds {added:?} and drops {dropped:?}; restore with the checkpoint's feature spec, or start this model afresh (another `service.group_id`, or `streamfit replay`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use features::datasets::KeyedReading;

    #[test]
    fn contiguous_inputs_are_the_readings_in_order() {
        let readings = vec![
            KeyedReading {
                key: Some("soarin".into()),
                json: br#"{"a":1}"#.to_vec(),
            },
            KeyedReading {
                key: None,
                json: Vec::new(),
            },
            KeyedReading {
                key: Some(String::new()),
                json: r#"{"b":"é"}"#.as_bytes().to_vec(),
            },
        ];
        let c = Contiguous::new(&readings);
        let inputs = c.inputs();
        assert_eq!(inputs.len(), readings.len());
        for (input, r) in inputs.iter().zip(&readings) {
            let expected = Input::from(r);
            assert_eq!(input.key, expected.key);
            assert_eq!(input.bytes, expected.bytes);
        }
    }

    fn shipped_with(env: &[(&str, &str)]) -> ModelConfig {
        shipped_model("waits-v1", env)
    }

    fn shipped_model(name: &str, env: &[(&str, &str)]) -> ModelConfig {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let c = crate::config::Config::parse(&text, env).expect("valid");
        c.model(name).expect("model").clone()
    }

    /// Tweets of three moods, the words saying which, 7 airlines.
    fn moody_tweets(n: usize) -> Vec<String> {
        let words = [
            ("negative", "late lost bags awful delayed"),
            ("neutral", "flight tomorrow question gate"),
            ("positive", "thanks great crew lovely"),
        ];
        (0..n)
            .map(|i| {
                let (mood, w) = words[(i * 7 + i / 5) % 3];
                let w: Vec<&str> = w.split(' ').collect();
                format!(
                    r#"{{"id":"{i}","ts":"2015-02-17T07:{:02}:00Z","airline":"A{}","text":"@air {} {} #{i}","sentiment":"{mood}","negative":{}}}"#,
                    i % 60,
                    i % 7,
                    w[i % w.len()],
                    w[(i + 1) % w.len()],
                    u8::from(mood == "negative")
                )
            })
            .collect()
    }

    /// Each reading's outcome (prediction and probabilities) in batches of `size`.
    fn outcomes(
        m: &ModelConfig,
        readings: &[String],
        size: usize,
    ) -> (Vec<(f64, Vec<f64>)>, Pipeline) {
        let mut p = Pipeline::new(m).expect("pipeline");
        let inputs: Vec<Input<'_>> = readings
            .iter()
            .map(|r| Input {
                key: None,
                bytes: r.as_bytes(),
            })
            .collect();
        let (mut got, mut out) = (Vec::new(), Vec::new());
        for chunk in inputs.chunks(size) {
            p.process(chunk, &mut out);
            got.extend(out.iter().map(|o| match o {
                Outcome::Predicted(x) => (x.prediction, x.probabilities.clone()),
                Outcome::Invalid(e) => panic!("{e}"),
            }));
        }
        (got, p)
    }

    #[test]
    fn a_text_model_learns_three_classes_the_same_in_any_batches_and_restores_exactly() {
        let m = shipped_model("sentiment", &[]);
        let tweets = moody_tweets(300);
        let (one, p1) = outcomes(&m, &tweets, 1);
        let (big, p90) = outcomes(&m, &tweets, 90);
        assert_eq!(one, big, "outcomes do not depend on the batch size");
        assert_eq!(p1.snapshot().model, p90.snapshot().model);
        assert_eq!(p1.classes(), ["negative", "neutral", "positive"]);
        let (cum, _) = p1.metrics();
        assert!(cum.accuracy.expect("accuracy") > 0.8, "{cum:?}");
        assert!(cum.macro_f1.is_some() && cum.class_f1.as_ref().map(Vec::len) == Some(3));
        // whole batches: other predictions, the same learning (the sparse
        // rows are kept for the learning pass)
        let mut batch = m.clone();
        batch.test_then_train = TestThenTrain::Batch;
        let (first, pb) = outcomes(&batch, &tweets, 90);
        assert_ne!(first, big);
        assert_eq!(pb.snapshot().model, p90.snapshot().model);
        // a checkpoint round trip predicts and goes on learning the same
        let json = serde_json::to_string(&p1.snapshot()).expect("json");
        let mut restored = Pipeline::new(&m).expect("pipeline");
        restored
            .restore(serde_json::from_str(&json).expect("snapshot"))
            .expect("restores");
        let more = moody_tweets(330)[300..].to_vec();
        let mut original = p1;
        let mut out = Vec::new();
        let inputs: Vec<Input<'_>> = more
            .iter()
            .map(|r| Input {
                key: None,
                bytes: r.as_bytes(),
            })
            .collect();
        original.process(&inputs, &mut out);
        let a: Vec<_> = out.clone();
        restored.process(&inputs, &mut out);
        assert_eq!(a, out);
        assert_eq!(original.snapshot().model, restored.snapshot().model);
        // the binary text model's checkpoint does not restore as this one
        let (_, binary) = outcomes(&shipped_model("tweets", &[]), &tweets, 50);
        let mut snap = binary.snapshot();
        snap.name = "sentiment".into();
        let mut p = Pipeline::new(&m).expect("pipeline");
        let e = format!("{:#}", p.restore(snap).expect_err("refused"));
        assert!(
            e.contains("sparse binary") && e.contains("sparse multiclass"),
            "{e}"
        );
    }

    fn learned(m: &ModelConfig) -> Pipeline {
        let (_, p) = predictions(m, &rising_waits(50), 50);
        assert!(p.learned() > 0);
        p
    }

    /// Predictions of `readings` processed in micro-batches of `size`.
    fn predictions(m: &ModelConfig, readings: &[String], size: usize) -> (Vec<f64>, Pipeline) {
        let mut p = Pipeline::new(m).expect("pipeline");
        let inputs: Vec<Input<'_>> = readings
            .iter()
            .map(|r| Input {
                key: Some("soarin"),
                bytes: r.as_bytes(),
            })
            .collect();
        let mut got = Vec::new();
        let mut out = Vec::new();
        for chunk in inputs.chunks(size) {
            p.process(chunk, &mut out);
            got.extend(out.iter().map(|o| match o {
                Outcome::Predicted(x) => x.prediction,
                Outcome::Invalid(e) => panic!("{e}"),
            }));
        }
        (got, p)
    }

    fn rising_waits(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    r#"{{"ride":"soarin","ts":"2018-01-01T{:02}:{:02}:00","posted_wait":{}}}"#,
                    9 + i / 12,
                    (i % 12) * 5,
                    20 + i
                )
            })
            .collect()
    }

    #[test]
    fn each_reading_is_predicted_by_the_model_that_learned_every_earlier_one() {
        let m = shipped_with(&[]);
        assert_eq!(m.test_then_train, TestThenTrain::Reading, "the default");
        let readings = rising_waits(60);
        let (one, p1) = predictions(&m, &readings, 1);
        let (whole, p60) = predictions(&m, &readings, 60);
        assert_eq!(one, whole, "outcomes do not depend on the batch size");
        assert_eq!(p1.metrics(), p60.metrics());
        assert_eq!(p1.snapshot().model, p60.snapshot().model);

        // whole-batch semantics: one batch is predicted by the untrained model
        let mut batch = m.clone();
        batch.test_then_train = TestThenTrain::Batch;
        let (first, pb) = predictions(&batch, &readings, 60);
        assert!(
            first.windows(2).all(|w| w[0] == w[1]),
            "one untrained model for the whole batch: {first:?}"
        );
        assert_ne!(first, whole);
        assert_eq!(pb.snapshot().model, p60.snapshot().model, "same learning");
    }

    #[test]
    fn a_label_delay_learns_each_reading_that_many_readings_or_that_much_event_time_later() {
        let m = shipped_with(&[]);
        let readings = rising_waits(60);
        let run = |delay: LabelDelay| {
            let mut p = Pipeline::new(&m).expect("pipeline");
            p.set_label_delay(delay);
            let mut got = Vec::new();
            let mut out = Vec::new();
            for r in &readings {
                let input = [Input {
                    key: Some("soarin"),
                    bytes: r.as_bytes(),
                }];
                p.process(&input, &mut out);
                got.extend(out.iter().map(|o| match o {
                    Outcome::Predicted(x) => x.prediction,
                    Outcome::Invalid(e) => panic!("{e}"),
                }));
            }
            (got, p)
        };
        let (now, p0) = run(LabelDelay::None);
        let (six, p6) = run(LabelDelay::Readings(6));
        let (half_hour, p30) = run(LabelDelay::EventTime(30 * 60_000));
        // the readings are 5 minutes apart: 30 minutes is 6 readings
        assert_eq!(six, half_hour);
        assert_eq!(
            p6.awaiting_labels(),
            6,
            "the last six labels are not revealed yet"
        );
        assert_eq!(p30.awaiting_labels(), 6);
        assert_eq!(p0.awaiting_labels(), 0);
        assert_eq!(p6.learned() + 6, p0.learned());
        // reading j's label is revealed when reading j + 6 arrives, before
        // it is predicted: the first six by the untrained model
        assert!(six[..6].windows(2).all(|w| w[0] == w[1]), "{six:?}");
        assert_ne!(six[5], six[6]);
        assert_ne!(six, now);
        assert_eq!(
            six[6], now[1],
            "reading 6 knows what reading 1 knew without the delay"
        );
        // parsed from the command line
        assert_eq!("0".parse::<LabelDelay>(), Ok(LabelDelay::None));
        assert_eq!("100".parse::<LabelDelay>(), Ok(LabelDelay::Readings(100)));
        assert_eq!(
            "30m".parse::<LabelDelay>(),
            Ok(LabelDelay::EventTime(1_800_000))
        );
        assert_eq!(
            "1d".parse::<LabelDelay>(),
            Ok(LabelDelay::EventTime(86_400_000))
        );
        let e = "30 minutes".parse::<LabelDelay>().expect_err("bad");
        assert!(e.contains("30m"), "{e}");
    }

    #[test]
    fn a_drift_in_the_waits_is_signalled_and_its_record_survives_a_checkpoint() {
        let mut m = shipped_with(&[]);
        m.drift = Some(models::drift::DriftParams::PageHinkley {
            delta: 0.25,
            threshold: 50.0,
            min_readings: 30,
        });
        // ten days of steady waits (10 readings a day), then waits that jump
        // by 40 minutes from one reading to the next: the last wait no longer
        // says much about the next, and the errors rise and stay up
        let reading = |i: usize, shift: usize| {
            format!(
                r#"{{"ride":"soarin","ts":"2018-01-{:02}T{:02}:00:00","posted_wait":{}}}"#,
                1 + i / 10,
                9 + i % 10,
                30 + (i * 7) % 11 + shift
            )
        };
        let steady: Vec<String> = (0..100).map(|i| reading(i, 0)).collect();
        let shifted: Vec<String> = (100..200).map(|i| reading(i, 40 * (i % 2))).collect();
        fn feed(p: &mut Pipeline, rs: &[String]) {
            let mut out = Vec::new();
            for r in rs {
                let input = [Input {
                    key: Some("soarin"),
                    bytes: r.as_bytes(),
                }];
                p.process(&input, &mut out);
            }
        }
        let mut p = Pipeline::new(&m).expect("pipeline");
        feed(&mut p, &steady);
        let before = p.drift().expect("a detector").count;
        feed(&mut p, &shifted);
        let d = p.drift().expect("a detector");
        assert!(d.count > before, "the shift is signalled");
        let first = d.events[before as usize];
        // (its threshold is 50 standard deviations of the losses since the
        // last reset, which include the untrained model's first errors)
        assert!(
            first.at > 100 && first.at <= 160,
            "signalled within 60 readings of the change, at {}",
            first.at
        );
        // the record is state: checkpointed and restored
        let json = serde_json::to_string(&p.snapshot()).expect("json");
        let mut restored = Pipeline::new(&m).expect("pipeline");
        restored
            .restore(serde_json::from_str(&json).expect("snapshot"))
            .expect("restores");
        assert_eq!(restored.drift(), p.drift());
    }

    #[test]
    fn a_restore_refuses_features_in_another_order_naming_the_column() {
        let m = shipped_with(&[]);
        let snap = learned(&m).snapshot();
        let mut reordered = m.clone();
        reordered.features.swap(1, 2);
        let mut p = Pipeline::new(&reordered).expect("pipeline");
        let e = format!("{:#}", p.restore(snap).expect_err("refused"));
        assert!(e.contains("another order") && e.contains("column"), "{e}");
    }

    #[test]
    fn a_restore_takes_a_new_learning_rate_and_keeps_what_was_learned() {
        let m = shipped_with(&[]);
        let before = learned(&m);
        let faster = shipped_with(&[(
            "STREAMFIT_MODEL_WAITS_V1__LEARNER",
            r#"{ optimizer = { kind = "adagrad", learning_rate = 0.3 } }"#,
        )]);
        let mut p = Pipeline::new(&faster).expect("pipeline");
        p.restore(before.snapshot()).expect("migrated");
        let dense = |p: &Pipeline| p.model().dense().expect("dense").shared().clone();
        assert_eq!(dense(&p).params(), &faster.learner);
        assert_eq!(p.learned(), before.learned());
        assert_eq!(dense(&p).weights(), dense(&before).weights());
    }

    #[test]
    fn a_restore_refuses_another_optimiser_kind() {
        let m = shipped_with(&[]);
        let snap = learned(&m).snapshot();
        let sgd = shipped_with(&[(
            "STREAMFIT_MODEL_WAITS_V1__LEARNER",
            r#"{ optimizer = { kind = "sgd" } }"#,
        )]);
        let mut p = Pipeline::new(&sgd).expect("pipeline");
        let e = format!("{:#}", p.restore(snap).expect_err("refused"));
        assert!(e.contains("optimizer.kind") && e.contains("adagrad"), "{e}");
    }
}
