//! One model's consume, predict, learn, publish loop, on a thread of its own
//! so the learning never waits on HTTP and HTTP never waits on it.
//!
//! Per partition, readings are collected into a micro-batch (up to
//! `max_readings`, or `max_linger_ms` after the first). A batch is predicted
//! and learned by the pipeline, every outcome is produced (prediction or
//! dead letter), and the batch's offset is committed only once the broker
//! has acknowledged all of them. The live model for HTTP is swapped in
//! after each batch.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ModelConfig};
use crate::kafka::{self, ConsumerCtx, InFlight, ProducerCtx};
use crate::pipeline::{Input, Outcome, Pipeline};
use crate::stats::ModelStats;

/// What the worker shares with the HTTP API.
pub struct ModelHandle {
    /// The model's config.
    pub config: ModelConfig,
    /// The live pipeline, swapped after every micro-batch.
    pub live: ArcSwap<Pipeline>,
    /// Counters.
    pub stats: ModelStats,
    /// The consumer's context (assignment, lag), once the worker has started.
    pub consumer: std::sync::OnceLock<Arc<ConsumerCtx>>,
}

impl ModelHandle {
    /// A handle with a fresh pipeline.
    pub fn new(config: ModelConfig) -> Result<ModelHandle> {
        let pipeline = Pipeline::new(&config)?;
        Ok(ModelHandle {
            config,
            live: ArcSwap::from_pointee(pipeline),
            stats: ModelStats::default(),
            consumer: std::sync::OnceLock::new(),
        })
    }

    /// True once the worker consumes from at least one partition.
    pub fn ready(&self) -> bool {
        self.consumer
            .get()
            .is_some_and(|c| c.assigned.load(Ordering::Relaxed))
    }

    /// Consumer lag, or -1 when not known yet.
    pub fn lag(&self) -> i64 {
        self.consumer
            .get()
            .map_or(-1, |c| c.lag.load(Ordering::Relaxed))
    }
}

#[derive(Serialize)]
struct Source<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct PredictionMessage<'a> {
    model: &'a str,
    model_version: u64,
    key: Option<&'a str>,
    prediction: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<i64>,
    source: Source<'a>,
}

struct Batch<'c> {
    messages: Vec<BorrowedMessage<'c>>,
    started: Instant,
}

