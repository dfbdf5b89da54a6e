//! Partitions coming and going: an assignment restores each new partition
//! from its latest checkpoint before its first reading; a revocation
//! finishes the revoked partitions' open work (commit, or abort when they
//! were lost) before they are released to their next owner.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer;

use super::partition::{Committed, Part};
use super::state::Worker;
use crate::checkpoint;
use crate::kafka::ConsumerCtx;
use crate::pipeline::Pipeline;

impl Worker<'_> {
    /// After an assignment: restores every newly assigned partition now, so
    /// that HTTP answers from the restored models before the first reading.
    pub(super) fn open_assigned(&mut self) -> Result<()> {
        let ctx = self.consumer.context();
        let assignments = ctx.assignments.load(Ordering::Relaxed);
        if self.handle.restored.load(Ordering::Relaxed) == assignments {
            return Ok(());
        }
        let assigned = self
            .consumer
            .assignment()
            .context("cannot read the consumer's assignment")?;
        for e in assigned.elements_for_topic(&self.input) {
            if !self.parts.contains_key(&e.partition()) {
                self.open(e.partition())?;
            }
        }
        self.handle.restored.store(assignments, Ordering::Relaxed);
        Ok(())
    }

    /// Sets up a partition's state: its last checkpoint (exactly once) or a
    /// fresh pipeline.
    pub(super) fn open(&mut self, p: i32) -> Result<()> {
        let m = &self.handle.config;
        let mut pipeline = Pipeline::new(m)?;
        let mut position = -1;
        let mut seeded = false;
        if let Some(plan) = &self.replay {
            // a replay learns from scratch (or from its seed), from its start offset
            if let Some(seed) = &plan.seed {
                pipeline
                    .restore(seed.clone())
                    .context("cannot start from the file's model")?;
                seeded = true;
            }
            position = plan.start.get(&p).copied().unwrap_or(-1);
            self.committed.insert(
                p,
                Committed {
                    next_offset: position,
                    labels_next_offset: -1,
                    snapshot: None,
                    epoch: 0,
                },
            );
        } else if self.eos {
            let assignments = self.consumer.context().assignments.load(Ordering::Relaxed);
            if assignments != self.scanned || !self.scanned_parts.contains(&p) {
                let started = Instant::now();
                // the checkpoints of the partitions assigned now (this one
                // and those opened next), read in one pass
                let mut wanted: Vec<i32> = self
                    .consumer
                    .assignment()
                    .map(|a| {
                        a.elements_for_topic(&self.input)
                            .iter()
                            .map(|e| e.partition())
                            .collect()
                    })
                    .unwrap_or_default();
                if !wanted.contains(&p) {
                    wanted.push(p);
                }
                let found = checkpoint::read_latest(
                    &self.config.kafka,
                    &self.ck_topic,
                    &self.group,
                    &self.input,
                    &wanted,
                    Duration::from_secs(120),
                )?;
                tracing::info!(model = %m.name, partitions = ?found.keys().collect::<Vec<_>>(), seconds = started.elapsed().as_secs_f64(), "checkpoints read");
                for (q, ck) in found {
                    self.committed.insert(
                        q,
                        Committed {
                            next_offset: ck.next_offset,
                            labels_next_offset: ck.labels_next_offset.unwrap_or(-1),
                            snapshot: Some(ck.pipeline),
                            epoch: ck.epoch,
                        },
                    );
                }
                self.scanned = assignments;
                self.scanned_parts = wanted;
            }
            match self.committed.get(&p) {
                Some(c) => {
                    if let Some(snap) = &c.snapshot {
                        pipeline.restore(snap.clone()).with_context(|| {
                            format!("cannot restore the checkpoint of {} partition {p}", m.name)
                        })?;
                    }
                    position = c.next_offset;
                    tracing::info!(model = %m.name, partition = p, next_offset = c.next_offset, version = pipeline.version(), "partition restored from its checkpoint");
                }
                None => {
                    self.committed.insert(
                        p,
                        Committed {
                            next_offset: -1,
                            labels_next_offset: -1,
                            snapshot: None,
                            epoch: 0,
                        },
                    );
                }
            }
        }
        let epoch = self.committed.get(&p).map_or(0, |c| c.epoch);
        let labels_position = self.committed.get(&p).map_or(-1, |c| c.labels_next_offset);
        self.handle.publish(p, &pipeline, position);
        self.parts.insert(
            p,
            Part {
                pipeline,
                batch: Vec::with_capacity(self.handle.config.batch.max_readings),
                started: Instant::now(),
                position,
                processed_to: position,
                labels: Vec::new(),
                labels_position,
                labels_processed_to: labels_position,
                // a seeded partition has news even without a reading
                dirty: seeded,
                epoch,
            },
        );
        Ok(())
    }

    /// A revocation: finishes the revoked partitions' open work before they
    /// change hands, then releases them. Their buffered readings are
    /// processed and everything is committed in one transaction, so the new
    /// owner starts exactly where this instance stopped; if that commit
    /// fails (or the partitions were lost, so it cannot succeed), the open
    /// transaction is aborted and nothing of it becomes visible: the new
    /// owner starts from the last committed checkpoint.
    pub(super) fn finish_revoked(&mut self) -> Result<()> {
        let revocation = match self.consumer.context().revoking.lock() {
            Ok(mut r) => r.take(),
            Err(_) => bail!("the revocation slot is poisoned"),
        };
        let Some(revocation) = revocation else {
            return Ok(());
        };
        let revoked: Vec<i32> = revocation
            .partitions
            .elements_for_topic(&self.input)
            .iter()
            .map(|e| e.partition())
            .collect();
        let started = Instant::now();
        if let Err(e) = self.finish_partitions(&revoked, revocation.lost) {
            // the loop stops: leave the revocation for its exit to release
            // (librdkafka's close waits for it)
            if let Ok(mut r) = self.consumer.context().revoking.lock() {
                *r = Some(revocation);
            }
            return Err(e);
        }
        for p in &revoked {
            self.parts.remove(p);
            self.committed.remove(p);
            self.to_commit.remove(p);
        }
        let live = self.handle.live.load();
        self.handle.live.store(Arc::new(live.without(&revoked)));
        ConsumerCtx::release(self.consumer, &revocation.partitions)?;
        tracing::info!(model = %self.handle.config.name, partitions = ?revoked, ms = started.elapsed().as_millis() as u64, "revoked partitions committed and handed over");
        Ok(())
    }

    /// Commits (or, when `lost`, aborts) the open work before a revocation.
    fn finish_partitions(&mut self, revoked: &[i32], lost: bool) -> Result<()> {
        if self.eos {
            // settle the commit in flight: what it saved stays saved
            self.poll_commit(true)?;
            let open_work = self.in_txn
                || self
                    .parts
                    .values()
                    .any(|x| x.dirty || !x.batch.is_empty() || !x.labels.is_empty());
            if lost {
                if open_work {
                    tracing::warn!(model = %self.handle.config.name, partitions = ?revoked, "partitions lost (session timed out?): aborting their open work");
                    self.abort_and_roll_back()?;
                }
            } else if open_work {
                for &p in revoked {
                    self.process(p)?;
                }
                if !self.in_txn && self.parts.values().any(|x| x.dirty) {
                    self.begin()?;
                }
                self.commit_transaction()?;
                self.poll_commit(true)?;
            }
        } else {
            for &p in revoked {
                self.process(p)?;
            }
            let timeout = Duration::from_millis(self.config.service.shutdown_timeout_ms);
            if let Err(e) = crate::kafka::flush::flush(self.producer, timeout) {
                tracing::warn!(model = %self.handle.config.name, error = %e, "outputs of revoked partitions not all acknowledged; their new owner processes them again");
            }
            self.to_commit
                .extend(self.producer.context().drain_acked()?);
            if !lost {
                self.commit_offsets(CommitMode::Sync)?;
            }
        }
        Ok(())
    }
}
