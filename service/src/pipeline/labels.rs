//! Labels that arrive later (`labels_topic`): each reading is predicted on
//! arrival and waits, with its features and its prediction, for the label
//! that names its id. Readings are learned in the order they arrived, each
//! once its label is known: a reading still waiting holds back the ones
//! after it until its label comes or `label_window` (readings, or event
//! time) has passed, when it is dropped and counted. So the model learns
//! the labelled readings in stream order, whatever the order labels come
//! in, and ends as the same readings learned in one pass would leave it.
//! A label that comes before its reading waits for it as long. The
//! prediction made on arrival is scored when the label is learned. All of
//! it is partition state, kept in the checkpoints.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};

use features::FeatureError;
use models::metrics::Task;
use serde::{Deserialize, Serialize};

use super::{BatchStats, Input, LabelDelay, Pipeline};

/// A reading predicted and waiting for its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Waiting {
    /// Its position among the partition's valid readings.
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_time: Option<i64>,
    row: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sparse: Vec<(u32, f64)>,
    baseline: f64,
    prediction: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    probabilities: Vec<f64>,
    /// Its label, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<f64>,
    /// Already scored (a label in the reading itself is scored on arrival).
    #[serde(default)]
    scored: bool,
}

/// A label that came before its reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Early {
    id: String,
    label: f64,
    /// The reading count and event time when it came.
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_time: Option<i64>,
}

/// The join's state in a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinSnapshot {
    waiting: Vec<Waiting>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    early: Vec<Early>,
    /// Readings dropped because their label did not come in time.
    pub expired: u64,
    /// Labels dropped because no reading of theirs came in time.
    pub unmatched: u64,
    /// Labels joined with their reading.
    pub joined: u64,
    /// The latest event time seen (for a window in event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    now: Option<i64>,
}

/// One partition's readings waiting for labels, and labels waiting for
/// readings.
#[derive(Debug, Clone)]
pub(super) struct Join {
    /// The reading's field with its id (`None`: the message key).
    id_field: Option<String>,
    /// The label message's field with the reading's id.
    label_id: String,
    /// The label message's field with the label.
    target: String,
    missing: Vec<f64>,
    classes: Vec<String>,
    window: LabelDelay,
    waiting: VecDeque<Waiting>,
    /// The ids of the readings without a label yet, to their `seq`.
    index: HashMap<String, u64>,
    early: VecDeque<Early>,
    early_index: HashMap<String, f64>,
    expired: u64,
    unmatched: u64,
    joined: u64,
    now: Option<i64>,
}

impl Join {
    pub(super) fn new(config: &crate::config::ModelConfig, window: LabelDelay) -> Join {
        let id = config.label_id.clone().unwrap_or_else(|| "id".to_owned());
        Join {
            id_field: (config.format != features::spec::InputFormat::Text).then(|| id.clone()),
            label_id: id,
            target: config.target.field.clone(),
            missing: config.target.missing.clone(),
            classes: config.target.classes.clone().unwrap_or_default(),
            window,
            waiting: VecDeque::new(),
            index: HashMap::new(),
            early: VecDeque::new(),
            early_index: HashMap::new(),
            expired: 0,
            unmatched: 0,
            joined: 0,
            now: None,
        }
    }

    /// A copy for readers: the settings and counts, nothing waiting.
    pub(super) fn summary(&self) -> Join {
        Join {
            id_field: self.id_field.clone(),
            label_id: self.label_id.clone(),
            target: self.target.clone(),
            missing: self.missing.clone(),
            classes: self.classes.clone(),
            window: self.window,
            waiting: VecDeque::new(),
            index: HashMap::new(),
            early: VecDeque::new(),
            early_index: HashMap::new(),
            expired: self.expired,
            unmatched: self.unmatched,
            joined: self.joined,
            now: self.now,
        }
    }

    pub(super) fn snapshot(&self) -> JoinSnapshot {
        JoinSnapshot {
            waiting: self.waiting.iter().cloned().collect(),
            early: self.early.iter().cloned().collect(),
            expired: self.expired,
            unmatched: self.unmatched,
            joined: self.joined,
            now: self.now,
        }
    }

