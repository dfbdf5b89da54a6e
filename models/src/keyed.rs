//! [`KeyedModel`]: a shared model, and optionally one model per key (one per
//! ride, say) that starts as a copy of the shared model the first time its
//! key is learned from. Keys not seen yet are predicted by the shared model.
//!
//! The per-key models live in a persistent map of shared pointers: cloning
//! a `KeyedModel` (to publish it to readers, or to keep the state of a
//! commit) copies no key's model, and learning afterwards copies only the
//! models it changes.

use std::sync::Arc;

use imbl::OrdMap;

use ndarray::ArrayView1;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::linear::{LinearModel, ValidLinearParams};

/// A shared model plus, when per-key models are on, one model per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedModel {
    shared: LinearModel,
    /// `None` when per-key models are off.
    per_key: Option<OrdMap<String, Arc<LinearModel>>>,
}

impl KeyedModel {
    /// A fresh model; `per_key` turns on one model per key.
    pub fn new(params: ValidLinearParams, scale_mask: Vec<bool>, per_key: bool) -> Self {
        KeyedModel {
            shared: LinearModel::new(params, scale_mask),
            per_key: per_key.then(OrdMap::new),
        }
    }

    /// Takes new hyper-parameters in the shared and every per-key model,
    /// keeping what they learned (see [`LinearModel::retune`]).
    pub fn retune(&mut self, params: ValidLinearParams) -> Result<(), ModelError> {
        self.shared.retune(params)?;
        if let Some(models) = &mut self.per_key {
            let mut retuned = OrdMap::new();
            for (k, m) in models.iter() {
                let mut m = m.as_ref().clone();
                m.retune(params)?;
                retuned.insert(k.clone(), Arc::new(m));
            }
            *models = retuned;
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
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_ref())))
    }

    /// True when per-key models are on.
    pub fn is_per_key(&self) -> bool {
        self.per_key.is_some()
    }

    /// Number of keys with a model of their own.
    pub fn key_count(&self) -> usize {
        self.per_key.as_ref().map_or(0, |m| m.len())
    }

    /// The model of `key`, if it has one of its own.
    pub fn key_model(&self, key: &str) -> Option<&LinearModel> {
        self.per_key.as_ref()?.get(key).map(Arc::as_ref)
    }

    /// Gives `key` a model of its own (restoring a checkpoint), or takes it
    /// away (`None`: the key falls back to the shared model). Does nothing
    /// when per-key models are off.
    pub fn set_key_model(&mut self, key: &str, model: Option<LinearModel>) {
        if let Some(models) = &mut self.per_key {
            match model {
                Some(m) => {
                    models.insert(key.to_owned(), Arc::new(m));
                }
                None => {
                    models.remove(key);
                }
            }
        }
    }

    /// Takes every per-key model out (a checkpoint writes them apart from
    /// the shared model), leaving per-key models on but empty.
    pub fn take_key_models(&mut self) -> OrdMap<String, Arc<LinearModel>> {
        self.per_key
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// True if `key` has a model of its own.
    pub fn has_key(&self, key: &str) -> bool {
        self.per_key.as_ref().is_some_and(|m| m.contains_key(key))
    }

    /// The model that predicts readings of `key`.
    pub fn model_for(&self, key: Option<&str>) -> &LinearModel {
        match (&self.per_key, key) {
            (Some(models), Some(k)) => models.get(k).map_or(&self.shared, Arc::as_ref),
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
                    .or_insert_with(|| Arc::new(self.shared.clone())),
            };
            // copies the key's model only if a reader still holds it
            Arc::make_mut(model).learn_slice(x, y)?;
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

    #[test]
    fn a_clone_shares_the_key_models_until_one_of_them_learns() {
        let params = LinearParams::default().validate().expect("valid");
        let mut m = KeyedModel::new(params, vec![false], true);
        m.learn_slice(Some("a"), &[1.0], 1.0).expect("learns");
        m.learn_slice(Some("b"), &[1.0], 2.0).expect("learns");
        let published = m.clone();
        let same = |x: &KeyedModel, y: &KeyedModel, k: &str| {
            std::ptr::eq(
                x.key_model(k).expect("has a"),
                y.key_model(k).expect("has b"),
            )
        };
        assert!(same(&m, &published, "a") && same(&m, &published, "b"));
        m.learn_slice(Some("a"), &[1.0], 3.0).expect("learns");
        assert!(!same(&m, &published, "a"), "the learned key was copied");
        assert!(same(&m, &published, "b"), "the other key is still shared");
        assert_ne!(m.key_model("a"), published.key_model("a"));
        // taking the key models out and putting them back gives the same model
        let mut parts = m.clone();
        let keys = parts.take_key_models();
        assert_eq!(parts.key_count(), 0);
        for (k, v) in keys.iter() {
            parts.set_key_model(k, Some(v.as_ref().clone()));
        }
        assert_eq!(parts, m);
        parts.set_key_model("a", None);
        assert!(!parts.has_key("a") && parts.has_key("b"));
    }
}
