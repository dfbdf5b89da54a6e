//! Checkpoints: a model's state for one input partition, together with the
//! offset it is valid at, written to a compacted topic in the same Kafka
//! transaction as the outputs and the consumed offsets it covers.
//!
//! Keyed by `<consumer group>/<topic>/<partition>` (the group names the
//! model), so compaction keeps the latest per partition and a partition's
//! state can move to whichever instance of the group owns it.
//! Reading them back uses `isolation.level=read_committed`: a checkpoint of
//! an aborted transaction is never seen.
//!
//! A checkpoint larger than a message may be ([`CHUNK_BYTES`], under the
//! producer's default `message.max.bytes`) is written in chunks, keyed
//! `<key>#<i>` and marked with the checkpoint's generation, followed by a
//! small [`Manifest`] under the partition's key, all in the same
//! transaction. A reader takes the newest manifest and the chunks of its
//! generation; compaction keeps the newest record of every key, so the
//! newest manifest always finds its chunks.
//!
//! Keyed state (per-key models, lags) is written one record per key, and
//! only for the keys that changed since the last commit ([`keyed`]); a
//! sparse model's columns one record per page of columns, only for the
//! pages learning changed ([`pages`]).
//! A partition's records all go to one partition of the checkpoint topic,
//! chosen by hashing its key ([`placement`]), so a restore reads only the
//! checkpoint partitions of the input partitions it restores (and the
//! others only for an input partition not found where it is placed: a
//! checkpoint topic whose partitions were added later).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Headers;
use rdkafka::Message;
use serde::{Deserialize, Serialize};

use crate::kafka::base_config;

pub mod keyed;
pub mod pages;
use crate::kafka::Logs;
use crate::pipeline::PipelineSnapshot;

/// The format version written by this build.
pub const FORMAT_VERSION: u32 = 1;

/// The largest checkpoint record: the producer's default `message.max.bytes`
/// (1,000,000) less room for the key, headers and framing.
pub const CHUNK_BYTES: usize = 900_000;

/// The header naming a chunk's generation.
const GENERATION: &str = "streamfit.generation";

/// The header of a key record naming the checkpoint it was written with
/// (that checkpoint's `next_offset`).
pub const SEQ: &str = "streamfit.seq";

/// Stands under a partition's key when its checkpoint is written in chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format of this record.
    pub format_version: u32,
    /// Chunks, keyed `<key>#0` .. `<key>#<chunks - 1>`.
    pub chunks: u32,
    /// Bytes of the whole checkpoint.
    pub bytes: u64,
    /// Names this checkpoint's chunks apart from an older one's.
    pub generation: String,
    /// The next input offset (as the checkpoint says), for people reading
    /// the topic.
    pub next_offset: i64,
}

/// One record to write for a checkpoint: key, value, and the generation
/// header of a chunk.
pub struct Record<'a> {
    /// The record key.
    pub key: String,
    /// The record value (`None`: a tombstone).
    pub value: Option<std::borrow::Cow<'a, [u8]>>,
    /// A chunk's generation (its header).
    pub generation: Option<String>,
}

/// The records of one encoded checkpoint: itself when it fits in
/// [`CHUNK_BYTES`], else its chunks and then a manifest. `generation` must
/// differ from the partition's earlier checkpoints' (offset and time do).
pub fn records<'a>(
    key: &str,
    encoded: &'a [u8],
    next_offset: i64,
    generation: &str,
) -> Vec<Record<'a>> {
    if encoded.len() <= CHUNK_BYTES {
        return vec![Record {
            key: key.to_owned(),
            value: Some(std::borrow::Cow::Borrowed(encoded)),
            generation: None,
        }];
    }
    let mut out: Vec<Record<'a>> = encoded
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| Record {
            key: format!("{key}#{i}"),
            value: Some(std::borrow::Cow::Borrowed(c)),
            generation: Some(generation.to_owned()),
        })
        .collect();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        chunks: out.len() as u32,
        bytes: encoded.len() as u64,
        generation: generation.to_owned(),
        next_offset,
    };
    out.push(Record {
        key: key.to_owned(),
        value: Some(std::borrow::Cow::Owned(
            serde_json::to_vec(&manifest).unwrap_or_default(),
        )),
        generation: None,
    });
    out
}

/// The chunks read for one partition: index -> (generation, bytes).
type Chunks = HashMap<u32, (String, Vec<u8>)>;