    pub(super) fn restore(&mut self, s: JoinSnapshot) {
        self.index = s
            .waiting
            .iter()
            .filter(|w| w.label.is_none())
            .filter_map(|w| w.id.clone().map(|id| (id, w.seq)))
            .collect();
        self.early_index = s.early.iter().map(|e| (e.id.clone(), e.label)).collect();
        self.waiting = s.waiting.into();
        self.early = s.early.into();
        self.expired = s.expired;
        self.unmatched = s.unmatched;
        self.joined = s.joined;
        self.now = s.now;
    }

    /// Readings waiting for their label.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// True when the window has passed since `(seq, event_time)`, at
    /// reading `at` (event time `self.now`).
    fn past(&self, seq: u64, event_time: Option<i64>, at: u64) -> bool {
        match self.window {
            LabelDelay::None => true,
            LabelDelay::Readings(n) => at >= seq + n,
            LabelDelay::EventTime(ms) => match (event_time, self.now) {
                (Some(t), Some(now)) => now >= t + ms,
                _ => false,
            },
        }
    }

    /// The id of a reading.
    fn id_of(&self, input: &Input<'_>) -> Option<String> {
        match &self.id_field {
            None => input.key.map(str::to_owned),
            Some(f) => id_in(input.bytes, f),
        }
    }

    /// A label message: the reading's id and the label (a number, 0/1, or
    /// the class's number), or why not.
    fn parse(&self, task: Task, bytes: &[u8]) -> Result<(String, f64), FeatureError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| FeatureError::Json(format!("this label is not ({e})")))?;
        let id = match v.get(&self.label_id) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(FeatureError::Field {
                    field: self.label_id.clone(),
                    expected: "the id of the reading (a string or number)",
                    actual: describe(v.get(&self.label_id)),
                })
            }
        };
        let raw = v.get(&self.target);
        let bad = |expected: &'static str| FeatureError::Field {
            field: self.target.clone(),
            expected,
            actual: describe(raw),
        };
        let label = match (task, raw) {
            (
                Task::Multiclass,
                Some(
                    v @ (serde_json::Value::String(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)),
                ),
            ) => {
                // a number or boolean names its class as written, as in a
                // reading (`3` is class "3")
                let name = match v {
                    serde_json::Value::String(c) => Cow::Borrowed(c.as_str()),
                    other => Cow::Owned(other.to_string()),
                };
                self.classes
                    .iter()
                    .position(|k| *k == name)
                    .map(|j| j as f64)
                    .ok_or_else(|| bad("one of the classes in `target.classes`"))?
            }
            (Task::Classification, Some(serde_json::Value::Bool(b))) => f64::from(u8::from(*b)),
            (Task::Classification, Some(serde_json::Value::Number(n))) => match n.as_f64() {
                Some(x) if x == 0.0 || x == 1.0 => x,
                _ => return Err(bad("0 or 1")),
            },
            (Task::Regression, Some(serde_json::Value::Number(n))) => match n.as_f64() {
                Some(x) if x.is_finite() && x.abs() <= 1e15 && !self.missing.contains(&x) => x,
                _ => {
                    return Err(bad(
                        "a number of magnitude at most 1e15, not a missing sentinel",
                    ))
                }
            },
            (Task::Multiclass, _) => return Err(bad("a class name")),
            (Task::Classification, _) => return Err(bad("0 or 1")),
            (Task::Regression, _) => return Err(bad("a number")),
        };
        Ok((id, label))
    }
}

/// The id a label message names (`None` if it names none).
pub fn label_id_of(config: &crate::config::ModelConfig, bytes: &[u8]) -> Option<String> {
    id_in(bytes, config.label_id.as_deref().unwrap_or("id"))
}

