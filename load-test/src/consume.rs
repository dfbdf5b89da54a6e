//! `load-test consume`: how fast librdkafka alone reads a topic from the
//! start (no decoding, no model), the ceiling for streamfit's consumer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Reads `topic` from the start to its current end and returns
/// (messages, seconds). `props` are extra librdkafka properties.
pub fn run(bootstrap: &str, topic: &str, props: &[(String, String)]) -> Result<(u64, f64)> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("load-test-consume-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in props {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create().context("cannot create the Kafka consumer")?;
    let meta = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("cannot fetch the topic's metadata")?;
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for t in meta.topics() {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .context("cannot read the topic's offsets")?;
            total += high - low;
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .context("cannot assign the topic")?;
        }
    }
    if total == 0 {
        bail!("topic {topic} is empty or does not exist");
    }
    consumer.assign(&tpl).context("cannot assign the topic")?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    let mut n = 0i64;
    let mut bytes = 0usize;
    while n < total {
        if Instant::now() > deadline {
            bail!("read only {n} of {total} messages in 300 s");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.context("cannot read the topic")?;
            bytes += m.payload_len();
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok((n as u64, secs))
}
