//! Kafka plumbing: client configs (the user's librdkafka properties first,
//! our safety settings forced after), topic creation, and the contexts that
//! log rebalances and commits and track delivery of what we produce.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::Message;

pub mod access;
pub mod flush;
pub mod logs;

pub use logs::Logs;

/// A client config with the user's properties applied first.
pub fn base_config(props: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in props {
        c.set(k, v);
    }
    c
}

/// [`consumer_config`] for a consumer with the [`Logs`] context (the
/// probes, exports, replays and backfills): without statistics, which only
/// the loop's consumer reads ([`ConsumerCtx`]).
pub fn plain_consumer_config(props: &BTreeMap<String, String>, group_id: &str) -> ClientConfig {
    let mut c = consumer_config(props, group_id);
    c.set("statistics.interval.ms", "0");
    c
}

/// The consumer config: the user's properties, then ours forced.
pub fn consumer_config(props: &BTreeMap<String, String>, group_id: &str) -> ClientConfig {
    let mut c = base_config(props);
    if !props.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    if !props.contains_key("statistics.interval.ms") {
        c.set("statistics.interval.ms", "1000");
    }
    // librdkafka's default (1000 ms) idles the fetcher for a second whenever
    // the local queue is full, which more than halves the consume rate of a
    // fast reader (librdkafka #2879); 20 ms keeps it fed without spinning
    if !props.contains_key("fetch.queue.backoff.ms") {
        c.set("fetch.queue.backoff.ms", "20");
    }
    // incremental rebalancing: when an instance joins or leaves, only the
    // partitions that move stop; the others keep consuming
    if !props.contains_key("partition.assignment.strategy") {
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    // forced: offsets advance only past readings whose outputs are durable
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false");
    c
}

/// The producer config: the user's properties, then ours forced.
pub fn producer_config(props: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = base_config(props);
    if !props.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    if !props.contains_key("compression.type") {
        c.set("compression.type", "lz4");
    }
    if !props.contains_key("queue.buffering.max.messages") {
        c.set("queue.buffering.max.messages", "1000000");
    }
    // forced: no duplicates or reordering from retries, every write acknowledged
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(
    props: &BTreeMap<String, String>,
    topics: &[String],
    partitions: i32,
    replication: i32,
) -> Result<()> {
    ensure_topics_with(props, topics, partitions, replication, None).await
}

/// Creates the topics that do not exist yet as `[topics]` says.
pub async fn ensure_configured_topics(
    config: &crate::config::Config,
    topics: &[String],
) -> Result<()> {
    ensure_topics_with(
        &config.kafka,
        topics,
        config.topics.partitions,
        config.topics.replication(),
        config.topics.min_isr(),
    )
    .await
}

/// Creates the topics that do not exist yet; `replication` -1 takes the
/// cluster's default, and so does `min_isr` `None`. Only topics missing
/// from the cluster's metadata are asked for, so that a principal needs
/// the Create ACL only for topics that really are created; a refusal is a
/// [`access::NotAuthorized`] naming the topic.
pub async fn ensure_topics_with(
    props: &BTreeMap<String, String>,
    topics: &[String],
    partitions: i32,
    replication: i32,
    min_isr: Option<i32>,
) -> Result<()> {
    // librdkafka's metadata call blocks: off the async workers
    let reader = props.clone();
    let known: std::collections::HashSet<String> = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer<Logs> = base_config(&reader)
            .create_with_context(Logs)
            .context("cannot create a Kafka client; check the [kafka] properties")?;
        let names = client
            .fetch_metadata(None, Duration::from_secs(30))
            .context("cannot read the cluster's topics; is the broker up (deploy/kafka.sh up) and `bootstrap.servers` right?")?
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name().to_owned())
            .collect();
        anyhow::Ok(names)
    })
    .await
    .context("the topic listing task failed")??;
    let admin: AdminClient<Logs> = base_config(props)
        .create_with_context(Logs)
        .context("cannot create a Kafka admin client; check the [kafka] properties")?;
    let missing: Vec<&String> = topics.iter().filter(|t| !known.contains(*t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let min_isr = min_isr.map(|m| m.to_string());
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
            match &min_isr {
                Some(m) => topic.set("min.insync.replicas", m),
                None => topic,
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new.iter(), &opts)
        .await
        .context("cannot reach Kafka to create topics; is the broker up (deploy/kafka.sh up) and `bootstrap.servers` right?")?;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) if access::is_denial(code) => {
                return Err(access::NotAuthorized::new(
                    props,
                    "create (or describe) topic",
                    &topic,
                    code,
                )
                .into())
            }
            Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A revocation the worker has not finished yet: the partitions stay
/// assigned (librdkafka waits for the unassign call) until their open work
/// is committed or aborted.
#[derive(Debug)]
pub struct Revocation {
    /// The revoked partitions, as the rebalance named them.
    pub partitions: TopicPartitionList,
    /// The partitions were lost (session timed out, fenced): their open
    /// work can no longer be committed and must be aborted.
    pub lost: bool,
}

/// Consumer context: logs rebalances and commits, notes revocations and lag.
#[derive(Default)]
pub struct ConsumerCtx {
    /// The model this consumer feeds (for logs).
    pub model: String,
    /// True once the consumer holds at least one partition.
    pub assigned: AtomicBool,
    /// A revocation waiting for the worker: it finishes the partitions'
    /// work, then calls [`ConsumerCtx::release`] (Kafka Streams'
    /// `onPartitionsRevoked`, done before the partitions change hands).
    pub revoking: Mutex<Option<Revocation>>,
    /// Set when the worker stops: revocations (from closing the consumer)
    /// are released at once, nothing is left to finish.
    pub closing: AtomicBool,
    /// Each fetched partition's high watermark, from the client's
    /// statistics (the lag is measured against the live model's offsets:
    /// the statistics' own `consumer_lag` follows the consumer's commits,
    /// which a transaction's offsets do not move).
    pub high_watermarks: Mutex<BTreeMap<i32, i64>>,
    /// The input topic whose high watermarks count (empty: every topic
    /// consumed; a model with a labels topic consumes two).
    pub input: String,
    /// Assignments seen: goes up with every partition assignment.
    pub assignments: AtomicU64,
    /// False while no broker connection is up (from the client's statistics).
    pub brokers_down: AtomicBool,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        if let Ok(mut high) = self.high_watermarks.lock() {
            *high = stats
                .topics
                .values()
                .filter(|t| self.input.is_empty() || t.topic == self.input)
                .flat_map(|t| t.partitions.values())
                .filter(|p| p.partition >= 0 && p.fetch_state == "active" && p.hi_offset >= 0)
                .map(|p| (p.partition, p.hi_offset))
                .collect();
        }
        let up = stats
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.brokers_down.store(!up, Ordering::Relaxed);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        logs::log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        logs::error_event(&self.model, &error, reason);
    }
}

