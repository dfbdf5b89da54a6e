//! Decoding and feature extraction per reading, JSON bytes to a feature
//! row, for the models of `deploy/streamfit.toml` on their real streams
//! from `../shared/data` (the part of `streamfit eval`'s figure before the
//! model).
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
