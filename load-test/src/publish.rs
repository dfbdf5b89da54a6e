//! `load-test publish`: the data sets' readings to a topic, flat out or at
//! a given rate.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

/// Counts acknowledged and failed deliveries, keeping the first error.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
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

/// How to publish.
pub struct Options {
    /// Readings per second (0 = flat out).
    pub rate: u64,
    /// Publish at most this many readings.
    pub limit: Option<usize>,
    /// Key reading i `k<i mod keys>` instead of its own key.
    pub keys: Option<usize>,
    /// Key each reading by this field of its JSON instead.
    pub key_field: Option<String>,
    /// Extra librdkafka properties (security, say).
    pub property: Vec<(String, String)>,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// Publishes the readings of `data` to `topic`.
pub fn publish(data: PathBuf, topic: String, bootstrap: String, opts: Options) -> Result<()> {
    let Options {
        rate,
        limit,
        keys,
        key_field,
        property,
        quiet,
    } = opts;
    let mut readings = features::datasets::load_readings(&data)
        .with_context(|| format!("cannot load {}", data.display()))?;
    if let Some(n) = limit {
        readings.truncate(n);
    }
    match keys {
        Some(0) => anyhow::bail!("--keys should be at least 1"),
        Some(k) => {
            for (i, r) in readings.iter_mut().enumerate() {
                r.key = Some(format!("k{}", i % k));
            }
        }
        None => {}
    }
    if let Some(field) = &key_field {
        for (i, r) in readings.iter_mut().enumerate() {
            let key = field_key(&r.json, field).with_context(|| {
                format!(
                    "reading {} of {} cannot be keyed by --key-field {field}",
                    i + 1,
                    data.display()
                )
            })?;
            r.key = Some(key);
        }
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000");
    for (k, v) in &property {
        config.set(k, v);
    }
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .context("cannot create the Kafka producer")?;
    let bar = crate::bar(readings.len() as u64, quiet);
    bar.set_message(format!("publishing to {topic}"));
    let start = Instant::now();
    for (i, r) in readings.iter().enumerate() {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut rec = BaseRecord::to(&topic).payload(r.json.as_slice());
        if let Some(k) = &r.key {
            rec = rec.key(k.as_str());
        }
        send_waiting(&producer, rec)?;
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
            bar.set_position(i as u64);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("not every reading was acknowledged within 120 s")?;
    bar.finish_and_clear();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    let acked = ctx.acked.load(Ordering::Relaxed);
    if failed > 0 || acked != readings.len() as u64 {
        let first = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        anyhow::bail!(
            "{} of {} readings were not acknowledged by {topic} (first error: {first}); does the topic exist? `streamfit run` creates its input topics",
            readings.len() as u64 - acked,
            readings.len()
        );
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {} readings to {topic} in {secs:.2} s ({:.0} readings/s)",
        readings.len(),
        readings.len() as f64 / secs
    );
    Ok(())
}

/// Sends a record, waiting while the producer's queue is full.
pub fn send_waiting<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut rec: BaseRecord<'_, str, [u8], C::DeliveryOpaque>,
) -> Result<()> {
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).context("cannot publish a reading"),
        }
    }
}

/// The key a reading's `field` gives: its string, or its number as written.
fn field_key(json: &[u8], field: &str) -> Result<String> {
    let reading: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).context("it is not a JSON object")?;
    match reading.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(other) => anyhow::bail!("its `{field}` should be a string or a number, not {other}"),
        None => anyhow::bail!("it has no field `{field}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_field_gives_its_string_or_number_and_says_why_not() {
        let key = |json: &str| field_key(json.as_bytes(), "id").map_err(|e| e.to_string());
        assert_eq!(
            key(r#"{"id": "t42", "text": "late"}"#),
            Ok("t42".to_owned())
        );
        assert_eq!(
            key(r#"{"id": 570306133677760513}"#),
            Ok("570306133677760513".to_owned())
        );
        assert_eq!(
            key(r#"{"text": "late"}"#),
            Err("it has no field `id`".to_owned())
        );
        assert_eq!(
            key(r#"{"id": null}"#),
            Err("its `id` should be a string or a number, not null".to_owned())
        );
        assert_eq!(key("late"), Err("it is not a JSON object".to_owned()));
    }
}
