//! Live backfill: while the service runs, a shadow model learns the input
//! topic's history from a given start on the model's own thread, between
//! live micro-batches, up to exactly where the live model is; at that
//! instant it replaces the live model for every partition at once. Nothing
//! is learned twice or skipped at the swap, and HTTP only ever sees the
//! live model before and the caught-up shadow after.
//!
//! The shadow reads with its own consumer (assigned, never committing) and
//! keeps what it fetched past the live position until the live model has
//! moved past it, so the two never race.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use super::offsets::{self, From, To};
use crate::config::{Config, ModelConfig};
use crate::kafka;
use crate::kafka::Logs;
use crate::pipeline::{Input, Pipeline};

/// Where a backfill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Asked for; the model's thread has not picked it up yet.
    Requested,
    /// The shadow model is learning the history.
    Running,
    /// The shadow caught up and replaced the live model.
    Swapped,
    /// It stopped without a swap; `error` says why.
    Failed,
}

/// One partition's progress.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionProgress {
    /// First offset the shadow learns.
    pub start: i64,
    /// Next offset the shadow learns.
    pub position: i64,
    /// Next offset the live model learns (the shadow's finish line, moving).
    pub live: i64,
}

/// A backfill's status, as `GET /v1/models/{name}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Where it stands.
    pub state: State,
    /// The start asked for.
    pub from: String,
    /// Readings the shadow has learned from.
    pub readings: u64,
    /// Seconds since the model's thread picked it up.
    pub seconds: f64,
    /// Readings per second so far.
    pub readings_per_second: f64,
    /// Progress per input partition.
    pub partitions: BTreeMap<i32, PartitionProgress>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Status {
    /// A fresh request.
    pub fn requested(from: &str) -> Status {
        Status {
            state: State::Requested,
            from: from.to_owned(),
            readings: 0,
            seconds: 0.0,
            readings_per_second: 0.0,
            partitions: BTreeMap::new(),
            error: None,
        }
    }

    /// True while a backfill is asked for or running.
    pub fn active(&self) -> bool {
        matches!(self.state, State::Requested | State::Running)
    }
}

/// What HTTP and the model's thread share.
#[derive(Debug, Default)]
pub struct Slot {
    /// A start waiting for the model's thread.
    pub request: Option<From>,
    /// Swap in even a model that knows fewer readings than the live one.
    pub force: bool,
    /// The latest backfill's status.
    pub status: Option<Status>,
}

/// A reading fetched by the shadow, kept until the shadow learns it.
struct Owned {
    offset: i64,
    key: Option<String>,
    payload: Vec<u8>,
}

struct ShadowPart {
    pipeline: Pipeline,
    start: i64,
    /// Next offset to learn.
    position: i64,
    /// Fetched, not learned yet.
    pending: VecDeque<Owned>,
}

/// The shadow model and its reader.
pub struct Shadow {
    consumer: BaseConsumer<Logs>,
    /// The start as asked for.
    from: String,
    parts: BTreeMap<i32, ShadowPart>,
    started: Instant,
    readings: u64,
    batch: usize,
}

impl Shadow {
    /// Starts a shadow of `model` over `partitions` of `topic` from `from`
    /// (asked for as `label`).
    pub fn start(
        config: &Config,
        model: &ModelConfig,
        group: &str,
        topic: &str,
        partitions: &[i32],
        from: &From,
        label: String,
    ) -> Result<Shadow> {
        let consumer: BaseConsumer<Logs> =
            kafka::plain_consumer_config(&config.kafka, &format!("{group}.backfill"))
                .create_with_context(Logs)
                .context("cannot create the backfill consumer")?;
        let (start, _) = offsets::resolve(&consumer, topic, from, &To::Latest)?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = BTreeMap::new();
        for &p in partitions {
            let Some(&s) = start.get(&p) else {
                bail!("the backfill start names no offset for partition {p} of {topic}, which this instance owns: list every partition (or use earliest or a time)");
            };
            tpl.add_partition_offset(topic, p, Offset::Offset(s))
                .context("cannot build the backfill assignment")?;
            parts.insert(
                p,
                ShadowPart {
                    pipeline: Pipeline::new(model)?,
                    start: s,
                    position: s,
                    pending: VecDeque::new(),
                },
            );
        }
        consumer
            .assign(&tpl)
            .with_context(|| format!("cannot assign the partitions of {topic}"))?;
        Ok(Shadow {
            consumer,
            from: label,
            parts,
            started: Instant::now(),
            readings: 0,
            batch: model.batch.max_readings,
        })
    }

