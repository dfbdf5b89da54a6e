//! The loop: poll the consumer, collect per-partition micro-batches,
//! predict and learn them test-then-train, produce every outcome, and
//! commit: exactly once through [`super::transaction`] (the default), or at
//! least once (offsets committed once the outputs are acknowledged; a
//! restart begins with fresh models). Assignments and revocations are
//! handled in [`super::rebalance`]; a live backfill advances between
//! batches ([`super::backfill`]). The live models for HTTP are swapped in
//! after each batch that learned.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::handle::ModelHandle;
use super::outputs::{dead_letter_limit, outputs, MAX_HELD};
use super::state::{Busy, CommitStuck, ConsumerFatal, ProducerFailed, ReplayPlan, Worker};
use super::transaction::{abort, committer, retry};
use crate::config::Config;
use crate::kafka::{self, ConsumerCtx, InFlight, ProducerCtx};

/// Runs one model until `cancel` trips or a fatal error occurs. A
/// transactional call stuck in librdkafka (`CommitStuck`), a consumer
/// librdkafka has stopped (`ConsumerFatal`) or a transaction failed for
/// good (`ProducerFailed`) is not fatal to the service:
/// the clients are given up and new ones take over under the same identity
/// (fencing any open transaction), resuming from the last checkpoint.
pub fn run(config: &Config, handle: &Arc<ModelHandle>, cancel: &CancellationToken) -> Result<()> {
    loop {
        match run_with(config, handle, cancel, None) {
            Err(e)
                if (e.downcast_ref::<CommitStuck>().is_some()
                    || e.downcast_ref::<ConsumerFatal>().is_some()
                    || e.downcast_ref::<ProducerFailed>().is_some())
                    && !cancel.is_cancelled() =>
            {
                tracing::error!(model = %handle.config.name, error = %format!("{e:#}"), "the Kafka clients cannot go on (a transaction call stuck in librdkafka, a fatal consumer error, or a failed transaction); starting new Kafka clients under the same identity (they fence any open transaction) and resuming from the last committed checkpoints");
                handle.stats.client_restarts.fetch_add(1, Ordering::Relaxed);
                // the new clients' assignment restores what HTTP shows
                let live = handle.live.load();
                let owned: Vec<i32> = live.partitions().map(|(p, _)| p).collect();
                handle.live.store(Arc::new(live.without(&owned)));
                handle.restored.store(u64::MAX, Ordering::Relaxed);
            }
            r => return r,
        }
    }
}

