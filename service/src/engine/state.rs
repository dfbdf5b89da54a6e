//! The loop's state, apart from the code that runs it: [`Worker`] (what
//! the loop, its transactions, its rebalances and a live backfill's turn
//! work on), what a replay asks of it, and the messages between the loop
//! and the committer thread. A leaf of the engine: every file that works on
//! the loop imports it, it imports none of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::backfill::Shadow;
use super::handle::ModelHandle;
use super::outputs::Held;
use super::partition::{Committed, Part, Written};
use crate::config::Config;
use crate::kafka::{ConsumerCtx, ProducerCtx};
use crate::pipeline::PipelineSnapshot;

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

/// What became of a transaction handed to the committer.
pub(super) enum TxnOutcome {
    Committed,
    /// It cannot be saved: abort it and roll back (the error says why).
    NeedsAbort(String),
}

/// A commit for the committer thread: checkpoints to encode into the open
/// transaction, the offsets to send to it, then commit it.
pub(super) struct CommitRequest {
    pub(super) checkpoints: Vec<super::checkpointing::Pending>,
    pub(super) offsets: TopicPartitionList,
    pub(super) group: rdkafka::consumer::ConsumerGroupMetadata,
}

/// A transactional call of librdkafka's that has run far past its own
/// timeout. librdkafka can wait forever in `send_offsets_to_transaction`
/// after a coordinator broker went away and came back (librdkafka #5456,
/// #5511, open as of 2.14): the loop then gives these clients up and starts
/// new ones under the same identity, which fence the stuck transaction.
#[derive(Debug)]
pub struct CommitStuck {
    /// The call.
    pub what: &'static str,
    /// How long it has run.
    pub seconds: u64,
}

impl std::fmt::Display for CommitStuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has not returned for {} s although its timeout is {} s (librdkafka #5456/#5511)",
            self.what,
            self.seconds,
            CALL_TIMEOUT.as_secs()
        )
    }
}

impl std::error::Error for CommitStuck {}

/// The consumer hit an error librdkafka calls fatal: it will consume no
/// more (a static member fenced by its own new session after a broker
/// restart, say). Like [`CommitStuck`], the loop gives these clients up and
/// starts new ones, resuming from the last committed checkpoints.
#[derive(Debug)]
pub struct ConsumerFatal {
    /// librdkafka's error.
    pub error: String,
}

impl std::fmt::Display for ConsumerFatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the consumer stopped with a fatal error: {}", self.error)
    }
}

impl std::error::Error for ConsumerFatal {}

/// The producer refused an output because its transaction failed in a way
/// only a new transaction can mend (librdkafka's erroneous state: say,
/// sequence numbers skipped across a broker restart). Like
/// [`ConsumerFatal`], the loop gives these clients up and starts new ones,
/// whose initialisation aborts the failed transaction, resuming from the
/// last committed checkpoints.
#[derive(Debug)]
pub struct ProducerFailed {
    /// librdkafka's error.
    pub error: String,
}

impl std::fmt::Display for ProducerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the producer's transaction failed: {}", self.error)
    }
}

impl std::error::Error for ProducerFailed {}

/// The timeout each transactional call of the committer is given.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A call running this long is stuck (a commit flushes first, then
/// commits: two timeouts, and some slack). Tests shorten it with
/// `STREAMFIT_TEST_STUCK_AFTER_MS`.
pub(super) fn stuck_after() -> Duration {
    static AFTER: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        std::env::var("STREAMFIT_TEST_STUCK_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(60), Duration::from_millis)
    })
}

/// Fault injection for tests: `STREAMFIT_TEST_STALL_COMMIT=N` makes the
/// N-th commit call of the process never return, as librdkafka's does in
/// #5456/#5511 (once per process).
pub(super) fn stall_this_call() -> bool {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let at = *AT.get_or_init(|| {
        std::env::var("STREAMFIT_TEST_STALL_COMMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    at > 0 && CALLS.fetch_add(1, Ordering::Relaxed) + 1 == at
}

/// What the committer is doing: the call in progress and when it started
/// (ms since the epoch), for the loop to notice a stuck call.
#[derive(Default)]
pub(super) struct Busy {
    since_ms: std::sync::atomic::AtomicU64,
    what: std::sync::Mutex<&'static str>,
}

impl Busy {
    pub(super) fn run<T>(&self, what: &'static str, f: impl FnOnce() -> T) -> T {
        if let Ok(mut w) = self.what.lock() {
            *w = what;
        }
        self.since_ms
            .store(crate::live::now_ms().max(1), Ordering::Relaxed);
        let r = f();
        self.since_ms.store(0, Ordering::Relaxed);
        r
    }

    /// The call in progress, if it has run longer than [`stuck_after`].
    pub(super) fn stuck(&self) -> Option<CommitStuck> {
        let since = self.since_ms.load(Ordering::Relaxed);
        let ran = crate::live::now_ms().saturating_sub(since);
        (since > 0 && ran > stuck_after().as_millis() as u64).then(|| CommitStuck {
            what: self.what.lock().map_or("a transactional call", |w| *w),
            seconds: ran / 1000,
        })
    }
}

/// One model's loop.
pub(super) struct Worker<'c> {
    pub(super) group: String,
    pub(super) cancel: &'c CancellationToken,
    pub(super) config: &'c Config,
    pub(super) handle: &'c ModelHandle,
    pub(super) consumer: &'c BaseConsumer<ConsumerCtx>,
    pub(super) producer: &'c BaseProducer<ProducerCtx>,
    pub(super) input: String,
    pub(super) output: String,
    pub(super) dead: String,
    /// Where drift and promotion events go (a model with neither: none).
    pub(super) events: Option<String>,
    /// The labels topic, co-partitioned with the input (`labels_topic`).
    pub(super) labels: Option<String>,
    pub(super) eos: bool,
    pub(super) parts: HashMap<i32, Part<'c>>,
    /// Exactly once: each owned partition's last committed state.
    pub(super) committed: HashMap<i32, Committed>,
    /// The assignment count when the checkpoints were last read.
    pub(super) scanned: u64,
    /// The input partitions whose checkpoints that read covered.
    pub(super) scanned_parts: Vec<i32>,
    pub(super) in_txn: bool,
    pub(super) txn_started: Instant,
    /// At least once: the sequence number of the last produced batch.
    pub(super) seq: usize,
    /// At least once: acknowledged offsets not committed yet.
    pub(super) to_commit: HashMap<i32, i64>,
    pub(super) last_commit: Instant,
    pub(super) buf: Vec<u8>,
    pub(super) replay: Option<ReplayPlan>,
    /// A live backfill in progress.
    pub(super) shadow: Option<Shadow>,
    /// Exactly once: the committer thread's request and result channels.
    pub(super) commits: Option<(
        mpsc::Sender<CommitRequest>,
        mpsc::Receiver<Result<TxnOutcome>>,
    )>,
    /// The commit in flight: what each partition's checkpoint in it holds.
    pub(super) in_flight: Option<Vec<Written>>,
    /// Outputs of batches processed while a commit was in flight.
    pub(super) held: Vec<Held>,
    /// Exactly once: what the committer thread is doing (a stuck call).
    pub(super) commit_busy: Option<std::sync::Arc<Busy>>,
    /// The largest key plus payload of a dead letter (see `outputs`).
    pub(super) dead_limit: usize,
    /// The model's checkpoint topic and its partitions (exactly once).
    pub(super) ck_topic: String,
    pub(super) ck_partitions: i32,
}
