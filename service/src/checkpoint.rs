//! Checkpoints: a model's state for one input partition, together with the
//! offset it is valid at, written to a compacted topic in the same Kafka
//! transaction as the outputs and the consumed offsets it covers.
//!
//! Keyed by `<consumer group>/<topic>/<partition>` (the group names the
//! model), so compaction keeps the latest per partition and a partition's
//! state can move to whichever instance of the group owns it.
//! Reading them back uses `isolation.level=read_committed`: a checkpoint of
//! an aborted transaction is never seen.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::kafka::base_config;
use crate::pipeline::PipelineSnapshot;

/// The format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// One partition's model state and the input offset it is valid at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format of this record; a reader refuses versions it does not know.
    pub format_version: u32,
    /// The model's name.
    pub model: String,
    /// The consumer group whose offsets this checkpoint agrees with.
    pub group: String,
    /// The input topic.
    pub topic: String,
    /// The input partition.
    pub partition: i32,
    /// The next input offset to process: every reading before it is learned.
    pub next_offset: i64,
    /// The pipeline's state (model, features, metrics).
    pub pipeline: PipelineSnapshot,
}

impl Checkpoint {
    /// The record key of a consumer group's partition.
    pub fn key(group: &str, topic: &str, partition: i32) -> String {
        format!("{group}/{topic}/{partition}")
    }

    /// Decodes a record value, checking the format version.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint> {
        #[derive(Deserialize)]
        struct Head {
            format_version: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).context("checkpoint record is not a checkpoint")?;
        if head.format_version != FORMAT_VERSION {
            bail!(
                "checkpoint format version {} is not supported by this build (it reads {FORMAT_VERSION})",
                head.format_version
            );
        }
        serde_json::from_slice(bytes).context("checkpoint record does not decode")
    }
}

/// Creates the compacted checkpoint topic if it does not exist.
pub async fn ensure_topic(
    props: &BTreeMap<String, String>,
    topic: &str,
    replication: i32,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(props)
        .create()
        .context("cannot create a Kafka admin client; check the [kafka] properties")?;
    // compaction keeps the newest checkpoint per partition; small segments
    // let the cleaner keep the topic short, so a restore reads little
    let t = NewTopic::new(topic, 1, TopicReplication::Fixed(replication))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "16777216")
        .set("segment.ms", "60000")
        .set("min.cleanable.dirty.ratio", "0.1")
        .set("max.message.bytes", "16777216");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&t], &opts)
        .await
        .context("cannot reach Kafka to create the checkpoint topic; is the broker up?")?;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, "created checkpoint topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create checkpoint topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Reads every committed checkpoint of consumer group `group` over `input`,
/// newest per partition. Reads to the high watermark as it was when called, so a
/// checkpoint committed before the call is never missed.
pub fn read_latest(
    props: &BTreeMap<String, String>,
    checkpoint_topic: &str,
    group: &str,
    input: &str,
    timeout: Duration,
) -> Result<HashMap<i32, Checkpoint>> {
    let mut c = base_config(props);
    c.set("group.id", format!("{group}.checkpoint-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c
        .create()
        .context("cannot create the checkpoint reader; check the [kafka] properties")?;
    let deadline = Instant::now() + timeout;
    let metadata = consumer
        .fetch_metadata(Some(checkpoint_topic), timeout)
        .with_context(|| format!("cannot read the metadata of {checkpoint_topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        bail!("checkpoint topic {checkpoint_topic} does not exist (`service.checkpoint_topic`)");
    }
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for &p in &partitions {
        let (lo, hi) = consumer
            .fetch_watermarks(checkpoint_topic, p, timeout)
            .with_context(|| format!("cannot read the offsets of {checkpoint_topic}/{p}"))?;
        if hi > lo {
            high.insert(p, hi);
            tpl.add_partition_offset(checkpoint_topic, p, Offset::Beginning)
                .context("cannot build the checkpoint assignment")?;
        }
    }
    let mut latest: HashMap<i32, Vec<u8>> = HashMap::new();
    if !high.is_empty() {
        consumer
            .assign(&tpl)
            .context("cannot assign the checkpoint topic")?;
        let prefix = format!("{group}/{input}/");
        while !high.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "reading checkpoints of {group} from {checkpoint_topic} took longer than {timeout:?}; is a transaction of another producer stuck open?"
                );
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if let Some(p) = m
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.strip_prefix(&prefix))
                        .and_then(|k| k.parse::<i32>().ok())
                    {
                        match m.payload() {
                            Some(v) => {
                                latest.insert(p, v.to_vec());
                            }
                            None => {
                                latest.remove(&p);
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading checkpoints (retrying)");
                }
                None => {}
            }
            // done with a partition once the position passes the watermark
            // taken at the start: transaction markers have offsets too, and
            // the position moves past them
            if let Ok(pos) = consumer.position() {
                high.retain(|&p, &mut h| {
                    pos.find_partition(checkpoint_topic, p)
                        .and_then(|e| e.offset().to_raw())
                        .is_none_or(|o| o < h)
                });
            }
        }
    }
    latest
        .into_iter()
        .map(|(p, bytes)| {
            let ck = Checkpoint::decode(&bytes)
                .with_context(|| format!("checkpoint of {group} on {input} partition {p}"))?;
            Ok((p, ck))
        })
        .collect()
}