impl ConsumerCtx {
    /// Gives the revoked partitions up, once their open work is committed
    /// or aborted: the group's rebalance goes on from here. Called from the
    /// loop, never from inside a rebalance callback (it asks the consumer
    /// for its assignment, which waits on the group thread).
    pub fn release(consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) -> Result<()> {
        ConsumerCtx::unassign(consumer, revoked)?;
        let ctx = consumer.context();
        let left = consumer.assignment().map_or(0, |a| a.count());
        ctx.assigned.store(left > 0, Ordering::Relaxed);
        let parts: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(model = %ctx.model, partitions = ?parts, "revoked partitions released");
        Ok(())
    }
}

impl ConsumerCtx {
    /// Removes `revoked` from the assignment (safe inside a callback).
    fn unassign(consumer: &BaseConsumer<Self>, revoked: &TopicPartitionList) -> Result<()> {
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(revoked),
            _ => consumer.unassign(),
        };
        result.context("cannot release the revoked partitions")
    }
}

impl ConsumerContext for ConsumerCtx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let result = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
                    _ => consumer.assign(tpl),
                };
                if let Err(e) = result {
                    tracing::error!(model = %self.model, error = %e, "cannot take the assigned partitions");
                    return;
                }
                tracing::info!(model = %self.model, partitions = ?parts, "partitions assigned");
                if !parts.is_empty() {
                    self.assigned.store(true, Ordering::Relaxed);
                }
                self.assignments.fetch_add(1, Ordering::Relaxed);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                if self.closing.load(Ordering::Relaxed) {
                    // closing: nothing left to finish, nothing to ask
                    let _ = ConsumerCtx::unassign(consumer, tpl);
                    self.assigned.store(false, Ordering::Relaxed);
                    return;
                }
                tracing::info!(model = %self.model, partitions = ?parts, lost, "partitions revoked; finishing their open work before releasing them");
                match self.revoking.lock() {
                    Ok(mut r) => {
                        // an earlier revocation not finished yet: take both
                        let mut all = r
                            .take()
                            .map_or_else(TopicPartitionList::new, |x| x.partitions);
                        for e in tpl.elements() {
                            if all.find_partition(e.topic(), e.partition()).is_none() {
                                all.add_partition(e.topic(), e.partition());
                            }
                        }
                        *r = Some(Revocation {
                            partitions: all,
                            lost,
                        });
                    }
                    Err(_) => {
                        let _ = ConsumerCtx::unassign(consumer, tpl);
                    }
                }
            }
            _ => {
                let e: RDKafkaErrorCode = err.into();
                tracing::warn!(model = %self.model, error = %e, "rebalance error; giving the assignment up");
                let _ = consumer.unassign();
                self.assigned.store(false, Ordering::Relaxed);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                tracing::debug!(model = %self.model, offsets = ?offsets.to_topic_map(), "offsets committed")
            }
            Err(e) => {
                tracing::warn!(model = %self.model, error = %e, "offset commit failed (will retry with the next commit)")
            }
        }
    }
}

