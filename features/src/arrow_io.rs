//! Arrow record batches of prediction logs, and Arrow IPC files of them, so
//! notebooks (pyarrow, polars, pandas) can load what a run predicted.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;

/// Predictions of a run, one entry per reading, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionLog {
    /// Position of the reading in its stream (offset, or line number).
    pub position: Vec<u64>,
    /// Entity key.
    pub key: Vec<Option<String>>,
    /// Event time, Unix milliseconds.
    pub event_time: Vec<Option<i64>>,
    /// The prediction (value, or probability of class 1).
    pub prediction: Vec<f64>,
    /// The label, if the reading had one.
    pub label: Vec<Option<f64>>,
}

impl PredictionLog {
    /// Appends one prediction.
    pub fn push(
        &mut self,
        position: u64,
        key: Option<&str>,
        event_time: Option<i64>,
        prediction: f64,
        label: Option<f64>,
    ) {
        self.position.push(position);
        self.key.push(key.map(str::to_owned));
        self.event_time.push(event_time);
        self.prediction.push(prediction);
        self.label.push(label);
    }

    /// Number of predictions.
    pub fn len(&self) -> usize {
        self.prediction.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.prediction.is_empty()
    }

    /// The log as one Arrow record batch.
    pub fn to_record_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("position", DataType::UInt64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("event_time_ms", DataType::Int64, true),
            Field::new("prediction", DataType::Float64, false),
            Field::new("label", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.position.clone())),
            Arc::new(StringArray::from(self.key.clone())),
            Arc::new(Int64Array::from(self.event_time.clone())),
            Arc::new(Float64Array::from(self.prediction.clone())),
            Arc::new(Float64Array::from(self.label.clone())),
        ];
        RecordBatch::try_new(schema, columns)
    }

    /// Writes the log as an Arrow IPC file.
    pub fn write_ipc(&self, path: &Path) -> Result<(), ArrowError> {
        write_ipc(&self.to_record_batch()?, path)
    }
}

/// Writes one record batch as an Arrow IPC file.
pub fn write_ipc(batch: &RecordBatch, path: &Path) -> Result<(), ArrowError> {
    let file = File::create(path)?;
    let mut writer = FileWriter::try_new(file, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()
}

/// The prediction messages of a service's output topic, column by column
/// (the message contract of DESIGN.md, with its source coordinates).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceLog {
    /// Source partition of the reading.
    pub partition: Vec<i32>,
    /// Source offset of the reading.
    pub offset: Vec<i64>,
    /// Entity key.
    pub key: Vec<Option<String>>,
    /// Model version that predicted.
    pub model_version: Vec<u64>,
    /// The prediction (class for classifiers).
    pub prediction: Vec<f64>,
    /// Probability of the positive class (classifiers).
    pub probability: Vec<Option<f64>>,
    /// The label, when the reading had one.
    pub label: Vec<Option<f64>>,
    /// Event time, Unix ms.
    pub event_time: Vec<Option<i64>>,
}

impl ServiceLog {
    /// Writes the log as a Parquet file (through polars).
    pub fn write_parquet(&self, path: &Path) -> Result<(), crate::error::DatasetError> {
        use polars::prelude::*;
        let err = |e: PolarsError| crate::error::DatasetError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut df = DataFrame::new(
            self.len(),
            vec![
                Column::new("partition".into(), &self.partition),
                Column::new("offset".into(), &self.offset),
                Column::new("key".into(), &self.key),
                Column::new("model_version".into(), &self.model_version),
                Column::new("prediction".into(), &self.prediction),
                Column::new("probability".into(), &self.probability),
                Column::new("label".into(), &self.label),
                Column::new("event_time_ms".into(), &self.event_time),
            ],
        )
        .map_err(err)?;
        let file = File::create(path).map_err(|e| crate::error::DatasetError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        ParquetWriter::new(file).finish(&mut df).map_err(err)?;
        Ok(())
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.offset.is_empty()
    }

    /// The log as one Arrow record batch.
    pub fn to_record_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("model_version", DataType::UInt64, false),
            Field::new("prediction", DataType::Float64, false),
            Field::new("probability", DataType::Float64, true),
            Field::new("label", DataType::Float64, true),
            Field::new("event_time_ms", DataType::Int64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(self.partition.clone())),
            Arc::new(Int64Array::from(self.offset.clone())),
            Arc::new(StringArray::from(self.key.clone())),
            Arc::new(UInt64Array::from(self.model_version.clone())),
            Arc::new(Float64Array::from(self.prediction.clone())),
            Arc::new(Float64Array::from(self.probability.clone())),
            Arc::new(Float64Array::from(self.label.clone())),
            Arc::new(Int64Array::from(self.event_time.clone())),
        ];
        RecordBatch::try_new(schema, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::ipc::reader::FileReader;

    #[test]
    fn ipc_round_trip() {
        let mut log = PredictionLog::default();
        log.push(0, Some("soarin"), Some(1), 12.5, Some(10.0));
        log.push(1, None, None, 3.0, None);
        let dir = std::env::temp_dir().join(format!("streamfit-arrow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.arrow");
        log.write_ipc(&path).expect("writes");
        let reader = FileReader::try_new(File::open(&path).expect("opens"), None).expect("reads");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(batches[0], log.to_record_batch().expect("batch"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn service_logs_write_ipc_and_parquet() {
        use polars::prelude::*;
        let log = ServiceLog {
            partition: vec![0, 2],
            offset: vec![7, 3],
            key: vec![Some("hf-1".into()), None],
            model_version: vec![4, 9],
            prediction: vec![1.0, 0.0],
            probability: vec![Some(0.8), Some(0.1)],
            label: vec![Some(1.0), None],
            event_time: vec![None, Some(1_514_764_800_000)],
        };
        let dir = std::env::temp_dir().join(format!("streamfit-svclog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ipc = dir.join("p.arrow");
        write_ipc(&log.to_record_batch().expect("batch"), &ipc).expect("ipc");
        let reader = FileReader::try_new(File::open(&ipc).expect("opens"), None).expect("reads");
        let batches: Vec<_> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(batches[0], log.to_record_batch().expect("batch"));
        let pq = dir.join("p.parquet");
        log.write_parquet(&pq).expect("parquet");
        let df = ParquetReader::new(File::open(&pq).expect("opens"))
            .finish()
            .expect("reads");
        assert_eq!(df.height(), 2);
        let offsets: Vec<Option<i64>> = df
            .column("offset")
            .and_then(|c| c.i64().cloned())
            .expect("offset column")
            .iter()
            .collect();
        assert_eq!(offsets, vec![Some(7), Some(3)]);
        assert_eq!(df.column("key").expect("key").null_count(), 1);
        std::fs::remove_dir_all(dir).ok();
    }
}
