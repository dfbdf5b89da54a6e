//! `load-test e2e`: reading-to-prediction latency through a running
//! service. Readings are published at a fixed rate; every prediction on the
//! output topic (read with `isolation.level=read_committed`, as a user of
//! an exactly-once service would) is matched to its reading by the source
//! partition and offset it carries, and the latency is the time from just
//! before the reading was handed to the producer to the prediction reaching
//! this consumer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data set whose readings are published (cycled if `count` is larger).
    pub data: PathBuf,
    /// The model's input topic.
    pub topic: String,
    /// The model's output (predictions) topic.
    pub output_topic: String,
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// Readings per second.
    pub rate: u64,
    /// Readings to publish.
    pub count: u64,
    /// Hide the progress bar.
    pub quiet: bool,
    /// Write each reading's send time, partition and latency (µs) here.
    pub dump: Option<PathBuf>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Readings per second asked for.
    pub target_rate: u64,
    /// Readings acknowledged by the broker.
    pub published: u64,
    /// Readings per second actually published.
    pub published_per_second: f64,
    /// Readings whose prediction arrived.
    pub predicted: u64,
    /// Readings without a prediction when the wait ended.
    pub missing: u64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest reading.
    pub max_ms: f64,
}

/// Send times by (partition, offset), filled in from delivery reports.
struct Sent {
    t0: Instant,
    at: Mutex<HashMap<(i32, i64), u64>>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Sent {}

impl ProducerContext for Sent {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, sent_micros: Box<u64>) {
        match result {
            Ok(m) => {
                if let Ok(mut at) = self.at.lock() {
                    at.insert((m.partition(), m.offset()), *sent_micros);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Source {
    topic: String,
    partition: i32,
    offset: i64,
}

#[derive(Deserialize)]
struct Prediction {
    source: Source,
}

/// Reads predictions for `topic`'s readings from the output topic until
/// told to stop; returns (partition, offset) -> arrival micros.
fn collect(
    consumer: &BaseConsumer,
    topic: &str,
    t0: Instant,
    stop: &AtomicBool,
    arrived: &AtomicU64,
) -> Result<HashMap<(i32, i64), u64>> {
    let mut at = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = m.context("cannot read the output topic")?;
        let now = t0.elapsed().as_micros() as u64;
        let Some(p) = m
            .payload()
            .and_then(|b| serde_json::from_slice::<Prediction>(b).ok())
        else {
            continue;
        };
        if p.source.topic == topic {
            at.entry((p.source.partition, p.source.offset))
                .or_insert(now);
            arrived.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(at)
}

/// Publishes, waits for the predictions and reports.
pub fn run(opts: Options) -> Result<Report> {
    if opts.rate == 0 || opts.count == 0 {
        bail!("--rate and --count should be at least 1");
    }
    let readings = features::datasets::load_readings(&opts.data)
        .with_context(|| format!("cannot load {}", opts.data.display()))?;
    if readings.is_empty() {
        bail!("{} has no readings", opts.data.display());
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &opts.bootstrap)
        .set("group.id", format!("load-test-e2e-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .context("cannot create the Kafka consumer")?;
    let meta = consumer
        .fetch_metadata(Some(&opts.output_topic), Duration::from_secs(10))
        .context("cannot fetch the output topic's metadata")?;
    let parts: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        bail!(
            "output topic {} does not exist: start the service first (`streamfit run` creates it)",
            opts.output_topic
        );
    }
    // start at the current end, so only predictions of what we publish count
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let (_, high) = consumer
            .fetch_watermarks(&opts.output_topic, *p, Duration::from_secs(10))
            .context("cannot read the output topic's offsets")?;
        tpl.add_partition_offset(&opts.output_topic, *p, Offset::Offset(high))
            .context("cannot assign the output topic")?;
    }
    consumer
        .assign(&tpl)
        .context("cannot assign the output topic")?;

    let t0 = Instant::now();
    let sent = Sent {
        t0,
        at: Mutex::new(HashMap::with_capacity(opts.count as usize)),
        failed: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };
    let producer: BaseProducer<Sent> = ClientConfig::new()
        .set("bootstrap.servers", &opts.bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(sent)
        .context("cannot create the Kafka producer")?;

    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let collector = {
        let (stop, arrived, topic) = (stop.clone(), arrived.clone(), opts.topic.clone());
        std::thread::Builder::new()
            .name("e2e-consumer".into())
            .spawn(move || collect(&consumer, &topic, t0, &stop, &arrived))
            .context("cannot start the consumer thread")?
    };

    // settle before the clock starts: the producer's connection, metadata
    // and producer id, and the consumer's first fetch of the output topic,
    // so that the tool's own start-up is not counted as the service's
    producer
        .client()
        .fetch_metadata(Some(&opts.topic), Duration::from_secs(10))
        .with_context(|| format!("cannot reach {} to publish", opts.topic))?;
    std::thread::sleep(Duration::from_secs(1));

    let bar = crate::bar(opts.count, opts.quiet);
    bar.set_message(format!(
        "publishing to {} at {} readings/s",
        opts.topic, opts.rate
    ));
    let start = Instant::now();
    for i in 0..opts.count {
        let due = start + Duration::from_secs_f64(i as f64 / opts.rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            if wait > Duration::from_micros(200) {
                producer.poll(Duration::ZERO);
                std::thread::sleep(wait);
            }
        }
        let r = &readings[i as usize % readings.len()];
        let now = producer.context().t0.elapsed().as_micros() as u64;
        let mut rec =
            BaseRecord::with_opaque_to(&opts.topic, Box::new(now)).payload(r.json.as_slice());
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        crate::publish::send_waiting(&producer, rec)?;
        if i % 256 == 0 {
            producer.poll(Duration::ZERO);
            bar.set_position(i);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("not every reading was acknowledged within 60 s")?;
    let published_secs = start.elapsed().as_secs_f64();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx.first_error.lock().ok().and_then(|e| e.clone());
        bail!(
            "{failed} readings were not acknowledged by {} (first error: {})",
            opts.topic,
            first.unwrap_or_default()
        );
    }
    bar.set_message("waiting for the last predictions");
    // the service has at most a micro-batch linger and a commit interval to go
    let wait_until = Instant::now() + Duration::from_secs(60);
    while arrived.load(Ordering::Relaxed) < opts.count && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(20));
        bar.set_position(arrived.load(Ordering::Relaxed).min(opts.count));
    }
    stop.store(true, Ordering::Relaxed);
    let received = collector
        .join()
        .map_err(|_| anyhow::anyhow!("the consumer thread panicked"))??;
    bar.finish_and_clear();

    let sent_at = ctx
        .at
        .lock()
        .map_err(|_| anyhow::anyhow!("the delivery map is poisoned"))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .context("cannot make a latency histogram")?;
    let mut predicted = 0u64;
    let mut dump = Vec::new();
    for (key, sent) in sent_at.iter() {
        if let Some(got) = received.get(key) {
            predicted += 1;
            hist.saturating_record(got.saturating_sub(*sent).max(1));
            if opts.dump.is_some() {
                dump.push((*sent, key.0, got.saturating_sub(*sent)));
            }
        }
    }
    if let Some(path) = &opts.dump {
        dump.sort_unstable();
        let text: String = dump
            .iter()
            .map(|(sent, p, lat)| format!("{sent} {p} {lat}\n"))
            .collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let published = sent_at.len() as u64;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(Report {
        target_rate: opts.rate,
        published,
        published_per_second: published as f64 / published_secs,
        predicted,
        missing: published - predicted,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
    })
}
