//! Error types of the features crate.

use thiserror::Error;

/// Why a reading could not be turned into a feature row. Every variant names
/// the field at fault, so a dead-letter record says what to fix.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum FeatureError {
    /// The bytes are not a JSON object.
    #[error("reading should be a JSON object, but {0}")]
    Json(String),
    /// A field has the wrong type or an unusable value.
    #[error("`{field}` should be {expected}, but is {actual}")]
    Field {
        /// The field's name.
        field: String,
        /// What the spec expects, in words.
        expected: &'static str,
        /// What the reading had.
        actual: String,
    },
    /// A required field is absent.
    #[error("`{field}` is required, but the reading has no such field")]
    Missing {
        /// The field's name.
        field: String,
    },
    /// A plain-text message is not UTF-8.
    #[error("message should be UTF-8 text, but {0}")]
    NotText(String),
    /// A field appears twice in one reading.
    #[error("`{field}` should appear once, but appears twice")]
    Duplicate {
        /// The field's name.
        field: String,
    },
    /// The reading is larger than the configured limit.
    #[error("reading should be at most {limit} bytes, but is {actual}")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// The reading's size.
        actual: usize,
    },
    /// The feature spec itself is wrong (found when building the extractor).
    #[error("feature spec: `{key}` {message}")]
    Spec {
        /// The config key at fault.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl FeatureError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            FeatureError::Field { field, .. }
            | FeatureError::Missing { field }
            | FeatureError::Duplicate { field } => Some(field),
            FeatureError::Spec { key, .. } => Some(key),
            FeatureError::Json(_) | FeatureError::NotText(_) | FeatureError::TooLarge { .. } => {
                None
            }
        }
    }

    /// A [`FeatureError::Field`] for `field`.
    pub(crate) fn wrong(
        field: &str,
        expected: &'static str,
        actual: impl Into<String>,
    ) -> FeatureError {
        FeatureError::Field {
            field: field.to_owned(),
            expected,
            actual: actual.into(),
        }
    }
}

/// Why a data set could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The underlying error.
        message: String,
    },
    /// The file does not have the expected shape.
    #[error("{path}: {message}")]
    Format {
        /// The path.
        path: String,
        /// What is wrong.
        message: String,
    },
}
