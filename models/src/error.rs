//! The error type of the models crate.

use thiserror::Error;

/// Everything that can go wrong when building, training or restoring a model.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelError {
    /// A hyper-parameter is outside its valid range.
    #[error("`{name}` should be {expected}, but is {actual}")]
    InvalidParam {
        /// The parameter's name as written in the config.
        name: &'static str,
        /// The valid range, in words.
        expected: &'static str,
        /// The value that was given.
        actual: String,
    },
    /// A feature row has the wrong length for the model.
    #[error("feature row should have {expected} values, but has {actual}")]
    WrongFeatureCount {
        /// The model's feature count.
        expected: usize,
        /// The row's length.
        actual: usize,
    },
    /// A feature value is infinite (NaN is allowed and means missing).
    #[error("feature {index} should be finite or missing, but is {value}")]
    NonFinite {
        /// Column of the offending value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A label is not usable for the model's task.
    #[error("label should be {expected}, but is {actual}")]
    InvalidLabel {
        /// What the task accepts.
        expected: &'static str,
        /// The label that was given.
        actual: f64,
    },
    /// A learning step produced a non-finite weight; the step was undone.
    #[error("the model diverged (a weight became {value}); lower the learning rate or use the `normalized` optimiser")]
    Diverged {
        /// The non-finite value.
        value: f64,
    },
    /// New hyper-parameters cannot take over a model's state: the loss,
    /// the optimiser's kind or how features are scaled changed.
    #[error("`{name}` should stay {kept} to keep the model's state, but is {new}")]
    Retune {
        /// What changed.
        name: &'static str,
        /// The model's value.
        kept: String,
        /// The new value.
        new: String,
    },
    /// A snapshot has a format this build does not read.
    #[error("snapshot format version should be {expected}, but is {actual}")]
    SnapshotVersion {
        /// The version this build reads.
        expected: u32,
        /// The snapshot's version.
        actual: u32,
    },
    /// A batch baseline could not be fitted.
    #[error("batch baseline failed: {0}")]
    Baseline(String),
    /// A broken internal invariant (a bug: please report it).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Checks `value` against a predicate and builds an [`ModelError::InvalidParam`] if it fails.
pub(crate) fn check(
    ok: bool,
    name: &'static str,
    expected: &'static str,
    actual: impl ToString,
) -> Result<(), ModelError> {
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidParam {
            name,
            expected,
            actual: actual.to_string(),
        })
    }
}