/// The string or number in `field` of a JSON object (`None` if absent, or
/// if `bytes` are not one JSON object). Every other field is skipped
/// without being built: this runs for each reading of a model whose labels
/// name readings by a field of their own.
fn id_in(bytes: &[u8], field: &str) -> Option<String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let id = serde::Deserializer::deserialize_map(&mut de, IdOf(field)).ok()?;
    de.end().ok()?;
    id
}

/// Reads one field of a JSON object as an id, skipping the others (the
/// last of repeated names wins, as in a parsed `serde_json::Value`).
struct IdOf<'f>(&'f str);

impl<'de> serde::de::Visitor<'de> for IdOf<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        while let Some(wanted) = map.next_key_seed(NameIs(self.0))? {
            if wanted {
                id = match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(id)
    }
}

/// Whether a JSON object's field name is the one wanted, compared where
/// it lies in the input (no copy unless the name has escapes).
struct NameIs<'f>(&'f str);

impl<'de> serde::de::DeserializeSeed<'de> for NameIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for NameIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == self.0)
    }
}

/// A JSON value as an error message shows it: `nothing` when absent or
/// null, else its first 40 bytes.
pub(crate) fn describe(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "nothing".to_owned(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 40 {
                format!("{}…", &s[..s.floor_char_boundary(40)])
            } else {
                s
            }
        }
    }
}

/// What one reading leaves to wait for its label.
pub(super) struct Arrived<'r> {
    pub(super) input: &'r Input<'r>,
    pub(super) key: Option<&'r str>,
    pub(super) event_time: Option<i64>,
    pub(super) row: &'r [f64],
    pub(super) sparse: &'r [(u32, f64)],
    pub(super) baseline: f64,
    pub(super) prediction: f64,
    pub(super) probabilities: &'r [f64],
    /// A label in the reading itself (scored on arrival already).
    pub(super) label: Option<f64>,
}

impl Pipeline {
    /// A reading predicted: it waits for its label (learned in turn when
    /// it has one already).
    pub(super) fn wait_for_label(&mut self, seq: u64, a: Arrived<'_>, stats: &mut BatchStats) {
        let Some(mut join) = self.join.take() else {
            return;
        };
        if a.event_time.is_some() {
            join.now = a.event_time.max(join.now);
        }
        let id = join.id_of(a.input);
        let mut label = a.label;
        let scored = label.is_some();
        if label.is_none() {
            match id.as_deref().and_then(|i| join.early_index.remove(i)) {
                Some(l) => {
                    join.early.retain(|e| Some(&e.id) != id.as_ref());
                    join.joined += 1;
                    label = Some(l);
                }
                None => {
                    if let Some(i) = &id {
                        join.index.insert(i.clone(), seq);
                    }
                }
            }
        }
        // a reading with no id and no label can never learn: not kept
        if label.is_some() || id.is_some() {
            join.waiting.push_back(Waiting {
                seq,
                id,
                key: a.key.map(str::to_owned),
                event_time: a.event_time,
                row: a.row.to_vec(),
                sparse: a.sparse.to_vec(),
                baseline: a.baseline,
                prediction: a.prediction,
                probabilities: a.probabilities.to_vec(),
                label,
                scored,
            });
        }
        self.join = Some(join);
        self.release(seq + 1, stats);
    }

    /// Learns the waiting readings at the head whose labels are known and
    /// drops those (and early labels) whose window has passed, at reading
    /// count `at`.
    pub(super) fn release(&mut self, at: u64, stats: &mut BatchStats) {
        let Some(mut join) = self.join.take() else {
            return;
        };
        while let Some(w) = join.waiting.front() {
            if w.label.is_none() && !join.past(w.seq, w.event_time, at) {
                break;
            }
            let Some(w) = join.waiting.pop_front() else {
                break;
            };
            let Some(label) = w.label else {
                if let Some(id) = &w.id {
                    join.index.remove(id);
                }
                join.expired += 1;
                continue;
            };
            if !w.scored {
                self.score(w.prediction, &w.probabilities, label, w.event_time);
            }
            let target = match self.task {
                Task::Regression => label - w.baseline,
                Task::Classification | Task::Multiclass => label,
            };
            match self
                .model
                .learn_predicted(w.key.as_deref(), &w.row, &w.sparse, target, None)
            {
                Ok(()) => stats.learned += 1,
                Err(e) => {
                    self.learn_errors += 1;
                    tracing::warn!(model = %self.name, error = %e, "learning step refused");
                }
            }
        }
        while let Some(e) = join.early.front() {
            if !join.past(e.seq, e.event_time, at) {
                break;
            }
            if let Some(e) = join.early.pop_front() {
                join.early_index.remove(&e.id);
                join.unmatched += 1;
            }
        }
        self.join = Some(join);
    }

