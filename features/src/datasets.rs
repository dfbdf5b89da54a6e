//! Readers for the benchmark data sets, yielding readings exactly as
//! `BENCHMARKS.md` defines them, and for JSONL files of readings.
//!
//! The CSV files are read with polars (every column as text, so that the
//! quirks stay visible: `-999` sentinels, `MM/DD/YYYY` dates and other
//! headers in `slinky_dog.csv`, empty actual waits) and then turned into
//! typed readings here.

use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::error::DatasetError;

/// One wait-time reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitReading {
    /// The ride: the file stem.
    pub ride: String,
    /// Local time, ISO 8601 (`2018-01-01T09:05:00`).
    pub ts: String,
    /// Posted wait in minutes; `-999` means closed. Absent on the rows that
    /// only record a timed actual wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posted_wait: Option<f64>,
    /// Timed actual wait, when the row has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_wait: Option<f64>,
}

/// One clinical reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartReading {
    /// `hf-` and the 1-based row number, zero-padded to 6 digits.
    pub patient_id: String,
    /// Years.
    pub age: i64,
    /// `M` or `F`.
    pub sex: String,
    /// `TA`, `ATA`, `NAP` or `ASY`.
    pub chest_pain_type: String,
    /// mm Hg (0 means missing).
    pub resting_bp: i64,
    /// mg/dl (0 means missing).
    pub cholesterol: i64,
    /// 1 if fasting blood sugar > 120 mg/dl.
    pub fasting_bs: i64,
    /// `Normal`, `ST` or `LVH`.
    pub resting_ecg: String,
    /// Beats per minute.
    pub max_hr: i64,
    /// `Y` or `N`.
    pub exercise_angina: String,
    /// ST depression.
    pub oldpeak: f64,
    /// `Up`, `Flat` or `Down`.
    pub st_slope: String,
    /// The label.
    pub heart_disease: i64,
}

/// A reading ready to publish: Kafka key and JSON value.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedReading {
    /// The Kafka key (ride, patient id), if the source has one.
    pub key: Option<String>,
    /// The JSON bytes.
    pub json: Vec<u8>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> DatasetError {
    DatasetError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn fmt_err(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a CSV with polars, every column as text.
fn read_text_csv(path: &Path) -> Result<DataFrame, DatasetError> {
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| io_err(path, e))
}

fn text_column<'a>(
    df: &'a DataFrame,
    path: &Path,
    index: usize,
    what: &str,
) -> Result<&'a StringChunked, DatasetError> {
    df.columns()
        .get(index)
        .ok_or_else(|| fmt_err(path, format!("has no column {} ({what})", index + 1)))?
        .str()
        .map_err(|e| fmt_err(path, e.to_string()))
}

fn parse_num(path: &Path, row: usize, what: &str, s: Option<&str>) -> Result<f64, DatasetError> {
    let s = s.unwrap_or("").trim();
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            fmt_err(
                path,
                format!("row {}: {what} should be a number, but is {s:?}", row + 2),
            )
        })
}

/// The CSV files of the wait-time directory, in file-name order.
pub fn wait_files(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fmt_err(
            dir,
            "has no .csv files; point it at shared/data/wdw-waits-2018",
        ));
    }
    Ok(files)
}

