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
    /// A multiclass model's classes, in the order of their numbers in
    /// `prediction` and `label` (empty for other models): the log then has
    /// `predicted_class` and `label_class` columns naming them.
    pub classes: Vec<String>,
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
        let mut fields = vec![
            Field::new("position", DataType::UInt64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("event_time_ms", DataType::Int64, true),
            Field::new("prediction", DataType::Float64, false),
            Field::new("label", DataType::Float64, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(self.position.clone())),
            Arc::new(StringArray::from(self.key.clone())),
            Arc::new(Int64Array::from(self.event_time.clone())),
            Arc::new(Float64Array::from(self.prediction.clone())),
            Arc::new(Float64Array::from(self.label.clone())),
        ];
        if !self.classes.is_empty() {
            let name = |k: f64| crate::extract::class_name(&self.classes, k).map(str::to_owned);
            let predicted: Vec<Option<String>> = self.prediction.iter().map(|&k| name(k)).collect();
            let label: Vec<Option<String>> = self.label.iter().map(|k| k.and_then(name)).collect();
            fields.push(Field::new("predicted_class", DataType::Utf8, true));
            fields.push(Field::new("label_class", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(predicted)));
            columns.push(Arc::new(StringArray::from(label)));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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
    /// A multiclass model's classes (empty for other models), in the
    /// model's order: `prediction` and `label` are indices into them and
    /// `probability` is the predicted class's.
    pub classes: Vec<String>,
    /// Multiclass: the predicted class's name (none before any class is known).
    pub predicted_class: Vec<Option<String>>,
    /// Multiclass: the label's class name.
    pub label_class: Vec<Option<String>>,
    /// Multiclass: per class (as `classes`), each row's probability of it
    /// (none in rows predicted before the class was known).
    pub class_probability: Vec<Vec<Option<f64>>>,
}

/// One row of a multiclass model's prediction message.
#[derive(Debug, Clone, Copy)]
pub struct ClassRow<'a> {
    /// Source partition and offset of the reading.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Entity key.
    pub key: Option<&'a str>,
    /// Model version that predicted.
    pub model_version: u64,
    /// The predicted class's name.
    pub predicted: Option<&'a str>,
    /// Each class's probability, in the model's class order.
    pub probabilities: &'a [(String, f64)],
    /// The label's class name.
    pub label: Option<&'a str>,
    /// Event time, Unix ms.
    pub event_time: Option<i64>,
}

impl ServiceLog {
    /// Appends a multiclass model's prediction: classes not seen before
    /// join `classes` in the order the message lists them (the model's).
    pub fn push_classes(&mut self, row: ClassRow<'_>) {
        let rows = self.len();
        // this row's slot in every known class's column; a class first
        // seen here gets a column of nones for the rows before
        for column in &mut self.class_probability {
            column.push(None);
        }
        let index =
            |log: &mut ServiceLog, class: &str| match log.classes.iter().position(|c| c == class) {
                Some(i) => i,
                None => {
                    log.classes.push(class.to_owned());
                    log.class_probability.push(vec![None; rows + 1]);
                    log.classes.len() - 1
                }
            };
        for (class, p) in row.probabilities {
            let k = index(self, class);
            self.class_probability[k][rows] = Some(*p);
        }
        let predicted = row.predicted.map(|c| index(self, c));
        let label = row.label.map(|c| index(self, c));
        self.partition.push(row.partition);
        self.offset.push(row.offset);
        self.key.push(row.key.map(str::to_owned));
        self.model_version.push(row.model_version);
        self.prediction
            .push(predicted.map_or(f64::NAN, |k| k as f64));
        self.probability
            .push(predicted.and_then(|k| self.class_probability[k][rows]));
        self.label.push(label.map(|k| k as f64));
        self.event_time.push(row.event_time);
        self.predicted_class.push(row.predicted.map(str::to_owned));
        self.label_class.push(row.label.map(str::to_owned));
    }

