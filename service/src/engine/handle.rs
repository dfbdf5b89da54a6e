//! [`ModelHandle`]: what one model's loop shares with HTTP and the drivers
//! (the live pipelines, counters, readiness, the backfill slot, replay
//! progress and the routing directory). A leaf: it knows no Kafka loop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use arc_swap::{ArcSwap, ArcSwapOption};

use super::backfill;
use crate::config::ModelConfig;
use crate::kafka::ConsumerCtx;
use crate::live::Live;
use crate::pipeline::Pipeline;
use crate::stats::ModelStats;

/// What the worker shares with the HTTP API.
pub struct ModelHandle {
    /// The model's config.
    pub config: ModelConfig,
    /// The live pipelines, swapped after every micro-batch.
    pub live: ArcSwap<Live>,
    /// Counters.
    pub stats: ModelStats,
    /// The consumer's context (assignment, lag), once the worker has started
    /// (replaced when the loop recreates its Kafka clients).
    pub consumer: ArcSwapOption<ConsumerCtx>,
    /// False while a transaction cannot be committed (broker down, say).
    pub committing: AtomicBool,
    /// The consumer's assignment count whose partitions are all restored.
    pub restored: AtomicU64,
    /// Replay progress per partition.
    pub progress: std::sync::Mutex<Progress>,
    /// A live backfill asked for over HTTP, and its status.
    pub backfill: std::sync::Mutex<backfill::Slot>,
    /// Promotions and rollbacks asked for over HTTP, not yet carried out.
    pub commands: super::commands::Queue,
    /// The consumer group, once the worker has started.
    pub group: std::sync::OnceLock<String>,
    /// Which instance owns which input partition (refreshed by the server).
    pub directory: ArcSwap<crate::routing::Directory>,
    /// What the dashboard draws: samples over time, recent predictions.
    pub history: crate::history::History,
    /// Why the model stopped while the service goes on (the cluster
    /// refused its access), if it did.
    failed: std::sync::Mutex<Option<String>>,
}

impl ModelHandle {
    /// Shows HTTP readers a copy of partition `p`'s pipeline, which has
    /// consumed up to `next_offset`.
    pub(crate) fn publish(&self, p: i32, pipeline: &Pipeline, next_offset: i64) {
        let live = self.live.load();
        self.live
            .store(Arc::new(live.with(p, pipeline, next_offset)));
    }

    /// Shows HTTP readers how far partition `p`'s `pipeline` has come (up
    /// to `next_offset`: readings seen, readings waiting for labels),
    /// without copying its unchanged model.
    pub(crate) fn publish_progress(&self, p: i32, pipeline: &Pipeline, next_offset: i64) {
        let live = self.live.load();
        self.live.store(Arc::new(live.with_progress(
            p,
            pipeline.seen(),
            pipeline.labels_waiting(),
            next_offset,
        )));
    }

