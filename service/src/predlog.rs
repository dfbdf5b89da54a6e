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

#[derive(Deserialize)]
struct Prediction {
    model_version: u64,
    key: Option<String>,
    prediction: f64,
    probability: Option<f64>,
    label: Option<f64>,
    event_time: Option<i64>,
    source: Source,
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
            log.partition.push(p.source.partition);
            log.offset.push(p.source.offset);
            log.key.push(p.key);
            log.model_version.push(p.model_version);
            log.prediction.push(p.prediction);
            log.probability.push(p.probability);
            log.label.push(p.label);
            log.event_time.push(p.event_time);
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
