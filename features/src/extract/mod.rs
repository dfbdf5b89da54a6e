//! [`FeatureExtractor`]: a reading's bytes to a feature row, with keyed state.
//!
//! Lags and running means are state per key (ride, patient) and are updated
//! in stream order as readings are extracted, so a reading's lag is always
//! the previous reading of its key, whatever the micro-batch boundaries.
//! A reading that fails leaves the state untouched.
//!
//! Files, one job each:
//! - this one: [`FeatureExtractor`] at work, a reading to its dense row and
//!   sparse columns, updating its state;
//! - `build`: a spec checked (errors name the key at fault) and compiled
//!   into steps;
//! - `steps`: what a spec compiles to (dense and sparse steps, the keyed
//!   histories they read);
//! - `state`: the keyed and learned state a checkpoint carries;
//! - `calendar`: the time columns and their memo;
//! - `hash`: the Fx and FNV-1a hashes of the hot path.

mod build;
mod calendar;
mod hash;
mod state;
mod steps;

use std::borrow::Cow;
use std::sync::Arc;

use arrayvec::ArrayVec;

use crate::decode::{bytes_eq, decode_into, text, Fields, Reading, Slots, Value};
use crate::error::FeatureError;
use crate::spec::{FeatureSpec, Reset};
use crate::text::hash_value;
use crate::time::Timestamp;

use calendar::{time_columns, TimeMemo};
use hash::fnv1a;
pub use hash::{FastMap, FxHasher};
use state::{DocFreq, History, ProfileSlot};
pub use state::{FeatureState, KeyMap, KeyState};
use steps::{normalize_length, FixedValues, HistSpec, SparseStep, Step};

/// What extraction yields beside the row.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted<'a> {
    /// The entity key (Kafka key, else the spec's key field).
    pub key: Option<Cow<'a, str>>,
    /// The label, when the reading has a valid one.
    pub label: Option<f64>,
    /// What the model's output is added to (the baseline lag, else 0).
    pub baseline: f64,
    /// Which of the spec's baseline features gave `baseline` (its place
    /// in the list; `None`: none had a value, the baseline is 0).
    pub basis: Option<usize>,
    /// Event time in Unix milliseconds, when the reading has one.
    pub event_time: Option<i64>,
}

/// What the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// A number (regression).
    Number,
    /// 0 or 1 (a number or a boolean).
    Binary,
    /// One of several classes (a string, or a number or boolean taken as
    /// text), given as the class's number: declared in the spec's
    /// `target.classes`, or learned in order of appearance.
    Classes,
}

/// The most classes learned in order of appearance.
pub const MAX_CLASSES: usize = 1000;

/// The name of class number `k` of `classes` (a prediction or label of a
/// multiclass model); none for a NaN (no class known yet) or a number
/// beyond them.
pub fn class_name(classes: &[String], k: f64) -> Option<&str> {
    (k >= 0.0)
        .then(|| classes.get(k as usize))
        .flatten()
        .map(String::as_str)
}

/// Sparse columns: a feature's own range starts at its number times this
/// (2^24 columns each, up to 256 sparse features).
const SPARSE_RANGE_BITS: u32 = 24;

/// The largest magnitude a numeric field or label may have. Beyond it a
/// reading is refused: squares and sums of such values overflow the online
/// scalers, and no real measurement is that large.
pub const MAX_ABS: f64 = 1e15;

/// Turns readings into feature rows for one model.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    spec: FeatureSpec,
    fields: Fields,
    key_slot: Option<usize>,
    ts_slot: Option<usize>,
    target_slot: usize,
    steps: Vec<Step>,
    /// Per step, its first column; then the row's width.
    starts: Vec<usize>,
    /// True when a step learns its vocabulary.
    learns_vocab: bool,
    /// Not state: per learned vocabulary, its values indexed as declared
    /// ones are (rebuilt when a value is learned or a state restored), so
    /// that a learned value is found as fast as a declared one.
    vocab_index: Vec<FixedValues>,
    hists: Vec<HistSpec>,
    /// The baseline features (`Step::Lag` or `Step::Profile`), their step
    /// indices in order of preference.
    baseline: Vec<usize>,
    names: Vec<String>,
    scale_mask: Vec<bool>,
    needs_time: bool,
    label_kind: LabelKind,
    /// Multiclass with the classes in the spec (none learned).
    declared_classes: bool,
    sparse_steps: Vec<SparseStep>,
    /// Describes the sparse features (a checkpoint's weights stand for them).
    sparse_names: Vec<String>,
    /// `format = "text"`: the slot the message's text goes to.
    text_slot: Option<usize>,
    state: FeatureState,
    /// Not state: a cache of a pure function of the timestamp text.
    time_memo: TimeMemo,
}

/// An error in the spec, naming its key.
fn spec_error(key: impl Into<String>, message: impl Into<String>) -> FeatureError {
    FeatureError::Spec {
        key: key.into(),
        message: message.into(),
    }
}

impl FeatureExtractor {
    /// The spec this extractor was built from.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Column names of the feature row.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Width of the feature row.
    pub fn width(&self) -> usize {
        self.names.len()
    }

    /// Which columns the model should standardise online.
    pub fn scale_mask(&self) -> Vec<bool> {
        self.scale_mask.clone()
    }

    /// Names of learned categorical columns, resolved with the current vocabulary.
    pub fn resolved_names(&self) -> Vec<String> {
        let mut names = self.names.clone();
        for (step, &col) in self.steps.iter().zip(&self.starts) {
            if let Step::Learned { slot, vocab, .. } = step {
                for (j, v) in self.state.vocab[*vocab].iter().enumerate() {
                    names[col + j] = format!("{}={v}", self.fields.name(*slot));
                }
            }
        }
        names
    }

    fn width_of(step: &Step) -> usize {
        match step {
            Step::Numeric { indicator, .. } => 1 + usize::from(*indicator),
            Step::Fixed { values, .. } => values.len() + 1,
            Step::Learned { max, .. } => max + 1,
            Step::Hashed { buckets, .. } => *buckets,
            Step::Hour { harmonics } => 2 * harmonics,
            Step::Weekday => 7,
            Step::DayOfYear => 2,
            Step::Lag { .. } | Step::Profile { .. } => 2,
            Step::Mean { .. } => 1,
        }
    }

    /// True if keyed state (lags, running means) is held for `key`.
    pub fn knows_key(&self, key: &str) -> bool {
        self.state.keys.contains_key(key)
    }

    /// The extractor's state (for checkpoints).
    pub fn state(&self) -> &FeatureState {
        &self.state
    }

    /// The pages of the columns whose document frequencies (`idf`) changed
    /// since the last call: [`FeatureState::take_changed_pages`].
    pub fn take_changed_pages(&mut self) -> Vec<u32> {
        self.state.take_changed_pages()
    }

    /// True if readings leave state under their key (lags, running means).
    pub fn keeps_key_state(&self) -> bool {
        !self.hists.is_empty()
    }

    /// Number of keys with keyed state.
    pub fn key_count(&self) -> usize {
        self.state.keys.len()
    }

    /// Forgets `key`'s state (evicting it); its next reading starts afresh.
    pub fn forget_key(&mut self, key: &str) {
        self.state.keys.remove(key);
    }

    /// Describes the sparse (text, hashed) features, in spec order.
    pub fn sparse_names(&self) -> &[String] {
        &self.sparse_names
    }

    /// True if readings have sparse columns (text or hashed features).
    pub fn has_sparse(&self) -> bool {
        !self.sparse_steps.is_empty()
    }

