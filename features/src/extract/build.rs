//! Building a [`FeatureExtractor`] from its spec: every feature checked (an
//! error names the key at fault), compiled into dense and sparse steps.

use crate::decode::Fields;
use crate::error::FeatureError;
use crate::spec::{FeatureDef, FeatureSpec, InputFormat, Reset, CHAR_WEIGHT};
use crate::text::{CharGrams, OptionError, TextHasher, TextOptions};

use super::calendar::{TimeMemo, WEEKDAYS};
use super::state::{DocFreq, FeatureState, KeyMap};
use super::steps::{FixedValues, HistSpec, SparseStep, Step};
use super::{spec_error, FeatureExtractor, LabelKind, MAX_CLASSES, SPARSE_RANGE_BITS};

impl FeatureExtractor {
    /// Builds an extractor; `classification` makes the target a 0/1 label.
    pub fn new(spec: FeatureSpec, classification: bool) -> Result<Self, FeatureError> {
        let kind = if classification {
            LabelKind::Binary
        } else {
            LabelKind::Number
        };
        Self::for_label(spec, kind)
    }

    /// Builds an extractor whose target is of `label_kind`.
    pub fn for_label(spec: FeatureSpec, label_kind: LabelKind) -> Result<Self, FeatureError> {
        let mut fields = Fields::default();
        let mut sparse_steps = Vec::new();
        let mut sparse_names = Vec::new();
        let mut idf_count = 0;
        let key_slot = spec.key.as_deref().map(|k| fields.slot(k));
        let ts_slot = spec.timestamp.as_deref().map(|t| fields.slot(t));
        let target_slot = fields.slot(&spec.target.field);
        let mut steps = Vec::new();
        let mut hists = Vec::new();
        let mut names = Vec::new();
        let mut scale_mask = Vec::new();
        let mut needs_time = false;
        let mut baseline = vec![usize::MAX; spec.baseline.as_ref().map_or(0, |b| b.names().len())];
        let baseline_at = |name: &str| {
            spec.baseline
                .as_ref()
                .and_then(|b| b.names().iter().position(|n| n == name))
        };
        let mut vocab_count = 0;
        let mut push = |names: &mut Vec<String>, name: String, scale: bool| {
            names.push(name);
            scale_mask.push(scale);
        };
        if spec.features.is_empty() {
            return Err(spec_error("features", "should list at least one feature"));
        }
        for (i, f) in spec.features.iter().enumerate() {
            let at = |k: &str| format!("features[{i}].{k}");
            let base = (sparse_steps.len() as u32) << SPARSE_RANGE_BITS;
            if matches!(f, FeatureDef::Text { .. } | FeatureDef::Hashed { .. })
                && sparse_steps.len() == 256
            {
                return Err(spec_error(
                    at("kind"),
                    "is one sparse (text or hashed) feature too many: at most 256",
                ));
            }
            match f {
                FeatureDef::Text {
                    field,
                    bits,
                    ngrams,
                    mentions,
                    urls,
                    html_entities,
                    sublinear,
                    idf,
                    normalize,
                    chars,
                    char_weight,
                    optional,
                } => {
                    if !(0.0..=1.0).contains(normalize) {
                        return Err(spec_error(
                            at("normalize"),
                            format!(
                                "should be 0..=1 (the power of the L2 norm the text's columns are divided by: 0 none, 1 unit length), not {normalize}"
                            ),
                        ));
                    }
                    let options = TextOptions {
                        bits: *bits,
                        ngrams: *ngrams,
                        mentions: *mentions,
                        urls: *urls,
                        html_entities: *html_entities,
                        sublinear: *sublinear,
                    };
                    let option = |e: OptionError| spec_error(at(e.key), e.message);
                    let mut hasher = TextHasher::new(options.clone()).map_err(option)?;
                    let char_weight = match (chars, char_weight) {
                        (None, Some(w)) => {
                            return Err(spec_error(
                                at("char_weight"),
                                format!(
                                    "weighs the character n-grams of `chars`, but `chars` is not set: set it too (`chars = [4, 4]`, say) or leave `char_weight` out (it is {w})"
                                ),
                            ));
                        }
                        (_, w) => w.unwrap_or(CHAR_WEIGHT),
                    };
                    if let Some([min, max]) = *chars {
                        let grams = CharGrams {
                            min,
                            max,
                            weight: char_weight,
                        };
                        hasher = hasher.with_chars(grams).map_err(option)?;
                    }
                    // (named only when set, so that checkpoints written
                    // before the option still match their spec)
                    let mut norm = if *normalize > 0.0 {
                        format!(", normalize {normalize}")
                    } else {
                        String::new()
                    };
                    if let Some([min, max]) = chars {
                        norm.push_str(&format!(", chars {min}..={max} x {char_weight}"));
                    }
                    sparse_names.push(format!("{field}~text({options:?}, idf {idf}{norm})"));
                    sparse_steps.push(SparseStep::Text {
                        slot: fields.slot(field),
                        hasher: Box::new(hasher),
                        optional: *optional,
                        base,
                        idf: idf.then(|| {
                            idf_count += 1;
                            idf_count - 1
                        }),
                        normalize: *normalize,
                    });
                }
                FeatureDef::Hashed {
                    field,
                    bits,
                    optional,
                } => {
                    if !(1..=24).contains(bits) {
                        return Err(spec_error(
                            at("bits"),
                            format!("should be 1..=24 (2^bits columns), not {bits}"),
                        ));
                    }
                    sparse_names.push(format!("{field}~hashed(bits {bits})"));
                    sparse_steps.push(SparseStep::Hashed {
                        slot: fields.slot(field),
                        bits: *bits,
                        optional: *optional,
                        base,
                    });
                }
                FeatureDef::Numeric {
                    field,
                    missing,
                    standardize,
                    indicator,
                    optional,
                    min,
                    max,
                } => {
                    let (min, max) = (min.unwrap_or(f64::MIN), max.unwrap_or(f64::MAX));
                    if min > max {
                        return Err(spec_error(at("min"), "should be at most `max`"));
                    }
                    push(&mut names, field.clone(), *standardize);
                    if *indicator {
                        push(&mut names, format!("{field}_missing"), false);
                    }
                    steps.push(Step::Numeric {
                        slot: fields.slot(field),
                        missing: missing.clone(),
                        indicator: *indicator,
                        optional: *optional,
                        min,
                        max,
                    });
                }
                FeatureDef::Categorical {
                    field,
                    values,
                    max_values,
                    buckets,
                    optional,
                } => {
                    let slot = fields.slot(field);
                    let optional = *optional;
                    match (values, max_values, buckets) {
                        (Some(values), None, None) => {
                            if values.is_empty() {
                                return Err(spec_error(
                                    at("values"),
                                    "should list at least one value",
                                ));
                            }
                            let mut seen = std::collections::HashSet::new();
                            for v in values {
                                if !seen.insert(v) {
                                    return Err(spec_error(
                                        at("values"),
                                        format!("lists {v:?} twice"),
                                    ));
                                }
                                push(&mut names, format!("{field}={v}"), false);
                            }
                            push(&mut names, format!("{field}=<unknown>"), false);
                            steps.push(Step::Fixed {
                                slot,
                                values: FixedValues::new(values),
                                optional,
                            });
                        }
                        (None, Some(max), None) if (1..=10_000).contains(max) => {
                            for j in 0..*max {
                                push(&mut names, format!("{field}#{j}"), false);
                            }
                            push(&mut names, format!("{field}=<unknown>"), false);
                            steps.push(Step::Learned {
                                slot,
                                vocab: vocab_count,
                                max: *max,
                                optional,
                            });
                            vocab_count += 1;
                        }
                        (None, None, Some(b)) if (1..=1 << 20).contains(b) => {
                            for j in 0..*b {
                                push(&mut names, format!("{field}#bucket{j}"), false);
                            }
                            steps.push(Step::Hashed {
                                slot,
                                buckets: *b,
                                optional,
                            });
                        }
                        (None, Some(_), None) => {
                            return Err(spec_error(
                                at("max_values"),
                                "should be between 1 and 10000",
                            ))
                        }
                        (None, None, Some(_)) => {
                            return Err(spec_error(
                                at("buckets"),
                                "should be between 1 and 1048576",
                            ))
                        }
                        _ => {
                            return Err(spec_error(
                                at("values"),
                                "give exactly one of `values`, `max_values` or `buckets`",
                            ))
                        }
                    }
                }
                FeatureDef::HourOfDay { harmonics } => {
                    if !(1..=12).contains(harmonics) {
                        return Err(spec_error(at("harmonics"), "should be between 1 and 12"));
                    }
                    needs_time = true;
                    for k in 1..=*harmonics {
                        let sfx = if k == 1 { String::new() } else { k.to_string() };
                        push(&mut names, format!("hour_sin{sfx}"), false);
                        push(&mut names, format!("hour_cos{sfx}"), false);
                    }
                    steps.push(Step::Hour {
                        harmonics: *harmonics,
                    });
                }
                FeatureDef::DayOfWeek {} => {
                    needs_time = true;
                    for d in WEEKDAYS {
                        push(&mut names, format!("dow={d}"), false);
                    }
                    steps.push(Step::Weekday);
                }
                FeatureDef::DayOfYear {} => {
                    needs_time = true;
                    push(&mut names, "doy_sin".into(), false);
                    push(&mut names, "doy_cos".into(), false);
                    steps.push(Step::DayOfYear);
                }
                FeatureDef::Lag {
                    field,
                    order,
                    missing,
                    reset,
                    standardize,
                    name,
                } => {
                    if !(1..=64).contains(order) {
                        return Err(spec_error(at("order"), "should be between 1 and 64"));
                    }
                    let name = name
                        .clone()
                        .unwrap_or_else(|| format!("lag{order}_{field}"));
                    if let Some(j) = baseline_at(&name) {
                        baseline[j] = steps.len();
                    }
                    needs_time |= *reset == Reset::Daily;
                    push(&mut names, name.clone(), *standardize);
                    push(&mut names, format!("has_{name}"), false);
                    let slot = fields.slot(field);
                    steps.push(Step::Lag {
                        hist: hists.len(),
                        order: *order,
                    });
                    hists.push(HistSpec {
                        slot,
                        missing: missing.clone(),
                        reset: *reset,
                        keep: *order,
                        profile: None,
                    });
                }
                FeatureDef::RunningMean {
                    field,
                    missing,
                    reset,
                    standardize,
                    name,
                } => {
                    needs_time |= *reset == Reset::Daily;
                    push(
                        &mut names,
                        name.clone().unwrap_or_else(|| format!("mean_{field}")),
                        *standardize,
                    );
                    let slot = fields.slot(field);
                    steps.push(Step::Mean { hist: hists.len() });
                    hists.push(HistSpec {
                        slot,
                        missing: missing.clone(),
                        reset: *reset,
                        keep: 0,
                        profile: None,
                    });
                }
                FeatureDef::Profile {
                    field,
                    missing,
                    slots,
                    day_weight,
                    standardize,
                    name,
                } => {
                    if !(1..=1440).contains(slots) {
                        return Err(spec_error(at("slots"), "should be between 1 and 1440"));
                    }
                    if !(*day_weight > 0.0 && *day_weight <= 1.0) {
                        return Err(spec_error(
                            at("day_weight"),
                            format!("should be in (0, 1], but is {day_weight}"),
                        ));
                    }
                    let name = name.clone().unwrap_or_else(|| format!("profile_{field}"));
                    if let Some(j) = baseline_at(&name) {
                        baseline[j] = steps.len();
                    }
                    needs_time = true;
                    push(&mut names, name.clone(), *standardize);
                    push(&mut names, format!("has_{name}"), false);
                    let slot = fields.slot(field);
                    steps.push(Step::Profile { hist: hists.len() });
                    hists.push(HistSpec {
                        slot,
                        missing: missing.clone(),
                        reset: Reset::Never,
                        keep: 0,
                        profile: Some((*slots, *day_weight)),
                    });
                }
            }
        }
        if let Some(b) = &spec.baseline {
            if b.names().is_empty() {
                return Err(spec_error("baseline", "should name at least one feature"));
            }
            if let Some(j) = baseline.iter().position(|&s| s == usize::MAX) {
                return Err(spec_error(
                    "baseline",
                    format!(
                        "names {:?}, but no `lag` or `profile` feature has that name",
                        b.names()[j]
                    ),
                ));
            }
        }
        if needs_time && ts_slot.is_none() {
            return Err(spec_error(
                "timestamp",
                "is needed by the time features; name the timestamp field",
            ));
        }
        if spec.max_reading_bytes == 0 {
            return Err(spec_error("max_reading_bytes", "should be at least 1"));
        }
        let text_slot = match spec.format {
            InputFormat::Json => None,
            InputFormat::Text => {
                let only_text = match spec.features.as_slice() {
                    [FeatureDef::Text { field, .. }] => Some(fields.slot(field)),
                    _ => None,
                };
                if only_text.is_none() {
                    return Err(spec_error(
                        "features",
                        "should be one `text` feature and nothing else with `format = \"text\"`: the message is the text, there are no other fields",
                    ));
                }
                if spec.timestamp.is_some() {
                    return Err(spec_error(
                        "timestamp",
                        "should be unset with `format = \"text\"`: a plain-text message has no fields",
                    ));
                }
                only_text
            }
        };
        let mut classes = Vec::new();
        match (&spec.target.classes, label_kind) {
            (Some(declared), LabelKind::Classes) => {
                if declared.len() < 2 {
                    return Err(spec_error(
                        "target.classes",
                        "should list at least two classes (or be left out to learn them)",
                    ));
                }
                for (j, c) in declared.iter().enumerate() {
                    if declared[..j].contains(c) {
                        return Err(spec_error("target.classes", format!("lists {c:?} twice")));
                    }
                    if c.is_empty() {
                        return Err(spec_error(
                            "target.classes",
                            "lists an empty class name (\"\"): a reading without a label leaves the field out or sets it to null",
                        ));
                    }
                }
                if declared.len() > MAX_CLASSES {
                    return Err(spec_error(
                        "target.classes",
                        format!("should list at most {MAX_CLASSES} classes"),
                    ));
                }
                classes = declared.clone();
            }
            (Some(_), _) => {
                return Err(spec_error(
                    "target.classes",
                    "is for `task = \"multiclass\"`; remove it, or make the task multiclass",
                ))
            }
            (None, _) => {}
        }
        let mut starts = vec![0];
        for step in &steps {
            let last = starts.last().copied().unwrap_or(0);
            starts.push(last + Self::width_of(step));
        }
        let learns_vocab = steps.iter().any(|s| matches!(s, Step::Learned { .. }));
        Ok(FeatureExtractor {
            starts,
            learns_vocab,
            vocab_index: vec![FixedValues::new(&[]); vocab_count],
            state: FeatureState {
                keys: KeyMap::default(),
                vocab: vec![Vec::new(); vocab_count],
                classes,
                doc_freq: vec![DocFreq::fresh(); idf_count],
            },
            declared_classes: spec.target.classes.is_some(),
            sparse_steps,
            sparse_names,
            text_slot,
            spec,
            fields,
            key_slot,
            ts_slot,
            target_slot,
            steps,
            hists,
            baseline,
            names,
            scale_mask,
            needs_time,
            label_kind,
            time_memo: TimeMemo::default(),
        })
    }
}