    /// A handle with a fresh pipeline.
    pub fn new(config: ModelConfig) -> Result<ModelHandle> {
        let pipeline = Pipeline::new(&config)?;
        Ok(ModelHandle {
            config,
            live: ArcSwap::from_pointee(Live::new(pipeline)),
            stats: ModelStats::default(),
            consumer: ArcSwapOption::empty(),
            committing: AtomicBool::new(true),
            restored: AtomicU64::new(u64::MAX),
            progress: std::sync::Mutex::new(BTreeMap::new()),
            backfill: std::sync::Mutex::new(backfill::Slot::default()),
            commands: super::commands::Queue::default(),
            group: std::sync::OnceLock::new(),
            directory: ArcSwap::from_pointee(crate::routing::Directory::default()),
            history: crate::history::History::default(),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// Marks the model stopped for good, saying why.
    pub fn fail(&self, why: String) {
        if let Ok(mut f) = self.failed.lock() {
            f.get_or_insert(why);
        }
    }

    /// Why the model stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Why the model is not ready, or `None` when it consumes from at least
    /// one partition, a broker is up and its commits go through.
    pub fn not_ready(&self) -> Option<std::borrow::Cow<'static, str>> {
        if let Some(why) = self.failure() {
            return Some(format!("stopped: {why}").into());
        }
        self.waiting_for().map(Into::into)
    }

    fn waiting_for(&self) -> Option<&'static str> {
        let c = self.consumer.load();
        let Some(c) = c.as_ref() else {
            return Some("the worker has not started");
        };
        if c.brokers_down.load(Ordering::Relaxed) {
            Some("no Kafka broker is reachable; retrying")
        } else if !self.committing.load(Ordering::Relaxed) {
            Some("commits are failing (is the broker down?); retrying")
        } else if !c.assigned.load(Ordering::Relaxed) {
            Some("not consuming yet: no partition assigned")
        } else if self.restored.load(Ordering::Relaxed) != c.assignments.load(Ordering::Relaxed) {
            Some("restoring the assigned partitions from their checkpoints")
        } else {
            None
        }
    }

    /// True once the worker consumes, a broker is up and commits go through.
    pub fn ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Per owned partition: the next offset the live model learns, the
    /// partition's end (high watermark, -1 not known yet) and the readings
    /// between them (-1 not known).
    pub fn partition_lags(&self) -> BTreeMap<i32, PartitionLag> {
        let mut out = BTreeMap::new();
        self.each_lag(|p, l| {
            out.insert(p, l);
        });
        out
    }

    /// Readings between the live model and the ends of its partitions, or
    /// -1 while no partition's end is known. Asked by every `/predict`:
    /// nothing is copied.
    pub fn lag(&self) -> i64 {
        let mut sum = -1;
        self.each_lag(|_, l| {
            if l.lag >= 0 {
                sum = sum.max(0) + l.lag;
            }
        });
        sum
    }

    fn each_lag(&self, mut each: impl FnMut(i32, PartitionLag)) {
        let live = self.live.load();
        let consumer = self.consumer.load();
        let high = consumer
            .as_ref()
            .and_then(|c| c.high_watermarks.lock().ok());
        for (p, _) in live.partitions() {
            let next = live.next_offset(p);
            // the statistics come once a second: the end is at least what
            // the model has already read
            let end = high
                .as_ref()
                .and_then(|h| h.get(&p))
                .map_or(-1, |&h| h.max(next));
            let lag = if end >= 0 && next >= 0 {
                (end - next).max(0)
            } else {
                -1
            };
            each(p, PartitionLag { next, end, lag });
        }
    }
}

/// Where a partition stands: see [`ModelHandle::partition_lags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The next offset the live model learns (-1: not known).
    pub next: i64,
    /// The partition's high watermark (-1: not known yet).
    pub end: i64,
    /// Readings between them (-1: not known).
    pub lag: i64,
}

/// Replay progress per partition: (start, processed up to, end).
pub type Progress = BTreeMap<i32, (i64, i64, i64)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_each_partitions_end_minus_the_live_models_next_offset() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let config = crate::config::Config::load(&path).expect("config");
        let h = ModelHandle::new(config.model("waits-v1").expect("model").clone()).expect("handle");
        assert_eq!(h.lag(), -1, "no partition, no consumer: not known");
        let p = Pipeline::new(&h.config).expect("pipeline");
        let live = h.live.load().with(0, &p, 10).with(1, &p, 7);
        h.live.store(Arc::new(live));
        assert_eq!(h.lag(), -1, "no end known yet");
        let ctx = ConsumerCtx::default();
        if let Ok(mut high) = ctx.high_watermarks.lock() {
            // partition 1's statistics are older than what it has read
            *high = BTreeMap::from([(0, 25), (1, 5)]);
        }
        h.consumer.store(Some(Arc::new(ctx)));
        assert_eq!(h.lag(), 15);
        let lags = h.partition_lags();
        assert_eq!(
            lags[&0],
            PartitionLag {
                next: 10,
                end: 25,
                lag: 15
            }
        );
        assert_eq!(
            lags[&1],
            PartitionLag {
                next: 7,
                end: 7,
                lag: 0
            }
        );
    }
}