    /// The partitions the shadow learns.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.parts.keys().copied()
    }

    /// Learns for at most `budget`: everything fetched below each
    /// partition's live position (`live`, next offset the live model
    /// learns). Returns true once every partition is exactly there.
    pub fn step(&mut self, live: &BTreeMap<i32, i64>, budget: Duration) -> Result<bool> {
        let deadline = Instant::now() + budget;
        loop {
            let mut fetched = 0;
            while fetched < 4 * self.batch {
                let Some(m) = self.consumer.poll(Duration::ZERO) else {
                    break;
                };
                let m = m.context("the backfill cannot read the input topic")?;
                if let Some(part) = self.parts.get_mut(&m.partition()) {
                    part.pending.push_back(Owned {
                        offset: m.offset(),
                        key: kafka::key_str(&m).map(str::to_owned),
                        payload: m.payload().unwrap_or(&[]).to_vec(),
                    });
                }
                fetched += 1;
            }
            let mut learned = 0;
            for (p, part) in &mut self.parts {
                let target = live.get(p).copied().unwrap_or(-1);
                learned += learn_below(part, target, self.batch);
            }
            self.readings += learned as u64;
            if self.caught_up(live) {
                return Ok(true);
            }
            if Instant::now() >= deadline || (fetched == 0 && learned == 0) {
                return Ok(false);
            }
        }
    }

    /// Every partition is exactly where the live model is. A partition the
    /// live model has not read from yet (no position) counts as caught up:
    /// the shadow learns nothing there either, so the live model reads it
    /// from the start after the swap.
    fn caught_up(&self, live: &BTreeMap<i32, i64>) -> bool {
        self.parts.iter().all(|(p, part)| {
            let l = live.get(p).copied().unwrap_or(-1);
            l < 0 || part.position == l
        })
    }

    /// The status with this progress.
    pub fn status(&self, live: &BTreeMap<i32, i64>) -> Status {
        let seconds = self.started.elapsed().as_secs_f64();
        Status {
            state: State::Running,
            from: self.from.clone(),
            readings: self.readings,
            seconds,
            readings_per_second: self.readings as f64 / seconds.max(1e-9),
            partitions: self
                .parts
                .iter()
                .map(|(p, x)| {
                    (
                        *p,
                        PartitionProgress {
                            start: x.start,
                            position: x.position,
                            live: live.get(p).copied().unwrap_or(-1),
                        },
                    )
                })
                .collect(),
            error: None,
        }
    }

    /// Readings its pipelines know, over every partition.
    pub fn seen(&self) -> u64 {
        self.parts.values().map(|x| x.pipeline.seen()).sum()
    }

    /// The caught-up pipelines, by partition.
    pub fn into_pipelines(self) -> BTreeMap<i32, Pipeline> {
        self.parts
            .into_iter()
            .map(|(p, x)| (p, x.pipeline))
            .collect()
    }
}

/// Learns the pending readings below `target`, a micro-batch at a time;
/// returns how many.
fn learn_below(part: &mut ShadowPart, target: i64, batch: usize) -> usize {
    let mut total = 0;
    loop {
        let n = part
            .pending
            .iter()
            .take(batch)
            .take_while(|o| o.offset < target)
            .count();
        if n == 0 {
            return total;
        }
        let taken: Vec<Owned> = part.pending.drain(..n).collect();
        let inputs: Vec<Input<'_>> = taken
            .iter()
            .filter(|o| o.offset >= part.position)
            .map(|o| Input {
                key: o.key.as_deref(),
                bytes: &o.payload,
            })
            .collect();
        if !inputs.is_empty() {
            let mut outcomes = Vec::with_capacity(inputs.len());
            part.pipeline.process(&inputs, &mut outcomes);
            total += inputs.len();
        }
        if let Some(last) = taken.last() {
            part.position = part.position.max(last.offset + 1);
        }
    }
}
