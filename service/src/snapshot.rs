//! Model export and import in the versioned snapshot format: a whole
//! model is its checkpoints, one per input partition, each with the offset
//! it is valid at. `GET /v1/models/{name}/snapshot` and `streamfit model
//! export` write it; `streamfit model import` makes it the state a consumer
//! group continues from: checkpoints and the group's offsets in one Kafka
//! transaction, as a replay's handover does.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, FORMAT_VERSION};
use crate::config::Config;
use crate::kafka;
use crate::kafka::Logs;

/// A whole model: every input partition's checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    /// Format of this file; a reader refuses versions it does not know.
    pub format_version: u32,
    /// The model's name.
    pub model: String,
    /// The consumer group it was taken from.
    pub group: String,
    /// The input topic.
    pub topic: String,
    /// One checkpoint per input partition.
    pub partitions: Vec<Checkpoint>,
}

impl ModelSnapshot {
    /// Decodes a snapshot, checking its format version.
    pub fn decode(bytes: &[u8]) -> Result<ModelSnapshot> {
        #[derive(Deserialize)]
        struct Head {
            format_version: u32,
        }
        let head: Head = serde_json::from_slice(bytes)
            .context("not a streamfit model snapshot (JSON with a format_version)")?;
        if head.format_version != FORMAT_VERSION {
            bail!(
                "snapshot format {} is not one this build reads ({FORMAT_VERSION})",
                head.format_version
            );
        }
        serde_json::from_slice(bytes).context("the snapshot is damaged")
    }
}

/// The consumer group of a model.
pub fn group_of(config: &Config, model: &str) -> String {
    format!("{}.{model}", config.service.group_id)
}

/// The model's latest committed checkpoints, as a snapshot.
pub fn export(config: &Config, model: &str) -> Result<ModelSnapshot> {
    let m = config.model(model)?;
    let group = group_of(config, model);
    let input = m.input_topic()?.to_owned();
    let ck_topic = config.service.checkpoint_topic(model);
    // a model that never ran has no checkpoint topic yet: said as such, not
    // as a missing topic to configure
    if kafka::partition_count(&config.kafka, &ck_topic, Duration::from_secs(30))?.is_none() {
        bail!("model {model} has no committed checkpoint: its checkpoint topic {ck_topic} does not exist yet; run the service (with exactly_once = true) or a replay first, or set `service.checkpoint_topic` if its checkpoints are in another topic");
    }
    let found = checkpoint::read_latest(
        &config.kafka,
        &ck_topic,
        &group,
        &input,
        &[],
        Duration::from_secs(60),
    )?;
    if found.is_empty() {
        bail!("model {model} has no committed checkpoint in {ck_topic} for group {group}: has the service (with exactly_once = true) or a replay run?");
    }
    Ok(ModelSnapshot {
        format_version: FORMAT_VERSION,
        model: model.to_owned(),
        group,
        topic: input,
        // whole: the keyed state inline, as the live snapshot has it
        partitions: found
            .into_values()
            .map(|mut ck| {
                ck.epoch = 0;
                ck.pages = 0;
                ck
            })
            .collect(),
    })
}

/// Makes `snapshot` the state the model's consumer group continues from.
pub fn import(config: &Config, model: &str, snapshot: ModelSnapshot) -> Result<BTreeMap<i32, i64>> {
    let m = config.model(model)?;
    let input = m.input_topic()?.to_owned();
    if snapshot.model != model {
        bail!(
            "the snapshot is of model {:?}, not {model:?}",
            snapshot.model
        );
    }
    if snapshot.topic != input {
        bail!("the snapshot's offsets are of topic {:?}, but model {model} reads {input:?}: import it into a config whose input_topic is {:?}", snapshot.topic, snapshot.topic);
    }
    let group = group_of(config, model);
    crate::idle::ensure_group_idle(config, &group, model, "importing into it")?;
    let consumer: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, &group)
        .create_with_context(Logs)
        .context("cannot create a Kafka consumer")?;
    for ck in &snapshot.partitions {
        let (_, high) = consumer
            .fetch_watermarks(&input, ck.partition, Duration::from_secs(30))
            .with_context(|| {
                format!(
                    "cannot read the offsets of {input} partition {}",
                    ck.partition
                )
            })?;
        if ck.next_offset > high {
            bail!("the snapshot continues partition {} at offset {}, past the end of {input} ({high}): is it from another cluster or topic?", ck.partition, ck.next_offset);
        }
    }
    let written = snapshot
        .partitions
        .iter()
        .map(|c| (c.partition, c.next_offset))
        .collect();
    if config.topics.create {
        // the model's own checkpoint topic may not exist yet in this group
        let topic = config.service.checkpoint_topic(model);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(checkpoint::prepare_topic(config, &topic))?;
    }
    write_state(config, model, &group, &input, snapshot.partitions)?;
    Ok(written)
}

