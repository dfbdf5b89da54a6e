//! The declarative feature spec, as written in a `[[model]]` table of the
//! service config (see `deploy/streamfit.toml`).

use serde::{Deserialize, Serialize};

use crate::text::TokenRule;

/// How a model reads its readings: key, time, target and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Field with the entity key, used when the Kafka message has no key.
    #[serde(default)]
    pub key: Option<String>,
    /// Field with the event time (ISO 8601 string or Unix seconds/millis).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The target field; a reading with it is labelled.
    pub target: TargetSpec,
    /// Name of a `lag` or `profile` feature, or a list of them: the model
    /// learns the target minus the first of them that has a value for the
    /// reading, and adds it back when predicting (0 when none has one).
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// The features, in row order.
    pub features: Vec<FeatureDef>,
    /// Readings larger than this many bytes are rejected.
    #[serde(default = "default_max_reading_bytes")]
    pub max_reading_bytes: usize,
    /// What a message is: a JSON object, or the text itself.
    #[serde(default)]
    pub format: InputFormat,
}

/// The features a regression model's output is added to, in order of
/// preference: one name (`baseline = "lag1"`) or several
/// (`baseline = ["lag1", "profile"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Baseline {
    /// One feature.
    One(String),
    /// The first of these that has a value.
    Ordered(Vec<String>),
}

impl Baseline {
    /// The feature names, in order of preference.
    pub fn names(&self) -> &[String] {
        match self {
            Baseline::One(n) => std::slice::from_ref(n),
            Baseline::Ordered(v) => v,
        }
    }
}

/// What the bytes of a reading are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// A JSON object with the fields the spec names.
    #[default]
    Json,
    /// Plain UTF-8 text (what `kafka-console-producer` sends): the value of
    /// the spec's one `text` feature; the reading has no label.
    Text,
}

fn default_max_reading_bytes() -> usize {
    64 * 1024
}

/// The target field and its missing-value sentinels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The field's name.
    pub field: String,
    /// Values that mean "no label" (e.g. `-999` for a closed ride).
    #[serde(default)]
    pub missing: Vec<f64>,
    /// Multiclass: the classes, in order; without it the classes are
    /// learned in order of appearance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
}

/// When keyed state (lags, running means) starts afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reset {
    /// Never: the state spans the whole stream.
    #[default]
    Never,
    /// At each new calendar date of the reading's timestamp.
    Daily,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn hourly() -> usize {
    24
}
fn day_weight() -> f64 {
    0.3
}
/// `char_weight` when not set.
pub const CHAR_WEIGHT: f64 = 0.3;
fn text_bits() -> u32 {
    20
}
fn hashed_bits() -> u32 {
    18
}
fn replace() -> TokenRule {
    TokenRule::Replace
}
fn keep() -> TokenRule {
    TokenRule::Keep
}

