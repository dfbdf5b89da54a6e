//! One owned input partition's state in the loop: its pipeline, the
//! micro-batch being collected, where it stands, and what its last
//! committed checkpoint holds.

use std::time::Instant;

use rdkafka::message::BorrowedMessage;

use crate::pipeline::{Pipeline, PipelineSnapshot};

/// One input partition this instance owns.
pub(super) struct Part<'c> {
    pub(super) pipeline: Pipeline,
    pub(super) batch: Vec<BorrowedMessage<'c>>,
    pub(super) started: Instant,
    /// Next offset expected from the consumer (-1: take whatever comes).
    pub(super) position: i64,
    /// Offset after the last processed reading.
    pub(super) processed_to: i64,
    /// `labels_topic`: label messages collected, the next label offset
    /// expected (-1: take whatever comes) and the offset after the last
    /// processed label.
    pub(super) labels: Vec<BorrowedMessage<'c>>,
    pub(super) labels_position: i64,
    pub(super) labels_processed_to: i64,
    /// Processed since the last commit.
    pub(super) dirty: bool,
    /// The epoch of the key records the pipeline's keyed state follows
    /// from (0: none; its next checkpoint writes every key, see
    /// `checkpoint::keyed`).
    pub(super) epoch: u64,
}

/// A partition's state as of the last committed transaction.
pub(super) struct Committed {
    pub(super) next_offset: i64,
    /// The labels topic's next offset (-1: none yet).
    pub(super) labels_next_offset: i64,
    pub(super) snapshot: Option<PipelineSnapshot>,
    /// The epoch of its key records (0: none).
    pub(super) epoch: u64,
}

/// A partition's checkpoint in the commit in flight.
pub(super) struct Written {
    pub(super) partition: i32,
    pub(super) next_offset: i64,
    pub(super) labels_next_offset: i64,
    pub(super) snapshot: PipelineSnapshot,
    pub(super) epoch: u64,
}