/// One produced batch still waiting for its acknowledgements.
#[derive(Debug)]
pub struct InFlight {
    /// Partition of the input batch.
    pub partition: i32,
    /// Offset to commit once everything is acknowledged (last offset + 1).
    pub next_offset: i64,
    /// Messages not acknowledged yet.
    pub remaining: usize,
    /// The first delivery error, if any.
    pub error: Option<String>,
}

/// Producer context: counts acknowledgements per input batch, and notes
/// a delivery the cluster refused for want of an ACL.
#[derive(Default)]
pub struct ProducerCtx {
    /// In-flight batches by sequence number.
    pub in_flight: Mutex<BTreeMap<usize, InFlight>>,
    /// The first delivery refused by an ACL: its topic and Kafka's error.
    pub denied: Mutex<Option<(String, RDKafkaErrorCode)>>,
}

impl ProducerCtx {
    /// The refusal of a write for want of an ACL, as an error naming the
    /// topic, if a delivery was refused.
    pub fn denied_write(&self, props: &BTreeMap<String, String>) -> Option<anyhow::Error> {
        let (topic, code) = self.denied.lock().ok()?.clone()?;
        Some(access::NotAuthorized::new(props, "write to topic", &topic, code).into())
    }
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if let Some(topic) = access::refused_partition(fac, message) {
            if let Ok(mut d) = self.denied.lock() {
                d.get_or_insert((topic, RDKafkaErrorCode::TopicAuthorizationFailed));
            }
        }
        logs::log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        logs::error_event("", &error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        if let Err((e, m)) = result {
            if let Some(code) = access::denial(e) {
                if let Ok(mut d) = self.denied.lock() {
                    d.get_or_insert_with(|| (m.topic().to_owned(), code));
                }
            }
        }
        let Ok(mut map) = self.in_flight.lock() else {
            return;
        };
        if let Some(b) = map.get_mut(&seq) {
            b.remaining = b.remaining.saturating_sub(1);
            if let Err((e, m)) = result {
                b.error
                    .get_or_insert_with(|| format!("delivery to {} failed: {e}", m.topic()));
            }
        }
    }
}

impl ProducerCtx {
    /// Removes the leading batches that are fully acknowledged and returns the
    /// highest committable offset per partition; an error if a delivery failed.
    pub fn drain_acked(&self) -> Result<HashMap<i32, i64>> {
        let mut out = HashMap::new();
        let mut map = self
            .in_flight
            .lock()
            .map_err(|_| anyhow::anyhow!("delivery tracker poisoned"))?;
        while let Some(entry) = map.first_entry() {
            if let Some(e) = &entry.get().error {
                bail!("{e}; stopping without committing the readings it covers, they will be processed again on restart");
            }
            if entry.get().remaining > 0 {
                break;
            }
            let b = entry.remove();
            out.insert(b.partition, b.next_offset);
        }
        Ok(out)
    }
}

/// The key of a message as UTF-8, if it has one that is valid and not
/// empty: an empty key (what `kafka-console-producer --property
/// parse.key=true` sends for a line with nothing before the separator)
/// names no entity, so the reading's key field, if any, keys it instead.
pub fn key_str<M: Message>(m: &M) -> Option<&str> {
    m.key()
        .filter(|k| !k.is_empty())
        .and_then(|k| std::str::from_utf8(k).ok())
}

/// A micro-batch's messages as the pipeline's inputs (key and bytes).
pub fn inputs<M: Message>(batch: &[M]) -> Vec<crate::pipeline::Input<'_>> {
    batch
        .iter()
        .map(|m| crate::pipeline::Input {
            key: key_str(m),
            bytes: m.payload().unwrap_or(&[]),
        })
        .collect()
}

/// Why [`read_to_end`] stopped early.
#[derive(Debug)]
pub enum ReadError {
    /// The topic does not exist.
    NoTopic,
    /// The end was not reached in time.
    TimedOut,
    /// A client error.
    Kafka(anyhow::Error),
}

