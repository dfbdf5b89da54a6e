//! Features for streamfit: the declarative feature spec, decoding of JSON
//! readings into feature rows, and readers for the benchmark data sets.
//!
//! No Kafka, no HTTP. The per-reading path is synchronous and allocates
//! little: [`decode`] walks the JSON once, keeping only the fields the spec
//! names (borrowed from the input bytes), and [`extract`] turns them into a
//! row of `f64` while updating keyed state (lags, running means).
//!
//! Layout:
//! - [`spec`]: the feature spec as written in the service config.
//! - [`decode`]: JSON bytes to a [`decode::Reading`] of named slots.
//! - [`time`]: a strict, fast ISO 8601 timestamp parser and calendar maths.
//! - [`text`]: text to hashed, sparse term counts (tokens, n-grams, signs).
//! - [`extract`]: [`FeatureExtractor`], reading to feature row, with state.
//! - [`datasets`]: readers (polars) for the wait-time and heart data sets,
//!   yielding readings exactly as BENCHMARKS.md defines them, and JSONL.
//! - [`arrow_io`]: Arrow record batches and IPC files of feature rows and
//!   prediction logs.
//! - [`error`]: the crate's error types.

pub mod arrow_io;
pub mod datasets;
pub mod decode;
pub mod error;
pub mod extract;
pub mod spec;
pub mod text;
pub mod time;

pub use error::{DatasetError, FeatureError};
pub use extract::{Extracted, FeatureExtractor, FeatureState, KeyMap, KeyState, LabelKind};
pub use spec::FeatureSpec;