/// Runs one model until `cancel` trips or a fatal error occurs.
pub fn run(config: &Config, handle: &ModelHandle, cancel: &CancellationToken) -> Result<()> {
    let m = &handle.config;
    let input = m.input_topic()?.to_owned();
    let output = m.output_topic();
    let dead = m.dead_letter_topic();
    let group = format!("{}.{}", config.service.group_id, m.name);
    let ctx = ConsumerCtx {
        model: m.name.clone(),
        lag: (-1).into(),
        ..Default::default()
    };
    let consumer: BaseConsumer<ConsumerCtx> = kafka::consumer_config(&config.kafka, &group)
        .create_with_context(ctx)
        .context("cannot create the Kafka consumer; check the [kafka] properties")?;
    let _ = handle.consumer.set(consumer.context().clone());
    consumer
        .subscribe(&[input.as_str()])
        .with_context(|| format!("cannot subscribe to {input}"))?;
    let producer: BaseProducer<ProducerCtx> = kafka::producer_config(&config.kafka)
        .create_with_context(ProducerCtx::default())
        .context("cannot create the Kafka producer; check the [kafka] properties")?;
    tracing::info!(model = %m.name, %input, %output, %dead, group, "consuming");

    let mut pipeline = Pipeline::clone(&handle.live.load());
    let linger = Duration::from_millis(m.batch.max_linger_ms);
    let max = m.batch.max_readings;
    let mut batches: HashMap<i32, Batch<'_>> = HashMap::new();
    let mut seq = 0usize;
    let mut buf = Vec::with_capacity(256);
    let mut to_commit: HashMap<i32, i64> = HashMap::new();
    let mut last_commit = Instant::now();
    let mut work = Work {
        handle,
        pipeline: &mut pipeline,
        producer: &producer,
        input: &input,
        output: &output,
        dead: &dead,
        buf: &mut buf,
    };
    let result = (|| -> Result<()> {
        while !cancel.is_cancelled() {
            let timeout = if batches.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(1)
            };
            match consumer.poll(timeout) {
                Some(Ok(msg)) => {
                    handle.stats.consumed.fetch_add(1, Ordering::Relaxed);
                    let p = msg.partition();
                    let b = batches.entry(p).or_insert_with(|| Batch {
                        messages: Vec::with_capacity(max),
                        started: Instant::now(),
                    });
                    b.messages.push(msg);
                    if b.messages.len() >= max {
                        if let Some(b) = batches.remove(&p) {
                            work.process(p, b, &mut seq)?;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(model = %m.name, error = %e, "consume error (retrying)")
                }
                None => {}
            }
            // revoked partitions: drop what we hold, the new owner reads it again
            if let Ok(mut revoked) = consumer.context().revoked.lock() {
                for p in revoked.drain(..) {
                    batches.remove(&p);
                    to_commit.remove(&p);
                }
            }
            let due: Vec<i32> = batches
                .iter()
                .filter(|(_, b)| b.started.elapsed() >= linger)
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                if let Some(b) = batches.remove(&p) {
                    work.process(p, b, &mut seq)?;
                }
            }
            producer.poll(Duration::ZERO);
            to_commit.extend(producer.context().drain_acked()?);
            if !to_commit.is_empty() && last_commit.elapsed() >= Duration::from_millis(100) {
                commit(&consumer, &input, &mut to_commit, CommitMode::Async)?;
                last_commit = Instant::now();
            }
        }
        // shutdown: finish what is buffered, flush, commit
        let pending: Vec<i32> = batches.keys().copied().collect();
        for p in pending {
            if let Some(b) = batches.remove(&p) {
                work.process(p, b, &mut seq)?;
            }
        }
        Ok(())
    })();
    let flushed = producer.flush(Duration::from_millis(config.service.shutdown_timeout_ms));
    let acked = producer.context().drain_acked();
    match (&result, flushed, acked) {
        (Ok(()), Ok(()), Ok(acked)) => {
            to_commit.extend(acked);
            commit(&consumer, &input, &mut to_commit, CommitMode::Sync)?;
            tracing::info!(model = %m.name, version = pipeline.version(), "stopped cleanly");
        }
        (_, Err(e), _) => {
            tracing::error!(model = %m.name, error = %e, "could not flush every output; uncommitted readings will be processed again")
        }
        (_, _, Err(e)) => {
            tracing::error!(model = %m.name, error = %e, "delivery failed; uncommitted readings will be processed again")
        }
        _ => {}
    }
    result
}

fn commit(
    consumer: &BaseConsumer<ConsumerCtx>,
    topic: &str,
    offsets: &mut HashMap<i32, i64>,
    mode: CommitMode,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets.drain() {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .context("cannot build the offset list to commit")?;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => Ok(()),
        // a rebalance took the partition away: its new owner starts from the last commit
        Err(KafkaError::ConsumerCommit(
            RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::RebalanceInProgress,
        )) => {
            tracing::warn!(
                topic,
                "commit refused during a rebalance; the readings will be processed again"
            );
            Ok(())
        }
        Err(e) => Err(e).context("offset commit failed"),
    }
}

struct Work<'a> {
    handle: &'a ModelHandle,
    pipeline: &'a mut Pipeline,
    producer: &'a BaseProducer<ProducerCtx>,
    input: &'a str,
    output: &'a str,
    dead: &'a str,
    buf: &'a mut Vec<u8>,
}

