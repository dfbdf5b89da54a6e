//! One model's consume, predict, learn, publish loop, on a thread of its own
//! so the learning never waits on HTTP and HTTP never waits on it.
//!
//! Model state belongs to an input partition: each partition this instance
//! owns has a pipeline of its own, restored from the partition's latest
//! checkpoint when the partition is assigned. Per partition, readings are
//! collected into a micro-batch (up to `max_readings`, or `max_linger_ms`
//! after the first), predicted and learned test-then-train, and every
//! outcome is produced (prediction or dead letter).
//!
//! Exactly once (the default): every `commit_interval_ms` one Kafka
//! transaction carries the outputs, a checkpoint of every partition that
//! moved (to the compacted checkpoint topic) and the consumed offsets. If a
//! transaction has to be aborted, the partitions roll back to their last
//! checkpoint and the consumer seeks back to its offset, so a reading's
//! effects are committed exactly once. At least once (`exactly_once =
//! false`): offsets are committed once the outputs are acknowledged, and a
//! restart begins with fresh models.
//!
//! The live models for HTTP are swapped in after each batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backfill::{self, Shadow};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{Config, ModelConfig};
use crate::kafka::{self, ConsumerCtx, InFlight, ProducerCtx};
use crate::live::Live;
use crate::pipeline::{Input, Outcome, Pipeline, PipelineSnapshot};
use crate::stats::ModelStats;

/// What the worker shares with the HTTP API.
pub struct ModelHandle {
    /// The model's config.
    pub config: ModelConfig,
    /// The live pipelines, swapped after every micro-batch.
    pub live: ArcSwap<Live>,
    /// Counters.
    pub stats: ModelStats,
    /// The consumer's context (assignment, lag), once the worker has started.
    pub consumer: std::sync::OnceLock<Arc<ConsumerCtx>>,
    /// False while a transaction cannot be committed (broker down, say).
    pub committing: AtomicBool,
    /// The consumer's assignment count whose partitions are all restored.
    pub restored: AtomicU64,
    /// Replay progress per partition.
    pub progress: std::sync::Mutex<Progress>,
    /// A live backfill asked for over HTTP, and its status.
    pub backfill: std::sync::Mutex<backfill::Slot>,
    /// The consumer group, once the worker has started.
    pub group: std::sync::OnceLock<String>,
    /// Which instance owns which input partition (refreshed by the server).
    pub directory: ArcSwap<crate::routing::Directory>,
}