    /// What the target is.
    pub fn label_kind(&self) -> LabelKind {
        self.label_kind
    }

    /// Multiclass: the classes known, numbered in this order.
    pub fn classes(&self) -> &[String] {
        &self.state.classes
    }

    /// Replaces the state (restoring a checkpoint).
    pub fn set_state(&mut self, state: FeatureState) -> Result<(), FeatureError> {
        if self.declared_classes && state.classes != self.state.classes {
            return Err(spec_error(
                "target.classes",
                format!(
                    "are {:?}, but the checkpoint was written with {:?}: the learned weights would go to other classes",
                    self.state.classes, state.classes
                ),
            ));
        }
        if state.doc_freq.len() != self.state.doc_freq.len() {
            return Err(spec_error(
                "features",
                "the checkpoint was written for a different feature spec (the text features' `idf`)",
            ));
        }
        if state.vocab.len() != self.state.vocab.len()
            || state
                .keys
                .values()
                .any(|k| k.hist.len() != self.hists.len())
        {
            return Err(spec_error(
                "features",
                "the checkpoint was written for a different feature spec",
            ));
        }
        self.state = state;
        self.vocab_index = self
            .state
            .vocab
            .iter()
            .map(|v| FixedValues::new(v))
            .collect();
        Ok(())
    }

