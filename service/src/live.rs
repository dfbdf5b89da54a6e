//! [`Live`]: the models HTTP reads. Model state belongs to an input
//! partition (DESIGN.md: a partition's state moves with the partition), so a
//! model is one pipeline per partition this instance owns. The worker swaps
//! a new `Live` in after each micro-batch; readers never wait on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use models::metrics::{MetricSet, Prequential};

use crate::pipeline::Pipeline;

/// One model's live pipelines, by input partition.
#[derive(Debug, Clone)]
pub struct Live {
    fresh: Arc<Pipeline>,
    partitions: BTreeMap<i32, Arc<Pipeline>>,
    /// Next offset each partition's pipeline learns (-1: not known).
    offsets: BTreeMap<i32, i64>,
    /// When each partition's pipeline was swapped in (ms since the epoch).
    updated_ms: BTreeMap<i32, u64>,
    /// Readings each partition has processed, kept current after every
    /// micro-batch even when the batch learned nothing and its pipeline was
    /// not copied again (unlabelled readings).
    seen: BTreeMap<i32, u64>,
    /// Readings each partition holds waiting for their label (a model with
    /// `labels_topic`), kept current the same way: a batch of unlabelled
    /// readings adds to them without learning anything.
    labels_waiting: BTreeMap<i32, usize>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Live {
    /// No partition yet: reads are answered by a fresh pipeline.
    pub fn new(fresh: Pipeline) -> Live {
        Live {
            fresh: Arc::new(fresh),
            partitions: BTreeMap::new(),
            offsets: BTreeMap::new(),
            updated_ms: BTreeMap::new(),
            seen: BTreeMap::new(),
            labels_waiting: BTreeMap::new(),
        }
    }

    /// A copy with `partition`'s pipeline replaced by a readers' copy of
    /// `pipeline`, which has learned every reading before `next_offset`.
    pub fn with(&self, partition: i32, pipeline: &Pipeline, next_offset: i64) -> Live {
        let mut next = self.clone();
        next.seen.insert(partition, pipeline.seen());
        if let Some(w) = pipeline.labels_waiting() {
            next.labels_waiting.insert(partition, w);
        }
        next.partitions
            .insert(partition, Arc::new(pipeline.clone()));
        next.offsets.insert(partition, next_offset);
        next.updated_ms.insert(partition, now_ms());
        next
    }

    /// A copy in which `partition` has processed `seen` readings, up to
    /// `next_offset`, its model unchanged (a batch that learned nothing),
    /// and holds `labels_waiting` readings waiting for their label.
    pub fn with_progress(
        &self,
        partition: i32,
        seen: u64,
        labels_waiting: Option<usize>,
        next_offset: i64,
    ) -> Live {
        let mut next = self.clone();
        if next.partitions.contains_key(&partition) {
            next.seen.insert(partition, seen);
            next.offsets.insert(partition, next_offset);
            if let Some(w) = labels_waiting {
                next.labels_waiting.insert(partition, w);
            }
        }
        next
    }

    /// Readings `partition` has processed (0 if not owned).
    pub fn seen_of(&self, partition: i32) -> u64 {
        self.seen.get(&partition).copied().unwrap_or(0)
    }

    /// Readings `partition` holds waiting for their label (`None`: not
    /// owned, or the model has no labels topic).
    pub fn labels_waiting_of(&self, partition: i32) -> Option<usize> {
        self.labels_waiting.get(&partition).copied()
    }

    /// The next offset `partition`'s pipeline learns (-1: not known).
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.offsets.get(&partition).copied().unwrap_or(-1)
    }

    /// A copy without the given partitions (revoked, or rolled back).
    pub fn without(&self, partitions: &[i32]) -> Live {
        let mut next = self.clone();
        for p in partitions {
            next.partitions.remove(p);
            next.offsets.remove(p);
            next.updated_ms.remove(p);
            next.seen.remove(p);
            next.labels_waiting.remove(p);
        }
        next
    }

    /// How long ago `partition`'s pipeline was swapped in, in ms.
    pub fn age_ms(&self, partition: i32) -> Option<u64> {
        self.updated_ms
            .get(&partition)
            .map(|&t| now_ms().saturating_sub(t))
    }

