//! Exactly once: one Kafka transaction per commit interval carries the
//! outputs, a checkpoint of every partition that moved and the consumed
//! offsets. Commits run on a committer thread of their own (the loop goes
//! on meanwhile, its outputs held); a transaction that cannot be saved is
//! aborted and every partition rolled back to its last checkpoint.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::checkpointing::{Pending, Target};
use super::handle::ModelHandle;
use super::outputs::{send, Dest};
use super::partition::Committed;
use super::state::{stall_this_call, Busy, CommitRequest, TxnOutcome, Worker, CALL_TIMEOUT};
use crate::kafka::{self, ProducerCtx};

/// Calls a transactional API until it succeeds, backing off while it fails
/// with a retriable error; gives up when cancelled.
pub(super) fn retry(
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

/// Exactly once: commits transactions on a thread of its own, so that the
/// model's thread keeps consuming, predicting and learning while the broker
/// writes the transaction markers (outputs meanwhile are held, see
/// `Worker::held`). Retries while the broker is away. Owns what it uses:
/// if librdkafka never returns, the loop can leave this thread behind.
#[allow(clippy::too_many_arguments)]
pub(super) fn committer(
    producer: Arc<BaseProducer<ProducerCtx>>,
    handle: Arc<ModelHandle>,
    cancel: CancellationToken,
    shutdown_timeout: Duration,
    target: Target,
    requests: mpsc::Receiver<CommitRequest>,
    results: mpsc::Sender<Result<TxnOutcome>>,
    busy: Arc<Busy>,
) {
    let mut buf = Vec::with_capacity(256);
    for request in requests {
        let CommitRequest {
            checkpoints,
            offsets: tpl,
            group,
        } = request;
        let taken = Instant::now();
        if let Err(e) = write_checkpoints(&target, &producer, &handle, checkpoints, &mut buf) {
            if results.send(Err(e)).is_err() {
                return;
            }
            continue;
        }
        let stats = &handle.stats;
        let mut step = Instant::now();
        let outcome = retry_txn(
            &handle,
            &cancel,
            shutdown_timeout,
            "sending offsets to the transaction",
            || {
                busy.run("send_offsets_to_transaction", || {
                    if stall_this_call() {
                        tracing::warn!(model = %handle.config.name, "STREAMFIT_TEST_STALL_COMMIT: this commit call never returns");
                        loop {
                            std::thread::park();
                        }
                    }
                    producer.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT)
                })
            },
        )
        .and_then(|o| match o {
            TxnOutcome::Committed => {
                stats.commit_offsets.observe(step.elapsed().as_secs_f64());
                step = Instant::now();
                retry_txn(
                    &handle,
                    &cancel,
                    shutdown_timeout,
                    "committing the transaction",
                    || {
                        busy.run("commit_transaction", || {
                            kafka::flush::commit_transaction(&producer, CALL_TIMEOUT)
                        })
                    },
                )
            }
            abort => Ok(abort),
        });
        if let Ok(TxnOutcome::Committed) = outcome {
            stats.commit_end.observe(step.elapsed().as_secs_f64());
            stats.commit.observe(taken.elapsed().as_secs_f64());
        }
        if results.send(outcome).is_err() {
            return;
        }
    }
}