impl ModelHandle {
    /// Shows HTTP readers a copy of partition `p`'s pipeline, which has
    /// consumed up to `next_offset`.
    fn publish(&self, p: i32, pipeline: &Pipeline, next_offset: i64) {
        let live = self.live.load();
        self.live.store(Arc::new(live.with(
            p,
            Arc::new(pipeline.clone()),
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
            consumer: std::sync::OnceLock::new(),
            committing: AtomicBool::new(true),
            restored: AtomicU64::new(u64::MAX),
            progress: std::sync::Mutex::new(BTreeMap::new()),
            backfill: std::sync::Mutex::new(backfill::Slot::default()),
            group: std::sync::OnceLock::new(),
            directory: ArcSwap::from_pointee(crate::routing::Directory::default()),
        })
    }

    /// Why the model is not ready, or `None` when it consumes from at least
    /// one partition, a broker is up and its commits go through.
    pub fn not_ready(&self) -> Option<&'static str> {
        let Some(c) = self.consumer.get() else {
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

/// One input partition this instance owns.
struct Part<'c> {
    pipeline: Pipeline,
    batch: Vec<BorrowedMessage<'c>>,
    started: Instant,
    /// Next offset expected from the consumer (-1: take whatever comes).
    position: i64,
    /// Offset after the last processed reading.
    processed_to: i64,
    /// Processed since the last commit.
    dirty: bool,
}

/// A partition's state as of the last committed transaction.
struct Committed {
    next_offset: i64,
    snapshot: Option<PipelineSnapshot>,
}

/// A replay: the given partitions of a topic from a start offset up to an
/// end offset, learned by fresh models, handed over through checkpoints and
/// the group's offsets in the last transaction.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    /// The topic to read (the model's input topic, or one with the same readings).
    pub topic: String,
    /// First offset per partition.
    pub start: BTreeMap<i32, i64>,
    /// Offset to stop before, per partition.
    pub end: BTreeMap<i32, i64>,
    /// Publish predictions and dead letters, as the service would.
    pub publish: bool,
    /// Every partition's model starts from this (a file learned first).
    pub seed: Option<PipelineSnapshot>,
}

/// Replay progress per partition: (start, processed up to, end).
pub type Progress = BTreeMap<i32, (i64, i64, i64)>;

/// Runs one model until `cancel` trips or a fatal error occurs.
pub fn run(config: &Config, handle: &ModelHandle, cancel: &CancellationToken) -> Result<()> {
    run_with(config, handle, cancel, None)
}

/// Runs a replay to its end offsets (or until `cancel` trips).
pub fn replay(
    config: &Config,
    handle: &ModelHandle,
    cancel: &CancellationToken,
    plan: ReplayPlan,
) -> Result<()> {
    if !config.service.exactly_once {
        bail!(
            "a replay hands its models over through checkpoints; set `service.exactly_once = true`"
        );
    }
    run_with(config, handle, cancel, Some(plan))
}

fn run_with(
    config: &Config,
    handle: &ModelHandle,
    cancel: &CancellationToken,
    replay: Option<ReplayPlan>,
) -> Result<()> {
    let m = &handle.config;
    let input = match &replay {
        Some(plan) => plan.topic.clone(),
        None => m.input_topic()?.to_owned(),
    };
    let group = format!("{}.{}", config.service.group_id, m.name);
    let _ = handle.group.set(group.clone());
    // scoped by the group: two deployments never fence each other, and a
    // restarted instance (same name) fences its own zombie
    let identity = config.service.client_identity(&group);
    let ctx = ConsumerCtx {
        model: m.name.clone(),
        lag: (-1).into(),
        ..Default::default()
    };
    let mut cc = kafka::consumer_config(&config.kafka, &group);
    if replay.is_none() {
        if !config.kafka.contains_key("group.instance.id") {
            cc.set("group.instance.id", &identity);
        }
        // how the other instances find this one's HTTP API (routing.rs)
        cc.set(
            "client.id",
            crate::routing::client_id(
                config.kafka.get("client.id").map(String::as_str),
                &config.service.instance(),
                &config.service.advertised(),
            ),
        );
    }
    let consumer: BaseConsumer<ConsumerCtx> = cc
        .create_with_context(ctx)
        .context("cannot create the Kafka consumer; check the [kafka] properties")?;
    let _ = handle.consumer.set(consumer.context().clone());
    let eos = config.service.exactly_once;
    let mut pc = kafka::producer_config(&config.kafka);
    if eos {
        pc.set("transactional.id", &identity);
    }
    let producer: BaseProducer<ProducerCtx> = pc
        .create_with_context(ProducerCtx::default())
        .context("cannot create the Kafka producer; check the [kafka] properties")?;
    let init = || -> Result<()> {
        if eos {
            // fences any earlier instance with this transactional.id and
            // aborts its open transaction, before its checkpoints are read
            retry(handle, cancel, "initialising transactions", || {
                producer.init_transactions(Duration::from_secs(30))
            })?;
        }
        Ok(())
    };
    match &replay {
        None => {
            init()?;
            consumer
                .subscribe(&[input.as_str()])
                .with_context(|| format!("cannot subscribe to {input}"))?
        }
        Some(plan) => {
            let mut tpl = TopicPartitionList::new();
            for (&p, &o) in &plan.start {
                if plan.end.get(&p).is_some_and(|&e| e > o) {
                    tpl.add_partition_offset(&input, p, Offset::Offset(o))
                        .context("cannot build the replay assignment")?;
                }
            }
            // assigned first, the fetcher fills the queue while the
            // transactions initialise (nothing is read before they are)
            consumer
                .assign(&tpl)
                .with_context(|| format!("cannot assign the partitions of {input}"))?;
            init()?;
        }
    }
    tracing::info!(model = %m.name, %input, output = %m.output_topic(), dead = %m.dead_letter_topic(), %group, exactly_once = eos, "consuming");

    let mut w = Worker {
        group,
        cancel,
        config,
        handle,
        consumer: &consumer,
        producer: &producer,
        output: m.output_topic(),
        dead: m.dead_letter_topic(),
        input,
        eos,
        parts: HashMap::new(),
        committed: HashMap::new(),
        scanned: u64::MAX,
        in_txn: false,
        txn_started: Instant::now(),
        seq: 0,
        to_commit: HashMap::new(),
        last_commit: Instant::now(),
        buf: Vec::with_capacity(256),
        replay,
        shadow: None,
        commits: None,
        in_flight: None,
        held: Vec::new(),
    };
    if let Some(plan) = w.replay.clone() {
        if let Ok(mut progress) = handle.progress.lock() {
            *progress = plan
                .start
                .iter()
                .map(|(&p, &s)| (p, (s, s, plan.end.get(&p).copied().unwrap_or(s))))
                .collect();
        }
        for (&p, &s) in &plan.start {
            if plan.seed.is_some() || plan.end.get(&p).is_some_and(|&e| e > s) {
                w.open(p)?;
            }
        }
    }
    std::thread::scope(|scope| {
        if eos {
            let (requests_tx, requests) = mpsc::channel();
            let (results, results_rx) = mpsc::channel();
            let shutdown = Duration::from_millis(config.service.shutdown_timeout_ms);
            let producer = &producer;
            std::thread::Builder::new()
                .name(format!("commit-{}", m.name))
                .spawn_scoped(scope, move || {
                    committer(producer, handle, cancel, shutdown, requests, results)
                })
                .context("cannot start the committer thread")?;
            w.commits = Some((requests_tx, results_rx));
        }
        let result = w.consume(cancel);
        let result = w.finish(result);
        // closes the request channel: the committer ends
        w.commits = None;
        // closing the consumer revokes what is left: nothing to finish
        consumer.context().closing.store(true, Ordering::Relaxed);
        if let Some(r) = consumer
            .context()
            .revoking
            .lock()
            .ok()
            .and_then(|mut r| r.take())
        {
            let _ = ConsumerCtx::release(&consumer, &r.partitions);
        }
        result
    })
}

/// Calls a transactional API until it succeeds, backing off while it fails
/// with a retriable error; gives up when cancelled.
fn retry(
    handle: &ModelHandle,
    cancel: &CancellationToken,
    what: &str,
    f: impl FnMut() -> KafkaResult<()>,
) -> Result<()> {
    match retry_txn(handle, cancel, Duration::ZERO, what, f)? {
        TxnOutcome::Committed => Ok(()),
        TxnOutcome::NeedsAbort(why) => bail!("{why}"),
    }
}

/// What became of a transaction handed to the committer.
enum TxnOutcome {
    Committed,
    /// It cannot be saved: abort it and roll back (the error says why).
    NeedsAbort(String),
}

/// A commit for the committer thread: the offsets to send to the open
/// transaction, then commit it.
type CommitRequest = (TopicPartitionList, rdkafka::consumer::ConsumerGroupMetadata);

/// Exactly once: commits transactions on a thread of its own, so that the
/// model's thread keeps consuming, predicting and learning while the broker
/// writes the transaction markers (outputs meanwhile are held, see
/// `Worker::held`). Retries while the broker is away.
fn committer(
    producer: &BaseProducer<ProducerCtx>,
    handle: &ModelHandle,
    cancel: &CancellationToken,
    shutdown_timeout: Duration,
    requests: mpsc::Receiver<CommitRequest>,
    results: mpsc::Sender<Result<TxnOutcome>>,
) {
    let timeout = Duration::from_secs(10);
    for (tpl, group) in requests {
        let outcome = retry_txn(
            handle,
            cancel,
            shutdown_timeout,
            "sending offsets to the transaction",
            || producer.send_offsets_to_transaction(&tpl, &group, timeout),
        )
        .and_then(|o| match o {
            TxnOutcome::Committed => retry_txn(
                handle,
                cancel,
                shutdown_timeout,
                "committing the transaction",
                || producer.commit_transaction(timeout),
            ),
            abort => Ok(abort),
        });
        if results.send(outcome).is_err() {
            return;
        }
    }
}

/// Runs a transactional call: retries while it fails retriably (broker
/// away), reports when the transaction cannot be saved.
fn retry_txn(
    handle: &ModelHandle,
    cancel: &CancellationToken,
    shutdown_timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> KafkaResult<()>,
) -> Result<TxnOutcome> {
    let mut backoff = Duration::from_millis(100);
    let mut gave_up_at: Option<Instant> = None;
    loop {
        let e = match f() {
            Ok(()) => {
                handle.committing.store(true, Ordering::Relaxed);
                return Ok(TxnOutcome::Committed);
            }
            Err(e) => e,
        };
        if matches!(&e, KafkaError::Transaction(t) if t.txn_requires_abort()) {
            return Ok(TxnOutcome::NeedsAbort(format!("{what} failed: {e}")));
        }
        let retriable = match &e {
            KafkaError::Transaction(t) => t.is_retriable() && !t.is_fatal(),
            // commit flushes first: outputs not acknowledged in time
            KafkaError::Flush(_) => true,
            _ => false,
        };
        if !retriable {
            return Err(e).with_context(|| format!("{what} failed"));
        }
        handle.committing.store(false, Ordering::Relaxed);
        tracing::warn!(model = %handle.config.name, error = %e, "{what} failed; retrying in {backoff:?}");
        if cancel.is_cancelled() {
            let t = *gave_up_at.get_or_insert_with(Instant::now);
            if t.elapsed() > shutdown_timeout {
                bail!("{what}: still failing at shutdown; the uncommitted readings will be processed again");
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// An output produced while a commit was in flight, sent once the next
/// transaction opens.
struct Held {
    dead: bool,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    seq: usize,
}

/// Outputs held beyond this wait for the commit in flight (backpressure
/// while the broker is away).
const MAX_HELD: usize = 500_000;

struct Worker<'c> {
    group: String,
    cancel: &'c CancellationToken,
    config: &'c Config,
    handle: &'c ModelHandle,
    consumer: &'c BaseConsumer<ConsumerCtx>,
    producer: &'c BaseProducer<ProducerCtx>,
    input: String,
    output: String,
    dead: String,
    eos: bool,
    parts: HashMap<i32, Part<'c>>,
    /// Exactly once: each owned partition's last committed state.
    committed: HashMap<i32, Committed>,
    /// The assignment count when the checkpoints were last read.
    scanned: u64,
    in_txn: bool,
    txn_started: Instant,
    /// At least once: the sequence number of the last produced batch.
    seq: usize,
    /// At least once: acknowledged offsets not committed yet.
    to_commit: HashMap<i32, i64>,
    last_commit: Instant,
    buf: Vec<u8>,
    replay: Option<ReplayPlan>,
    /// A live backfill in progress.
    shadow: Option<Shadow>,
    /// Exactly once: the committer thread's request and result channels.
    commits: Option<(
        mpsc::Sender<CommitRequest>,
        mpsc::Receiver<Result<TxnOutcome>>,
    )>,
    /// The commit in flight: what each partition's checkpoint in it holds.
    in_flight: Option<Vec<(i32, i64, PipelineSnapshot)>>,
    /// Outputs of batches processed while a commit was in flight.
    held: Vec<Held>,
}

/// Messages taken from the consumer's queue in one go between housekeeping.
const DRAIN: usize = 256;

/// The longest a live backfill learns between two live micro-batches.
const BACKFILL_SLICE: Duration = Duration::from_millis(20);

/// The shortest interval between a replay's transactions.
const REPLAY_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

impl<'c> Worker<'c> {
    fn commit_interval(&self) -> Duration {
        let configured = Duration::from_millis(self.config.service.commit_interval_ms);
        if self.replay.is_some() {
            // nobody reads a replay's outputs while it runs, and every
            // commit stalls the loop on a broker round trip: commit only
            // now and then, so that a crash loses a few seconds at most
            configured.max(REPLAY_COMMIT_INTERVAL)
        } else {
            configured
        }
    }

    fn consume(&mut self, cancel: &CancellationToken) -> Result<()> {
        let linger = Duration::from_millis(self.handle.config.batch.max_linger_ms);
        while !cancel.is_cancelled() {
            let waiting = self.shadow.is_some() || self.parts.values().any(|p| !p.batch.is_empty());
            let timeout = Duration::from_millis(if waiting { 1 } else { 100 });
            if self.replay_done() {
                break;
            }
            match self.consumer.poll(timeout) {
                Some(Ok(msg)) => {
                    self.accept(msg)?;
                    // take what is fetched already before the housekeeping
                    // below, which reads the clock
                    for _ in 0..DRAIN {
                        match self.consumer.poll(Duration::ZERO) {
                            Some(Ok(msg)) => self.accept(msg)?,
                            Some(Err(e)) => {
                                tracing::warn!(model = %self.handle.config.name, error = %e, "consume error (retrying)");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(model = %self.handle.config.name, error = %e, "consume error (retrying)")
                }
                None => {}
            }
            self.finish_revoked()?;
            self.open_assigned()?;
            let due: Vec<i32> = self
                .parts
                .iter()
                .filter(|(_, p)| !p.batch.is_empty() && p.started.elapsed() >= linger)
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                self.process(p)?;
            }
            if self.replay.is_none() {
                self.backfill_step()?;
            }
            self.producer.poll(Duration::ZERO);
            if self.eos {
                self.poll_commit(self.held.len() >= MAX_HELD)?;
                if self.in_txn && self.txn_started.elapsed() >= self.commit_interval() {
                    self.commit_transaction()?;
                }
            } else {
                self.to_commit
                    .extend(self.producer.context().drain_acked()?);
                if !self.to_commit.is_empty()
                    && self.last_commit.elapsed() >= self.commit_interval()
                {
                    self.commit_offsets(CommitMode::Async)?;
                    self.last_commit = Instant::now();
                }
            }
        }
        Ok(())
    }

    /// A replay is done once every partition is processed up to its end.
    fn replay_done(&self) -> bool {
        let Some(plan) = &self.replay else {
            return false;
        };
        plan.end.iter().all(|(p, &end)| {
            let start = plan.start.get(p).copied().unwrap_or(end);
            start >= end || self.parts.get(p).is_some_and(|x| x.processed_to >= end)
        })
    }

    /// Shutdown: process what is buffered, then commit (or flush and commit).
    fn finish(&mut self, result: Result<()>) -> Result<()> {
        let name = self.handle.config.name.clone();
        let result = result.and_then(|()| {
            let pending: Vec<i32> = self.parts.keys().copied().collect();
            for p in pending {
                self.process(p)?;
            }
            Ok(())
        });
        let timeout = Duration::from_millis(self.config.service.shutdown_timeout_ms);
        if self.eos {
            if result.is_ok() {
                // the commit in flight, then one for what came after it
                self.poll_commit(true)?;
                if !self.in_txn && self.parts.values().any(|x| x.dirty) {
                    self.begin()?;
                }
                self.commit_transaction()?;
                self.poll_commit(true)?;
                tracing::info!(model = %name, "stopped cleanly");
            } else if self.in_flight.is_some() {
                // let the commit in flight end, keep nothing after it
                let _ = self.poll_commit(true);
                if self.in_txn {
                    let _ = abort(
                        self.producer,
                        self.cancel,
                        timeout.as_millis() as u64,
                        &name,
                    );
                }
            } else if self.in_txn {
                // nothing of the open transaction becomes visible
                let _ = abort(
                    self.producer,
                    self.cancel,
                    timeout.as_millis() as u64,
                    &name,
                );
            }
            return result;
        }
        let flushed = self.producer.flush(timeout);
        let acked = self.producer.context().drain_acked();
        match (&result, flushed, acked) {
            (Ok(()), Ok(()), Ok(acked)) => {
                self.to_commit.extend(acked);
                self.commit_offsets(CommitMode::Sync)?;
                tracing::info!(model = %name, "stopped cleanly");
            }
            (_, Err(e), _) => {
                tracing::error!(model = %name, error = %e, "could not flush every output; uncommitted readings will be processed again")
            }
            (_, _, Err(e)) => {
                tracing::error!(model = %name, error = %e, "delivery failed; uncommitted readings will be processed again")
            }
            _ => {}
        }
        result
    }

    /// Takes one message into its partition's batch.
    fn accept(&mut self, msg: BorrowedMessage<'c>) -> Result<()> {
        self.handle.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let p = msg.partition();
        if !self.parts.contains_key(&p) {
            self.open(p)?;
        }
        let max = self.handle.config.batch.max_readings;
        let Some(part) = self.parts.get_mut(&p) else {
            bail!("partition {p} has no state after opening it");
        };
        let offset = msg.offset();
        if let Some(end) = self.replay.as_ref().and_then(|r| r.end.get(&p)) {
            if offset >= *end {
                // past the replay's end: leave it for the service
                return Ok(());
            }
        }
        if part.position >= 0 && offset < part.position {
            // already in the checkpoint: learned before, not again
            return Ok(());
        }
        if part.position >= 0 && offset > part.position && part.processed_to == part.position {
            tracing::warn!(model = %self.handle.config.name, partition = p, expected = part.position, offset, "the consumer starts past the checkpoint: the readings between were skipped (were the group's offsets moved?)");
        }
        if part.position < 0 {
            part.processed_to = offset;
            if let Some(c) = self.committed.get_mut(&p) {
                c.next_offset = offset;
            }
        }
        part.position = offset + 1;
        if part.batch.is_empty() {
            part.started = Instant::now();
        }
        part.batch.push(msg);
        let last_of_replay = self
            .replay
            .as_ref()
            .and_then(|r| r.end.get(&p))
            .is_some_and(|&end| offset + 1 >= end);
        if part.batch.len() >= max || last_of_replay {
            self.process(p)?;
        }
        Ok(())
    }

    /// After an assignment: restores every newly assigned partition now, so
    /// that HTTP answers from the restored models before the first reading.
    fn open_assigned(&mut self) -> Result<()> {
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
    fn open(&mut self, p: i32) -> Result<()> {
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
                    snapshot: None,
                },
            );
        } else if self.eos {
            let assignments = self.consumer.context().assignments.load(Ordering::Relaxed);
            if assignments != self.scanned {
                let started = Instant::now();
                let found = checkpoint::read_latest(
                    &self.config.kafka,
                    &self.config.service.checkpoint_topic,
                    &self.group,
                    &self.input,
                    Duration::from_secs(120),
                )?;
                tracing::info!(model = %m.name, partitions = ?found.keys().collect::<Vec<_>>(), seconds = started.elapsed().as_secs_f64(), "checkpoints read");
                for (q, ck) in found {
                    self.committed.insert(
                        q,
                        Committed {
                            next_offset: ck.next_offset,
                            snapshot: Some(ck.pipeline),
                        },
                    );
                }
                self.scanned = assignments;
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
                            snapshot: None,
                        },
                    );
                }
            }
        }
        self.handle.publish(p, &pipeline, position);
        self.parts.insert(
            p,
            Part {
                pipeline,
                batch: Vec::with_capacity(self.handle.config.batch.max_readings),
                started: Instant::now(),
                position,
                processed_to: position,
                // a seeded partition has news even without a reading
                dirty: seeded,
            },
        );
        Ok(())
    }

    /// Where the live model stands: the next offset it learns, per owned
    /// partition (-1 while not known).
    fn live_positions(&self) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .map(|(p, x)| {
                let at = if x.processed_to >= 0 {
                    x.processed_to
                } else {
                    self.committed.get(p).map_or(-1, |c| c.next_offset)
                };
                (*p, at)
            })
            .collect()
    }

