//! Versioned, plain-data snapshots of a [`Learner`] (dense or sparse).
//!
//! A snapshot is serde data (JSON on the wire, with exact float round trips),
//! so a restored model predicts bit-identically and keeps learning exactly as
//! the original would have.

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::learner::Learner;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A model frozen as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    /// The snapshot format version, [`SNAPSHOT_FORMAT`] when written by this build.
    pub format_version: u32,
    /// The model.
    pub model: Learner,
}

impl ModelSnapshot {
    /// Freezes `model`.
    pub fn of(model: &Learner) -> Self {
        ModelSnapshot {
            format_version: SNAPSHOT_FORMAT,
            model: model.clone(),
        }
    }

    /// Returns the model, if the snapshot's format is one this build reads
    /// and its parameters are still valid.
    pub fn restore(self) -> Result<Learner, ModelError> {
        if self.format_version != SNAPSHOT_FORMAT {
            return Err(ModelError::SnapshotVersion {
                expected: SNAPSHOT_FORMAT,
                actual: self.format_version,
            });
        }
        self.model.validate()?;
        Ok(self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyed::KeyedModel;
    use crate::linear::LinearParams;
    use crate::loss::Loss;
    use crate::optim::OptimizerParams;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn rows(seed: u64, n: usize) -> Vec<([f64; 3], f64)> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let x = [
                    rng.random_range(-2.0..2.0),
                    rng.random::<f64>() * 100.0,
                    rng.random_range(0.0..1.0),
                ];
                let y = if rng.random_bool(0.5) { 1.0 } else { 0.0 };
                (x, y)
            })
            .collect()
    }

    #[test]
    fn round_trip_predicts_bit_identically_and_learns_identically() {
        for (loss, opt) in [
            (
                Loss::Logistic,
                OptimizerParams::Adagrad {
                    learning_rate: 0.1,
                    epsilon: 1e-8,
                },
            ),
            (Loss::Squared, OptimizerParams::default()),
            (
                Loss::Huber { delta: 1.0 },
                OptimizerParams::Adam {
                    learning_rate: 0.01,
                    beta1: 0.9,
                    beta2: 0.999,
                    epsilon: 1e-8,
                },
            ),
            (
                Loss::Logistic,
                OptimizerParams::Ftrl {
                    alpha: 0.1,
                    beta: 1.0,
                },
            ),
        ] {
            let params = LinearParams {
                loss,
                optimizer: opt,
                l2: 0.001,
                ..Default::default()
            }
            .validate()
            .expect("valid");
            let mut original = KeyedModel::new(params, vec![true, true, false], true);
            let keys = ["a", "b", "c"];
            for (i, (x, y)) in rows(1, 500).into_iter().enumerate() {
                original
                    .learn_slice(Some(keys[i % 3]), &x, y)
                    .expect("learns");
            }
            let json = serde_json::to_string(&ModelSnapshot::of(&Learner::Dense(original.clone())))
                .expect("serialises");
            let Learner::Dense(mut restored) = serde_json::from_str::<ModelSnapshot>(&json)
                .expect("parses")
                .restore()
                .expect("restores")
            else {
                panic!("a dense model comes back dense");
            };
            for (i, (x, y)) in rows(2, 500).into_iter().enumerate() {
                let key = Some(keys[i % 4 % 3]);
                let a = original.predict_slice(key, &x).expect("predicts");
                let b = restored.predict_slice(key, &x).expect("predicts");
                assert_eq!(a.to_bits(), b.to_bits());
                original.learn_slice(key, &x, y).expect("learns");
                restored.learn_slice(key, &x, y).expect("learns");
            }
            assert_eq!(original, restored);
        }
    }

    #[test]
    fn other_format_versions_are_refused() {
        let params = LinearParams::default().validate().expect("valid");
        let mut snap =
            ModelSnapshot::of(&Learner::Dense(KeyedModel::new(params, vec![false], false)));
        snap.format_version = 99;
        assert_eq!(
            snap.restore().expect_err("refused").to_string(),
            "snapshot format version should be 1, but is 99"
        );
    }
}