/// Runs a replay to its end offsets (or until `cancel` trips).
pub fn replay(
    config: &Config,
    handle: &Arc<ModelHandle>,
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
    handle: &Arc<ModelHandle>,
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
        input: input.clone(),
        ..Default::default()
    };
    let mut cc = kafka::consumer_config(&config.kafka, &group);
    let labels = super::labels::prepare(config, m, &input, &mut cc, replay.is_some())?;
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
    handle.consumer.store(Some(consumer.context().clone()));
    let eos = config.service.exactly_once;
    let mut pc = kafka::producer_config(&config.kafka);
    if eos {
        pc.set("transactional.id", &identity);
    }
    let producer: Arc<BaseProducer<ProducerCtx>> = Arc::new(
        pc.create_with_context(ProducerCtx::default())
            .context("cannot create the Kafka producer; check the [kafka] properties")?,
    );
    let init = || -> Result<()> {
        if eos {
            // fences any earlier instance with this transactional.id and
            // aborts its open transaction, before its checkpoints are read
            retry(handle, cancel, "initialising transactions", || {
                producer.init_transactions(Duration::from_secs(30))
            })
            .map_err(|e| match kafka::access::denial_in(&e) {
                Some(code) => kafka::access::NotAuthorized::new(
                    &config.kafka,
                    "use transactional id",
                    &identity,
                    code,
                )
                .into(),
                None => e,
            })?;
        }
        Ok(())
    };
    match &replay {
        None => {
            init()?;
            let mut topics = vec![input.as_str()];
            topics.extend(labels.as_deref());
            consumer
                .subscribe(&topics)
                .with_context(|| format!("cannot subscribe to {}", topics.join(" and ")))?
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
    let ck_topic = config.service.checkpoint_topic(&m.name);
    let ck_partitions = if eos {
        let topic = &ck_topic;
        crate::kafka::partition_count(&config.kafka, topic, Duration::from_secs(30))?.with_context(
            || format!("checkpoint topic {topic} does not exist (`service.checkpoint_topic`)"),
        )?
    } else {
        1
    };
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
        events: m.events_topic(),
        labels,
        input,
        eos,
        parts: HashMap::new(),
        committed: HashMap::new(),
        scanned: u64::MAX,
        scanned_parts: Vec::new(),
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
        commit_busy: None,
        dead_limit: dead_letter_limit(&config.kafka),
        ck_topic,
        ck_partitions,
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
    // the committer owns what it uses: if librdkafka never returns from a
    // call, this thread is left behind and the loop goes on without it
    let mut committer_thread = None;
    if eos {
        let (requests_tx, requests) = mpsc::channel();
        let (results, results_rx) = mpsc::channel();
        let shutdown = Duration::from_millis(config.service.shutdown_timeout_ms);
        let busy = Arc::new(Busy::default());
        let (producer, handle, cancel) = (producer.clone(), handle.clone(), cancel.clone());
        let b = busy.clone();
        let target = super::checkpointing::Target {
            topic: w.ck_topic.clone(),
            partitions: w.ck_partitions,
            model: m.name.clone(),
            group: w.group.clone(),
            input: w.input.clone(),
        };
        committer_thread = Some(
            std::thread::Builder::new()
                .name(format!("commit-{}", m.name))
                .spawn(move || {
                    committer(
                        producer, handle, cancel, shutdown, target, requests, results, b,
                    )
                })
                .context("cannot start the committer thread")?,
        );
        w.commits = Some((requests_tx, results_rx));
        w.commit_busy = Some(busy);
    }
    // once an ACL refused an output, whatever failed next (the producer
    // is in an error state) is that refusal, named by topic: in the loop,
    // or in the last batches `finish` processes when the loop has stopped
    let result = w.consume(cancel);
    let result = w.finish(result).map_err(|e| {
        match producer.context().denied_write(&config.kafka) {
            Some(denied) => {
                tracing::warn!(model = %m.name, error = %format!("{e:#}"), "the loop failed after a refused write");
                denied
            }
            None => e,
        }
    });
    // closes the request channel: the committer ends
    w.commits = None;
    let stuck = w.commit_busy.as_ref().and_then(|b| b.stuck()).is_some();
    drop(w);
    if let Some(t) = committer_thread {
        if !stuck && t.join().is_err() {
            tracing::error!(model = %m.name, "the committer thread panicked");
        }
    }
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
}

/// Messages taken from the consumer's queue in one go between housekeeping.
const DRAIN: usize = 256;

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
            let waiting = self.shadow.is_some()
                || self
                    .parts
                    .values()
                    .any(|p| !p.batch.is_empty() || !p.labels.is_empty());
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
                                self.consume_error(e)?;
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Some(Err(e)) => self.consume_error(e)?,
                None => {}
            }
            self.finish_revoked()?;
            self.open_assigned()?;
            let due: Vec<i32> = self
                .parts
                .iter()
                .filter(|(_, p)| {
                    (!p.batch.is_empty() || !p.labels.is_empty()) && p.started.elapsed() >= linger
                })
                .map(|(p, _)| *p)
                .collect();
            for p in due {
                self.process(p)?;
            }
            if self.replay.is_none() {
                self.backfill_step()?;
                self.run_commands()?;
            }
            self.producer.poll(Duration::ZERO);
            if self.eos {
                self.poll_commit(self.held.len() >= MAX_HELD)?;
                if self.in_txn && self.txn_started.elapsed() >= self.commit_interval() {
                    self.commit_transaction()?;
                }
            } else {
                // a refused delivery fails drain_acked; run_with names it
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

    /// A consumer error: logged and retried, unless the cluster refuses
    /// the input topic or the group (which retrying cannot mend).
    fn consume_error(&self, e: rdkafka::error::KafkaError) -> Result<()> {
        if let Some(code) = kafka::access::denial(&e) {
            let (action, resource) = match code {
                rdkafka::error::RDKafkaErrorCode::GroupAuthorizationFailed => {
                    ("join consumer group", self.group.as_str())
                }
                _ => ("read topic", self.input.as_str()),
            };
            return Err(kafka::access::NotAuthorized::new(
                &self.config.kafka,
                action,
                resource,
                code,
            )
            .into());
        }
        if let rdkafka::error::KafkaError::MessageConsumptionFatal(_) = e {
            // librdkafka's consumer will not consume again: new clients
            return Err(anyhow::Error::new(ConsumerFatal {
                error: e.to_string(),
            }));
        }
        tracing::warn!(model = %self.handle.config.name, error = %e, "consume error (retrying)");
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
        if let Err(e) = &result {
            if e.downcast_ref::<CommitStuck>().is_some() {
                // the producer is busy for good: the new clients' fencing
                // aborts its transaction
                return result;
            }
        }
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
        let flushed = kafka::flush::flush(self.producer, timeout);
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
    pub(super) fn accept(&mut self, msg: BorrowedMessage<'c>) -> Result<()> {
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
        if self.labels.as_deref() == Some(msg.topic()) {
            if part.labels_position >= 0 && offset < part.labels_position {
                // already joined (or waiting) in the checkpoint
                return Ok(());
            }
            if part.labels_position < 0 {
                part.labels_processed_to = offset;
            }
            part.labels_position = offset + 1;
            if part.batch.is_empty() && part.labels.is_empty() {
                part.started = Instant::now();
            }
            part.labels.push(msg);
            if part.labels.len() >= max {
                self.process(p)?;
            }
            return Ok(());
        }
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
        if part.batch.is_empty() && part.labels.is_empty() {
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

    /// Predicts and learns a partition's batch (and joins its labels) and
    /// produces the outcomes.
    pub(super) fn process(&mut self, partition: i32) -> Result<()> {
        self.process_readings(partition)?;
        // labels after the readings they may name
        self.process_labels(partition)
    }

    /// Predicts and learns a partition's batch of readings.
    fn process_readings(&mut self, partition: i32) -> Result<()> {
        if self
            .parts
            .get(&partition)
            .is_none_or(|x| x.batch.is_empty())
        {
            return Ok(());
        }
        // a commit in flight: the outputs wait for the next transaction
        let hold = self.ready_to_produce()?;
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let started = Instant::now();
        let batch = std::mem::take(&mut part.batch);
        let inputs = kafka::inputs(&batch);
        let version = part.pipeline.version();
        let events_before = part.pipeline.event_counts();
        let mut outcomes = Vec::with_capacity(inputs.len());
        let stats = part.pipeline.process(&inputs, &mut outcomes);
        if part.pipeline.promotions_total() != events_before.1 {
            // another learner's keyed state: its checkpoint writes every key
            part.epoch = 0;
        }
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
        let out = outputs!(self, part.pipeline,
            input: &self.input, partition: partition, version: version, seq: this);
        let publish = self.replay.as_ref().is_none_or(|r| r.publish);
        if publish {
            for ((msg, input), outcome) in batch.iter().zip(&inputs).zip(outcomes.iter()) {
                let held = if hold { Some(&mut self.held) } else { None };
                out.send(&mut self.buf, held, msg, input, outcome)?;
            }
            let held = if hold { Some(&mut self.held) } else { None };
            out.send_events(&mut self.buf, held, &part.pipeline, events_before)?;
        }
        if self.replay.is_some() {
            if let Ok(mut progress) = self.handle.progress.lock() {
                if let Some(e) = progress.get_mut(&partition) {
                    e.1 = last + 1;
                }
            }
        }
        self.handle.history.note_batch(
            partition,
            batch.iter().map(|m| m.offset()),
            &outcomes,
            part.pipeline.classes(),
        );
        let s = &self.handle.stats;
        s.predicted
            .fetch_add(stats.predicted as u64, Ordering::Relaxed);
        s.learned.fetch_add(stats.learned as u64, Ordering::Relaxed);
        s.key_evictions
            .fetch_add(stats.evicted as u64, Ordering::Relaxed);
        s.dead_lettered
            .fetch_add(stats.invalid as u64, Ordering::Relaxed);
        s.batch.observe(started.elapsed().as_secs_f64());
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
            } else {
                // nothing learned: the model is unchanged, the counts move
                self.handle
                    .publish_progress(partition, &part.pipeline, part.processed_to);
            }
        }
        Ok(())
    }
}