    /// `partition`'s pipeline, if this instance owns the partition.
    pub fn partition(&self, partition: i32) -> Option<&Pipeline> {
        self.partitions.get(&partition).map(Arc::as_ref)
    }

    /// The pipelines by partition.
    pub fn partitions(&self) -> impl Iterator<Item = (i32, &Pipeline)> {
        self.partitions.iter().map(|(p, m)| (*p, m.as_ref()))
    }

    /// The pipeline that answers for `key`: the partition's whose state holds
    /// the key (its readings arrive there), else the one that has seen the
    /// most readings, else a fresh one.
    pub fn route(&self, key: Option<&str>) -> (Option<i32>, &Pipeline) {
        key.and_then(|k| self.holder(k))
            .and_then(|p| self.partitions.get(&p).map(|m| (Some(p), m.as_ref())))
            .unwrap_or_else(|| self.primary())
    }

    /// The partition whose state holds `key` (its readings arrive there).
    pub fn holder(&self, key: &str) -> Option<i32> {
        self.partitions
            .iter()
            .find(|(_, m)| m.knows_key(key))
            .map(|(p, _)| *p)
    }

    /// The partition pipeline that has seen the most readings, or the fresh one.
    pub fn primary(&self) -> (Option<i32>, &Pipeline) {
        self.partitions
            .iter()
            .max_by_key(|(p, m)| (m.seen(), std::cmp::Reverse(**p)))
            .map_or((None, self.fresh.as_ref()), |(p, m)| (Some(*p), m.as_ref()))
    }

    /// Sum of the partitions' versions: goes up with every learned batch.
    pub fn version(&self) -> u64 {
        self.partitions.values().map(|m| m.version()).sum()
    }

    /// Readings processed, over all partitions.
    pub fn seen(&self) -> u64 {
        self.seen.values().sum()
    }

    /// Readings learned, over all partitions.
    pub fn learned(&self) -> u64 {
        self.partitions.values().map(|m| m.learned()).sum()
    }

    /// Learning steps refused, over all partitions.
    pub fn learn_errors(&self) -> u64 {
        self.partitions.values().map(|m| m.learn_errors()).sum()
    }

    /// Drifts signalled by the partitions' detectors, all time (from their
    /// checkpoints); `None` when the model has no detector.
    pub fn drifts(&self) -> Option<u64> {
        self.partitions
            .values()
            .map(|m| m.drift().map(|d| d.count))
            .reduce(|a, b| Some(a? + b?))
            .flatten()
    }

    /// Champion changes in the partitions, all time (from their checkpoints).
    pub fn promotions(&self) -> u64 {
        self.partitions.values().map(|m| m.promotions_total()).sum()
    }

    /// Live metrics over all partitions: cumulative and rolling.
    pub fn metrics(&self) -> (MetricSet, MetricSet) {
        let mut all: Option<Prequential> = None;
        for m in self.partitions.values() {
            match &mut all {
                Some(a) => a.merge(m.prequential()),
                None => all = Some(m.prequential().clone()),
            }
        }
        all.map_or_else(|| self.fresh.metrics(), |a| (a.cumulative(), a.rolling()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let config = crate::config::Config::load(&path).expect("config");
        Pipeline::new(config.model("waits-v1").expect("model")).expect("pipeline")
    }

    #[test]
    fn readings_seen_and_waiting_follow_every_batch_without_copying_the_model() {
        let live = Live::new(pipeline()).with(0, &pipeline(), 10);
        assert_eq!(live.seen(), 0);
        let live = live
            .with_progress(0, 7, Some(2), 17)
            .with_progress(3, 5, Some(4), 5);
        assert_eq!(live.seen(), 7, "a partition not owned is not counted");
        assert_eq!(live.seen_of(0), 7);
        assert_eq!(live.next_offset(0), 17);
        assert_eq!(
            live.labels_waiting_of(0),
            Some(2),
            "readings waiting for labels"
        );
        assert_eq!(live.labels_waiting_of(3), None);
        let live = live.without(&[0]);
        assert_eq!((live.seen(), live.labels_waiting_of(0)), (0, None));
    }
}