    /// Starts a backfill asked for over HTTP, advances a running one by a
    /// slice of time, and swaps it in once it has caught up.
    fn backfill_step(&mut self) -> Result<()> {
        let slot = &self.handle.backfill;
        let lock = |slot: &'c std::sync::Mutex<backfill::Slot>| {
            slot.lock()
                .map_err(|_| anyhow::anyhow!("the backfill status lock is poisoned"))
        };
        let fail = |message: String| -> Result<()> {
            tracing::warn!(model = %self.handle.config.name, error = %message, "backfill failed");
            let mut s = lock(slot)?;
            if let Some(st) = s.status.as_mut() {
                st.state = backfill::State::Failed;
                st.error = Some(message);
            }
            Ok(())
        };
        if self.shadow.is_none() {
            let (from, label) = {
                let mut s = lock(slot)?;
                let Some(from) = s.request.take() else {
                    return Ok(());
                };
                let label = s.status.as_ref().map(|st| st.from.clone());
                (from, label.unwrap_or_default())
            };
            let live = self.live_positions();
            let owned: Vec<i32> = live.keys().copied().collect();
            if owned.is_empty() {
                return fail("this instance owns no partition of the input topic yet; try again once /readyz answers 200".into());
            }
            match Shadow::start(
                self.config,
                &self.handle.config,
                &self.group,
                &self.input,
                &owned,
                &from,
                label,
            ) {
                Ok(s) => {
                    tracing::info!(model = %self.handle.config.name, partitions = ?owned, "backfill started");
                    self.shadow = Some(s);
                }
                Err(e) => return fail(format!("{e:#}")),
            }
        }
        let live = self.live_positions();
        let Some(shadow) = self.shadow.as_mut() else {
            return Ok(());
        };
        if !shadow.partitions().eq(live.keys().copied()) {
            self.shadow = None;
            return fail("the partition assignment changed during the backfill (an instance joined or left the group); start it again".into());
        }
        let caught_up = match shadow.step(&live, BACKFILL_SLICE) {
            Ok(c) => c,
            Err(e) => {
                self.shadow = None;
                return fail(format!("{e:#}"));
            }
        };
        let status = shadow.status(&live);
        if !caught_up {
            lock(slot)?.status = Some(status);
            return Ok(());
        }
        let Some(shadow) = self.shadow.take() else {
            return Ok(());
        };
        if self.eos && !self.in_txn && self.in_flight.is_none() {
            // the swapped-in models are checkpointed in the next commit (or
            // in the one after the commit in flight)
            self.begin()?;
        }
        let mut next = (**self.handle.live.load()).clone();
        for (p, mut pipeline) in shadow.into_pipelines() {
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            // versions only go up, whatever the shadow's count of batches
            pipeline.raise_version_past(part.pipeline.version());
            part.pipeline = pipeline;
            part.dirty = true;
            next = next.with(p, Arc::new(part.pipeline.clone()), part.processed_to);
        }
        // one store: HTTP sees every partition's new model at once
        self.handle.live.store(Arc::new(next));
        let mut status = status;
        status.state = backfill::State::Swapped;
        tracing::info!(model = %self.handle.config.name, readings = status.readings, seconds = status.seconds, "backfill caught up and swapped in");
        lock(slot)?.status = Some(status);
        Ok(())
    }

    /// A revocation: finishes the revoked partitions' open work before they
    /// change hands, then releases them. Their buffered readings are
    /// processed and everything is committed in one transaction, so the new
    /// owner starts exactly where this instance stopped; if that commit
    /// fails (or the partitions were lost, so it cannot succeed), the open
    /// transaction is aborted and nothing of it becomes visible: the new
    /// owner starts from the last committed checkpoint.
    fn finish_revoked(&mut self) -> Result<()> {
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
        if self.eos {
            // settle the commit in flight: what it saved stays saved
            self.poll_commit(true)?;
            let open_work =
                self.in_txn || self.parts.values().any(|x| x.dirty || !x.batch.is_empty());
            if revocation.lost {
                if open_work {
                    tracing::warn!(model = %self.handle.config.name, partitions = ?revoked, "partitions lost (session timed out?): aborting their open work");
                    self.abort_and_roll_back()?;
                }
            } else if open_work {
                for &p in &revoked {
                    self.process(p)?;
                }
                if !self.in_txn && self.parts.values().any(|x| x.dirty) {
                    self.begin()?;
                }
                self.commit_transaction()?;
                self.poll_commit(true)?;
            }
        } else {
            for &p in &revoked {
                self.process(p)?;
            }
            let timeout = Duration::from_millis(self.config.service.shutdown_timeout_ms);
            if let Err(e) = self.producer.flush(timeout) {
                tracing::warn!(model = %self.handle.config.name, error = %e, "outputs of revoked partitions not all acknowledged; their new owner processes them again");
            }
            self.to_commit
                .extend(self.producer.context().drain_acked()?);
            if !revocation.lost {
                self.commit_offsets(CommitMode::Sync)?;
            }
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

    /// Predicts and learns a partition's batch and produces its outcomes.
    fn process(&mut self, partition: i32) -> Result<()> {
        if self
            .parts
            .get(&partition)
            .is_none_or(|x| x.batch.is_empty())
        {
            return Ok(());
        }
        if self.eos && !self.in_txn && self.in_flight.is_none() {
            self.begin()?;
        }
        // a commit in flight: the outputs wait for the next transaction
        let hold = self.eos && !self.in_txn;
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let started = Instant::now();
        let batch = std::mem::take(&mut part.batch);
        let inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|m| Input {
                key: kafka::key_str(m),
                bytes: m.payload().unwrap_or(&[]),
            })
            .collect();
        let version = part.pipeline.version();
        let mut outcomes = Vec::with_capacity(inputs.len());
        let stats = part.pipeline.process(&inputs, &mut outcomes);
        let last = batch.last().map_or(0, |m| m.offset());
        part.processed_to = last + 1;
        part.dirty = true;
        self.seq += 1;
        let this = self.seq;
        if !self.eos {
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
        }
        let out = Outputs {
            producer: self.producer,
            name: &self.handle.config.name,
            classification: part.pipeline.task() == models::Task::Classification,
            input: &self.input,
            output: &self.output,
            dead: &self.dead,
            partition,
            version,
            seq: this,
        };
        let publish = self.replay.as_ref().is_none_or(|r| r.publish);
        if publish {
            for ((msg, input), outcome) in batch.iter().zip(&inputs).zip(outcomes.iter()) {
                let held = if hold { Some(&mut self.held) } else { None };
                out.send(&mut self.buf, held, msg, input, outcome)?;
            }
        }
        if self.replay.is_some() {
            if let Ok(mut progress) = self.handle.progress.lock() {
                if let Some(e) = progress.get_mut(&partition) {
                    e.1 = last + 1;
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
        drop(outcomes);
        drop(inputs);
        // keep the batch's allocation for the next one
        let mut batch = batch;
        batch.clear();
        let learned = stats.learned > 0;
        if let Some(part) = self.parts.get_mut(&partition) {
            part.batch = batch;
            if learned {
                self.handle
                    .publish(partition, &part.pipeline, part.processed_to);
            }
        }
        Ok(())
    }

    /// Exactly once: checkpoints of the partitions that moved, the consumed
    /// offsets and the outputs since the last commit, in one transaction.
    fn commit_transaction(&mut self) -> Result<()> {
        if !self.in_txn {
            return Ok(());
        }
        let name = self.handle.config.name.clone();
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        for (&p, part) in self.parts.iter().filter(|(_, x)| x.dirty) {
            let ck = Checkpoint {
                format_version: checkpoint::FORMAT_VERSION,
                model: name.clone(),
                group: self.group.clone(),
                topic: self.input.clone(),
                partition: p,
                next_offset: part.processed_to,
                pipeline: part.pipeline.snapshot(),
            };
            self.buf.clear();
            serde_json::to_writer(&mut self.buf, &ck).context("cannot encode a checkpoint")?;
            let key = Checkpoint::key(&self.group, &self.input, p);
            send(
                self.producer,
                BaseRecord::with_opaque_to(&self.config.service.checkpoint_topic, 0)
                    .key(key.as_bytes())
                    .payload(self.buf.as_slice()),
            )?;
            tpl.add_partition_offset(&self.input, p, Offset::Offset(part.processed_to))
                .context("cannot build the offsets of the transaction")?;
            done.push((p, ck.next_offset, ck.pipeline));
        }
        let group = self
            .consumer
            .group_metadata()
            .context("the consumer has no group metadata to commit offsets with")?;
        let Some((requests, _)) = &self.commits else {
            bail!("exactly once without a committer thread");
        };
        requests
            .send((tpl, group))
            .map_err(|_| anyhow::anyhow!("the committer thread has stopped"))?;
        self.in_txn = false;
        for (p, _, _) in &done {
            if let Some(part) = self.parts.get_mut(p) {
                part.dirty = false;
            }
        }
        self.in_flight = Some(done);
        Ok(())
    }

    /// Takes the result of the commit in flight, waiting for it if `block`:
    /// records what it committed and opens the next transaction for the
    /// held outputs, or aborts and rolls back.
    fn poll_commit(&mut self, block: bool) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let Some((_, results)) = &self.commits else {
            return Ok(());
        };
        let result = if block {
            results
                .recv()
                .map_err(|_| anyhow::anyhow!("the committer thread has stopped"))?
        } else {
            match results.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    bail!("the committer thread has stopped")
                }
            }
        };
        let done = self.in_flight.take().unwrap_or_default();
        match result? {
            TxnOutcome::Committed => {
                self.handle.stats.commits.fetch_add(1, Ordering::Relaxed);
                for (p, next_offset, snapshot) in done {
                    self.committed.insert(
                        p,
                        Committed {
                            next_offset,
                            snapshot: Some(snapshot),
                        },
                    );
                }
                if !self.held.is_empty() || self.parts.values().any(|x| x.dirty) {
                    self.begin()?;
                    for h in std::mem::take(&mut self.held) {
                        let topic = if h.dead { &self.dead } else { &self.output };
                        let mut record = BaseRecord::with_opaque_to(topic.as_str(), h.seq)
                            .payload(h.payload.as_slice());
                        if let Some(k) = &h.key {
                            record = record.key(k.as_slice());
                        }
                        if let Some(headers) = h.headers {
                            record = record.headers(headers);
                        }
                        send(self.producer, record)?;
                    }
                }
            }
            TxnOutcome::NeedsAbort(why) => {
                tracing::warn!(model = %self.handle.config.name, error = %why, "aborting the transaction and rolling back to the last checkpoint");
                self.abort_and_roll_back()?;
            }
        }
        Ok(())
    }

    /// Opens a transaction.
    fn begin(&mut self) -> Result<()> {
        self.producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
        self.in_txn = true;
        self.txn_started = Instant::now();
        Ok(())
    }

    /// Aborts the open transaction and puts every partition back to its last
    /// checkpoint, the consumer back to its offset.
    fn abort_and_roll_back(&mut self) -> Result<()> {
        if self.in_flight.is_some() {
            bail!("internal error: a rollback while a commit is in flight");
        }
        self.held.clear();
        abort(
            self.producer,
            self.cancel,
            self.config.service.shutdown_timeout_ms,
            &self.handle.config.name,
        )?;
        self.in_txn = false;
        self.handle.stats.aborts.fetch_add(1, Ordering::Relaxed);
        let owned: Vec<i32> = self.parts.keys().copied().collect();
        let mut tpl = TopicPartitionList::new();
        for &p in &owned {
            if let Some(c) = self.committed.get(&p).filter(|c| c.next_offset >= 0) {
                tpl.add_partition_offset(&self.input, p, Offset::Offset(c.next_offset))
                    .context("cannot build the offsets to seek to")?;
            }
        }
        self.parts.clear();
        // the current assignment's checkpoints are already known
        self.scanned = self.consumer.context().assignments.load(Ordering::Relaxed);
        if tpl.count() > 0 {
            let sought = self
                .consumer
                .seek_partitions(tpl, Duration::from_secs(10))
                .context("cannot seek back to the last committed offsets")?;
            for e in sought.elements() {
                if let Err(err) = e.error() {
                    bail!(
                        "cannot seek partition {} back to offset {:?} after an abort: {err}; stopping so that a restart resumes from the last commit",
                        e.partition(),
                        e.offset()
                    );
                }
            }
        }
        for p in owned {
            self.open(p)?;
        }
        Ok(())
    }

    /// At least once: commits the acknowledged offsets.
    fn commit_offsets(&mut self, mode: CommitMode) -> Result<()> {
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

/// Everything needed to produce one batch's outcomes.
struct Outputs<'a> {
    producer: &'a BaseProducer<ProducerCtx>,
    name: &'a str,
    classification: bool,
    input: &'a str,
    output: &'a str,
    dead: &'a str,
    partition: i32,
    version: u64,
    seq: usize,
}

impl Outputs<'_> {
    /// Produces one output, or holds it when `held` is given.
    fn emit(
        &self,
        held: Option<&mut Vec<Held>>,
        dead: bool,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        if let Some(held) = held {
            held.push(Held {
                dead,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers,
                seq: self.seq,
            });
            return Ok(());
        }
        let topic = if dead { self.dead } else { self.output };
        let mut record = BaseRecord::with_opaque_to(topic, self.seq).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        send(self.producer, record)
    }

    fn send(
        &self,
        buf: &mut Vec<u8>,
        held: Option<&mut Vec<Held>>,
        msg: &BorrowedMessage<'_>,
        input: &Input<'_>,
        outcome: &Outcome<'_>,
    ) -> Result<()> {
        match outcome {
            Outcome::Predicted(p) => {
                buf.clear();
                let (prediction, probability) = if self.classification {
                    (
                        if p.prediction >= 0.5 { 1.0 } else { 0.0 },
                        Some(p.prediction),
                    )
                } else {
                    (p.prediction, None)
                };
                serde_json::to_writer(
                    &mut *buf,
                    &PredictionMessage {
                        model: self.name,
                        model_version: self.version,
                        key: p.key.as_deref(),
                        prediction,
                        probability,
                        label: p.label,
                        event_time: p.event_time,
                        source: Source {
                            topic: self.input,
                            partition: self.partition,
                            offset: msg.offset(),
                        },
                    },
                )?;
                self.emit(held, false, msg.key(), buf.as_slice(), None)
            }
            Outcome::Invalid(e) => {
                let offset = msg.offset().to_string();
                let part = self.partition.to_string();
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
                        value: Some(self.name),
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
                self.emit(held, true, msg.key(), input.bytes, Some(headers))?;
                tracing::debug!(model = %self.name, partition = self.partition, offset = msg.offset(), error = %e, "dead-lettered");
                Ok(())
            }
        }
    }
}

