//! Decoding and feature extraction per reading, JSON bytes to a feature
//! row, for the models of `deploy/streamfit.toml` on their real streams
//! from `../shared/data` (the part of `streamfit eval`'s figure before the
//! model).
//!
//! Also wide readings (issue 19): a generated clinical-style reading of 20
//! fields, 4 numeric and 16 categorical with 2 to 13 string values each,
//! with the values declared in the spec and learned (`max_values`), beside
//! heart-v1's 11 fields on the real clinical records, per reading.
//!
//! cargo bench -p streamfit-features --bench extract

// criterion's macros generate public functions without docs
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use features::datasets::load_readings;
use features::{FeatureExtractor, FeatureSpec};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the features crate sits in the workspace")
        .to_path_buf()
}

/// The feature spec of model `name` in the deploy config.
fn spec(name: &str) -> FeatureSpec {
    let text = std::fs::read_to_string(root().join("deploy/streamfit.toml"))
        .expect("deploy/streamfit.toml reads");
    let config: toml::Table = toml::from_str(&text).expect("the deploy config parses");
    let model = config["model"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"].as_str() == Some(name)))
        .and_then(|m| m.as_table())
        .expect("the model is in the config");
    let mut spec = toml::Table::new();
    for key in ["key", "timestamp", "target", "baseline", "features"] {
        if let Some(v) = model.get(key) {
            spec.insert(key.into(), v.clone());
        }
    }
    toml::Value::Table(spec)
        .try_into()
        .expect("the model's features form a spec")
}

fn bench(c: &mut Criterion) {
    let data = root().join("../shared/data");
    let waits = load_readings(&data.join("wdw-waits-2018")).expect("the wait-time data loads");
    let waits = &waits[..200_000];
    let mut group = c.benchmark_group("extract");
    group.throughput(Throughput::Elements(1));
    for name in ["waits-v1", "waits"] {
        let spec = spec(name);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut extractor = FeatureExtractor::new(spec.clone(), false).expect("builds");
                let mut row = vec![0.0; extractor.width()];
                let start = Instant::now();
                for i in 0..iters as usize {
                    let r = &waits[i % waits.len()];
                    let e = extractor.extract(&r.json, r.key.as_deref(), &mut row);
                    std::hint::black_box((&e, &row));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
    wide(c, &data);
}

/// Reading `i` of the generated wide stream: 4 numbers, 16 categories
/// (field `c{k}` has `2 + k % 12` values, `v0`..), an id and a 0/1 label.
fn wide_reading(i: usize) -> Vec<u8> {
    let mut fields = vec![format!(r#""id":"p{i}","y":{}"#, i % 2)];
    for k in 0..4 {
        fields.push(format!(
            r#""n{k}":{}"#,
            ((i * (k + 7) * 7919) % 1000) as f64 / 10.0
        ));
    }
    for k in 0..16 {
        let values = 2 + k % 12;
        fields.push(format!(
            r#""c{k}":"v{}""#,
            (i * 31 + k * 17 + i / (k + 1)) % values
        ));
    }
    format!("{{{}}}", fields.join(",")).into_bytes()
}

/// How the wide reading's categories know their values.
#[derive(Clone, Copy)]
enum Vocab {
    /// Listed in the spec (`values`).
    Declared,
    /// Learned, up to 16 each (`max_values = 16`): rows as wide as 16 values.
    Learned16,
    /// Learned, up to as many as there are (`max_values` = the count): rows
    /// as wide as the declared ones.
    LearnedCount,
}

/// The wide reading's spec: the categories' values declared, or learned.
fn wide_spec(vocab: Vocab) -> FeatureSpec {
    let mut features: Vec<String> = (0..4)
        .map(|k| format!(r#"{{ kind = "numeric", field = "n{k}" }}"#))
        .collect();
    for k in 0..16 {
        let values: Vec<String> = (0..2 + k % 12).map(|v| format!("\"v{v}\"")).collect();
        features.push(match vocab {
            Vocab::Declared => format!(
                r#"{{ kind = "categorical", field = "c{k}", values = [{}] }}"#,
                values.join(", ")
            ),
            Vocab::Learned16 => {
                format!(r#"{{ kind = "categorical", field = "c{k}", max_values = 16 }}"#)
            }
            Vocab::LearnedCount => format!(
                r#"{{ kind = "categorical", field = "c{k}", max_values = {} }}"#,
                values.len()
            ),
        });
    }
    let text = format!(
        "key = \"id\"\ntarget = {{ field = \"y\" }}\nfeatures = [{}]",
        features.join(", ")
    );
    toml::from_str(&text).expect("the wide spec parses")
}

fn wide(c: &mut Criterion, data: &Path) {
    let readings: Vec<Vec<u8>> = (0..10_000).map(wide_reading).collect();
    let heart = load_readings(&data.join("heart-failure/heart.csv")).expect("the heart data loads");
    let mut group = c.benchmark_group("wide");
    group.throughput(Throughput::Elements(1));
    let specs = [
        ("heart-v1 (11 fields)", spec("heart-v1"), true),
        (
            "20 fields, declared values",
            wide_spec(Vocab::Declared),
            false,
        ),
        (
            "20 fields, learned values",
            wide_spec(Vocab::Learned16),
            false,
        ),
        (
            "20 fields, learned values, max_values = their count",
            wide_spec(Vocab::LearnedCount),
            false,
        ),
    ];
    for (name, spec, real) in specs {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut extractor = FeatureExtractor::new(spec.clone(), true).expect("builds");
                let mut row = vec![0.0; extractor.width()];
                // learned vocabularies warm up first (every value seen)
                for r in readings.iter().take(1_000) {
                    let _ = extractor.extract(r, None, &mut row);
                }
                let start = Instant::now();
                for i in 0..iters as usize {
                    let e = if real {
                        let r = &heart[i % heart.len()];
                        extractor.extract(&r.json, r.key.as_deref(), &mut row)
                    } else {
                        extractor.extract(&readings[i % readings.len()], None, &mut row)
                    };
                    std::hint::black_box((&e, &row));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
