//! `streamfit replay`: train a model from a topic's history at full speed and
//! hand it over to the service without a gap and without learning any
//! reading twice.
//!
//! The replay is the service's own worker on assigned partitions: fresh
//! models per partition, learning from the start offsets to the end offsets,
//! optionally publishing predictions, and committing in Kafka transactions.
//! Its last transaction holds each partition's checkpoint and the consumer
//! group's offsets at the same point, so the service, restoring the
//! checkpoint and resuming at the committed offset, continues exactly where
//! the replay stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::config::{Config, ModelConfig};
use crate::kafka;
use crate::pipeline::{Input, Pipeline, PipelineSnapshot};
use crate::worker::{self, ModelHandle, ReplayPlan};

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum From {
    /// The first offset still in the topic.
    Earliest,
    /// The end of each partition: nothing from the topic (a backfill from a
    /// file only).
    Latest,
    /// The first reading at or after this time (Unix ms), per partition.
    Time(i64),
    /// Explicit offsets; partitions not listed are not replayed.
    Offsets(BTreeMap<i32, i64>),
}

/// Where a replay stops.
#[derive(Debug, Clone, PartialEq)]
pub enum To {
    /// The end of each partition when the replay starts.
    Latest,
    /// Before the first reading at or after this time (Unix ms).
    Time(i64),
}

/// Parses `--from`: `earliest`, a timestamp, or `PARTITION:OFFSET,...`.
pub fn parse_from(s: &str) -> Result<From> {
    parse_from_as(s, "--from")
}

/// Parses a start given as `name` (`--from` on the command line, `from` in
/// an HTTP body).
pub fn parse_from_as(s: &str, name: &str) -> Result<From> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("earliest") {
        return Ok(From::Earliest);
    }
    if s.eq_ignore_ascii_case("latest") {
        return Ok(From::Latest);
    }
    if s.contains(':') && !s.contains('-') && !s.contains('T') {
        let mut offsets = BTreeMap::new();
        for part in s.split(',') {
            let (p, o) = part
                .split_once(':')
                .with_context(|| format!("`{name}` {part:?} should be PARTITION:OFFSET"))?;
            let p: i32 = p
                .trim()
                .parse()
                .with_context(|| format!("`{name}` {part:?}: the partition should be a number"))?;
            let o: i64 = o
                .trim()
                .parse()
                .with_context(|| format!("`{name}` {part:?}: the offset should be a number"))?;
            if p < 0 || o < 0 {
                bail!("`{name}` {part:?}: partition and offset should not be negative");
            }
            offsets.insert(p, o);
        }
        return Ok(From::Offsets(offsets));
    }
    parse_time(s, name).map(From::Time)
}

/// Parses `--to`: `latest` or a timestamp.
pub fn parse_to(s: &str) -> Result<To> {
    if s.trim().eq_ignore_ascii_case("latest") {
        return Ok(To::Latest);
    }
    parse_time(s.trim(), "--to").map(To::Time)
}

/// A timestamp as Unix milliseconds: ISO 8601 (UTC unless it has an
/// offset) or a number of Unix milliseconds.
pub fn parse_time(s: &str, flag: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = features::time::Timestamp::parse(s).with_context(|| {
        format!("`{flag}` should be earliest/latest, an ISO 8601 time such as 2018-06-01T00:00:00Z, Unix milliseconds, or PARTITION:OFFSET,...; got {s:?}")
    })?;
    let offset = i64::from(t.offset_minutes.unwrap_or(0));
    Ok(t.days * 86_400_000 + (t.seconds * 1000.0).round() as i64 - offset * 60_000)
}

/// Resolves start and end offsets per partition of `topic`.
pub fn resolve(
    consumer: &BaseConsumer,
    topic: &str,
    from: &From,
    to: &To,
) -> Result<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let timeout = Duration::from_secs(30);
    let partitions = crate::kafka::partition_ids(consumer, topic, timeout)
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    if partitions.is_empty() {
        bail!("topic {topic} does not exist or has no partitions");
    }
    let mut marks = BTreeMap::new();
    for &p in &partitions {
        let w = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
        marks.insert(p, w);
    }
    let at_time = |ms: i64| -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ms))
                .context("cannot build the time lookup")?;
        }
        let found = consumer
            .offsets_for_times(tpl, timeout)
            .with_context(|| format!("cannot look up offsets by time in {topic}"))?;
        let mut out = BTreeMap::new();
        for e in found.elements_for_topic(topic) {
            let high = marks.get(&e.partition()).map_or(0, |w| w.1);
            // no reading at or after the time: the partition's end
            let o = match e.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => high,
            };
            out.insert(e.partition(), o);
        }
        Ok(out)
    };
    let start = match from {
        From::Earliest => marks.iter().map(|(&p, w)| (p, w.0)).collect(),
        From::Latest => marks.iter().map(|(&p, w)| (p, w.1)).collect(),
        From::Time(ms) => at_time(*ms)?,
        From::Offsets(o) => {
            for (p, off) in o {
                let Some(&(lo, hi)) = marks.get(p) else {
                    bail!("`--from`: {topic} has no partition {p} (it has {partitions:?})");
                };
                if *off < lo || *off > hi {
                    bail!("`--from`: offset {off} of {topic}/{p} is outside what the partition holds ({lo}..{hi})");
                }
            }
            o.clone()
        }
    };
    let end = match to {
        To::Latest => marks.iter().map(|(&p, w)| (p, w.1)).collect(),
        To::Time(ms) => at_time(*ms)?,
    };
    Ok((start, end))
}