/// Encodes checkpoints into the open transaction, counting what they wrote.
fn write_checkpoints(
    target: &Target,
    producer: &BaseProducer<ProducerCtx>,
    handle: &ModelHandle,
    checkpoints: Vec<Pending>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    for ck in checkpoints {
        let wrote = ck.write(target, producer, buf)?;
        let stats = &handle.stats;
        stats
            .checkpoint_bytes
            .fetch_add(wrote.bytes, Ordering::Relaxed);
        stats
            .checkpoint_keys
            .fetch_add(wrote.keys, Ordering::Relaxed);
        stats
            .checkpoint_pages
            .fetch_add(wrote.pages, Ordering::Relaxed);
    }
    Ok(())
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

/// Aborts the open transaction. The outputs still queued are purged first
/// and their delivery reports served here: librdkafka's abort waits for
/// them, and with a `BaseProducer` only a poll serves them (without it an
/// abort never finishes: "Failed to flush all outstanding messages").
/// Retries while the broker is away; once `cancel` has tripped, gives up
/// after `shutdown_timeout_ms`.
pub(super) fn abort(
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

impl Worker<'_> {
    /// Exactly once: checkpoints of the partitions that moved, the consumed
    /// offsets and the outputs since the last commit, in one transaction.
    pub(super) fn commit_transaction(&mut self) -> Result<()> {
        if !self.in_txn {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        let mut done = Vec::new();
        let mut checkpoints = Vec::new();
        for (&p, part) in self.parts.iter_mut().filter(|(_, x)| x.dirty) {
            let previous = self.committed.get(&p).map_or(0, |c| c.epoch);
            let (written, pending) = super::checkpointing::prepare(p, part, previous);
            // -1: nothing read from the input partition yet (its labels
            // alone moved it), so there is no input offset to commit
            if written.next_offset >= 0 {
                tpl.add_partition_offset(&self.input, p, Offset::Offset(written.next_offset))
                    .context("cannot build the offsets of the transaction")?;
            }
            if let Some(labels) = self
                .labels
                .as_deref()
                .filter(|_| written.labels_next_offset >= 0)
            {
                tpl.add_partition_offset(labels, p, Offset::Offset(written.labels_next_offset))
                    .context("cannot build the offsets of the transaction")?;
            }
            done.push(written);
            checkpoints.push(pending);
        }
        let group = self
            .consumer
            .group_metadata()
            .context("the consumer has no group metadata to commit offsets with")?;
        let Some((requests, _)) = &self.commits else {
            bail!("exactly once without a committer thread");
        };
        requests
            .send(CommitRequest {
                checkpoints,
                offsets: tpl,
                group,
            })
            .map_err(|_| anyhow::anyhow!("the committer thread has stopped"))?;
        self.in_txn = false;
        for w in &done {
            if let Some(part) = self.parts.get_mut(&w.partition) {
                part.dirty = false;
            }
        }
        self.in_flight = Some(done);
        Ok(())
    }

    /// Takes the result of the commit in flight, waiting for it if `block`:
    /// records what it committed and opens the next transaction for the
    /// held outputs, or aborts and rolls back.
    pub(super) fn poll_commit(&mut self, block: bool) -> Result<()> {
        if self.in_flight.is_none() {
            return Ok(());
        }
        let Some((_, results)) = &self.commits else {
            return Ok(());
        };
        let result = if block {
            loop {
                match results.recv_timeout(Duration::from_millis(500)) {
                    Ok(r) => break r,
                    Err(mpsc::RecvTimeoutError::Timeout) => self.check_stuck()?,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        bail!("the committer thread has stopped")
                    }
                }
            }
        } else {
            match results.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return self.check_stuck(),
                Err(mpsc::TryRecvError::Disconnected) => {
                    bail!("the committer thread has stopped")
                }
            }
        };
        let done = self.in_flight.take().unwrap_or_default();
        match result? {
            TxnOutcome::Committed => {
                self.handle.stats.commits.fetch_add(1, Ordering::Relaxed);
                for w in done {
                    self.committed.insert(
                        w.partition,
                        Committed {
                            next_offset: w.next_offset,
                            labels_next_offset: w.labels_next_offset,
                            snapshot: Some(w.snapshot),
                            epoch: w.epoch,
                        },
                    );
                }
                if !self.held.is_empty() || self.parts.values().any(|x| x.dirty) {
                    self.begin()?;
                    for h in std::mem::take(&mut self.held) {
                        let topic = match h.to {
                            Dest::Output => &self.output,
                            Dest::Dead => &self.dead,
                            Dest::Events => self.events.as_ref().unwrap_or(&self.dead),
                        };
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
                // an ACL refused an output: retrying cannot mend it
                if let Some(denied) = self.producer.context().denied_write(&self.config.kafka) {
                    tracing::warn!(model = %self.handle.config.name, error = %why, "the transaction failed after a refused write");
                    return Err(denied);
                }
                tracing::warn!(model = %self.handle.config.name, error = %why, "aborting the transaction and rolling back to the last checkpoint");
                self.abort_and_roll_back()?;
            }
        }
        Ok(())
    }

    /// An error if the committer's current call is stuck in librdkafka.
    fn check_stuck(&self) -> Result<()> {
        match self.commit_busy.as_ref().and_then(|b| b.stuck()) {
            Some(stuck) => Err(anyhow::Error::new(stuck)),
            None => Ok(()),
        }
    }

    /// Before producing: exactly once, opens a transaction unless one is
    /// open or a commit is in flight. True when what is produced now must
    /// be held for the next transaction (a commit is in flight).
    pub(super) fn ready_to_produce(&mut self) -> Result<bool> {
        if self.eos && !self.in_txn && self.in_flight.is_none() {
            self.begin()?;
        }
        Ok(self.eos && !self.in_txn)
    }

    /// Opens a transaction.
    pub(super) fn begin(&mut self) -> Result<()> {
        self.producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
        self.in_txn = true;
        self.txn_started = Instant::now();
        Ok(())
    }

    /// Aborts the open transaction and puts every partition back to its last
    /// checkpoint, the consumer back to its offset.
    pub(super) fn abort_and_roll_back(&mut self) -> Result<()> {
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
            if let Some(c) = self.committed.get(&p).filter(|c| c.labels_next_offset >= 0) {
                if let Some(labels) = self.labels.as_deref() {
                    tpl.add_partition_offset(labels, p, Offset::Offset(c.labels_next_offset))
                        .context("cannot build the offsets to seek to")?;
                }
            }
        }
        self.parts.clear();
        // the current assignment's checkpoints are already known
        self.scanned = self.consumer.context().assignments.load(Ordering::Relaxed);
        self.scanned_parts = owned.clone();
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
}
