//! The whole per-reading path of the service, JSON bytes in, prediction out
//! and learned, one reading per micro-batch (B = 1), for every model of
//! `deploy/streamfit.toml` on its real stream from `../shared/data`.
//!
//! cargo bench -p streamfit --bench pipeline
//!
//! `streamfit eval` gives the same figure over a whole stream; this bench
//! is the one to profile (`-- --profile-time 10`).

// criterion's macros generate public functions without docs
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use features::datasets::load_readings;
use streamfit::config::Config;
use streamfit::pipeline::{Contiguous, Pipeline};

/// Readings of each stream the bench cycles through.
const READINGS: usize = 200_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the service crate sits in the workspace")
        .to_path_buf()
}

fn bench(c: &mut Criterion) {
    let root = root();
    let config =
        Config::load(&root.join("deploy/streamfit.toml")).expect("deploy/streamfit.toml loads");
    let data = root.join("../shared/data");
    let waits = load_readings(&data.join("wdw-waits-2018")).expect("the wait-time data loads");
    let heart = load_readings(&data.join("heart-failure/heart.csv")).expect("the heart data loads");
    let mut group = c.benchmark_group("json_predict_learn");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    for name in ["waits-v1", "waits", "heart-v1", "heart"] {
        let model = config.model(name).expect("the model is in the config");
        let readings = if name.starts_with("waits") {
            &waits
        } else {
            &heart
        };
        let readings = &readings[..readings.len().min(READINGS)];
        let contiguous = Contiguous::new(readings);
        let inputs = contiguous.inputs();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut pipeline = Pipeline::new(model).expect("the model builds");
                let mut out = Vec::with_capacity(1);
                let start = Instant::now();
                for i in 0..iters as usize {
                    let input = &inputs[i % inputs.len()];
                    pipeline.process(std::slice::from_ref(input), &mut out);
                    std::hint::black_box(&out);
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