impl Work<'_> {
    fn process(&mut self, partition: i32, batch: Batch<'_>, seq: &mut usize) -> Result<()> {
        let started = Instant::now();
        let inputs: Vec<Input<'_>> = batch
            .messages
            .iter()
            .map(|m| Input {
                key: kafka::key_str(m),
                bytes: m.payload().unwrap_or(&[]),
            })
            .collect();
        let version = self.pipeline.version();
        let mut outcomes = Vec::with_capacity(inputs.len());
        let stats = self.pipeline.process(&inputs, &mut outcomes);
        let last = batch.messages.last().map_or(0, |m| m.offset());
        *seq += 1;
        let this = *seq;
        if let Ok(mut map) = self.producer.context().in_flight.lock() {
            map.insert(
                this,
                InFlight {
                    partition,
                    next_offset: last + 1,
                    remaining: inputs.len(),
                    error: None,
                },
            );
        }
        let name = self.pipeline.name().to_owned();
        let classification = self.pipeline.task() == models::Task::Classification;
        for ((msg, input), outcome) in batch.messages.iter().zip(&inputs).zip(outcomes.iter()) {
            match outcome {
                Outcome::Predicted(p) => {
                    self.buf.clear();
                    let (prediction, probability) = if classification {
                        (
                            if p.prediction >= 0.5 { 1.0 } else { 0.0 },
                            Some(p.prediction),
                        )
                    } else {
                        (p.prediction, None)
                    };
                    serde_json::to_writer(
                        &mut *self.buf,
                        &PredictionMessage {
                            model: &name,
                            model_version: version,
                            key: p.key.as_deref(),
                            prediction,
                            probability,
                            label: p.label,
                            event_time: p.event_time,
                            source: Source {
                                topic: self.input,
                                partition,
                                offset: msg.offset(),
                            },
                        },
                    )?;
                    let mut record =
                        BaseRecord::with_opaque_to(self.output, this).payload(self.buf.as_slice());
                    if let Some(k) = msg.key() {
                        record = record.key(k);
                    }
                    send(self.producer, record)?;
                }
                Outcome::Invalid(e) => {
                    let offset = msg.offset().to_string();
                    let part = partition.to_string();
                    let reason = e.to_string();
                    let headers = OwnedHeaders::new()
                        .insert(Header {
                            key: "streamfit.error",
                            value: Some(reason.as_str()),
                        })
                        .insert(Header {
                            key: "streamfit.field",
                            value: e.field(),
                        })
                        .insert(Header {
                            key: "streamfit.model",
                            value: Some(name.as_str()),
                        })
                        .insert(Header {
                            key: "streamfit.source.topic",
                            value: Some(self.input),
                        })
                        .insert(Header {
                            key: "streamfit.source.partition",
                            value: Some(part.as_str()),
                        })
                        .insert(Header {
                            key: "streamfit.source.offset",
                            value: Some(offset.as_str()),
                        });
                    let mut record = BaseRecord::with_opaque_to(self.dead, this)
                        .payload(input.bytes)
                        .headers(headers);
                    if let Some(k) = msg.key() {
                        record = record.key(k);
                    }
                    send(self.producer, record)?;
                    tracing::debug!(model = %name, partition, offset = msg.offset(), error = %e, "dead-lettered");
                }
            }
        }
        let s = &self.handle.stats;
        s.predicted
            .fetch_add(stats.predicted as u64, Ordering::Relaxed);
        s.learned.fetch_add(stats.learned as u64, Ordering::Relaxed);
        s.dead_lettered
            .fetch_add(stats.invalid as u64, Ordering::Relaxed);
        s.observe_batch(started.elapsed().as_secs_f64());
        if stats.learned > 0 {
            self.handle.live.store(Arc::new(self.pipeline.clone()));
        }
        Ok(())
    }
}

fn send<'r>(
    producer: &BaseProducer<ProducerCtx>,
    mut record: BaseRecord<'r, [u8], [u8], usize>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("cannot queue an output message"),
        }
    }
}