/// The partition ids of `topic` (none if it does not exist), from the
/// broker's metadata.
pub fn partition_ids<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The number of partitions of `topic`, `None` if it does not exist.
pub fn partition_count(
    props: &BTreeMap<String, String>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>> {
    let client: BaseConsumer<Logs> = base_config(props)
        .create_with_context(Logs)
        .context("cannot create a Kafka client; check the [kafka] properties")?;
    let ids = partition_ids(&client, topic, timeout)
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    Ok((!ids.is_empty()).then_some(ids.len() as i32))
}

/// Reads every partition of `topic` (or the partitions `only`) from the beginning up to its end as of
/// now, with `isolation.level=read_committed`, handing each message to
/// `each`. A partition is done once the consumer's position passes the
/// high watermark taken at the start (transaction markers have offsets too,
/// and the position moves past them). The high watermark is asked for with
/// `read_uncommitted`: asked with `read_committed`, Kafka answers the last
/// stable offset, which another producer's open transaction holds back, and
/// transactions committed after that point would be missed (a restore then
/// found an older checkpoint than the group's committed offsets). Reading
/// waits instead until those transactions end.
pub fn read_to_end(
    props: &BTreeMap<String, String>,
    topic: &str,
    only: Option<&[i32]>,
    group: &str,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> std::result::Result<(), ReadError> {
    let kafka = |e: KafkaError, what: &str| {
        ReadError::Kafka(anyhow::Error::new(e).context(what.to_owned()))
    };
    let mut c = base_config(props);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<Logs> = c
        .create_with_context(Logs)
        .map_err(|e| kafka(e, "cannot create a reader; check the [kafka] properties"))?;
    let deadline = std::time::Instant::now() + timeout;
    let mut partitions = partition_ids(&consumer, topic, timeout)
        .map_err(|e| kafka(e, "cannot read the topic's metadata"))?;
    if partitions.is_empty() {
        return Err(ReadError::NoTopic);
    }
    if let Some(only) = only {
        partitions.retain(|p| only.contains(p));
    }
    let marks: BaseConsumer<Logs> = base_config(props)
        .set("group.id", group)
        .set("isolation.level", "read_uncommitted")
        .create_with_context(Logs)
        .map_err(|e| kafka(e, "cannot create a reader; check the [kafka] properties"))?;
    let mut tpl = TopicPartitionList::new();
    let mut high = HashMap::new();
    for &p in &partitions {
        let (lo, hi) = marks
            .fetch_watermarks(topic, p, timeout)
            .map_err(|e| kafka(e, "cannot read the topic's offsets"))?;
        if hi > lo {
            high.insert(p, hi);
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .map_err(|e| kafka(e, "cannot build the assignment"))?;
        }
    }
    if high.is_empty() {
        return Ok(());
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka(e, "cannot assign the topic"))?;
    while !high.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(ReadError::TimedOut);
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => each(&m),
            Some(Err(e)) => tracing::warn!(%topic, error = %e, "reading (retrying)"),
            None => {}
        }
        if let Ok(pos) = consumer.position() {
            high.retain(|&p, &mut h| {
                pos.find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .is_none_or(|o| o < h)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_invalid_key_names_no_entity() {
        use rdkafka::message::{OwnedMessage, Timestamp};
        let message = |key: Option<&[u8]>| {
            OwnedMessage::new(
                Some(b"{}".to_vec()),
                key.map(<[u8]>::to_vec),
                "t".into(),
                Timestamp::NotAvailable,
                0,
                0,
                None,
            )
        };
        let keys: Vec<Option<String>> = [Some(&b"ride-7"[..]), Some(b""), Some(b"\xff"), None]
            .into_iter()
            .map(|k| key_str(&message(k)).map(str::to_owned))
            .collect();
        assert_eq!(keys, [Some("ride-7".to_owned()), None, None, None]);
    }

    #[test]
    fn only_the_loops_consumer_asks_for_statistics() {
        let mut props = BTreeMap::new();
        let stats = |c: &ClientConfig| c.get("statistics.interval.ms").map(str::to_owned);
        assert_eq!(
            stats(&consumer_config(&props, "g")).as_deref(),
            Some("1000")
        );
        // a probe's default context would log each at info: never asked for,
        // even when the [kafka] properties set an interval for the loop
        assert_eq!(
            stats(&plain_consumer_config(&props, "g")).as_deref(),
            Some("0")
        );
        props.insert("statistics.interval.ms".to_owned(), "5000".to_owned());
        assert_eq!(
            stats(&consumer_config(&props, "g")).as_deref(),
            Some("5000")
        );
        assert_eq!(
            stats(&plain_consumer_config(&props, "g")).as_deref(),
            Some("0")
        );
    }
}
