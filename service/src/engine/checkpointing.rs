//! One partition's checkpoint in two steps. On the model's thread,
//! [`prepare`] takes what the checkpoint holds: a copy-on-write snapshot of
//! the pipeline (no key's state is copied) and the keys that changed since
//! the last commit. On the committer's thread, [`Pending::write`] encodes it
//! into the open transaction: the base record (in chunks when large), a
//! record for each changed key and for each changed page of a sparse
//! model's columns, or for every key and page under a new epoch when the
//! partition's state does not follow from its last checkpoint (see
//! `checkpoint::keyed` and `checkpoint::pages`). The model's thread goes on
//! meanwhile, its outputs held until the commit is done, so nothing else
//! writes to the transaction.

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};

use super::outputs::send;
use super::partition::{Part, Written};
use crate::checkpoint::pages::{self, Pages};
use crate::checkpoint::{self, keyed, Checkpoint};
use crate::kafka::ProducerCtx;

/// Where a model's checkpoints go.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) topic: String,
    /// Partitions of the checkpoint topic.
    pub(super) partitions: i32,
    pub(super) model: String,
    pub(super) group: String,
    pub(super) input: String,
}

/// What one checkpoint wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wrote {
    pub(super) bytes: u64,
    pub(super) keys: u64,
    pub(super) pages: u64,
}

/// One partition's checkpoint, taken but not yet encoded.
pub(super) struct Pending {
    partition: i32,
    next_offset: i64,
    labels_next_offset: i64,
    key_count: u64,
    epoch: u64,
    split: keyed::Split,
    /// The keys to write: `None` for every key (a new epoch).
    changed: Option<Vec<String>>,
    /// The column pages to write: `None` for every page (a new epoch).
    changed_pages: Option<Vec<u32>>,
}

/// A new epoch: after `previous`, and unlike any earlier one of the
/// partition (the clock moves on across restarts).
fn next_epoch(previous: u64) -> u64 {
    crate::live::now_ms().max(previous + 1)
}

/// Takes partition `p`'s checkpoint; `previous` is the epoch of its last
/// committed checkpoint. Cheap: the snapshot shares every key's state with
/// the live pipeline.
pub(super) fn prepare(p: i32, part: &mut Part<'_>, previous: u64) -> (Written, Pending) {
    let snapshot = part.pipeline.snapshot();
    let changed = part.pipeline.take_changed();
    let changed_pages = part.pipeline.take_changed_pages();
    let full = part.epoch == 0;
    let epoch = if full {
        next_epoch(previous)
    } else {
        part.epoch
    };
    part.epoch = epoch;
    let pending = Pending {
        partition: p,
        next_offset: part.processed_to,
        labels_next_offset: part.labels_processed_to,
        key_count: part.pipeline.key_count() as u64,
        epoch,
        split: keyed::split(snapshot.clone()),
        changed: (!full).then_some(changed),
        changed_pages: (!full).then_some(changed_pages),
    };
    let written = Written {
        partition: p,
        next_offset: part.processed_to,
        labels_next_offset: part.labels_processed_to,
        snapshot,
        epoch,
    };
    (written, pending)
}

impl Pending {
    /// Encodes the checkpoint and queues its records in the open
    /// transaction of `producer`.
    pub(super) fn write(
        mut self,
        t: &Target,
        producer: &BaseProducer<ProducerCtx>,
        buf: &mut Vec<u8>,
    ) -> Result<Wrote> {
        let p = self.partition;
        let key = Checkpoint::key(&t.group, &t.input, p);
        let at = checkpoint::placement(&key, t.partitions);
        let mut wrote = Wrote::default();
        let keys = match self.changed {
            Some(keys) => keys,
            None => self.split.keys(),
        };
        let seq = self.next_offset.to_string();
        // a key's or a page's record: its value (none: a tombstone) in `buf`
        let mut put = |record_key: &str, value: bool, buf: &[u8]| -> Result<()> {
            let mut record = BaseRecord::with_opaque_to(&t.topic, 0usize)
                .partition(at)
                .key(record_key.as_bytes())
                .headers(OwnedHeaders::new().insert(Header {
                    key: checkpoint::SEQ,
                    value: Some(seq.as_str()),
                }));
            if value {
                record = record.payload(buf);
            }
            wrote.bytes += (buf.len() + record_key.len()) as u64;
            send(producer, record)
        };
        for k in &keys {
            let value = self.split.encode(k, self.epoch, buf)?;
            put(&keyed::record_key(&key, k), value, buf)?;
        }
        let mut page_count = 0;
        let mut page_records = 0;
        if let Some(pages) = Pages::take(&mut self.split.base) {
            let listed = pages.non_empty();
            page_count = listed.len() as u64;
            let write = self.changed_pages.unwrap_or(listed);
            for &page in &write {
                let value = pages.encode(page, self.epoch, buf)?;
                put(&pages::record_key(&key, page), value, buf)?;
            }
            page_records = write.len() as u64;
        }
        wrote.keys = keys.len() as u64;
        wrote.pages = page_records;
        let ck = Checkpoint {
            format_version: checkpoint::FORMAT_VERSION,
            model: t.model.clone(),
            group: t.group.clone(),
            topic: t.input.clone(),
            partition: p,
            next_offset: self.next_offset,
            labels_next_offset: (self.labels_next_offset >= 0).then_some(self.labels_next_offset),
            keys: self.key_count,
            pages: page_count,
            pipeline: self.split.base,
            epoch: self.epoch,
        };
        buf.clear();
        serde_json::to_writer(&mut *buf, &ck).context("cannot encode a checkpoint")?;
        wrote.bytes += buf.len() as u64;
        // in chunks when larger than a message may be
        let generation = format!("{}-{}", ck.next_offset, crate::live::now_ms());
        let records = checkpoint::records(&key, buf, ck.next_offset, &generation);
        checkpoint::send_records(&t.topic, at, &records, |r| send(producer, r))?;
        Ok(wrote)
    }
}
