//! [`Learner`]: the model a pipeline learns, dense or sparse.
//!
//! Models whose features are all dense and whose task is regression or
//! binary classification are a [`KeyedModel`] (one weight vector, per-key
//! models optional, every optimiser). Models with sparse features (hashed
//! text or categories) or several classes are a [`SparseModel`].

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::keyed::KeyedModel;
use crate::linear::ValidLinearParams;
use crate::sparse::SparseModel;

/// A dense or a sparse model. In snapshots each is written as it is (no
/// tag): the two have different fields, so older snapshots, which hold a
/// dense model only, still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Learner {
    /// All features dense; regression or binary classification.
    Dense(KeyedModel),
    /// Sparse features or several classes.
    Sparse(SparseModel),
}

impl Learner {
    /// The model for a pipeline: sparse when its features include sparse
    /// ones (`sparse`) or it has several classes (`classes`: how many are
    /// declared, 0 when they are learned), dense otherwise.
    pub fn new(
        params: ValidLinearParams,
        scale_mask: Vec<bool>,
        per_key: bool,
        sparse: bool,
        classes: Option<usize>,
    ) -> Result<Learner, ModelError> {
        if !sparse && classes.is_none() {
            if params.get().naive_bayes.is_some() {
                return Err(ModelError::InvalidParam {
                    name: "naive_bayes",
                    expected: "unset on a model without `text` or `hashed` features (naive Bayes counts sparse columns)",
                    actual: format!("{:?}", params.get().naive_bayes),
                });
            }
            return Ok(Learner::Dense(KeyedModel::new(params, scale_mask, per_key)));
        }
        if per_key {
            return Err(ModelError::InvalidParam {
                name: "per_key",
                expected: "false on a model with `text` or `hashed` features or several classes (one model for all keys)",
                actual: "true".into(),
            });
        }
        SparseModel::new(params, scale_mask, classes).map(Learner::Sparse)
    }

    /// Predicts one reading of `key`: the raw output of a dense model (the
    /// value, or the probability of class 1), or a sparse model's (see
    /// [`SparseModel::predict`]; `probs` filled for several classes).
    pub fn predict(
        &self,
        key: Option<&str>,
        dense: &[f64],
        sparse: &[(u32, f64)],
        probs: &mut Vec<f64>,
    ) -> Result<f64, ModelError> {
        match self {
            Learner::Dense(m) => m.predict_slice(key, dense),
            Learner::Sparse(m) => m.predict(dense, sparse, probs),
        }
    }

    /// Learns one labelled reading of `key`.
    pub fn learn(
        &mut self,
        key: Option<&str>,
        dense: &[f64],
        sparse: &[(u32, f64)],
        y: f64,
    ) -> Result<(), ModelError> {
        self.learn_predicted(key, dense, sparse, y, None)
    }

    /// [`Learner::learn`] of a reading the model has just predicted, with
    /// what [`Learner::predict`] gave (see [`SparseModel::learn_predicted`]).
    pub fn learn_predicted(
        &mut self,
        key: Option<&str>,
        dense: &[f64],
        sparse: &[(u32, f64)],
        y: f64,
        predicted: Option<(f64, &[f64])>,
    ) -> Result<(), ModelError> {
        match self {
            Learner::Dense(m) => m.learn_slice(key, dense, y),
            Learner::Sparse(m) => m.learn_predicted(dense, sparse, y, predicted),
        }
    }

    /// The dense model, if this is one.
    pub fn dense(&self) -> Option<&KeyedModel> {
        match self {
            Learner::Dense(m) => Some(m),
            Learner::Sparse(_) => None,
        }
    }

    /// The dense model, if this is one.
    pub fn dense_mut(&mut self) -> Option<&mut KeyedModel> {
        match self {
            Learner::Dense(m) => Some(m),
            Learner::Sparse(_) => None,
        }
    }

    /// The sparse model, if this is one.
    pub fn sparse_mut(&mut self) -> Option<&mut SparseModel> {
        match self {
            Learner::Sparse(m) => Some(m),
            Learner::Dense(_) => None,
        }
    }

    /// Dense columns the model expects.
    pub fn n_features(&self) -> usize {
        match self {
            Learner::Dense(m) => m.n_features(),
            Learner::Sparse(m) => m.n_dense(),
        }
    }

    /// Labelled readings learned (by the shared model).
    pub fn learned(&self) -> u64 {
        match self {
            Learner::Dense(m) => m.learned(),
            Learner::Sparse(m) => m.learned(),
        }
    }

    /// Keys with a model of their own (none for a sparse model).
    pub fn key_count(&self) -> usize {
        self.dense().map_or(0, KeyedModel::key_count)
    }

    /// True if `key` has a model of its own.
    pub fn has_key(&self, key: &str) -> bool {
        self.dense().is_some_and(|m| m.has_key(key))
    }

    /// Takes `key`'s own model away (the key was evicted).
    pub fn forget_key(&mut self, key: &str) {
        if let Some(m) = self.dense_mut() {
            m.set_key_model(key, None);
        }
    }

    /// The hyper-parameters' validity, checked again (a restore).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Learner::Dense(m) => m.shared().params().validate().map(|_| ()),
            Learner::Sparse(m) => m.params().validate().map(|_| ()),
        }
    }

    /// The learner's hyper-parameters.
    pub fn params(&self) -> &crate::LinearParams {
        match self {
            Learner::Dense(m) => m.shared().params(),
            Learner::Sparse(m) => m.params(),
        }
    }

    /// Takes new hyper-parameters of the same kind, keeping what was learned.
    pub fn retune(&mut self, params: ValidLinearParams) -> Result<(), ModelError> {
        match self {
            Learner::Dense(m) => m.retune(params),
            Learner::Sparse(m) => m.retune(params),
        }
    }
}