    /// Joins a micro-batch of label messages with their readings and
    /// learns what that releases; one result per message (an error names
    /// what is wrong with it: it goes to the dead-letter topic).
    pub fn apply_labels(
        &mut self,
        labels: &[Input<'_>],
        out: &mut Vec<Result<(), FeatureError>>,
    ) -> BatchStats {
        out.clear();
        let mut stats = BatchStats::default();
        let Some(mut join) = self.join.take() else {
            out.extend(labels.iter().map(|_| {
                Err(FeatureError::Json(
                    "the model has no `labels_topic`: it takes no labels".into(),
                ))
            }));
            return stats;
        };
        let at = self.seen;
        for input in labels {
            let r = join.parse(self.task, input.bytes).map(|(id, label)| {
                match join.index.remove(&id) {
                    Some(seq) => {
                        if let Ok(i) = join.waiting.binary_search_by_key(&seq, |w| w.seq) {
                            join.waiting[i].label = Some(label);
                            join.joined += 1;
                        }
                    }
                    None => {
                        // before its reading (or a second label of one):
                        // waits for a reading of that id as long
                        if join.early_index.insert(id.clone(), label).is_none() {
                            join.early.push_back(Early {
                                id,
                                label,
                                seq: at,
                                event_time: join.now,
                            });
                        } else {
                            join.early.retain(|e| e.id != id);
                            join.early.push_back(Early {
                                id,
                                label,
                                seq: at,
                                event_time: join.now,
                            });
                        }
                    }
                }
            });
            out.push(r);
        }
        self.join = Some(join);
        self.release(at, &mut stats);
        if stats.learned > 0 {
            self.version += 1;
        }
        stats
    }

    /// True if a reading with this id waits for its label here.
    pub fn awaits_label(&self, id: &str) -> bool {
        self.join.as_ref().is_some_and(|j| j.index.contains_key(id))
    }

    /// Readings waiting for their label (a model with `labels_topic`); a
    /// readers' copy keeps none, and [`crate::live::Live`] the count.
    pub fn labels_waiting(&self) -> Option<usize> {
        self.join.as_ref().map(Join::waiting)
    }

    /// Labels waiting for their reading (a model with `labels_topic`).
    pub fn labels_early(&self) -> Option<usize> {
        self.join.as_ref().map(|j| j.early.len())
    }

    /// The join's counts: (joined, expired readings, unmatched labels).
    pub fn label_counts(&self) -> Option<(u64, u64, u64)> {
        self.join
            .as_ref()
            .map(|j| (j.joined, j.expired, j.unmatched))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_read_from_its_field_alone() {
        let r =
            br#"{"ride": "soarin", "id": "r-7", "nested": {"id": "no"}, "list": [1, {"id": 2}]}"#;
        assert_eq!(id_in(r, "id").as_deref(), Some("r-7"));
        assert_eq!(id_in(br#"{"id": 42}"#, "id").as_deref(), Some("42"));
        assert_eq!(id_in(br#"{"id": 1.5e3}"#, "id").as_deref(), Some("1500.0"));
        assert_eq!(id_in(br#"{"id": "a\"b"}"#, "id").as_deref(), Some("a\"b"));
        // the last of repeated names, as a parsed Value keeps
        assert_eq!(
            id_in(br#"{"id": "a", "id": "b"}"#, "id").as_deref(),
            Some("b")
        );
        for none in [
            &br#"{"id": null}"#[..],
            br#"{"id": true}"#,
            br#"{"id": {"x": 1}}"#,
            br#"{"other": 1}"#,
            br#"["id", 1]"#,
            br#"{"id": "a"} trailing"#,
            br#"{"id": "a""#,
            b"not json",
        ] {
            assert_eq!(id_in(none, "id"), None, "{}", String::from_utf8_lossy(none));
        }
        // the same answers as reading the whole object
        for r in [
            &br#"{"id": 7, "x": [1, 2]}"#[..],
            br#"{"id": -0.0}"#,
            br#"{"id": 18446744073709551615}"#,
        ] {
            let v: serde_json::Value = serde_json::from_slice(r).expect("json");
            let want = match &v["id"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            assert_eq!(id_in(r, "id"), want);
        }
    }

    const FEATURES: &str = r#"[{ kind = "categorical", field = "ride", values = ["soarin", "dinosaur"] }, { kind = "hour_of_day" }, { kind = "day_of_week" }]"#;

    /// waits-v1 on the ride and the calendar, its labels on a topic of
    /// their own (or, `labels = false`, in the readings).
    fn config(labels: bool, window: &str) -> crate::config::ModelConfig {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let mut env = vec![("STREAMFIT_MODEL_WAITS_V1__FEATURES", FEATURES.to_owned())];
        if labels {
            env.push((
                "STREAMFIT_MODEL_WAITS_V1__LABELS_TOPIC",
                "\"waits.labels\"".to_owned(),
            ));
            env.push(("STREAMFIT_MODEL_WAITS_V1__LABEL_WINDOW", window.to_owned()));
        }
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v));
        let c = crate::config::Config::parse(&text, env).expect("valid");
        c.model("waits-v1").expect("model").clone()
    }

    fn wait(i: usize) -> f64 {
        (20 + (i * 37) % 50) as f64
    }

    /// Reading `i`, with its label or not.
    fn reading(i: usize, labelled: bool) -> String {
        let ride = if i.is_multiple_of(3) {
            "soarin"
        } else {
            "dinosaur"
        };
        let label = if labelled {
            format!(r#","posted_wait":{}"#, wait(i))
        } else {
            String::new()
        };
        format!(
            r#"{{"id":"r{i}","ride":"{ride}","ts":"2018-03-{:02}T{:02}:{:02}:00"{label}}}"#,
            1 + i / 600,
            8 + (i % 600) / 60,
            i % 60
        )
    }

    fn label(i: usize) -> String {
        format!(r#"{{"id":"r{i}","posted_wait":{}}}"#, wait(i))
    }

    fn inputs(texts: &[String]) -> Vec<Input<'_>> {
        texts
            .iter()
            .map(|t| Input {
                key: None,
                bytes: t.as_bytes(),
            })
            .collect()
    }

    /// Each reading's labels go out `delay(i)` readings after it, so labels
    /// come up to 1,000 readings late and out of order.
    fn delay(i: usize) -> usize {
        (i * 7919) % 1_000
    }

    /// Readings and labels interleaved as they would arrive, in batches
    /// of `size`; returns the labels' results.
    fn feed(p: &mut Pipeline, n: usize, size: usize) -> Vec<Result<(), FeatureError>> {
        feed_steps(p, n, size, 0..n + 1_000)
    }

    /// [`feed`] over part of the timeline (`steps`, a multiple of `size` apart).
    fn feed_steps(
        p: &mut Pipeline,
        n: usize,
        size: usize,
        steps: std::ops::Range<usize>,
    ) -> Vec<Result<(), FeatureError>> {
        let mut due: Vec<Vec<usize>> = vec![Vec::new(); n + 1_000];
        for i in 0..n {
            due[i + delay(i)].push(i);
        }
        let mut results = Vec::new();
        let mut res = Vec::new();
        for start in steps.step_by(size) {
            let end = (start + size).min(n + 1_000);
            let readings: Vec<String> = (start..end.min(n)).map(|i| reading(i, false)).collect();
            let mut out = Vec::new();
            p.process(&inputs(&readings), &mut out);
            assert!(out
                .iter()
                .all(|o| matches!(o, super::super::Outcome::Predicted(_))));
            let labels: Vec<String> = (start..end)
                .flat_map(|t| due[t].iter().map(|&i| label(i)))
                .collect();
            p.apply_labels(&inputs(&labels), &mut res);
            results.append(&mut res);
        }
        results
    }

    fn one_pass(n: usize) -> Pipeline {
        let mut p = Pipeline::new(&config(false, "")).expect("pipeline");
        let readings: Vec<String> = (0..n).map(|i| reading(i, true)).collect();
        let mut out = Vec::new();
        for chunk in inputs(&readings).chunks(97) {
            p.process(chunk, &mut out);
        }
        p
    }

    #[test]
    fn labels_late_and_out_of_order_leave_the_model_of_one_pass_in_stream_order() {
        let n = 5_000;
        let want = one_pass(n);
        for size in [1, 64, 500] {
            let mut p = Pipeline::new(&config(true, "2000")).expect("pipeline");
            let results = feed(&mut p, n, size);
            assert!(
                results.iter().all(Result::is_ok),
                "{:?}",
                results.iter().find(|r| r.is_err())
            );
            assert_eq!(
                p.labels_waiting(),
                Some(0),
                "batches of {size}: every reading learned"
            );
            assert_eq!(p.label_counts(), Some((n as u64, 0, 0)));
            assert_eq!(p.learned(), n as u64);
            assert_eq!(
                p.snapshot().model,
                want.snapshot().model,
                "batches of {size}"
            );
            // every prediction scored once, against the label that came later
            assert_eq!(p.metrics().0.count, n as u64);
        }
    }

    #[test]
    fn a_checkpoint_mid_stream_carries_the_waiting_readings_and_early_labels() {
        let n = 3_000;
        let c = config(true, "2000");
        let mut whole = Pipeline::new(&c).expect("pipeline");
        feed(&mut whole, n, 250);
        // the same, cut after 1,500 readings and restored from a snapshot
        let mut first = Pipeline::new(&c).expect("pipeline");
        feed_steps(&mut first, n, 250, 0..1_500);
        assert!(
            first.labels_waiting().is_some_and(|w| w > 100),
            "readings wait at the cut"
        );
        let snap = serde_json::to_string(&first.snapshot()).expect("encodes");
        let mut again = Pipeline::new(&c).expect("pipeline");
        again
            .restore(serde_json::from_str(&snap).expect("decodes"))
            .expect("restores");
        assert_eq!(
            serde_json::to_string(&again.snapshot()).expect("encodes"),
            snap
        );
        feed_steps(&mut again, n, 250, 1_500..n + 1_000);
        assert_eq!(again.label_counts(), whole.label_counts());
        assert_eq!(again.snapshot().model, whole.snapshot().model);
        assert_eq!(again.learned(), n as u64);
    }

    #[test]
    fn a_reading_whose_label_never_comes_is_dropped_after_the_window_and_the_rest_go_on() {
        let mut p = Pipeline::new(&config(true, "100")).expect("pipeline");
        let mut res = Vec::new();
        // a label for a reading never seen, then readings, each labelled
        // right after it but for reading 0
        p.apply_labels(&inputs(&[label(9_999)]), &mut res);
        for i in 0..300 {
            let r = [reading(i, false)];
            let mut out = Vec::new();
            p.process(&inputs(&r), &mut out);
            if i > 0 {
                p.apply_labels(&inputs(&[label(i)]), &mut res);
            }
            if i < 99 {
                assert_eq!(p.learned(), 0, "reading 0 holds the others back ({i})");
            }
        }
        assert!(res.iter().all(Result::is_ok));
        assert_eq!(
            p.label_counts(),
            Some((299, 1, 1)),
            "joined, expired, unmatched"
        );
        assert_eq!((p.learned(), p.labels_waiting()), (299, Some(0)));
    }

    #[test]
    fn a_plain_text_reading_is_labelled_by_its_message_key() {
        let text = r#"
            [kafka]
            "bootstrap.servers" = "127.0.0.1:9092"
            [[model]]
            name = "texts"
            task = "multiclass"
            format = "text"
            input_topic = "texts"
            labels_topic = "texts.labels"
            target = { field = "sentiment", classes = ["negative", "neutral", "positive"] }
            features = [ { kind = "text", field = "text", bits = 18 } ]
        "#;
        let c = crate::config::Config::parse(text, std::iter::empty()).expect("valid");
        let mut p = Pipeline::new(c.model("texts").expect("model")).expect("pipeline");
        let mut out = Vec::new();
        let reading = [Input {
            key: Some("m1"),
            bytes: b"late again, lost my bags",
        }];
        p.process(&reading, &mut out);
        assert!(p.awaits_label("m1"));
        let mut res = Vec::new();
        let label = [Input {
            key: None,
            bytes: br#"{"id":"m1","sentiment":"negative"}"#,
        }];
        p.apply_labels(&label, &mut res);
        assert!(res[0].is_ok(), "{res:?}");
        assert_eq!((p.learned(), p.label_counts()), (1, Some((1, 0, 0))));
        assert_eq!(
            p.metrics().0.count,
            1,
            "its prediction scored against the label"
        );
    }

    #[test]
    fn a_label_names_its_class_by_a_number_as_a_reading_does() {
        let text = r#"
            [kafka]
            "bootstrap.servers" = "127.0.0.1:9092"
            [[model]]
            name = "stars"
            task = "multiclass"
            input_topic = "reviews"
            labels_topic = "reviews.labels"
            target = { field = "stars", classes = ["1", "2", "3"] }
            features = [ { kind = "text", field = "text", bits = 18 } ]
        "#;
        let c = crate::config::Config::parse(text, std::iter::empty()).expect("valid");
        let mut p = Pipeline::new(c.model("stars").expect("model")).expect("pipeline");
        let mut out = Vec::new();
        let readings = [
            r#"{"id":"r1","text":"fine"}"#,
            r#"{"id":"r2","text":"meh"}"#,
        ];
        let readings: Vec<Input<'_>> = readings
            .iter()
            .map(|r| Input {
                key: None,
                bytes: r.as_bytes(),
            })
            .collect();
        p.process(&readings, &mut out);
        let mut res = Vec::new();
        let labels = [
            r#"{"id":"r1","stars":3}"#,
            r#"{"id":"r2","stars":""}"#,
            r#"{"id":"r2","stars":4}"#,
        ];
        let labels: Vec<Input<'_>> = labels
            .iter()
            .map(|l| Input {
                key: None,
                bytes: l.as_bytes(),
            })
            .collect();
        p.apply_labels(&labels, &mut res);
        assert!(res[0].is_ok(), "3 is class \"3\": {res:?}");
        for r in &res[1..] {
            let e = r.as_ref().expect_err("not a declared class").to_string();
            assert!(e.contains("target.classes"), "{e}");
        }
        assert_eq!(p.learned(), 1);
    }

    #[test]
    fn a_bad_label_says_what_is_wrong_with_it() {
        let mut p = Pipeline::new(&config(true, "100")).expect("pipeline");
        let mut res = Vec::new();
        let bad = [
            "not json".to_owned(),
            r#"{"posted_wait":3}"#.to_owned(),
            r#"{"id":"r1","posted_wait":"late"}"#.to_owned(),
            r#"{"id":"r1","posted_wait":-999}"#.to_owned(),
        ];
        p.apply_labels(&inputs(&bad), &mut res);
        let errors: Vec<String> = res
            .into_iter()
            .map(|r| r.expect_err("refused").to_string())
            .collect();
        assert!(errors[0].contains("JSON object"), "{}", errors[0]);
        assert!(errors[1].contains("`id`"), "{}", errors[1]);
        assert!(
            errors[2].contains("`posted_wait`") && errors[2].contains("\"late\""),
            "{}",
            errors[2]
        );
        assert!(errors[3].contains("missing sentinel"), "{}", errors[3]);
    }
}
