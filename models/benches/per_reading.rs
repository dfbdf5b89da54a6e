//! Predict and learn, one reading at a time, for each optimiser, on rows of
//! the width of the `waits-v1` features (31 columns, mostly one-hot).
//!
//! cargo bench -p streamfit-models --bench per_reading

// criterion's macros generate public functions without docs
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use models::{KeyedModel, LinearParams, Loss, OptimizerParams};
use rand::{rngs::StdRng, Rng, SeedableRng};

const WIDTH: usize = 31;

fn rows(n: usize) -> Vec<(Vec<f64>, f64)> {
    let mut rng = StdRng::seed_from_u64(1);
    (0..n)
        .map(|_| {
            let mut x = vec![0.0; WIDTH];
            x[rng.random_range(0..15)] = 1.0; // ride
            x[15] = rng.random_range(-1.0..1.0); // hour sin, cos
            x[16] = rng.random_range(-1.0..1.0);
            x[17 + rng.random_range(0..7)] = 1.0; // weekday
            x[24] = rng.random_range(-1.0..1.0); // day of year
            x[25] = rng.random_range(-1.0..1.0);
            x[26] = rng.random_range(0.0..120.0); // lag
            x[27] = 1.0;
            let y = x[26] + rng.random_range(-10.0..10.0);
            (x, y)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let data = rows(4096);
    let mut mask = vec![false; WIDTH];
    mask[26] = true;
    let optimizers = [
        ("adagrad", OptimizerParams::default()),
        (
            "sgd",
            OptimizerParams::Sgd {
                learning_rate: 0.01,
                power_t: 0.25,
            },
        ),
        (
            "adam",
            OptimizerParams::Adam {
                learning_rate: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-8,
            },
        ),
        (
            "ftrl",
            OptimizerParams::Ftrl {
                alpha: 0.1,
                beta: 1.0,
            },
        ),
        (
            "normalized",
            OptimizerParams::Normalized {
                learning_rate: 1.0,
                power_t: 0.25,
                adaptive: false,
                invariant: true,
            },
        ),
        (
            "newton",
            OptimizerParams::Newton {
                prior_variance: 1.0,
                forgetting: 1.0,
            },
        ),
    ];
    let mut group = c.benchmark_group("per_reading");
    for (name, optimizer) in optimizers {
        let params = LinearParams {
            loss: Loss::Huber { delta: 5.0 },
            optimizer,
            ..Default::default()
        }
        .validate()
        .expect("valid");
        let mut trained = KeyedModel::new(params, mask.clone(), false);
        for (x, y) in &data {
            trained.learn_slice(None, x, *y).expect("learns");
        }
        let mut i = 0;
        group.bench_function(format!("predict/{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % data.len();
                trained.predict_slice(None, &data[i].0).expect("predicts")
            })
        });
        group.bench_function(format!("learn_256_readings/{name}"), |b| {
            b.iter_batched_ref(
                || trained.clone(),
                |m| {
                    for (x, y) in &data[..256] {
                        m.learn_slice(None, x, *y).expect("learns");
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
