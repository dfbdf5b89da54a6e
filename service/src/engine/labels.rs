//! A model's labels topic in the loop (`labels_topic`): each owned
//! partition's label messages are joined with the readings waiting in its
//! pipeline (see `pipeline::labels`) after its readings, a bad label goes to
//! the dead-letter topic with the reason, and the labels' offsets are
//! committed with the checkpoint that holds what they changed.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::Message;

use super::outputs::outputs;
use super::state::Worker;
use crate::config::{Config, ModelConfig};
use crate::kafka;
use crate::pipeline::Outcome;

/// Checks a model's labels topic before its consumer starts: it exists,
/// it has as many partitions as the input, and the consumer assigns the
/// partitions of one number of both topics together (the range assignor).
/// The labels topic, if the model has one.
pub(super) fn prepare(
    config: &Config,
    m: &ModelConfig,
    input: &str,
    cc: &mut ClientConfig,
    replay: bool,
) -> Result<Option<String>> {
    let Some(labels) = m.labels_topic.clone() else {
        return Ok(None);
    };
    if replay {
        bail!("model {} learns from a `labels_topic`: a replay cannot join its labels yet; let the service learn it", m.name);
    }
    match config.kafka.get("partition.assignment.strategy").map(String::as_str) {
        None => {
            cc.set("partition.assignment.strategy", "range");
        }
        Some("range") => {}
        Some(other) => bail!(
            "model {}: a `labels_topic` needs the partitions of one number of both topics on one instance: set the Kafka property `partition.assignment.strategy` to \"range\" (it is {other:?})",
            m.name
        ),
    }
    let count = |topic: &str| -> Result<i32> {
        kafka::partition_count(&config.kafka, topic, Duration::from_secs(30))?
            .with_context(|| format!("topic {topic} of model {} does not exist", m.name))
    };
    let (a, b) = (count(input)?, count(&labels)?);
    if a != b {
        bail!("model {}: the labels topic {labels} should have as many partitions as the input topic {input} (a reading and its label in partitions of the same number: produce both with the same key), but it has {b} and the input {a}", m.name);
    }
    Ok(Some(labels))
}

impl Worker<'_> {
    /// Joins partition `p`'s collected label messages.
    pub(super) fn process_labels(&mut self, p: i32) -> Result<()> {
        let Some(topic) = self.labels.clone() else {
            return Ok(());
        };
        if self.parts.get(&p).is_none_or(|x| x.labels.is_empty()) {
            return Ok(());
        }
        let hold = self.ready_to_produce()?;
        let Some(part) = self.parts.get_mut(&p) else {
            return Ok(());
        };
        let started = Instant::now();
        let batch = std::mem::take(&mut part.labels);
        let inputs = kafka::inputs(&batch);
        let mut results = Vec::with_capacity(inputs.len());
        let stats = part.pipeline.apply_labels(&inputs, &mut results);
        part.labels_processed_to = batch
            .last()
            .map_or(part.labels_processed_to, |m| m.offset() + 1);
        part.dirty = true;
        let version = part.pipeline.version();
        let out = outputs!(self, part.pipeline,
            input: &topic, partition: p, version: version, seq: 0);
        let mut invalid = 0;
        for ((msg, input), r) in batch.iter().zip(&inputs).zip(results) {
            if let Err(e) = r {
                invalid += 1;
                let held = if hold { Some(&mut self.held) } else { None };
                out.send(&mut self.buf, held, msg, input, &Outcome::Invalid(e))?;
            }
        }
        let s = &self.handle.stats;
        s.learned.fetch_add(stats.learned as u64, Ordering::Relaxed);
        s.dead_lettered.fetch_add(invalid, Ordering::Relaxed);
        s.batch.observe(started.elapsed().as_secs_f64());
        drop(inputs);
        let mut batch = batch;
        batch.clear();
        if let Some(part) = self.parts.get_mut(&p) {
            part.labels = batch;
            if stats.learned > 0 {
                self.handle.publish(p, &part.pipeline, part.processed_to);
            }
        }
        Ok(())
    }
}
