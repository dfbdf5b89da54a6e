//! [`KeyedModel`]: a shared model, and optionally one model per key (one per
//! ride, say) that starts as a copy of the shared model the first time its
//! key is learned from. Keys not seen yet are predicted by the shared model.

use std::collections::BTreeMap;

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::linear::{LinearModel, ValidLinearParams};

/// A shared model plus, when per-key models are on, one model per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedModel {
    shared: LinearModel,
    /// `None` when per-key models are off.
    per_key: Option<BTreeMap<String, LinearModel>>,
}

impl KeyedModel {
    /// A fresh model; `per_key` turns on one model per key.
    pub fn new(params: ValidLinearParams, scale_mask: Vec<bool>, per_key: bool) -> Self {
        KeyedModel {
            shared: LinearModel::new(params, scale_mask),
            per_key: per_key.then(BTreeMap::new),
        }
    }

    /// Takes new hyper-parameters in the shared and every per-key model,
    /// keeping what they learned (see [`LinearModel::retune`]).
    pub fn retune(&mut self, params: ValidLinearParams) -> Result<(), ModelError> {
        self.shared.retune(params)?;
        if let Some(models) = &mut self.per_key {
            for m in models.values_mut() {
                m.retune(params)?;
            }
        }
        Ok(())
    }

    /// The shared model.
    pub fn shared(&self) -> &LinearModel {
        &self.shared
    }

    /// The per-key models (empty when per-key models are off).
    pub fn per_key(&self) -> impl Iterator<Item = (&str, &LinearModel)> {
        self.per_key
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// True if `key` has a model of its own.
    pub fn has_key(&self, key: &str) -> bool {
        self.per_key.as_ref().is_some_and(|m| m.contains_key(key))
    }

    /// The model that predicts readings of `key`.
    pub fn model_for(&self, key: Option<&str>) -> &LinearModel {
        match (&self.per_key, key) {
            (Some(models), Some(k)) => models.get(k).unwrap_or(&self.shared),
            _ => &self.shared,
        }
    }

    /// Number of features the model expects.
    pub fn n_features(&self) -> usize {
        self.shared.n_features()
    }

    /// Labelled readings learned by the shared model.
    pub fn learned(&self) -> u64 {
        self.shared.learned()
    }

    /// Predicts one row for `key`.
    pub fn predict(&self, key: Option<&str>, x: ArrayView1<'_, f64>) -> Result<f64, ModelError> {
        self.model_for(key).predict(x)
    }

    /// Predicts one row given as a slice.
    pub fn predict_slice(&self, key: Option<&str>, x: &[f64]) -> Result<f64, ModelError> {
        self.model_for(key).predict_slice(x)
    }

    /// Learns one labelled row for `key`: the shared model always, and the
    /// key's own model when per-key models are on.
    pub fn learn_slice(&mut self, key: Option<&str>, x: &[f64], y: f64) -> Result<(), ModelError> {
        if let (Some(models), Some(k)) = (&mut self.per_key, key) {
            let model = match models.get_mut(k) {
                Some(m) => m,
                None => models
                    .entry(k.to_owned())
                    .or_insert_with(|| self.shared.clone()),
            };
            model.learn_slice(x, y)?;
        }
        self.shared.learn_slice(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::LinearParams;

    #[test]
    fn unseen_keys_fall_back_to_the_shared_model() {
        let params = LinearParams::default().validate().expect("valid");
        let mut m = KeyedModel::new(params, vec![false], true);
        for _ in 0..200 {
            m.learn_slice(Some("a"), &[1.0], 10.0).expect("learns");
            m.learn_slice(Some("b"), &[1.0], -10.0).expect("learns");
        }
        let a = m.predict_slice(Some("a"), &[1.0]).expect("predicts");
        let b = m.predict_slice(Some("b"), &[1.0]).expect("predicts");
        let c = m.predict_slice(Some("c"), &[1.0]).expect("predicts");
        assert!(
            a > 8.0 && b < -8.0,
            "per-key models learned their keys: {a} {b}"
        );
        assert_eq!(
            c,
            m.shared()
                .predict(ArrayView1::from(&[1.0]))
                .expect("predicts")
        );
        assert_eq!(m.per_key().count(), 2);
    }
}