/// Aborts the open transaction. The outputs still queued are purged first
/// and their delivery reports served here: librdkafka's abort waits for
/// them, and with a `BaseProducer` only a poll serves them (without it an
/// abort never finishes: "Failed to flush all outstanding messages").
/// Retries while the broker is away; once `cancel` has tripped, gives up
/// after `shutdown_timeout_ms`.
fn abort(
    producer: &BaseProducer<ProducerCtx>,
    cancel: &CancellationToken,
    shutdown_timeout_ms: u64,
    model: &str,
) -> Result<()> {
    let shutdown_timeout = Duration::from_millis(shutdown_timeout_ms);
    let mut backoff = Duration::from_millis(100);
    let mut cancelled_at: Option<Instant> = None;
    loop {
        producer.purge(PurgeConfig::default().queue().inflight());
        let _ = producer.flush(Duration::from_secs(5));
        match producer.abort_transaction(Duration::from_secs(5)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                tracing::warn!(%model, error = %e, "abort failed; retrying in {backoff:?}");
            }
            Err(e) => return Err(e).context("cannot abort the transaction"),
        }
        if cancel.is_cancelled()
            && cancelled_at.get_or_insert_with(Instant::now).elapsed() > shutdown_timeout
        {
            bail!("cannot abort the transaction before the shutdown timeout; the broker will abort it when the transaction times out");
        }
        producer.poll(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
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
