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
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::Message;
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
    min_isr: Option<i32>,
) -> Result<()> {
    let min_isr = min_isr.map(|m| m.to_string());
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
    let t = match &min_isr {
        Some(m) => t.set("min.insync.replicas", m),
        None => t,
    };
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
    let mut latest: HashMap<i32, Vec<u8>> = HashMap::new();
    let prefix = format!("{group}/{input}/");
    let read = crate::kafka::read_to_end(
        props,
        checkpoint_topic,
        &format!("{group}.checkpoint-reader"),
        timeout,
        |m| {
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
        },
    );
    match read {
        Ok(()) => {}
        Err(crate::kafka::ReadError::NoTopic) => {
            bail!("checkpoint topic {checkpoint_topic} does not exist (`service.checkpoint_topic`)")
        }
        Err(crate::kafka::ReadError::TimedOut) => bail!(
            "reading checkpoints of {group} from {checkpoint_topic} took longer than {timeout:?}; is a transaction of another producer stuck open?"
        ),
        Err(crate::kafka::ReadError::Kafka(e)) => {
            return Err(e.context(format!("cannot read {checkpoint_topic}")))
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