/// One feature (one or more columns of the row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureDef {
    /// A number, taken as it is (standardised online by default).
    Numeric {
        /// The field.
        field: String,
        /// Values that mean missing (e.g. `0` for a cholesterol never measured).
        #[serde(default)]
        missing: Vec<f64>,
        /// Standardise online (running mean and variance).
        #[serde(default = "yes")]
        standardize: bool,
        /// Add a 0/1 column that says the value was missing.
        #[serde(default)]
        indicator: bool,
        /// Allow the field to be absent or null (imputed as the running mean).
        #[serde(default)]
        optional: bool,
        /// Smallest plausible value; below it the reading is rejected.
        #[serde(default)]
        min: Option<f64>,
        /// Largest plausible value; above it the reading is rejected.
        #[serde(default)]
        max: Option<f64>,
    },
    /// A category, one-hot encoded.
    Categorical {
        /// The field.
        field: String,
        /// A fixed vocabulary; anything else goes to an `<unknown>` column.
        #[serde(default)]
        values: Option<Vec<String>>,
        /// Learn the vocabulary in order of appearance, up to this many values.
        #[serde(default)]
        max_values: Option<usize>,
        /// Hash values into this many columns (for open vocabularies).
        #[serde(default)]
        buckets: Option<usize>,
        /// Allow the field to be absent or null (an all-zero encoding).
        #[serde(default)]
        optional: bool,
    },
    /// Free text: words, numbers and emoji (lower-cased), word n-grams
    /// 1..=`ngrams`, hashed into 2^`bits` sparse columns with a signed hash,
    /// valued by term frequency (or 1 + ln tf, or times an online IDF).
    Text {
        /// The field.
        field: String,
        /// 2^bits columns (1..=24).
        #[serde(default = "text_bits")]
        bits: u32,
        /// Word n-grams 1..=ngrams (1..=4).
        #[serde(default = "two")]
        ngrams: usize,
        /// `@mentions`: `keep`, `drop` or `replace` (one `@user` token).
        #[serde(default = "keep")]
        mentions: TokenRule,
        /// Links: `keep`, `drop` or `replace` (one `<url>` token).
        #[serde(default = "replace")]
        urls: TokenRule,
        /// Decode HTML entities (`&amp;`, `&#39;`, ...) first.
        #[serde(default = "yes")]
        html_entities: bool,
        /// 1 + ln(tf) instead of tf.
        #[serde(default)]
        sublinear: bool,
        /// Times an inverse document frequency learned online.
        #[serde(default)]
        idf: bool,
        /// Length normalisation: the text's columns divided by their L2
        /// norm to this power (0 = none, 1 = unit length, 0..=1), so that a
        /// long text does not move the margin more than a short one.
        #[serde(default)]
        normalize: f64,
        /// Character n-grams of each token beside the words: `[min, max]`
        /// bytes (1..=8; characters, for ASCII), of the token marked at
        /// either end (`<word>`).
        #[serde(default)]
        chars: Option<[usize; 2]>,
        /// With `chars`: each gram's value times this ([`CHAR_WEIGHT`] when
        /// not set; set without `chars`, an error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        char_weight: Option<f64>,
        /// Allow the field to be absent or null (no columns).
        #[serde(default)]
        optional: bool,
    },
    /// A high-cardinality category hashed into one of 2^`bits` sparse
    /// columns (signed), with no vocabulary to keep.
    Hashed {
        /// The field.
        field: String,
        /// 2^bits columns (1..=24).
        #[serde(default = "hashed_bits")]
        bits: u32,
        /// Allow the field to be absent or null (no column).
        #[serde(default)]
        optional: bool,
    },
    /// Hour of day as sin and cos of 2π·k·hour/24, for k = 1..=harmonics.
    HourOfDay {
        /// Number of harmonics.
        #[serde(default = "one")]
        harmonics: usize,
    },
    /// Day of week, one-hot (Monday first).
    DayOfWeek {},
    /// Day of year as sin and cos of 2π·doy/365.25.
    DayOfYear {},
    /// The `order`-th previous valid value of `field` for the same key, and
    /// a 0/1 column that says whether there is one.
    Lag {
        /// The field.
        field: String,
        /// 1 = the previous value, 2 = the one before, ...
        #[serde(default = "one")]
        order: usize,
        /// Values that are not valid (skipped, like `-999`).
        #[serde(default)]
        missing: Vec<f64>,
        /// When the history starts afresh.
        #[serde(default)]
        reset: Reset,
        /// Standardise the lag column online.
        #[serde(default = "yes")]
        standardize: bool,
        /// Column name (default `lag{order}_{field}`).
        #[serde(default)]
        name: Option<String>,
    },
    /// The key's usual value of `field` at this time of day: per slot of
    /// the day (`slots` a day, 24 = hourly), a mean over earlier days of
    /// each day's mean in that slot, the latest day weighing `day_weight`
    /// (1/n while fewer than 1/`day_weight` days are known), and a 0/1
    /// column that says whether there is one. Today's values count from
    /// the next day on, so the column says what was known before the day
    /// began: it answers for a time ahead, when no reading of that day
    /// exists yet.
    Profile {
        /// The field.
        field: String,
        /// Values that are not valid (skipped, like `-999`).
        #[serde(default)]
        missing: Vec<f64>,
        /// Slots a day (1..=1440): 24 is hourly, 48 half-hourly.
        #[serde(default = "hourly")]
        slots: usize,
        /// The weight of the latest day, in (0, 1].
        #[serde(default = "day_weight")]
        day_weight: f64,
        /// Standardise the column online.
        #[serde(default = "yes")]
        standardize: bool,
        /// Column name (default `profile_{field}`).
        #[serde(default)]
        name: Option<String>,
    },
    /// The running mean of the previous valid values of `field` for the same key.
    RunningMean {
        /// The field.
        field: String,
        /// Values that are not valid.
        #[serde(default)]
        missing: Vec<f64>,
        /// When the mean starts afresh.
        #[serde(default)]
        reset: Reset,
        /// Standardise the column online.
        #[serde(default = "yes")]
        standardize: bool,
        /// Column name (default `mean_{field}`).
        #[serde(default)]
        name: Option<String>,
    },
}