/// A partition's checkpoint from its newest base record, the chunks and the
/// key records read: the key records of the base's epoch go back in.
fn assemble(
    value: &[u8],
    chunks: Option<&Chunks>,
    keys: HashMap<String, Versions>,
    pages: HashMap<u32, Versions>,
) -> Result<Checkpoint> {
    let mut ck = assemble_base(value, chunks)?;
    if ck.epoch == 0 {
        return Ok(ck);
    }
    let mut restored = 0u64;
    for (key, versions) in keys {
        let Some(bytes) = versions.as_of(ck.next_offset) else {
            continue;
        };
        let record = keyed::KeyRecord::decode(bytes).with_context(|| format!("key {key:?}"))?;
        if record.epoch == ck.epoch {
            keyed::rebuild(&mut ck.pipeline, &key, record);
            restored += 1;
        }
    }
    ck.pipeline.recency.reindex();
    let mut pages_restored = 0u64;
    for (page, versions) in pages {
        let Some(bytes) = versions.as_of(ck.next_offset) else {
            continue;
        };
        let record = pages::PageRecord::decode(bytes).with_context(|| format!("page {page}"))?;
        if record.epoch == ck.epoch {
            pages::rebuild(&mut ck.pipeline, page, record)?;
            pages_restored += 1;
        }
    }
    if pages_restored < ck.pages {
        bail!(
            "the checkpoint names {} column pages but only {pages_restored} page records of its epoch were found; the checkpoint topic lost records (is it compacted with a short retention?)",
            ck.pages
        );
    }
    if restored < ck.keys {
        bail!(
            "the checkpoint names {} keys but only {restored} key records of its epoch were found; the checkpoint topic lost records (is it compacted with a short retention?)",
            ck.keys
        );
    }
    Ok(ck)
}