/// Options of `streamfit replay`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The model's name.
    pub model: String,
    /// Where to start.
    pub from: From,
    /// Where to stop.
    pub to: To,
    /// Read this topic instead of the model's input topic.
    pub topic: Option<String>,
    /// Publish predictions and dead letters.
    pub publish: bool,
    /// Learn this file of readings (CSV, Parquet, JSONL) first: history that
    /// never went through Kafka. Every partition's model starts from it.
    pub file: Option<std::path::PathBuf>,
    /// Draw progress bars.
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// Readings learned from (or predicted) per second.
    pub readings_per_second: f64,
    /// Readings processed from the topic.
    pub readings: u64,
    /// Readings learned from the file first.
    pub file_readings: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Next offset per partition of the replayed topic.
    pub handed_over: BTreeMap<i32, i64>,
}

/// Runs a replay and hands its models over to the consumer group.
pub fn run(config: &Config, opts: &Options) -> Result<Summary> {
    let m = config.model(&opts.model)?.clone();
    let input = m.input_topic()?.to_owned();
    let topic = opts.topic.clone().unwrap_or_else(|| input.clone());
    let group = format!("{}.{}", config.service.group_id, m.name);
    if config.topics.create {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        rt.block_on(async {
            let mut topics = vec![m.output_topic(), m.dead_letter_topic()];
            topics.dedup();
            kafka::ensure_topics_with(
                &config.kafka,
                &topics,
                config.topics.partitions,
                config.topics.replication_factor,
                config.topics.min_isr(),
            )
            .await?;
            checkpoint::ensure_topic(
                &config.kafka,
                &config.service.checkpoint_topic,
                config.topics.replication_factor,
                config.topics.min_isr(),
            )
            .await
        })?;
    }
    // a running service in the group would race the handover
    crate::snapshot::ensure_group_idle(
        config,
        &group,
        &m.name,
        "replaying into it (or backfill over HTTP while it runs)",
    )?;
    let probe: BaseConsumer = kafka::consumer_config(&config.kafka, &group)
        .create()
        .context("cannot create a Kafka consumer; check the [kafka] properties")?;
    let (start, end) = resolve(&probe, &topic, &opts.from, &opts.to)?;
    let total: i64 = start
        .iter()
        .map(|(p, s)| (end.get(p).copied().unwrap_or(*s) - s).max(0))
        .sum();
    drop(probe);
    tracing::info!(model = %m.name, %topic, ?start, ?end, total, "replaying");

    let seed = match &opts.file {
        Some(path) => Some(learn_file(&m, path, opts.progress)?),
        None => None,
    };
    let file_readings = seed.as_ref().map_or(0, |(_, n)| *n);
    let handle = Arc::new(ModelHandle::new(m.clone())?);
    let cancel = CancellationToken::new();
    let plan = ReplayPlan {
        topic: topic.clone(),
        start: start.clone(),
        end: end.clone(),
        publish: opts.publish,
        seed: seed.map(|(s, _)| s),
    };
    let started = Instant::now();
    let worker = {
        let (config, handle, cancel) = (config.clone(), handle.clone(), cancel.clone());
        std::thread::Builder::new()
            .name(format!("replay-{}", m.name))
            .spawn(move || worker::replay(&config, &handle, &cancel, plan))
            .context("cannot start the replay thread")?
    };
    let bars = opts.progress.then(|| Bars::new(&start, &end));
    while !worker.is_finished() {
        if let (Some(b), Ok(progress)) = (&bars, handle.progress.lock()) {
            b.update(&progress);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the replay thread panicked"))?;
    if let (Some(b), Ok(progress)) = (&bars, handle.progress.lock()) {
        b.update(&progress);
        b.finish();
    }
    result?;
    let seconds = started.elapsed().as_secs_f64();
    if topic != input {
        hand_over(config, &group, &topic, &input)?;
    }
    Ok(Summary {
        readings_per_second: total as f64 / seconds.max(1e-9),
        readings: total as u64,
        file_readings,
        seconds,
        handed_over: end,
    })
}

/// Learns a file of readings into a fresh pipeline, with a progress bar;
/// returns its snapshot and the number of readings.
fn learn_file(
    m: &ModelConfig,
    path: &std::path::Path,
    progress: bool,
) -> Result<(PipelineSnapshot, u64)> {
    let rows = features::datasets::read_table(path)
        .with_context(|| format!("cannot read the readings in {}", path.display()))?;
    let bar = if progress {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {human_pos}/{human_len} readings  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("file");
    let mut pipeline = Pipeline::new(m)?;
    let mut out = Vec::new();
    for chunk in rows.chunks(m.batch.max_readings) {
        let inputs: Vec<Input<'_>> = chunk.iter().map(Input::from).collect();
        out.clear();
        pipeline.process(&inputs, &mut out);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if pipeline.learned() == 0 {
        bail!(
            "{}: none of its {} readings could be learned (do its fields match model {}'s features and target?)",
            path.display(),
            rows.len(),
            m.name
        );
    }
    Ok((pipeline.snapshot(), rows.len() as u64))
}

/// A replay of another topic: its partitions' models become the input
/// partitions' checkpoints, valid from the input's current end, and the
/// group's offsets move there, in one transaction.
fn hand_over(config: &Config, group: &str, from_topic: &str, input: &str) -> Result<()> {
    let timeout = Duration::from_secs(30);
    let found = checkpoint::read_latest(
        &config.kafka,
        &config.service.checkpoint_topic,
        group,
        from_topic,
        timeout,
    )?;
    let consumer: BaseConsumer = kafka::consumer_config(&config.kafka, group)
        .create()
        .context("cannot create a Kafka consumer")?;
    let (_, ends) = resolve(&consumer, input, &From::Earliest, &To::Latest)?;
    for p in found.keys() {
        if !ends.contains_key(p) {
            bail!("{from_topic} has partition {p} but {input} has only {}: replay a topic with at most as many partitions as the input", ends.len());
        }
    }
    let checkpoints = found
        .into_iter()
        .map(|(p, mut ck)| {
            ck.next_offset = ends.get(&p).copied().unwrap_or(0);
            ck
        })
        .collect();
    crate::snapshot::write_state(config, group, input, checkpoints)?;
    tracing::info!(%group, %from_topic, %input, "models handed over to the input topic");
    Ok(())
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    parts: BTreeMap<i32, ProgressBar>,
}

impl Bars {
    fn new(start: &BTreeMap<i32, i64>, end: &BTreeMap<i32, i64>) -> Bars {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {human_pos}/{human_len} readings  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let len = |p: &i32, s: &i64| (end.get(p).copied().unwrap_or(*s) - s).max(0) as u64;
        let total = multi.add(ProgressBar::new(start.iter().map(|(p, s)| len(p, s)).sum()));
        total.set_style(style.clone());
        total.set_prefix("all partitions");
        let parts = start
            .iter()
            .map(|(p, s)| {
                let b = multi.add(ProgressBar::new(len(p, s)));
                b.set_style(style.clone());
                b.set_prefix(format!("partition {p}"));
                (*p, b)
            })
            .collect();
        Bars {
            multi,
            total,
            parts,
        }
    }

    fn update(&self, progress: &worker::Progress) {
        let mut sum = 0;
        for (p, &(start, done, _)) in progress {
            let n = (done - start).max(0) as u64;
            sum += n;
            if let Some(b) = self.parts.get(p) {
                b.set_position(n);
            }
        }
        self.total.set_position(sum);
    }

    fn finish(&self) {
        for b in self.parts.values() {
            b.finish();
        }
        self.total.finish();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_starts_and_ends() {
        assert_eq!(parse_from("earliest").expect("ok"), From::Earliest);
        assert_eq!(
            parse_from("0:10, 2:7").expect("ok"),
            From::Offsets([(0, 10), (2, 7)].into_iter().collect())
        );
        assert_eq!(
            parse_from("2018-01-01T00:00:00Z").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(
            parse_from("2018-01-01T01:00:00+01:00").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(
            parse_from("1514764800000").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(parse_to("latest").expect("ok"), To::Latest);
        let e = parse_from("yesterday").expect_err("not a time");
        assert!(format!("{e:#}").contains("`--from`"), "{e:#}");
        assert!(parse_from("0:x").is_err());
    }
}
