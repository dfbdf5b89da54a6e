//! One model's engine: the loop that consumes an input topic, predicts and
//! learns each owned partition's readings, publishes the outcomes and
//! commits them with the model state; and what it shares with HTTP and the
//! drivers (replay, backfill). Arrows point down; the engine never imports
//! a driver.
//!
//! - [`handle`]: [`ModelHandle`], shared with HTTP and drivers (leaf).
//! - [`offsets`]: start and end positions (`earliest`, a time, offsets),
//!   parsed and resolved against a topic (leaf).
//! - `partition`: one owned partition's batch, pipeline and committed state.
//! - `outputs`: prediction and dead-letter messages.
//! - `transaction`: exactly once (transactions, checkpoints, rollback).
//! - `checkpointing`: one partition's checkpoint records in a transaction.
//! - `at_least_once`: offsets committed after the outputs are acknowledged.
//! - `rebalance`: restore on assignment, finish before release on revocation.
//! - [`backfill`]: the shadow model a live backfill trains between batches;
//!   `swap` gives it its turn in the loop and swaps it in.
//! - [`commands`]: promotions and rollbacks asked for over HTTP.
//! - `labels`: a labels topic's messages joined with the waiting readings.
//! - `state`: the loop's state and the committer's messages (leaf of the
//!   files below).
//! - `worker`: the loop on top.

mod at_least_once;
pub mod backfill;
mod checkpointing;
pub mod commands;
pub mod handle;
mod labels;
pub mod offsets;
mod outputs;
mod partition;
mod rebalance;
mod state;
mod swap;
mod transaction;
mod worker;

pub use handle::{ModelHandle, Progress};
pub use state::ReplayPlan;
pub use worker::{replay, run};
