//! At least once (`service.exactly_once = false`): offsets are committed
//! once every output of the readings before them is acknowledged. No
//! checkpoints: a restart begins with fresh models.

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::Ordering;

use super::state::Worker;

impl Worker<'_> {
    /// At least once: commits the acknowledged offsets.
    pub(super) fn commit_offsets(&mut self, mode: CommitMode) -> Result<()> {
        if self.to_commit.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in self.to_commit.drain() {
            tpl.add_partition_offset(&self.input, p, Offset::Offset(o))
                .context("cannot build the offset list to commit")?;
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                self.handle.stats.commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // a rebalance took the partition away: its new owner starts from the last commit
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::RebalanceInProgress,
            )) => {
                tracing::warn!(
                    topic = %self.input,
                    "commit refused during a rebalance; the readings will be processed again"
                );
                Ok(())
            }
            Err(e) => Err(e).context("offset commit failed"),
        }
    }
}
