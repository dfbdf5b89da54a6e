//! Online estimators for streamfit: linear and logistic regression that learn
//! one reading at a time, the optimisers that drive them, prequential
//! (test-then-train) metrics, serialisable snapshots and batch baselines.
//!
//! No Kafka, no HTTP, no async: everything here is plain synchronous code
//! over `f64` slices and ndarray views, so it can be tested and benchmarked
//! alone.
//!
//! Layout:
//! - [`loss`]: squared, absolute, Huber and logistic losses, their
//!   gradients and the importance-invariant updates that never overshoot.
//! - [`optim`]: optimiser hyper-parameters (validated) and their state.
//! - [`scaler`]: online standardisation (running mean and variance).
//! - [`linear`]: [`LinearModel`], one weight vector learned online.
//! - [`keyed`]: [`KeyedModel`], one model per key with a shared fallback.
//! - [`metrics`]: prequential metrics, cumulative and over a rolling window.
//! - [`sparse`]: [`SparseModel`], binary and softmax logistic regression
//!   over rows with sparse (hashed) and dense columns; `sparse/naive_bayes`
//!   the naive Bayes counts stacked under it (`naive_bayes = alpha`).
//! - [`pages`]: a sparse model's columns in pages, for checkpoints that
//!   write only what changed.
//! - [`learner`]: [`Learner`], a dense or a sparse model.
//! - [`snapshot`]: versioned plain-data snapshots of a model.
//! - [`drift`]: the Page-Hinkley drift detector over prequential losses.
//! - [`baseline`]: batch linear and logistic regression through smartcore.
//! - [`error`]: the crate's error type.

pub mod baseline;
mod columns;
pub mod drift;
pub mod error;
pub mod keyed;
pub mod learner;
pub mod linear;
pub mod loss;
pub mod metrics;
mod newton;
pub mod optim;
pub mod pages;
pub mod scaler;
pub mod snapshot;
pub mod sparse;

pub use error::ModelError;
pub use keyed::KeyedModel;
pub use learner::Learner;
pub use linear::{BatchMode, LinearModel, LinearParams, ValidLinearParams};
pub use loss::Loss;
pub use metrics::{MetricSet, Prequential, Task};
pub use optim::OptimizerParams;
pub use scaler::{OnlineScaler, Scaling};
pub use snapshot::ModelSnapshot;
pub use sparse::SparseModel;
