//! Writes one partition's checkpoint into the open transaction: the base
//! record (in chunks when large) and a record for each key whose state
//! changed since the last commit, or for every key under a new epoch when
//! the partition's keyed state does not follow from its last checkpoint
//! (see `checkpoint::keyed`).

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};

use super::outputs::send;
use super::partition::{Part, Written};
use crate::checkpoint::{self, keyed, Checkpoint};
use crate::kafka::ProducerCtx;

/// Where checkpoints go.
pub(super) struct Target<'a> {
    pub(super) producer: &'a BaseProducer<ProducerCtx>,
    pub(super) topic: &'a str,
    /// Partitions of the checkpoint topic.
    pub(super) partitions: i32,
    pub(super) model: &'a str,
    pub(super) group: &'a str,
    pub(super) input: &'a str,
}

/// What one checkpoint wrote.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Wrote {
    pub(super) bytes: u64,
    pub(super) keys: u64,
}

/// A new epoch: after `previous`, and unlike any earlier one of the
/// partition (the clock moves on across restarts).
fn next_epoch(previous: u64) -> u64 {
    crate::live::now_ms().max(previous + 1)
}

/// Writes partition `p`'s checkpoint; `previous` is the epoch of its last
/// committed checkpoint.
pub(super) fn write(
    t: &Target<'_>,
    p: i32,
    part: &mut Part<'_>,
    previous: u64,
    buf: &mut Vec<u8>,
) -> Result<(Written, Wrote)> {
    let snapshot = part.pipeline.snapshot();
    let changed = part.pipeline.take_changed();
    let full = part.epoch == 0;
    let epoch = if full {
        next_epoch(previous)
    } else {
        part.epoch
    };
    let split = keyed::split(snapshot.clone());
    let key = Checkpoint::key(t.group, t.input, p);
    let at = checkpoint::placement(&key, t.partitions);
    let mut wrote = Wrote::default();
    let keys = if full { split.keys() } else { changed };
    let mut record_key = String::new();
    let seq = part.processed_to.to_string();
    for k in &keys {
        record_key.clear();
        record_key.push_str(&keyed::record_key(&key, k));
        let mut record = BaseRecord::with_opaque_to(t.topic, 0usize)
            .partition(at)
            .key(record_key.as_bytes())
            .headers(OwnedHeaders::new().insert(Header {
                key: checkpoint::SEQ,
                value: Some(seq.as_str()),
            }));
        if split.encode(k, epoch, buf)? {
            record = record.payload(buf.as_slice());
        }
        wrote.bytes += (buf.len() + record_key.len()) as u64;
        wrote.keys += 1;
        send(t.producer, record)?;
    }
    let ck = Checkpoint {
        format_version: checkpoint::FORMAT_VERSION,
        model: t.model.to_owned(),
        group: t.group.to_owned(),
        topic: t.input.to_owned(),
        partition: p,
        next_offset: part.processed_to,
        keys: part.pipeline.key_count() as u64,
        pipeline: split.base,
        epoch,
    };
    buf.clear();
    serde_json::to_writer(&mut *buf, &ck).context("cannot encode a checkpoint")?;
    wrote.bytes += buf.len() as u64;
    // in chunks when larger than a message may be
    let generation = format!("{}-{}", ck.next_offset, crate::live::now_ms());
    let records = checkpoint::records(&key, buf, ck.next_offset, &generation);
    checkpoint::send_records(t.topic, at, &records, |r| send(t.producer, r))?;
    part.epoch = epoch;
    Ok((
        Written {
            partition: p,
            next_offset: ck.next_offset,
            snapshot,
            epoch,
        },
        wrote,
    ))
}