/// Writes checkpoints (re-keyed to `group` and `input`) and moves the
/// group's offsets to them, in one transaction.
pub fn write_state(
    config: &Config,
    model: &str,
    group: &str,
    input: &str,
    checkpoints: Vec<Checkpoint>,
) -> Result<()> {
    let timeout = Duration::from_secs(30);
    let consumer: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, group)
        .create_with_context(Logs)
        .context("cannot create a Kafka consumer")?;
    // under the group's name, as the service's own transactional ids are:
    // the ACLs a config needs grant them by that prefix
    let id = format!("{}.handover", config.service.client_identity(group));
    let producer: BaseProducer<Logs> = kafka::producer_config(&config.kafka)
        .set("transactional.id", &id)
        .create_with_context(Logs)
        .context("cannot create the Kafka producer")?;
    producer
        .init_transactions(timeout)
        .map_err(|e| match kafka::access::denial(&e) {
            Some(code) => {
                kafka::access::NotAuthorized::new(&config.kafka, "use transactional id", &id, code)
                    .into()
            }
            None => anyhow::Error::new(e).context("cannot initialise transactions"),
        })?;
    producer
        .begin_transaction()
        .context("cannot begin a transaction")?;
    let ck_topic = config.service.checkpoint_topic(model);
    let placed = kafka::partition_count(&config.kafka, &ck_topic, timeout)?.with_context(|| {
        format!("checkpoint topic {ck_topic} does not exist (`service.checkpoint_topic`)")
    })?;
    let mut tpl = TopicPartitionList::new();
    for mut ck in checkpoints {
        ck.group = group.to_owned();
        ck.topic = input.to_owned();
        // whole, with the keyed state inline: the group's next commit
        // writes it as key records of a new epoch
        ck.epoch = 0;
        ck.keys = 0;
        ck.pages = 0;
        let bytes = serde_json::to_vec(&ck).context("cannot encode a checkpoint")?;
        let key = Checkpoint::key(group, input, ck.partition);
        // in chunks when larger than a message may be
        let generation = format!("{}-{}", ck.next_offset, crate::live::now_ms());
        let records = checkpoint::records(&key, &bytes, ck.next_offset, &generation);
        let at = checkpoint::placement(&key, placed);
        checkpoint::send_records(&ck_topic, at, &records, |r| {
            producer
                .send::<[u8], [u8]>(r)
                .map_err(|(e, _)| e)
                .context("cannot queue a checkpoint")
        })?;
        tpl.add_partition_offset(input, ck.partition, Offset::Offset(ck.next_offset))
            .context("cannot build the offsets")?;
    }
    producer
        .send_offsets_to_transaction(
            &tpl,
            &consumer
                .group_metadata()
                .context("the consumer has no group metadata")?,
            timeout,
        )
        .context("cannot add the group's offsets to the transaction")?;
    producer
        .commit_transaction(timeout)
        .context("cannot commit the checkpoints and offsets")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_checks_the_format() {
        let e = ModelSnapshot::decode(br#"{"format_version": 99}"#).expect_err("unknown format");
        assert!(format!("{e:#}").contains("format 99"), "{e:#}");
        let e = ModelSnapshot::decode(b"[1, 2]").expect_err("not a snapshot");
        assert!(
            format!("{e:#}").contains("not a streamfit model snapshot"),
            "{e:#}"
        );
        let e = ModelSnapshot::decode(br#"{"format_version": 1, "model": "x"}"#)
            .expect_err("incomplete");
        assert!(format!("{e:#}").contains("damaged"), "{e:#}");
    }
}
