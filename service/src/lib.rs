//! The streamfit service: config, the per-reading pipeline, the evaluation
//! command, the Kafka loop and the HTTP API.
//!
//! Layout:
//! - [`config`]: the TOML config with environment overrides (`config/env`),
//!   validated whole.
//! - [`pipeline`]: one model's synchronous work, bytes in, predictions out.
//! - [`eval`]: `streamfit eval`, the prequential protocol over a data set.
//! - [`kafka`]: client configs, topic creation, consumer/producer contexts.
//! - [`engine`]: one model's consume, predict, learn, publish loop, split
//!   by job (handle, offsets, partition state, outputs, transactions,
//!   rebalance, backfill, the loop).
//! - [`routing`]: which instance owns a key's partition (for `/predict`).
//! - [`catchup`]: `streamfit wait`, until the models have caught up.
//! - [`checkpoint`]: per-partition model checkpoints on a compacted topic.
//! - [`live`]: the per-partition pipelines HTTP reads.
//! - [`replay`]: `streamfit replay`, training from a topic's history.
//! - [`predlog`]: prediction logs from an output topic to Arrow IPC.
//! - [`snapshot`]: model export and import in the versioned snapshot format.
//! - [`idle`]: whether a model's consumer group is free for a replay or an
//!   import (a stopped service's lingering membership waited out).
//! - [`history`]: what the dashboard draws (samples over time, recent
//!   predictions).
//! - [`http`]: the axum API and the dashboard.
//! - [`memory`]: giving freed memory back to the system, RSS.
//! - [`stats`]: live counters and their Prometheus rendering.
//! - [`server`]: `streamfit run`, wiring it all with one cancellation token.
//! - [`cli`]: the command line.

pub mod catchup;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod engine;
pub mod eval;
pub mod history;
pub mod horizon;
pub mod http;
pub mod idle;
pub mod kafka;
pub mod keys;
pub mod live;
pub mod memory;
pub mod pipeline;
pub mod predlog;
pub mod render;
pub mod replay;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod stats;