    /// Extracts one reading into `row` and updates the keyed state. For
    /// a spec with sparse features, see [`FeatureExtractor::extract_sparse`].
    pub fn extract<'a>(
        &mut self,
        bytes: &'a [u8],
        kafka_key: Option<&'a str>,
        row: &mut [f64],
    ) -> Result<Extracted<'a>, FeatureError> {
        self.extract_sparse(bytes, kafka_key, row, &mut Vec::new())
    }

    /// Extracts one reading: dense columns into `row`, sparse ones (text,
    /// hashed) into `sparse` as (column, value), each column once; updates
    /// the state (keys, vocabularies, classes, document frequencies).
    pub fn extract_sparse<'a>(
        &mut self,
        bytes: &'a [u8],
        kafka_key: Option<&'a str>,
        row: &mut [f64],
        sparse: &mut Vec<(u32, f64)>,
    ) -> Result<Extracted<'a>, FeatureError> {
        // built here, not returned by a function: see `Slots::reset`
        let mut reading = Reading {
            values: Slots::Inline(ArrayVec::new_const()),
        };
        reading.values.reset(self.fields.len());
        // lent to `fill` for the reading (`fill` borrows the rest of self),
        // so that the key is looked up once to read and update its state
        let mut keys = std::mem::take(&mut self.state.keys);
        let mut memo = std::mem::take(&mut self.time_memo);
        let filled = self.fill(
            &mut reading,
            bytes,
            kafka_key,
            row,
            Keys::Update(&mut keys),
            Some(&mut memo),
        );
        self.state.keys = keys;
        self.time_memo = memo;
        let extracted = filled?;
        if self.learns_vocab {
            self.update_vocab(&reading, row);
        }
        if let (LabelKind::Classes, Some(label)) = (self.label_kind, extracted.label) {
            if label as usize == self.state.classes.len() {
                if let Ok(Some(c)) = self.category(&reading, self.target_slot, true) {
                    self.state
                        .classes
                        .push(String::from_utf8_lossy(&c).into_owned());
                }
            }
        }
        sparse.clear();
        if !self.sparse_steps.is_empty() {
            let mut steps = std::mem::take(&mut self.sparse_steps);
            let mut doc_freq = std::mem::take(&mut self.state.doc_freq);
            self.sparse_columns(&reading, &mut steps, &mut doc_freq, true, sparse);
            self.sparse_steps = steps;
            self.state.doc_freq = doc_freq;
        }
        Ok(extracted)
    }

    /// Extracts one reading into `row` without touching the state (ad-hoc scoring).
    pub fn extract_readonly<'a>(
        &self,
        bytes: &'a [u8],
        kafka_key: Option<&'a str>,
        row: &mut [f64],
    ) -> Result<Extracted<'a>, FeatureError> {
        self.extract_readonly_sparse(bytes, kafka_key, row, &mut Vec::new())
    }

    /// [`FeatureExtractor::extract_sparse`] without touching the state.
    pub fn extract_readonly_sparse<'a>(
        &self,
        bytes: &'a [u8],
        kafka_key: Option<&'a str>,
        row: &mut [f64],
        sparse: &mut Vec<(u32, f64)>,
    ) -> Result<Extracted<'a>, FeatureError> {
        let mut reading = Reading::empty(&self.fields);
        let extracted = self.fill(
            &mut reading,
            bytes,
            kafka_key,
            row,
            Keys::Read(&self.state.keys),
            None,
        )?;
        sparse.clear();
        if !self.sparse_steps.is_empty() {
            // the hashers' buffers are scratch: a copy for this reading
            let mut steps = self.sparse_steps.clone();
            let mut doc_freq = Vec::new();
            self.sparse_columns(&reading, &mut steps, &mut doc_freq, false, sparse);
        }
        Ok(extracted)
    }

    /// The sparse columns of a reading whose fields `fill` has checked;
    /// with `learn`, counts the reading's terms in the document frequencies.
    fn sparse_columns(
        &self,
        reading: &Reading<'_>,
        steps: &mut [SparseStep],
        doc_freq: &mut [DocFreq],
        learn: bool,
        out: &mut Vec<(u32, f64)>,
    ) {
        for step in steps {
            match step {
                SparseStep::Text {
                    slot,
                    hasher,
                    base,
                    idf,
                    normalize,
                    ..
                } => {
                    let Ok(Some(bytes)) = self.category(reading, *slot, true) else {
                        continue;
                    };
                    // valid UTF-8 (the decoder's, or checked for plain text):
                    // checked again, cheaply, rather than trusted unsafely
                    let text = match std::str::from_utf8(&bytes) {
                        Ok(t) => Cow::Borrowed(t),
                        Err(_) => String::from_utf8_lossy(&bytes),
                    };
                    let from = out.len();
                    hasher.append(&text, *base, out);
                    if let Some(d) = *idf {
                        let freq = if learn { doc_freq.get_mut(d) } else { None };
                        let known = if learn {
                            None
                        } else {
                            self.state.doc_freq.get(d)
                        };
                        match (freq, known) {
                            (Some(f), _) => {
                                for (c, v) in out[from..].iter_mut() {
                                    *v *= f.idf(*c);
                                }
                                f.docs += 1;
                                for (c, _) in &out[from..] {
                                    *f.df.entry(*c).or_insert(0) += 1;
                                    f.changed.mark(*c);
                                }
                            }
                            (None, Some(f)) => {
                                for (c, v) in out[from..].iter_mut() {
                                    *v *= f.idf(*c);
                                }
                            }
                            (None, None) => {}
                        }
                    }
                    if *normalize > 0.0 {
                        normalize_length(&mut out[from..], *normalize);
                    }
                }
                SparseStep::Hashed {
                    slot, bits, base, ..
                } => {
                    if let Ok(Some(bytes)) = self.category(reading, *slot, true) {
                        let (c, v) = hash_value(&bytes, *bits);
                        out.push((c | *base, v));
                    }
                }
            }
        }
    }

    fn num(
        &self,
        reading: &Reading<'_>,
        slot: usize,
        optional: bool,
    ) -> Result<Option<f64>, FeatureError> {
        match &reading.values[slot] {
            Value::Num(v) if v.abs() <= MAX_ABS => Ok(Some(*v)),
            Value::Num(v) => Err(FeatureError::wrong(
                self.fields.name(slot),
                "a number of magnitude at most 1e15",
                format!("{v:e}"),
            )),
            Value::Absent | Value::Null if optional => Ok(None),
            Value::Absent => Err(FeatureError::Missing {
                field: self.fields.name(slot).to_owned(),
            }),
            other => Err(FeatureError::wrong(
                self.fields.name(slot),
                "a number",
                other.describe(),
            )),
        }
    }

    fn category<'r>(
        &self,
        reading: &'r Reading<'_>,
        slot: usize,
        optional: bool,
    ) -> Result<Option<Cow<'r, [u8]>>, FeatureError> {
        match &reading.values[slot] {
            Value::Str(s) => Ok(Some(Cow::Borrowed(s.as_ref()))),
            Value::Num(v) => Ok(Some(Cow::Owned(format!("{v}").into_bytes()))),
            Value::Bool(b) => Ok(Some(Cow::Borrowed(if *b { b"true" } else { b"false" }))),
            Value::Absent | Value::Null if optional => Ok(None),
            Value::Absent => Err(FeatureError::Missing {
                field: self.fields.name(slot).to_owned(),
            }),
            other => Err(FeatureError::wrong(
                self.fields.name(slot),
                "a string",
                other.describe(),
            )),
        }
    }

    /// Decodes `bytes` into `reading` (in place: it is large) and fills
    /// `row`; with [`Keys::Update`], then advances the key's state.
    fn fill<'a>(
        &self,
        reading: &mut Reading<'a>,
        bytes: &'a [u8],
        kafka_key: Option<&'a str>,
        row: &mut [f64],
        keys: Keys<'_>,
        mut memo: Option<&mut TimeMemo>,
    ) -> Result<Extracted<'a>, FeatureError> {
        let learn_vocab = matches!(keys, Keys::Update(_));
        if bytes.len() > self.spec.max_reading_bytes {
            return Err(FeatureError::TooLarge {
                limit: self.spec.max_reading_bytes,
                actual: bytes.len(),
            });
        }
        if row.len() != self.width() {
            return Err(spec_error(
                "features",
                format!(
                    "row should have {} columns, but has {}",
                    self.width(),
                    row.len()
                ),
            ));
        }
        match self.text_slot {
            None => decode_into(bytes, &self.fields, reading)?,
            Some(slot) => {
                if let Err(e) = std::str::from_utf8(bytes) {
                    return Err(FeatureError::NotText(format!(
                        "byte {} is not (after {} valid bytes)",
                        e.valid_up_to(),
                        e.valid_up_to()
                    )));
                }
                reading.values[slot] = Value::Str(Cow::Borrowed(bytes));
            }
        }
        let reading = &*reading;
        let key: Option<Cow<'a, str>> = match (kafka_key, self.key_slot) {
            (Some(k), _) => Some(Cow::Borrowed(k)),
            (None, Some(slot)) => match &reading.values[slot] {
                Value::Str(s) => Some(text(s)),
                Value::Num(v) => Some(Cow::Owned(format!("{v}"))),
                Value::Absent | Value::Null => None,
                other => {
                    return Err(FeatureError::wrong(
                        self.fields.name(slot),
                        "a string",
                        other.describe(),
                    ))
                }
            },
            (None, None) => None,
        };
        if key.is_none() && !self.hists.is_empty() {
            let field = self.spec.key.clone().unwrap_or_else(|| "key".into());
            return Err(FeatureError::Missing { field });
        }
        let ts_text = match self.ts_slot.map(|slot| &reading.values[slot]) {
            Some(Value::Str(s)) => Some(s.as_ref()),
            _ => None,
        };
        let memo_hit = match (memo.as_deref(), ts_text) {
            (Some(m), Some(text)) => m.ts.is_some() && bytes_eq(&m.text, text),
            _ => false,
        };
        let ts = match self.ts_slot {
            None => None,
            Some(_) if memo_hit => memo.as_deref().and_then(|m| m.ts),
            Some(slot) => {
                let name = self.fields.name(slot);
                match &reading.values[slot] {
                    Value::Str(s) => Some(Timestamp::parse_bytes(s).ok_or_else(|| {
                        FeatureError::wrong(
                            name,
                            "an ISO 8601 timestamp such as 2018-01-01T09:05:00",
                            format!("{:?}", text(s)),
                        )
                    })?),
                    Value::Num(v) => Some(Timestamp::from_unix(*v).ok_or_else(|| {
                        FeatureError::wrong(name, "Unix seconds or milliseconds", format!("{v}"))
                    })?),
                    Value::Absent | Value::Null if !self.needs_time => None,
                    Value::Absent => {
                        return Err(FeatureError::Missing {
                            field: name.to_owned(),
                        })
                    }
                    other => {
                        return Err(FeatureError::wrong(
                            name,
                            "an ISO 8601 timestamp",
                            other.describe(),
                        ))
                    }
                }
            }
        };
        let target = self.fields.name(self.target_slot);
        let classification = self.label_kind == LabelKind::Binary;
        let label = match &reading.values[self.target_slot] {
            Value::Absent | Value::Null => None,
            _ if self.label_kind == LabelKind::Classes => {
                self.class_of(reading, matches!(keys, Keys::Update(_)))?
            }
            Value::Num(v) if self.spec.target.missing.contains(v) => None,
            Value::Num(v) if classification => {
                if *v == 0.0 || *v == 1.0 {
                    Some(*v)
                } else {
                    return Err(FeatureError::wrong(target, "0 or 1", format!("{v}")));
                }
            }
            Value::Num(v) if v.abs() <= MAX_ABS => Some(*v),
            Value::Num(v) => {
                return Err(FeatureError::wrong(
                    target,
                    "a number of magnitude at most 1e15",
                    format!("{v:e}"),
                ))
            }
            Value::Bool(b) if classification => Some(f64::from(u8::from(*b))),
            other => return Err(FeatureError::wrong(target, "a number", other.describe())),
        };
        // the one lookup of the key: read for the row, then updated
        let mut keys = keys;
        let (shared, found) = match (&mut keys, key.as_deref()) {
            (_, None) => (None, None),
            (Keys::Read(map), Some(k)) => (map.get(k).map(Arc::as_ref), None),
            (Keys::Update(map), Some(k)) => (None, map.get_mut(k)),
        };
        let key_state: Option<&KeyState> = shared.or(found.as_deref().map(Arc::as_ref));
        let day = ts.map(|t| t.days);
        if let Some(m) = memo.as_deref_mut().filter(|_| !memo_hit) {
            // refilled below and valid again once the reading succeeds
            m.ts = None;
            m.cols.clear();
        }
        let mut time_col = 0;
        let mut baseline = 0.0;
        // the place in the baseline list of the feature that gave `baseline`
        // (usize::MAX: none yet); a value is kept when it comes earlier
        let mut basis = usize::MAX;
        let mut col = 0;
        for (si, step) in self.steps.iter().enumerate() {
            match step {
                Step::Numeric {
                    slot,
                    missing,
                    indicator,
                    optional,
                    min,
                    max,
                } => {
                    let v = self.num(reading, *slot, *optional)?;
                    let v = v.filter(|v| !missing.contains(v));
                    if let Some(x) = v {
                        if x < *min || x > *max {
                            return Err(FeatureError::wrong(
                                self.fields.name(*slot),
                                "within the spec's min and max",
                                format!("{x}"),
                            ));
                        }
                    }
                    row[col] = v.unwrap_or(f64::NAN);
                    if *indicator {
                        row[col + 1] = f64::from(u8::from(v.is_none()));
                    }
                }
                Step::Fixed {
                    slot,
                    values,
                    optional,
                } => {
                    let w = values.len() + 1;
                    row[col..col + w].fill(0.0);
                    if let Some(c) = self.category(reading, *slot, *optional)? {
                        row[col + values.column(&c)] = 1.0;
                    }
                }
                Step::Learned {
                    slot,
                    vocab,
                    max,
                    optional,
                } => {
                    row[col..col + max + 1].fill(0.0);
                    if let Some(c) = self.category(reading, *slot, *optional)? {
                        let known = &self.vocab_index[*vocab];
                        let idx = match known.position(c.as_ref()) {
                            Some(j) => j,
                            // a new value gets the next column when learning and there is room
                            None if learn_vocab && known.len() < *max => known.len(),
                            None => *max,
                        };
                        row[col + idx] = 1.0;
                    }
                }
                Step::Hashed {
                    slot,
                    buckets,
                    optional,
                } => {
                    row[col..col + buckets].fill(0.0);
                    if let Some(c) = self.category(reading, *slot, *optional)? {
                        row[col + (fnv1a(&c) % *buckets as u64) as usize] = 1.0;
                    }
                }
                Step::Hour { .. } | Step::Weekday | Step::DayOfYear => {
                    let w = self.starts[si + 1] - col;
                    let out = &mut row[col..col + w];
                    match memo.as_deref_mut() {
                        Some(m) if memo_hit => out.copy_from_slice(&m.cols[time_col..time_col + w]),
                        Some(m) => {
                            time_columns(step, ts, out);
                            m.cols.extend_from_slice(out);
                        }
                        None => time_columns(step, ts, out),
                    }
                    time_col += w;
                }
                Step::Lag { hist, order, .. } => {
                    let lag = key_state
                        .map(|k| &k.hist[*hist])
                        .filter(|h| self.hists[*hist].reset == Reset::Never || Some(h.day) == day)
                        .and_then(|h| h.recent.len().checked_sub(*order).map(|i| h.recent[i]));
                    row[col] = lag.unwrap_or(0.0);
                    row[col + 1] = f64::from(u8::from(lag.is_some()));
                    if let Some(v) = lag {
                        self.offer_baseline(si, v, &mut basis, &mut baseline);
                    }
                }
                Step::Profile { hist } => {
                    let value = match (key_state, ts, self.hists[*hist].profile) {
                        (Some(k), Some(t), Some((slots, weight))) => {
                            let h = &k.hist[*hist];
                            h.slots.get(slot_of(t.seconds, slots)).and_then(|s| {
                                // a later day sees the state's day folded in
                                if t.days > h.day {
                                    s.folded(weight)
                                } else {
                                    (s.days > 0).then_some(s.mean)
                                }
                            })
                        }
                        _ => None,
                    };
                    row[col] = value.unwrap_or(0.0);
                    row[col + 1] = f64::from(u8::from(value.is_some()));
                    if let Some(v) = value {
                        self.offer_baseline(si, v, &mut basis, &mut baseline);
                    }
                }
                Step::Mean { hist, .. } => {
                    let mean = key_state
                        .map(|k| &k.hist[*hist])
                        .filter(|h| h.count > 0.0)
                        .filter(|h| self.hists[*hist].reset == Reset::Never || Some(h.day) == day)
                        .map(|h| h.mean);
                    row[col] = mean.unwrap_or(0.0);
                }
            }
            col = self.starts[si + 1];
        }
        // the lag and mean fields must be numbers (or missing) for the state update
        for h in &self.hists {
            match &reading.values[h.slot] {
                Value::Num(_) | Value::Absent | Value::Null => {}
                other => {
                    return Err(FeatureError::wrong(
                        self.fields.name(h.slot),
                        "a number",
                        other.describe(),
                    ))
                }
            }
        }
        // the sparse features' fields must be text (or numbers, booleans)
        for step in &self.sparse_steps {
            let (SparseStep::Text { slot, optional, .. }
            | SparseStep::Hashed { slot, optional, .. }) = step;
            self.category(reading, *slot, *optional)?;
        }
        if let (Some(m), Some(text), false) = (memo, ts_text, memo_hit) {
            m.text.clear();
            m.text.extend_from_slice(text);
            m.ts = ts;
        }
        if !self.hists.is_empty() {
            let day = day.unwrap_or(0);
            let seconds = ts.map_or(0.0, |t| t.seconds);
            match found {
                // copies the key's state only if a reader still holds it
                Some(state) => self.advance(Arc::make_mut(state), reading, day, seconds),
                None => {
                    if let (Keys::Update(map), Some(k)) = (&mut keys, key.as_deref()) {
                        let state = map.entry(k.to_owned()).or_insert_with(|| {
                            Arc::new(KeyState {
                                hist: vec![History::default(); self.hists.len()],
                            })
                        });
                        self.advance(Arc::make_mut(state), reading, day, seconds);
                    }
                }
            }
        }
        Ok(Extracted {
            key,
            label,
            baseline,
            basis: (basis != usize::MAX).then_some(basis),
            event_time: ts.map(|t| t.unix_millis()),
        })
    }

    /// Takes `value` of step `si` as the baseline when that step is a
    /// baseline feature listed before the one that gave it so far.
    #[inline]
    fn offer_baseline(&self, si: usize, value: f64, basis: &mut usize, baseline: &mut f64) {
        if let Some(j) = self.baseline.iter().position(|&b| b == si) {
            if j < *basis {
                *basis = j;
                *baseline = value;
            }
        }
    }

    /// The class number of a reading's target: a known class's, the next
    /// one for a new class when classes are learned (`learn`), else an error
    /// (declared classes) or no label (ad-hoc scoring).
    fn class_of(&self, reading: &Reading<'_>, learn: bool) -> Result<Option<f64>, FeatureError> {
        let Some(c) = self.category(reading, self.target_slot, true)? else {
            return Ok(None);
        };
        let known = &self.state.classes;
        if let Some(j) = known.iter().position(|k| k.as_bytes() == c.as_ref()) {
            return Ok(Some(j as f64));
        }
        let name = self.fields.name(self.target_slot);
        if self.declared_classes {
            return Err(FeatureError::wrong(
                name,
                "one of the classes in `target.classes`",
                format!("{:?}", String::from_utf8_lossy(&c)),
            ));
        }
        if !learn {
            return Ok(None);
        }
        if c.is_empty() {
            // "" is no class anyone means: learned, it became a class of
            // its own, named by nothing in the metrics and the messages
            return Err(FeatureError::wrong(
                name,
                "a class name, not empty (a reading without a label leaves the field out or sets it to null)",
                "\"\"".to_string(),
            ));
        }
        if known.len() >= MAX_CLASSES {
            return Err(FeatureError::wrong(
                name,
                "one of the 1000 classes learned so far (the most a model learns)",
                format!("{:?}", String::from_utf8_lossy(&c)),
            ));
        }
        Ok(Some(known.len() as f64))
    }

    /// Adds a learned categorical's new value to its vocabulary: the row
    /// put it in the next free column (`fill`), so a known value costs one
    /// look at the row.
    fn update_vocab(&mut self, reading: &Reading<'_>, row: &[f64]) {
        for (si, step) in self.steps.iter().enumerate() {
            if let Step::Learned {
                slot, vocab, max, ..
            } = step
            {
                let n = self.state.vocab[*vocab].len();
                if n >= *max || row[self.starts[si] + n] != 1.0 {
                    // full, or not a new value
                    continue;
                }
                if let Ok(Some(c)) = self.category(reading, *slot, true) {
                    let known = &mut self.state.vocab[*vocab];
                    known.push(String::from_utf8_lossy(&c).into_owned());
                    self.vocab_index[*vocab] = FixedValues::new(known);
                }
            }
        }
    }

    /// Advances a key's lags, running means and profiles by one reading of
    /// `day` at `seconds` after midnight.
    fn advance(&self, state: &mut KeyState, reading: &Reading<'_>, day: i64, seconds: f64) {
        for (h, spec) in state.hist.iter_mut().zip(&self.hists) {
            let Value::Num(v) = reading.values[spec.slot] else {
                continue;
            };
            if spec.missing.contains(&v) {
                continue;
            }
            if let Some((slots, weight)) = spec.profile {
                if h.slots.len() != slots {
                    h.slots = vec![ProfileSlot::default(); slots];
                }
                if day > h.day {
                    h.slots.iter_mut().for_each(|s| s.fold(weight));
                    h.day = day;
                }
                // a reading of an earlier day than the state's (out of
                // order) counts as the current day's
                let s = &mut h.slots[slot_of(seconds, slots)];
                s.sum += v;
                s.n += 1;
                continue;
            }
            if spec.reset == Reset::Daily && h.day != day {
                h.recent.clear();
                h.count = 0.0;
                h.mean = 0.0;
            }
            h.day = day;
            if spec.keep > 0 {
                if h.recent.len() == spec.keep {
                    h.recent.pop_front();
                }
                h.recent.push_back(v);
            } else {
                // a running mean (a lag's history needs no division)
                h.count += 1.0;
                h.mean += (v - h.mean) / h.count;
            }
        }
    }
}