    /// The multiclass columns' names: `predicted_class`, `label_class`,
    /// then `probability_<class>` per class.
    fn class_columns(&self) -> Vec<String> {
        let mut names = vec!["predicted_class".to_owned(), "label_class".to_owned()];
        names.extend(self.classes.iter().map(|c| format!("probability_{c}")));
        names
    }

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
        if !self.classes.is_empty() {
            let names = self.class_columns();
            let mut columns = vec![
                Column::new(names[0].as_str().into(), &self.predicted_class),
                Column::new(names[1].as_str().into(), &self.label_class),
            ];
            for (name, column) in names[2..].iter().zip(&self.class_probability) {
                columns.push(Column::new(name.as_str().into(), column));
            }
            df.hstack_mut(&columns).map_err(err)?;
        }
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
        let mut fields = vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("model_version", DataType::UInt64, false),
            Field::new("prediction", DataType::Float64, false),
            Field::new("probability", DataType::Float64, true),
            Field::new("label", DataType::Float64, true),
            Field::new("event_time_ms", DataType::Int64, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(self.partition.clone())),
            Arc::new(Int64Array::from(self.offset.clone())),
            Arc::new(StringArray::from(self.key.clone())),
            Arc::new(UInt64Array::from(self.model_version.clone())),
            Arc::new(Float64Array::from(self.prediction.clone())),
            Arc::new(Float64Array::from(self.probability.clone())),
            Arc::new(Float64Array::from(self.label.clone())),
            Arc::new(Int64Array::from(self.event_time.clone())),
        ];
        if !self.classes.is_empty() {
            let names = self.class_columns();
            fields.push(Field::new(&names[0], DataType::Utf8, true));
            fields.push(Field::new(&names[1], DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(self.predicted_class.clone())));
            columns.push(Arc::new(StringArray::from(self.label_class.clone())));
            for (name, column) in names[2..].iter().zip(&self.class_probability) {
                fields.push(Field::new(name, DataType::Float64, true));
                columns.push(Arc::new(Float64Array::from(column.clone())));
            }
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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
        assert_eq!(batches[0].num_columns(), 5, "no class columns");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_multiclass_eval_log_names_its_classes() {
        let mut log = PredictionLog {
            classes: vec!["neutral".into(), "negative".into()],
            ..PredictionLog::default()
        };
        log.push(0, None, None, f64::NAN, Some(0.0));
        log.push(1, None, None, 0.0, Some(1.0));
        log.push(2, None, None, 1.0, None);
        let batch = log.to_record_batch().expect("batch");
        let names = |c: &str| -> Vec<Option<String>> {
            let a = batch
                .column_by_name(c)
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .expect("a string column");
            a.iter().map(|v| v.map(str::to_owned)).collect()
        };
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            names("predicted_class"),
            [None, s("neutral"), s("negative")]
        );
        assert_eq!(names("label_class"), [s("neutral"), s("negative"), None]);
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
            ..ServiceLog::default()
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

    #[test]
    fn a_multiclass_log_has_class_names_indices_and_a_probability_per_class() {
        use polars::prelude::*;
        let probs = |v: &[(&str, f64)]| -> Vec<(String, f64)> {
            v.iter().map(|(c, p)| ((*c).to_owned(), *p)).collect()
        };
        let mut log = ServiceLog::default();
        let row = |predicted, probabilities, label| ClassRow {
            partition: 0,
            offset: 0,
            key: Some("t1"),
            model_version: 1,
            predicted,
            probabilities,
            label,
            event_time: None,
        };
        // no class known yet, then two, then a third learned later
        log.push_classes(row(None, &[], Some("negative")));
        let two = probs(&[("negative", 0.7), ("positive", 0.3)]);
        log.push_classes(row(Some("negative"), &two, Some("positive")));
        let three = probs(&[("negative", 0.2), ("positive", 0.5), ("neutral", 0.3)]);
        log.push_classes(row(Some("positive"), &three, None));
        assert_eq!(log.classes, ["negative", "positive", "neutral"]);
        assert!(log.prediction[0].is_nan());
        assert_eq!(&log.prediction[1..], [0.0, 1.0]);
        assert_eq!(log.label, [Some(0.0), Some(1.0), None]);
        assert_eq!(log.probability, [None, Some(0.7), Some(0.5)]);
        assert_eq!(
            log.class_probability,
            [
                vec![None, Some(0.7), Some(0.2)],
                vec![None, Some(0.3), Some(0.5)],
                vec![None, None, Some(0.3)],
            ]
        );
        let batch = log.to_record_batch().expect("batch");
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names[8..],
            [
                "predicted_class",
                "label_class",
                "probability_negative",
                "probability_positive",
                "probability_neutral"
            ]
        );
        let dir = std::env::temp_dir().join(format!("streamfit-classlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pq = dir.join("c.parquet");
        log.write_parquet(&pq).expect("parquet");
        let df = ParquetReader::new(File::open(&pq).expect("opens"))
            .finish()
            .expect("reads");
        assert_eq!(df.width(), 13);
        let neutral: Vec<Option<f64>> = df
            .column("probability_neutral")
            .and_then(|c| c.f64().cloned())
            .expect("a column per class")
            .iter()
            .collect();
        assert_eq!(neutral, [None, None, Some(0.3)]);
        std::fs::remove_dir_all(dir).ok();
    }
}