/// Reads one ride's file: `date, datetime, posted, actual` in that order,
/// whatever the headers say.
pub fn read_wait_file(path: &Path) -> Result<Vec<WaitReading>, DatasetError> {
    let ride = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| fmt_err(path, "has no usable file name"))?
        .to_owned();
    let df = read_text_csv(path)?;
    let datetime = text_column(&df, path, 1, "datetime")?;
    let posted = text_column(&df, path, 2, "posted wait")?;
    let actual = text_column(&df, path, 3, "actual wait")?;
    let mut out = Vec::with_capacity(df.height());
    for (row, ((dt, p), a)) in datetime
        .iter()
        .zip(posted.iter())
        .zip(actual.iter())
        .enumerate()
    {
        let dt = dt.unwrap_or("").trim();
        if dt.len() != 19 || dt.as_bytes()[10] != b' ' {
            return Err(fmt_err(
                path,
                format!(
                    "row {}: datetime should be YYYY-MM-DD HH:MM:SS, but is {dt:?}",
                    row + 2
                ),
            ));
        }
        let ts = format!("{}T{}", &dt[..10], &dt[11..]);
        let posted_wait = optional_num(path, row, "posted wait", p)?;
        let actual_wait = optional_num(path, row, "actual wait", a)?;
        out.push(WaitReading {
            ride: ride.clone(),
            ts,
            posted_wait,
            actual_wait,
        });
    }
    Ok(out)
}

/// The wait-time stream: every file's rows, concatenated in file-name order,
/// then sorted by `ts` with a stable sort.
pub fn read_waits(dir: &Path) -> Result<Vec<WaitReading>, DatasetError> {
    let mut all = Vec::new();
    for f in wait_files(dir)? {
        all.extend(read_wait_file(&f)?);
    }
    all.sort_by(|a, b| a.ts.cmp(&b.ts));
    Ok(all)
}

fn optional_num(
    path: &Path,
    row: usize,
    what: &str,
    s: Option<&str>,
) -> Result<Option<f64>, DatasetError> {
    match s.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => parse_num(path, row, what, Some(v)).map(Some),
    }
}

fn int(path: &Path, row: usize, what: &str, s: Option<&str>) -> Result<i64, DatasetError> {
    let v = parse_num(path, row, what, s)?;
    if v.fract() != 0.0 {
        return Err(fmt_err(
            path,
            format!(
                "row {}: {what} should be a whole number, but is {v}",
                row + 2
            ),
        ));
    }
    Ok(v as i64)
}

/// The clinical stream, in file order.
pub fn read_heart(path: &Path) -> Result<Vec<HeartReading>, DatasetError> {
    let df = read_text_csv(path)?;
    let names = [
        "Age",
        "Sex",
        "ChestPainType",
        "RestingBP",
        "Cholesterol",
        "FastingBS",
        "RestingECG",
        "MaxHR",
        "ExerciseAngina",
        "Oldpeak",
        "ST_Slope",
        "HeartDisease",
    ];
    let mut cols = Vec::new();
    for name in names {
        let idx = df
            .get_column_names()
            .iter()
            .position(|n| n.as_str() == name)
            .ok_or_else(|| {
                fmt_err(
                    path,
                    format!("has no column {name}; is it the heart-failure CSV?"),
                )
            })?;
        cols.push(text_column(&df, path, idx, name)?);
    }
    let text = |c: usize, i: usize| cols[c].get(i).unwrap_or("").trim().to_owned();
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let g = |c: usize| cols[c].get(i);
        out.push(HeartReading {
            patient_id: format!("hf-{:06}", i + 1),
            age: int(path, i, "Age", g(0))?,
            sex: text(1, i),
            chest_pain_type: text(2, i),
            resting_bp: int(path, i, "RestingBP", g(3))?,
            cholesterol: int(path, i, "Cholesterol", g(4))?,
            fasting_bs: int(path, i, "FastingBS", g(5))?,
            resting_ecg: text(6, i),
            max_hr: int(path, i, "MaxHR", g(7))?,
            exercise_angina: text(8, i),
            oldpeak: parse_num(path, i, "Oldpeak", g(9))?,
            st_slope: text(10, i),
            heart_disease: int(path, i, "HeartDisease", g(11))?,
        });
    }
    Ok(out)
}

/// Reads a JSONL file: one reading per non-empty line, no key.
pub fn read_jsonl(path: &Path) -> Result<Vec<KeyedReading>, DatasetError> {
    let text = fs::read(path).map_err(|e| io_err(path, e))?;
    Ok(text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(|l| KeyedReading {
            key: None,
            json: l.to_vec(),
        })
        .collect())
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // serialising these plain structs cannot fail
    serde_json::to_vec(v).unwrap_or_default()
}

