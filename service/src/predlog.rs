//! `streamfit predictions export`: a model's output topic (read with
//! `isolation.level=read_committed`, so only committed predictions) as an
//! Arrow IPC file (`pyarrow.ipc.open_file`, `polars.read_ipc`,
//! `pandas.read_feather`) or, for a `.parquet` name, a Parquet file.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::Message;
use serde::Deserialize;

use crate::config::Config;
use crate::kafka::{self, ReadError};

#[derive(Deserialize)]
struct Source {
    partition: i32,
    offset: i64,
}

/// A prediction message (see `render.rs`): a number, class 0/1 with its
/// `probability`, or a multiclass model's class name with `probabilities`.
#[derive(Deserialize)]
struct Prediction {
    model_version: u64,
    key: Option<String>,
    prediction: Option<Answer>,
    probability: Option<f64>,
    #[serde(default, deserialize_with = "in_order")]
    probabilities: Option<Vec<(String, f64)>>,
    label: Option<Answer>,
    event_time: Option<i64>,
    source: Source,
}

/// A predicted or given value: a number, or a class's name (`null`: a
/// multiclass model that knew no class yet).
#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Num(f64),
    Class(String),
}

/// The class an answer names, if it names one.
fn class(a: &Option<Answer>) -> Option<&str> {
    match a {
        Some(Answer::Class(c)) => Some(c),
        _ => None,
    }
}

/// `probabilities` as the message lists them (the model's class order),
/// which a map type would sort.
fn in_order<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, f64)>>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = Option<Vec<(String, f64)>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of class probabilities")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = m.next_entry()? {
                out.push(pair);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(Pairs)
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exported {
    /// Predictions written.
    pub rows: usize,
    /// Messages that were not predictions of this model (skipped).
    pub skipped: usize,
}

/// Writes every committed prediction of `model` on its output topic, up to
/// the topic's end as of now, to `out`.
pub fn export(config: &Config, model: &str, out: &Path) -> Result<Exported> {
    let m = config.model(model)?;
    let topic = m.output_topic();
    let mut log = features::arrow_io::ServiceLog::default();
    let mut skipped = 0;
    let multiclass = m.task == crate::config::TaskName::Multiclass;
    let read = kafka::read_to_end(
        &config.kafka,
        &topic,
        None,
        &format!("{}.{model}.export", config.service.group_id),
        Duration::from_secs(600),
        |msg| {
            let p = msg
                .payload()
                .and_then(|b| serde_json::from_slice::<Prediction>(b).ok());
            let Some(p) = p else {
                skipped += 1;
                return;
            };
            match (&p.prediction, p.probabilities.as_deref(), multiclass) {
                (Some(Answer::Num(v)), None, false) => {
                    log.partition.push(p.source.partition);
                    log.offset.push(p.source.offset);
                    log.key.push(p.key);
                    log.model_version.push(p.model_version);
                    log.prediction.push(*v);
                    log.probability.push(p.probability);
                    log.label.push(match p.label {
                        Some(Answer::Num(y)) => Some(y),
                        _ => None,
                    });
                    log.event_time.push(p.event_time);
                }
                (Some(Answer::Class(_)) | None, Some(probabilities), true) => {
                    log.push_classes(features::arrow_io::ClassRow {
                        partition: p.source.partition,
                        offset: p.source.offset,
                        key: p.key.as_deref(),
                        model_version: p.model_version,
                        predicted: class(&p.prediction),
                        probabilities,
                        label: class(&p.label),
                        event_time: p.event_time,
                    });
                }
                _ => skipped += 1,
            }
        },
    );
    match read {
        Ok(()) => {}
        Err(ReadError::NoTopic) => {
            bail!("output topic {topic} of model {model} does not exist: has the service run?")
        }
        Err(ReadError::TimedOut) => bail!("reading {topic} took longer than 600 s"),
        Err(ReadError::Kafka(e)) => return Err(e.context(format!("cannot read {topic}"))),
    }
    let parquet = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if parquet {
        log.write_parquet(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    } else {
        let batch = log
            .to_record_batch()
            .context("cannot build the Arrow record batch")?;
        features::arrow_io::write_ipc(&batch, out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(Exported {
        rows: log.len(),
        skipped,
    })
}