/// The slot of the day that `seconds` after midnight falls in.
fn slot_of(seconds: f64, slots: usize) -> usize {
    ((seconds / 86_400.0 * slots as f64) as usize).min(slots - 1)
}

/// How [`FeatureExtractor::fill`] reaches the keyed state: to read it
/// (ad-hoc scoring), or to read it for the row and then advance it.
enum Keys<'s> {
    Read(&'s KeyMap),
    Update(&'s mut KeyMap),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FeatureDef, TargetSpec};
    use approx::assert_relative_eq;
    use proptest::prelude::*;
    use std::f64::consts::TAU;

    fn waits_spec() -> FeatureSpec {
        let toml = r#"
            key = "ride"
            timestamp = "ts"
            target = { field = "posted_wait", missing = [-999.0] }
            baseline = "lag1"
            features = [
              { kind = "categorical", field = "ride", values = ["soarin", "dinosaur"] },
              { kind = "hour_of_day" },
              { kind = "day_of_week" },
              { kind = "day_of_year" },
              { kind = "lag", field = "posted_wait", missing = [-999.0], reset = "daily", name = "lag1" },
            ]
        "#;
        toml_like(toml)
    }

    fn toml_like(s: &str) -> FeatureSpec {
        toml::from_str(s).expect("valid spec")
    }

    #[test]
    fn text_and_hashed_features_give_sparse_columns_beside_the_dense_row() {
        let spec = toml_like(
            r#"
            target = { field = "y" }
            features = [
              { kind = "numeric", field = "x" },
              { kind = "text", field = "t", bits = 10, ngrams = 2 },
              { kind = "hashed", field = "user", bits = 8, optional = true },
            ]
        "#,
        );
        let mut x = FeatureExtractor::new(spec, true).expect("valid");
        assert_eq!(x.width(), 1, "sparse features add no dense column");
        assert!(x.has_sparse());
        assert_eq!(x.sparse_names().len(), 2);
        let (mut row, mut sparse) = (vec![0.0; 1], Vec::new());
        let r = br#"{"x": 2, "t": "Great great flight &amp; crew", "user": "u1", "y": 1}"#;
        let e = x
            .extract_sparse(r, None, &mut row, &mut sparse)
            .expect("valid");
        assert_eq!((row[0], e.label), (2.0, Some(1.0)));
        // text: 4 unigrams and 3 bigrams ("great" twice), all below 2^10;
        // the hashed user in the second sparse feature's range (from 2^24)
        let text: Vec<(u32, f64)> = sparse
            .iter()
            .copied()
            .filter(|(c, _)| *c < 1 << 24)
            .collect();
        let user: Vec<(u32, f64)> = sparse
            .iter()
            .copied()
            .filter(|(c, _)| *c >= 1 << 24)
            .collect();
        assert_eq!(user.len(), 1);
        assert!(
            user[0].0 >= 1 << 24 && user[0].0 < (1 << 24) + 256,
            "{user:?}"
        );
        assert!(text.iter().all(|(c, _)| *c < 1024));
        let mass: f64 = text.iter().map(|(_, v)| v.abs()).sum();
        assert!(mass <= 8.0 && text.len() >= 5, "{text:?}");
        let mut columns: Vec<u32> = sparse.iter().map(|x| x.0).collect();
        columns.sort_unstable();
        columns.dedup();
        assert_eq!(columns.len(), sparse.len(), "each column once: {sparse:?}");
        // read-only extraction gives the same columns
        let mut again = Vec::new();
        x.extract_readonly_sparse(r, None, &mut row, &mut again)
            .expect("valid");
        assert_eq!(again, sparse);
        // a text field that is an object is refused, and the state untouched
        let bad = br#"{"x": 2, "t": {"a": 1}, "y": 1}"#;
        let err = x
            .extract_sparse(bad, None, &mut row, &mut sparse)
            .expect_err("refused");
        assert_eq!(err.field(), Some("t"));
    }

    #[test]
    fn online_idf_weighs_rare_terms_up_and_counts_documents_only_when_learning() {
        let spec = toml_like(
            r#"
            target = { field = "y" }
            features = [ { kind = "text", field = "t", bits = 12, ngrams = 1, idf = true } ]
        "#,
        );
        let mut x = FeatureExtractor::new(spec, true).expect("valid");
        let (mut row, mut sparse) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            x.extract_sparse(br#"{"t": "delayed"}"#, None, &mut row, &mut sparse)
                .expect("valid");
        }
        let mut common = Vec::new();
        x.extract_readonly_sparse(br#"{"t": "delayed"}"#, None, &mut row, &mut common)
            .expect("valid");
        let mut rare = Vec::new();
        x.extract_readonly_sparse(br#"{"t": "lovely"}"#, None, &mut row, &mut rare)
            .expect("valid");
        assert!(
            rare[0].1.abs() > 2.0 * common[0].1.abs(),
            "{rare:?} {common:?}"
        );
        let before = x.state().clone();
        x.extract_readonly_sparse(br#"{"t": "lovely"}"#, None, &mut row, &mut rare)
            .expect("valid");
        assert_eq!(x.state(), &before, "scoring leaves the counts alone");
    }

    #[test]
    fn normalize_divides_a_text_by_its_norm_to_the_power_given() {
        let columns = |normalize: f64, text: &str| {
            let spec = toml_like(&format!(
                r#"
                target = {{ field = "y" }}
                features = [ {{ kind = "text", field = "t", bits = 16, ngrams = 1, normalize = {normalize} }} ]
            "#
            ));
            let mut x = FeatureExtractor::new(spec, true).expect("valid");
            let (mut row, mut sparse) = (Vec::new(), Vec::new());
            x.extract_sparse(
                format!(r#"{{"t": "{text}"}}"#).as_bytes(),
                None,
                &mut row,
                &mut sparse,
            )
            .expect("valid");
            sparse.iter().map(|(_, v)| v.abs()).collect::<Vec<_>>()
        };
        let four = "late again no bags";
        assert_eq!(
            columns(0.0, four),
            vec![1.0; 4],
            "0: the values as they were"
        );
        for v in columns(1.0, four) {
            assert!((v - 0.5).abs() < 1e-12, "1: unit length, {v}");
        }
        for v in columns(0.5, four) {
            assert!(
                (v - 0.5f64.sqrt()).abs() < 1e-12,
                "0.5: over the norm's root, {v}"
            );
        }
        assert_eq!(
            columns(1.0, "late"),
            vec![1.0],
            "one term is unit length already"
        );
        assert!(columns(1.0, "").is_empty(), "an empty text stays empty");

        let bad = toml_like(
            r#"
            target = { field = "y" }
            features = [ { kind = "text", field = "t", normalize = 2 } ]
        "#,
        );
        let err = FeatureExtractor::new(bad, true).expect_err("out of range");
        assert!(err.to_string().contains("features[0].normalize"), "{err}");
    }

    #[test]
    fn character_grams_join_the_words_and_bad_ranges_name_the_key() {
        let spec = |extra: &str| {
            toml_like(&format!(
                r#"
                target = {{ field = "y" }}
                features = [ {{ kind = "text", field = "t", bits = 20, ngrams = 1{extra} }} ]
            "#
            ))
        };
        let count = |extra: &str| {
            let mut x = FeatureExtractor::new(spec(extra), true).expect("valid");
            let (mut row, mut sparse) = (Vec::new(), Vec::new());
            x.extract_sparse(br#"{"t": "late"}"#, None, &mut row, &mut sparse)
                .expect("valid");
            sparse.len()
        };
        assert_eq!(count(""), 1);
        // `<late>`: 3 four-grams beside the word
        assert_eq!(count(", chars = [4, 4]"), 4);
        // the key named once, then what it should be
        for (extra, key) in [
            (
                ", chars = [4, 3]",
                "`features[0].chars` should be [min, max]",
            ),
            (
                ", chars = [4, 4], char_weight = -1",
                "`features[0].char_weight` should be a finite number > 0",
            ),
            (", char_weight = 0.5", "`chars` is not set"),
            // set to its default is still set: it weighs nothing without `chars`
            (", char_weight = 0.3", "`chars` is not set"),
        ] {
            let err = FeatureExtractor::new(spec(extra), true).expect_err("invalid");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn classes_are_declared_or_learned_in_order_of_appearance() {
        let learned = toml_like(
            r#"
            target = { field = "s" }
            features = [ { kind = "text", field = "t", bits = 8 } ]
        "#,
        );
        let mut x = FeatureExtractor::for_label(learned, LabelKind::Classes).expect("valid");
        let (mut row, mut sparse) = (Vec::new(), Vec::new());
        let mut label = |x: &mut FeatureExtractor, json: &str| {
            x.extract_sparse(json.as_bytes(), None, &mut row, &mut sparse)
                .map(|e| e.label)
        };
        assert_eq!(label(&mut x, r#"{"t":"a","s":"neutral"}"#), Ok(Some(0.0)));
        assert_eq!(label(&mut x, r#"{"t":"a","s":"negative"}"#), Ok(Some(1.0)));
        assert_eq!(label(&mut x, r#"{"t":"a","s":"neutral"}"#), Ok(Some(0.0)));
        assert_eq!(label(&mut x, r#"{"t":"a"}"#), Ok(None), "unlabelled");
        assert_eq!(
            label(&mut x, r#"{"t":"a","s":null}"#),
            Ok(None),
            "unlabelled"
        );
        let e = label(&mut x, r#"{"t":"a","s":""}"#).expect_err("an empty class");
        assert!(e.to_string().contains("not empty"), "{e}");
        assert_eq!(x.classes(), ["neutral", "negative"]);
        // scoring a reading of a class never seen: no label, nothing learned
        let e = x
            .extract_readonly_sparse(
                br#"{"t":"a","s":"positive"}"#,
                None,
                &mut [],
                &mut Vec::new(),
            )
            .expect("valid");
        assert_eq!(e.label, None);
        assert_eq!(x.classes().len(), 2);

        let declared = toml_like(
            r#"
            target = { field = "s", classes = ["negative", "neutral", "positive"] }
            features = [ { kind = "text", field = "t", bits = 8 } ]
        "#,
        );
        let mut x =
            FeatureExtractor::for_label(declared.clone(), LabelKind::Classes).expect("valid");
        assert_eq!(label(&mut x, r#"{"t":"a","s":"positive"}"#), Ok(Some(2.0)));
        let e = label(&mut x, r#"{"t":"a","s":"angry"}"#).expect_err("not declared");
        assert!(e.to_string().contains("target.classes"), "{e}");
        let mut empty = declared.clone();
        empty.target.classes = Some(vec!["no".into(), String::new()]);
        let e = FeatureExtractor::for_label(empty, LabelKind::Classes).expect_err("empty class");
        assert!(e.to_string().contains("empty class name"), "{e}");
        // a checkpoint of other classes is refused
        let mut other = declared.clone();
        other.target.classes = Some(vec!["no".into(), "yes".into()]);
        let mut y = FeatureExtractor::for_label(other, LabelKind::Classes).expect("valid");
        let e = y.set_state(x.state().clone()).expect_err("other classes");
        assert!(e.to_string().contains("target.classes"), "{e}");
        // classes are for multiclass only
        let e = FeatureExtractor::new(declared, true).expect_err("binary");
        assert_eq!(e.field(), Some("target.classes"));
    }

    #[test]
    fn plain_text_messages_fill_the_one_text_feature() {
        let spec = toml_like(
            r#"
            format = "text"
            target = { field = "s" }
            features = [ { kind = "text", field = "t", bits = 16, ngrams = 1 } ]
        "#,
        );
        let mut x = FeatureExtractor::for_label(spec.clone(), LabelKind::Classes).expect("valid");
        let (mut row, mut sparse) = (Vec::new(), Vec::new());
        let e = x
            .extract_sparse(
                "{not json} at all ✈️".as_bytes(),
                Some("k1"),
                &mut row,
                &mut sparse,
            )
            .expect("any UTF-8 text");
        assert_eq!((e.key.as_deref(), e.label), (Some("k1"), None));
        assert_eq!(
            sparse.len(),
            5,
            "not, json, at, all and the emoji: {sparse:?}"
        );
        let e = x
            .extract_sparse(b"caf\xe9", None, &mut row, &mut sparse)
            .expect_err("Latin-1");
        assert!(matches!(e, FeatureError::NotText(_)), "{e}");
        assert!(e.to_string().contains("UTF-8"), "{e}");
        // the message is the text: nothing else can be a feature
        let mut two = spec;
        two.features.push(FeatureDef::Hashed {
            field: "user".into(),
            bits: 8,
            optional: true,
        });
        let e = FeatureExtractor::new(two, false).expect_err("two features");
        assert_eq!(e.field(), Some("features"));
    }

    #[test]
    fn learned_vocabulary_takes_values_in_order_of_arrival_up_to_its_size() {
        // a numeric column first, so the learned block does not start at 0;
        // strings, numbers and booleans are values alike
        let spec = toml_like(
            r#"
            target = { field = "y" }
            features = [
              { kind = "numeric", field = "x" },
              { kind = "categorical", field = "c", max_values = 2, optional = true },
            ]
        "#,
        );
        let mut x = FeatureExtractor::new(spec, false).expect("valid");
        assert_eq!(x.resolved_names(), ["x", "c#0", "c#1", "c=<unknown>"]);
        let mut row = vec![0.0; x.width()];
        let mut rows = Vec::new();
        for reading in [
            r#"{"x":1,"c":"a","y":0}"#,
            r#"{"x":1,"c":3,"y":0}"#,
            r#"{"x":1,"c":"a","y":0}"#,
            r#"{"x":1,"c":true,"y":0}"#,
            r#"{"x":1,"y":0}"#,
        ] {
            x.extract(reading.as_bytes(), None, &mut row)
                .expect("extracts");
            rows.push(row[1..].to_vec());
        }
        assert_eq!(
            rows,
            [
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0], // no room left: the unknown column
                [0.0, 0.0, 0.0], // absent
            ]
        );
        assert_eq!(x.resolved_names(), ["x", "c=a", "c=3", "c=<unknown>"]);
        // a restored vocabulary is found as learned: "3" is column 1, not new
        let mut restored = FeatureExtractor::new(x.spec().clone(), false).expect("valid");
        restored.set_state(x.state().clone()).expect("restores");
        restored
            .extract(br#"{"x":1,"c":3,"y":0}"#, None, &mut row)
            .expect("extracts");
        assert_eq!(&row[1..], &[0.0, 1.0, 0.0]);
        assert_eq!(restored.state(), x.state(), "nothing learned twice");
        // a value learned while more are being learned is found at once
        let spec = toml_like(
            r#"
            target = { field = "y" }
            features = [{ kind = "categorical", field = "c", max_values = 40 }]
        "#,
        );
        let mut many = FeatureExtractor::new(spec, false).expect("valid");
        let mut row = vec![0.0; many.width()];
        for round in 0..2 {
            for v in 0..40 {
                let r = format!(r#"{{"c":"v{v}","y":0}}"#);
                many.extract(r.as_bytes(), None, &mut row)
                    .expect("extracts");
                assert_eq!(row[v], 1.0, "round {round}, value {v}");
            }
        }
        assert_eq!(many.state().vocab[0].len(), 40, "each value learned once");
    }

    #[test]
    fn memoised_time_columns_match_a_fresh_computation() {
        // repeated timestamps, with failing readings between them (one that
        // fails after its timestamp parsed, one with a bad timestamp), and a
        // timestamp given as a number
        let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
        let readings: [&[u8]; 9] = [
            br#"{"ride":"soarin","ts":"2018-01-01T09:05:00","posted_wait":25.0}"#,
            br#"{"ride":"dinosaur","ts":"2018-01-01T09:05:00","posted_wait":10.0}"#,
            br#"{"ride":"soarin","ts":"2018-03-02T23:55:00","posted_wait":"x"}"#,
            br#"{"ride":"dinosaur","ts":"2018-01-01T09:05:00","posted_wait":15.0}"#,
            br#"{"ride":"soarin","ts":"2018-03-02T23:55:00","posted_wait":30.0}"#,
            br#"{"ride":"soarin","ts":"2018-13-02T23:55:00","posted_wait":30.0}"#,
            br#"{"ride":"dinosaur","ts":"2018-03-02T23:55:00","posted_wait":20.0}"#,
            br#"{"ride":"dinosaur","ts":1520034900,"posted_wait":20.0}"#,
            br#"{"ride":"soarin","ts":"2018-03-02T23:55:00","posted_wait":35.0}"#,
        ];
        let mut ok = 0;
        for bytes in readings {
            let mut fresh = vec![0.0; x.width()];
            let mut row = vec![0.0; x.width()];
            let expected = x.extract_readonly(bytes, None, &mut fresh);
            let got = x.extract(bytes, None, &mut row);
            assert_eq!(got, expected);
            if got.is_ok() {
                ok += 1;
                let bits = |r: &[f64]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&row), bits(&fresh));
            }
        }
        assert_eq!(ok, 7);
    }

    #[test]
    fn a_profile_is_the_usual_value_at_this_hour_on_earlier_days() {
        let spec = toml_like(
            r#"
            key = "ride"
            timestamp = "ts"
            target = { field = "wait", missing = [-999.0] }
            baseline = ["lag1", "usual"]
            features = [
              { kind = "lag", field = "wait", missing = [-999.0], reset = "daily", name = "lag1" },
              { kind = "profile", field = "wait", missing = [-999.0], day_weight = 0.5, name = "usual" },
            ]
        "#,
        );
        let mut x = FeatureExtractor::new(spec, false).expect("valid");
        assert_eq!(x.names()[2..], ["usual".to_owned(), "has_usual".into()]);
        let mut row = vec![0.0; x.width()];
        let mut at = |x: &mut FeatureExtractor, ts: &str, wait: f64| {
            let r = format!(r#"{{"ride":"a","ts":"{ts}","wait":{wait}}}"#);
            let e = x.extract(r.as_bytes(), None, &mut row).expect("extracts");
            (row[2], row[3], e.baseline, e.basis)
        };
        // day 1: nothing known before it; 10 and 20 at 9h, 50 at 14h, a closed reading skipped
        assert_eq!(
            at(&mut x, "2018-01-01T09:00:00", 10.0),
            (0.0, 0.0, 0.0, None)
        );
        assert_eq!(
            at(&mut x, "2018-01-01T09:30:00", 20.0),
            (0.0, 0.0, 10.0, Some(0))
        );
        at(&mut x, "2018-01-01T14:00:00", 50.0);
        at(&mut x, "2018-01-01T14:10:00", -999.0);
        // a question about day 2 at 9h, before any reading of day 2: day 1's mean at 9h
        let ask = |x: &FeatureExtractor, ts: &str| {
            let r = format!(r#"{{"ride":"a","ts":"{ts}"}}"#);
            let mut row = vec![0.0; x.width()];
            let e = x
                .extract_readonly(r.as_bytes(), None, &mut row)
                .expect("extracts");
            (row[2], e.baseline, e.basis)
        };
        assert_eq!(ask(&x, "2018-01-02T09:15:00"), (15.0, 15.0, Some(1)));
        assert_eq!(ask(&x, "2018-01-02T14:59:00"), (50.0, 50.0, Some(1)));
        assert_eq!(
            ask(&x, "2018-01-02T20:00:00"),
            (0.0, 0.0, None),
            "no 20h yet"
        );
        // day 1 again (the same day): today's values do not count yet
        assert_eq!(
            ask(&x, "2018-01-01T09:45:00"),
            (0.0, 50.0, Some(0)),
            "lag1 first"
        );
        assert_eq!(
            ask(&x, "2018-01-01T14:30:00").0,
            0.0,
            "today not in the profile"
        );
        // day 2: 9h is 35; its first reading rests on the profile (no lag1 yet)
        assert_eq!(
            at(&mut x, "2018-01-02T09:00:00", 35.0),
            (15.0, 1.0, 15.0, Some(1))
        );
        // day 3 at 9h: the latest day weighs 1/2 (= 1/n too): 15 + (35 - 15) / 2
        assert_eq!(ask(&x, "2018-01-03T09:00:00"), (25.0, 25.0, Some(1)));
        at(&mut x, "2018-01-03T10:00:00", 1.0);
        assert_eq!(ask(&x, "2018-01-03T09:05:00").0, 25.0, "folded once");
        // day 4: day 3 had no 9h reading (9h unchanged); 10h has one day
        assert_eq!(ask(&x, "2018-01-04T09:00:00").0, 25.0);
        assert_eq!(ask(&x, "2018-01-04T10:00:00").0, 1.0);
        // the state round-trips a checkpoint, and an old one without profiles reads
        let state = x.state().clone();
        let back: FeatureState =
            serde_json::from_str(&serde_json::to_string(&state).expect("json")).expect("reads");
        assert_eq!(back, state);
        let old: History =
            serde_json::from_str(r#"{"day":1,"recent":[],"count":0.0,"mean":0.0}"#).expect("reads");
        assert!(old.slots.is_empty());
    }

    #[test]
    fn a_baseline_names_lag_or_profile_features_only() {
        let mut spec = waits_spec();
        spec.baseline = Some(crate::spec::Baseline::Ordered(vec![
            "lag1".into(),
            "nope".into(),
        ]));
        let e = FeatureExtractor::new(spec, false).expect_err("refused");
        assert!(e.to_string().contains("\"nope\""), "{e}");
        let mut spec = waits_spec();
        spec.features.push(
            toml_like(
                r#"
            target = { field = "x" }
            features = [{ kind = "profile", field = "posted_wait", day_weight = 0.0 }]
        "#,
            )
            .features[0]
                .clone(),
        );
        let e = FeatureExtractor::new(spec, false).expect_err("refused");
        assert!(e.to_string().contains("day_weight"), "{e}");
    }

    #[test]
    fn waits_reading_to_row() {
        let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
        assert_eq!(x.width(), 3 + 2 + 7 + 2 + 2);
        let mut row = vec![0.0; x.width()];
        let e = x
            .extract(
                br#"{"ride":"soarin","ts":"2018-01-01T09:05:00","posted_wait":25.0}"#,
                None,
                &mut row,
            )
            .expect("extracts");
        assert_eq!(e.key.as_deref(), Some("soarin"));
        assert_eq!(e.label, Some(25.0));
        assert_eq!(&row[..3], &[1.0, 0.0, 0.0]);
        let h = 9.0 + 5.0 / 60.0;
        assert_relative_eq!(row[3], (TAU * h / 24.0).sin(), epsilon = 1e-15);
        assert_eq!(row[5], 1.0, "Monday");
        assert_eq!(&row[14..], &[0.0, 0.0], "no lag yet");
        // the next reading of the same ride and day sees lag 25; a closed ride is skipped
        x.extract(
            br#"{"ride":"soarin","ts":"2018-01-01T09:10:00","posted_wait":-999}"#,
            None,
            &mut row,
        )
        .map(|e| assert_eq!(e.label, None))
        .expect("extracts");
        let e = x
            .extract(
                br#"{"ride":"soarin","ts":"2018-01-01T09:20:00","posted_wait":30}"#,
                None,
                &mut row,
            )
            .expect("extracts");
        assert_eq!(&row[14..], &[25.0, 1.0]);
        assert_eq!(e.baseline, 25.0);
        // another ride has no lag; an unknown ride goes to the unknown column
        x.extract(
            br#"{"ride":"pirates","ts":"2018-01-01T09:25:00","posted_wait":5}"#,
            None,
            &mut row,
        )
        .expect("extracts");
        assert_eq!(&row[..3], &[0.0, 0.0, 1.0]);
        assert_eq!(&row[14..], &[0.0, 0.0]);
        // a new day resets the lag
        x.extract(
            br#"{"ride":"soarin","ts":"2018-01-02T08:00:00","posted_wait":10}"#,
            None,
            &mut row,
        )
        .expect("extracts");
        assert_eq!(&row[14..], &[0.0, 0.0]);
    }

    #[test]
    fn kafka_key_wins_over_the_key_field() {
        let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
        let mut row = vec![0.0; x.width()];
        let e = x
            .extract(
                br#"{"ts":"2018-01-01T09:05:00","posted_wait":25.0,"ride":"soarin"}"#,
                Some("k"),
                &mut row,
            )
            .expect("extracts");
        assert_eq!(e.key.as_deref(), Some("k"));
    }

    #[test]
    fn errors_name_the_field_and_leave_state_alone() {
        let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
        let mut row = vec![0.0; x.width()];
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"ride":"soarin","ts":"01/02/2018","posted_wait":25}"#,
                "`ts` should be an ISO 8601 timestamp",
            ),
            (
                br#"{"ride":"soarin","ts":"2018-01-01T09:05:00","posted_wait":"25"}"#,
                "`posted_wait` should be a number, but is the string \"25\"",
            ),
            (br#"{"ride":"soarin","posted_wait":25}"#, "`ts` is required"),
            (
                br#"{"ts":"2018-01-01T09:05:00","posted_wait":25}"#,
                "`ride` is required",
            ),
            (
                br#"{"ride":["a"],"ts":"2018-01-01T09:05:00","posted_wait":25}"#,
                "`ride` should be a string, but is an array",
            ),
        ];
        for (bytes, msg) in cases {
            let e = x.extract(bytes, None, &mut row).expect_err("invalid");
            assert!(e.to_string().starts_with(msg), "{e} / {msg}");
        }
        assert_eq!(x.state(), &FeatureState::default());
    }

    #[test]
    fn numeric_missing_sentinels_and_indicators() {
        let spec = FeatureSpec {
            key: None,
            timestamp: None,
            target: TargetSpec {
                field: "y".into(),
                missing: vec![],
                classes: None,
            },
            baseline: None,
            features: vec![FeatureDef::Numeric {
                field: "chol".into(),
                missing: vec![0.0],
                standardize: true,
                indicator: true,
                optional: false,
                min: Some(0.0),
                max: Some(1000.0),
            }],
            max_reading_bytes: 100,
            format: Default::default(),
        };
        let mut x = FeatureExtractor::new(spec, true).expect("valid");
        let mut row = vec![0.0; 2];
        let e = x
            .extract(br#"{"chol":0,"y":1}"#, None, &mut row)
            .expect("extracts");
        assert!(row[0].is_nan());
        assert_eq!(row[1], 1.0);
        assert_eq!(e.label, Some(1.0));
        assert!(x
            .extract(br#"{"chol":5000,"y":1}"#, None, &mut row)
            .is_err());
        assert!(x.extract(br#"{"chol":200,"y":2}"#, None, &mut row).is_err());
        let big = format!(r#"{{"chol":200,"y":1,"pad":"{}"}}"#, "x".repeat(200));
        assert!(matches!(
            x.extract(big.as_bytes(), None, &mut row),
            Err(FeatureError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn bytes_eq_is_slice_equality(a in proptest::collection::vec(0u8..4, 0..40), b in proptest::collection::vec(0u8..4, 0..40)) {
            prop_assert_eq!(bytes_eq(&a, &b), a == b);
            prop_assert!(bytes_eq(&a, &a.clone()));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn any_bytes_extract_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
            let mut row = vec![0.0; x.width()];
            let _ = x.extract(&bytes, None, &mut row);
        }

        #[test]
        fn plausible_readings_give_finite_rows_or_errors(
            ride in "[a-z]{0,8}", ts in "20[0-9]{2}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9](:[0-9]{2})?",
            wait in prop_oneof![Just("-999".to_string()), "-?[0-9]{1,4}(\\.[0-9])?", Just("null".to_string()), Just("1e308".to_string())],
        ) {
            let mut x = FeatureExtractor::new(waits_spec(), false).expect("valid");
            let mut row = vec![0.0; x.width()];
            let json = format!(r#"{{"ride":"{ride}","ts":"{ts}","posted_wait":{wait}}}"#);
            if let Ok(e) = x.extract(json.as_bytes(), None, &mut row) {
                prop_assert!(row.iter().all(|v| v.is_finite()));
                prop_assert!(e.label.is_none_or(f64::is_finite));
            }
        }
    }
}