/// Reads a file of readings for a backfill, by extension: `.csv` (a header
/// of field names, types inferred from the first 10,000 rows), `.parquet`,
/// or `.jsonl`/`.ndjson`/`.json` (one JSON reading per line). Each row
/// becomes one JSON reading of its non-null cells; numbers stay numbers,
/// dates and times become text.
pub fn read_table(path: &Path) -> Result<Vec<KeyedReading>, DatasetError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let df = match ext.as_deref() {
        Some("jsonl" | "ndjson" | "json") => return read_jsonl(path),
        Some("csv") => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish())
            .map_err(|e| io_err(path, e))?,
        Some("parquet") => {
            let file = fs::File::open(path).map_err(|e| io_err(path, e))?;
            ParquetReader::new(file)
                .finish()
                .map_err(|e| io_err(path, e))?
        }
        _ => {
            return Err(fmt_err(
                path,
                "should be a .csv, .parquet or .jsonl file of readings",
            ))
        }
    };
    rows_to_json(&df, path)
}

/// One JSON object per row, of the row's non-null cells.
fn rows_to_json(df: &DataFrame, path: &Path) -> Result<Vec<KeyedReading>, DatasetError> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let columns = df.columns();
    let mut out = Vec::with_capacity(df.height());
    for row in 0..df.height() {
        let mut obj = serde_json::Map::with_capacity(names.len());
        for (name, column) in names.iter().zip(columns) {
            let cell = column
                .get(row)
                .map_err(|e| fmt_err(path, format!("row {}: {e}", row + 1)))?;
            let value = match cell {
                AnyValue::Null => continue,
                AnyValue::Boolean(b) => serde_json::Value::from(b),
                AnyValue::String(s) => serde_json::Value::from(s),
                AnyValue::StringOwned(s) => serde_json::Value::from(s.as_str()),
                AnyValue::UInt8(x) => serde_json::Value::from(x),
                AnyValue::UInt16(x) => serde_json::Value::from(x),
                AnyValue::UInt32(x) => serde_json::Value::from(x),
                AnyValue::UInt64(x) => serde_json::Value::from(x),
                AnyValue::Int8(x) => serde_json::Value::from(x),
                AnyValue::Int16(x) => serde_json::Value::from(x),
                AnyValue::Int32(x) => serde_json::Value::from(x),
                AnyValue::Int64(x) => serde_json::Value::from(x),
                AnyValue::Float32(x) => serde_json::Value::from(f64::from(x)),
                AnyValue::Float64(x) => serde_json::Value::from(x),
                other => serde_json::Value::from(other.to_string()),
            };
            // NaN and infinities have no JSON form: the decoder reports the
            // field as missing, as for a null
            if !value.is_null() {
                obj.insert(name.clone(), value);
            }
        }
        out.push(KeyedReading {
            key: None,
            json: to_json(&obj),
        });
    }
    Ok(out)
}