/// A partition's base checkpoint from its newest record and the chunks read.
fn assemble_base(value: &[u8], chunks: Option<&Chunks>) -> Result<Checkpoint> {
    #[derive(Deserialize)]
    struct Probe {
        generation: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(value).context("checkpoint record is not JSON")?;
    if probe.generation.is_none() {
        return Checkpoint::decode(value);
    }
    let m: Manifest =
        serde_json::from_slice(value).context("checkpoint manifest does not decode")?;
    let mut whole = Vec::with_capacity(m.bytes as usize);
    for i in 0..m.chunks {
        match chunks.and_then(|c| c.get(&i)) {
            Some((g, bytes)) if *g == m.generation => whole.extend_from_slice(bytes),
            Some((g, _)) => bail!(
                "chunk {i} of the checkpoint is of generation {g}, its manifest says {}; the checkpoint topic lost records (is it compacted with a short retention?)",
                m.generation
            ),
            None => bail!(
                "chunk {i} of {} of the checkpoint is missing; the checkpoint topic lost records",
                m.chunks
            ),
        }
    }
    if whole.len() as u64 != m.bytes {
        bail!(
            "the checkpoint's chunks hold {} bytes, its manifest says {}",
            whole.len(),
            m.bytes
        );
    }
    Checkpoint::decode(&whole)
}

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
    /// With a `labels_topic`: the next offset of its partition of the same
    /// number (every label before it is joined, or waiting in `pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels_next_offset: Option<i64>,
    /// The pipeline's state (model, features, metrics); its keyed state is
    /// in key records when `epoch` is not 0.
    pub pipeline: PipelineSnapshot,
    /// The epoch of the key records that belong to this checkpoint (0: the
    /// keyed state is in `pipeline`, as written before key records).
    #[serde(default)]
    pub epoch: u64,
    /// Keys with state: a restore that finds fewer key records of this
    /// epoch refuses the checkpoint (records were lost).
    #[serde(default)]
    pub keys: u64,
    /// Pages of a sparse model's columns that hold a column, written as
    /// page records of `epoch` (0: the columns are in `pipeline`); a
    /// restore that finds fewer refuses the checkpoint.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pages: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// The checkpoint topic partition that holds the records of the input
/// partition whose base record is keyed `key`, of `partitions`.
pub fn placement(key: &str, partitions: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    (crate::routing::murmur2(key.as_bytes()) & 0x7fff_ffff) as i32 % partitions
}

/// Creates the compacted checkpoint topic, with `partitions` partitions, if
/// it does not exist.
pub async fn ensure_topic(
    props: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i32,
    min_isr: Option<i32>,
) -> Result<()> {
    let min_isr = min_isr.map(|m| m.to_string());
    let admin: AdminClient<Logs> = base_config(props)
        .create_with_context(Logs)
        .context("cannot create a Kafka admin client; check the [kafka] properties")?;
    // compaction keeps the newest checkpoint per partition; small segments
    // let the cleaner keep the topic short, so a restore reads little
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
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
            Err((topic, code)) if crate::kafka::access::is_denial(code) => {
                return Err(crate::kafka::access::NotAuthorized::new(
                    props,
                    "create checkpoint topic",
                    &topic,
                    code,
                )
                .into())
            }
            Err((topic, code)) => bail!("cannot create checkpoint topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Makes `topic` ready to hold checkpoints: created when missing (if
/// `topics.create`), refused unless compacted.
pub async fn prepare_topic(config: &crate::config::Config, topic: &str) -> Result<()> {
    if config.topics.create {
        ensure_topic(
            &config.kafka,
            topic,
            config.service.checkpoint_partitions,
            config.topics.replication(),
            config.topics.min_isr(),
        )
        .await?;
    }
    check_compacted(&config.kafka, topic).await
}

/// Refuses a checkpoint topic that is not compacted: retention would delete
/// a partition's newest checkpoint while the group's offsets stay, and a
/// restore would start past it.
pub async fn check_compacted(props: &BTreeMap<String, String>, topic: &str) -> Result<()> {
    let admin: AdminClient<Logs> = base_config(props)
        .create_with_context(Logs)
        .context("cannot create a Kafka admin client; check the [kafka] properties")?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    // a topic created a moment ago may not be known yet to the broker
    // asked (on a cluster, another than the one that created it)
    let started = std::time::Instant::now();
    let policy = loop {
        let configs = admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .with_context(|| {
                format!("cannot read the configuration of checkpoint topic {topic}")
            })?;
        let first = configs.into_iter().next();
        if let Some(Err(code)) = &first {
            if crate::kafka::access::is_denial(*code) {
                return Err(crate::kafka::access::NotAuthorized::new(
                    props,
                    "describe the configs of checkpoint topic",
                    topic,
                    *code,
                )
                .into());
            }
        }
        let policy = first
            .and_then(|r| r.ok())
            .and_then(|c| c.get("cleanup.policy").and_then(|e| e.value.clone()));
        match policy {
            Some(p) => break p,
            None if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => bail!(
                "cannot read `cleanup.policy` of checkpoint topic {topic}; does it exist (`topics.create`, `service.checkpoint_topic`)?"
            ),
        }
    };
    if policy.trim() != "compact" {
        bail!(
            "checkpoint topic {topic} has cleanup.policy={policy}; it must be compact (cleanup.policy=compact), or retention deletes checkpoints that the group's offsets rely on: set it (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact) or name a new topic in `service.checkpoint_topic`"
        );
    }
    Ok(())
}

/// What was read of one input partition's checkpoint records.
#[derive(Default)]
struct Found {
    /// The newest base record (or manifest).
    base: Option<Vec<u8>>,
    chunks: Chunks,
    /// The newest records of each key.
    keys: HashMap<String, Versions>,
    /// The newest records of each column page.
    pages: HashMap<u32, Versions>,
}

/// A key's two newest records: its sequence (the `next_offset` of the
/// checkpoint written with it) and value (`None`: a tombstone). A reader
/// that stops inside a transaction still being written sees some of its
/// key records but not its base: the key's record before it is the one
/// that goes with the newest base read. A partition's transactions are
/// written one after another by its owner, so one record back is enough.
#[derive(Default)]
struct Versions {
    newest: Option<(i64, Option<Vec<u8>>)>,
    previous: Option<(i64, Option<Vec<u8>>)>,
}

impl Versions {
    fn push(&mut self, seq: i64, value: Option<Vec<u8>>) {
        self.previous = self.newest.replace((seq, value));
    }

    /// The value as of the checkpoint whose `next_offset` is `seq`.
    fn as_of(&self, seq: i64) -> Option<&[u8]> {
        [&self.newest, &self.previous]
            .into_iter()
            .flatten()
            .find(|(s, _)| *s <= seq)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Reads the committed checkpoints of consumer group `group` over `input`
/// for the input partitions `wanted` (all when empty), newest per
/// partition. Reads to the high watermark as it was when called, so a
/// checkpoint committed before the call is never missed.
pub fn read_latest(
    props: &BTreeMap<String, String>,
    checkpoint_topic: &str,
    group: &str,
    input: &str,
    wanted: &[i32],
    timeout: Duration,
) -> Result<HashMap<i32, Checkpoint>> {
    let started = std::time::Instant::now();
    let count =
        crate::kafka::partition_count(props, checkpoint_topic, timeout).with_context(|| {
            format!("cannot read the partitions of checkpoint topic {checkpoint_topic}")
        })?;
    let Some(count) = count else {
        bail!("checkpoint topic {checkpoint_topic} does not exist (`service.checkpoint_topic`)")
    };
    let placed: Vec<i32> = {
        let mut v: Vec<i32> = wanted
            .iter()
            .map(|&p| placement(&Checkpoint::key(group, input, p), count))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut found: HashMap<i32, Found> = HashMap::new();
    let first = if wanted.is_empty() {
        None
    } else {
        Some(placed.as_slice())
    };
    read_partitions(
        props,
        checkpoint_topic,
        group,
        input,
        first,
        timeout,
        &mut found,
    )?;
    let missing = wanted
        .iter()
        .any(|p| found.get(p).is_none_or(|f| f.base.is_none()));
    if first.is_some() && missing && count > 1 {
        // placed elsewhere: the topic had other partitions when it was written
        let rest: Vec<i32> = (0..count).filter(|q| !placed.contains(q)).collect();
        let left = timeout.saturating_sub(started.elapsed());
        read_partitions(
            props,
            checkpoint_topic,
            group,
            input,
            Some(&rest),
            left,
            &mut found,
        )?;
    }
    let mut out = HashMap::new();
    for (p, f) in found {
        if !wanted.is_empty() && !wanted.contains(&p) {
            continue;
        }
        let Some(base) = f.base else { continue };
        let ck = assemble(&base, Some(&f.chunks), f.keys, f.pages)
            .with_context(|| format!("checkpoint of {group} on {input} partition {p}"))?;
        out.insert(p, ck);
    }
    Ok(out)
}

/// Reads the records of `group` over `input` from `partitions` of the
/// checkpoint topic (all when `None`) into `found`.
fn read_partitions(
    props: &BTreeMap<String, String>,
    checkpoint_topic: &str,
    group: &str,
    input: &str,
    partitions: Option<&[i32]>,
    timeout: Duration,
    found: &mut HashMap<i32, Found>,
) -> Result<()> {
    let prefix = format!("{group}/{input}/");
    let read = crate::kafka::read_to_end(
        props,
        checkpoint_topic,
        partitions,
        &format!("{group}.checkpoint-reader"),
        timeout,
        |m| {
            let Some(rest) = m
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| k.strip_prefix(&prefix))
            else {
                return;
            };
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let Ok(p) = rest[..digits].parse::<i32>() else {
                return;
            };
            let f = found.entry(p).or_default();
            let tail = &rest[digits..];
            let seq = || {
                m.headers()
                    .and_then(|h| h.iter().find(|x| x.key == SEQ).and_then(|x| x.value))
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
                    .unwrap_or(i64::MIN)
            };
            if let Some(key) = tail.strip_prefix("/k/") {
                f.keys
                    .entry(key.to_owned())
                    .or_default()
                    .push(seq(), m.payload().map(<[u8]>::to_vec));
            } else if let Some(page) = tail.strip_prefix("/c/").and_then(|p| p.parse::<u32>().ok())
            {
                f.pages
                    .entry(page)
                    .or_default()
                    .push(seq(), m.payload().map(<[u8]>::to_vec));
            } else if let Some(i) = tail.strip_prefix('#').and_then(|i| i.parse::<u32>().ok()) {
                let generation = m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == GENERATION)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                match (m.payload(), generation) {
                    (Some(v), Some(g)) => {
                        f.chunks.insert(i, (g, v.to_vec()));
                    }
                    _ => {
                        f.chunks.remove(&i);
                    }
                }
            } else if tail.is_empty() {
                f.base = m.payload().map(<[u8]>::to_vec);
            }
        },
    );
    match read {
        Ok(()) => Ok(()),
        Err(crate::kafka::ReadError::NoTopic) => {
            bail!("checkpoint topic {checkpoint_topic} does not exist (`service.checkpoint_topic`)")
        }
        Err(crate::kafka::ReadError::TimedOut) => bail!(
            "reading checkpoints of {group} from {checkpoint_topic} took longer than {timeout:?}; is a transaction of another producer stuck open?"
        ),
        Err(crate::kafka::ReadError::Kafka(e)) => {
            Err(e.context(format!("cannot read {checkpoint_topic}")))
        }
    }
}

/// Writes `records` with `send` (each record with its generation header).
pub fn send_records<'a, D: rdkafka::util::IntoOpaque + Default>(
    topic: &'a str,
    partition: i32,
    records: &'a [Record<'a>],
    mut send: impl FnMut(rdkafka::producer::BaseRecord<'a, [u8], [u8], D>) -> Result<()>,
) -> Result<()> {
    for r in records {
        let mut record = rdkafka::producer::BaseRecord::with_opaque_to(topic, D::default())
            .partition(partition)
            .key(r.key.as_bytes());
        if let Some(v) = &r.value {
            record = record.payload(v.as_ref());
        }
        if let Some(g) = &r.generation {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: GENERATION,
                    value: Some(g.as_str()),
                },
            ));
        }
        send(record)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_read_as_of_the_newest_base_not_a_half_read_transaction() {
        let mut v = Versions::default();
        v.push(10, Some(b"a".to_vec()));
        v.push(20, Some(b"b".to_vec()));
        assert_eq!(v.as_of(20), Some(&b"b"[..]));
        // the base of the transaction at 30 was not read: the base at 20 is
        // the newest, and the key's record of 30 does not go with it
        v.push(30, Some(b"c".to_vec()));
        assert_eq!(v.as_of(20), Some(&b"b"[..]));
        assert_eq!(v.as_of(30), Some(&b"c"[..]));
        // an eviction (tombstone) is the key's absence
        v.push(40, None);
        assert_eq!(v.as_of(40), None);
        assert_eq!(v.as_of(35), Some(&b"c"[..]));
        assert_eq!(placement("g/t/0", 1), 0);
        assert!((0..6).contains(&placement("g/t/0", 6)));
    }

    #[test]
    fn a_large_checkpoint_goes_in_chunks_and_comes_back_whole() {
        let big = format!(
            r#"{{"format_version":1,"pad":"{}"}}"#,
            "x".repeat(2_500_000)
        );
        let rs = records("g/t/0", big.as_bytes(), 42, "42-1");
        assert_eq!(rs.len(), 4, "three chunks and a manifest");
        assert!(rs
            .iter()
            .all(|r| r.value.as_ref().is_some_and(|v| v.len() <= CHUNK_BYTES)));
        let mut chunks: Chunks = HashMap::new();
        for (i, r) in rs[..3].iter().enumerate() {
            assert_eq!(r.key, format!("g/t/0#{i}"));
            chunks.insert(
                i as u32,
                (
                    r.generation.clone().expect("gen"),
                    r.value.as_deref().expect("value").to_vec(),
                ),
            );
        }
        let manifest = &rs[3];
        assert_eq!(manifest.key, "g/t/0");
        // the whole does not decode as a checkpoint (it has no pipeline):
        // the error comes from decoding the assembled bytes, not from a chunk
        let e = format!(
            "{:#}",
            assemble_base(manifest.value.as_deref().expect("manifest"), Some(&chunks))
                .expect_err("not a checkpoint")
        );
        assert!(e.contains("does not decode"), "{e}");
        // a chunk of another generation, or a missing one, is refused by name
        let mut stale = chunks.clone();
        stale.insert(1, ("41-1".into(), vec![b'x'; 10]));
        let e = format!(
            "{:#}",
            assemble_base(manifest.value.as_deref().expect("manifest"), Some(&stale))
                .expect_err("stale")
        );
        assert!(e.contains("generation 41-1"), "{e}");
        chunks.remove(&2);
        let e = format!(
            "{:#}",
            assemble_base(manifest.value.as_deref().expect("manifest"), Some(&chunks))
                .expect_err("missing")
        );
        assert!(e.contains("chunk 2 of 3"), "{e}");
        // a small checkpoint is one record, as before
        let small = records("g/t/0", b"{}", 1, "1-1");
        assert_eq!(small.len(), 1);
        assert!(small[0].generation.is_none());
    }
}