/// Loads readings from a path: the wait-time directory, the heart CSV, or a
/// JSONL file (by extension `.jsonl`/`.json`).
pub fn load_readings(path: &Path) -> Result<Vec<KeyedReading>, DatasetError> {
    if path.is_dir() {
        return Ok(read_waits(path)?
            .into_iter()
            .map(|r| KeyedReading {
                key: Some(r.ride.clone()),
                json: to_json(&r),
            })
            .collect());
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok(read_heart(path)?
            .into_iter()
            .map(|r| KeyedReading {
                key: Some(r.patient_id.clone()),
                json: to_json(&r),
            })
            .collect()),
        Some("jsonl" | "json" | "ndjson") => read_jsonl(path),
        _ => Err(fmt_err(
            path,
            "should be the wait-time directory, the heart CSV, or a .jsonl file of readings",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
    }

    #[test]
    fn tables_of_readings_read_the_same_from_csv_parquet_and_jsonl() {
        let dir = std::env::temp_dir().join(format!("streamfit-tables-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("tmp dir");
        let mut df = df! {
            "ride" => ["soarin", "dumbo", "soarin"],
            "ts" => ["2018-01-01T09:00:00", "2018-01-01T09:05:00", "2018-01-01T09:10:00"],
            "posted_wait" => [Some(35i64), None, Some(40)],
            "ratio" => [0.5f64, 1.25, 2.0],
        }
        .expect("frame");
        let csv = dir.join("r.csv");
        CsvWriter::new(fs::File::create(&csv).expect("csv"))
            .finish(&mut df)
            .expect("csv written");
        let parquet = dir.join("r.parquet");
        ParquetWriter::new(fs::File::create(&parquet).expect("parquet"))
            .finish(&mut df)
            .expect("parquet written");
        let want = [
            r#"{"ride":"soarin","ts":"2018-01-01T09:00:00","posted_wait":35,"ratio":0.5}"#,
            r#"{"ride":"dumbo","ts":"2018-01-01T09:05:00","ratio":1.25}"#,
            r#"{"ride":"soarin","ts":"2018-01-01T09:10:00","posted_wait":40,"ratio":2.0}"#,
        ];
        let jsonl = dir.join("r.jsonl");
        fs::write(&jsonl, want.join("\n")).expect("jsonl");
        for path in [&csv, &parquet, &jsonl] {
            let got: Vec<serde_json::Value> = read_table(path)
                .expect("reads")
                .iter()
                .map(|r| serde_json::from_slice(&r.json).expect("json"))
                .collect();
            let want: Vec<serde_json::Value> = want
                .iter()
                .map(|w| serde_json::from_str(w).expect("json"))
                .collect();
            assert_eq!(got, want, "{}", path.display());
        }
        let e = read_table(&dir.join("r.xlsx")).expect_err("unknown kind");
        assert!(e.to_string().contains(".parquet"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn heart_readings_match_the_benchmark_definition() {
        let r = read_heart(&shared().join("heart-failure/heart.csv")).expect("reads");
        assert_eq!(r.len(), 918);
        let json = String::from_utf8(to_json(&r[0])).expect("utf8");
        assert_eq!(
            json,
            r#"{"patient_id":"hf-000001","age":58,"sex":"M","chest_pain_type":"ASY","resting_bp":100,"cholesterol":234,"fasting_bs":0,"resting_ecg":"Normal","max_hr":156,"exercise_angina":"N","oldpeak":0.1,"st_slope":"Up","heart_disease":1}"#
        );
    }

    #[test]
    fn slinky_dog_quirks_are_handled() {
        let r = read_wait_file(&shared().join("wdw-waits-2018/slinky_dog.csv")).expect("reads");
        assert_eq!(r[0].ride, "slinky_dog");
        assert_eq!(r[0].ts, "2018-06-30T07:44:00");
        assert_eq!(r[0].posted_wait, Some(270.0));
        let actual_only = r
            .iter()
            .find(|w| w.posted_wait.is_none())
            .expect("slinky has actual-only rows");
        assert!(actual_only.actual_wait.is_some());
        assert_eq!(
            String::from_utf8(to_json(&r[0])).expect("utf8"),
            r#"{"ride":"slinky_dog","ts":"2018-06-30T07:44:00","posted_wait":270.0}"#
        );
    }

    #[test]
    fn errors_say_what_to_fix() {
        let e = load_readings(Path::new("/nonexistent/file.parquet")).expect_err("unknown kind");
        assert!(
            e.to_string().contains("should be the wait-time directory"),
            "{e}"
        );
        let e = read_heart(Path::new("/nonexistent/heart.csv")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/heart.csv"),
            "{e}"
        );
    }
}
