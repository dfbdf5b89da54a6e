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
use indicatif::{HumanCount, MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use rdkafka::consumer::BaseConsumer;
use tokio_util::sync::CancellationToken;

use crate::checkpoint;
use crate::config::{Config, ModelConfig};
use crate::engine::offsets::{resolve, From, To};
use crate::engine::{self, ModelHandle, ReplayPlan};
use crate::kafka;
use crate::kafka::Logs;
use crate::pipeline::{Input, Pipeline, PipelineSnapshot};

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

impl std::fmt::Display for Summary {
    /// `replayed 2000 readings from the file and 120 from the topic in
    /// 1.7 s (71 readings/s from the topic); the service continues at
    /// partition 0 offset 120`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file_readings > 0 {
            write!(
                f,
                "replayed {} readings from the file and {} from the topic",
                self.file_readings, self.readings
            )?;
        } else {
            write!(f, "replayed {} readings from the topic", self.readings)?;
        }
        write!(
            f,
            " in {:.1} s ({:.0} readings/s from the topic); the service continues at {}",
            self.seconds,
            self.readings_per_second,
            engine::offsets::in_words(&self.handed_over)
        )
    }
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
            topics.extend(m.events_topic());
            topics.dedup();
            kafka::ensure_configured_topics(config, &topics).await?;
            checkpoint::prepare_topic(config, &config.service.checkpoint_topic(&m.name)).await
        })?;
    }
    // a running service in the group would race the handover
    crate::idle::ensure_group_idle(
        config,
        &group,
        &m.name,
        "replaying into it (or backfill over HTTP while it runs)",
    )?;
    let probe: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, &group)
        .create_with_context(Logs)
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
            .spawn(move || engine::replay(&config, &handle, &cancel, plan))
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
        hand_over(config, &m.name, &group, &topic, &input)?;
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
    bar.set_style(bar_style());
    bar.set_prefix("file");
    let mut pipeline = Pipeline::new(&m.for_records())?;
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
fn hand_over(
    config: &Config,
    model: &str,
    group: &str,
    from_topic: &str,
    input: &str,
) -> Result<()> {
    let timeout = Duration::from_secs(30);
    let found = checkpoint::read_latest(
        &config.kafka,
        &config.service.checkpoint_topic(model),
        group,
        from_topic,
        &[],
        timeout,
    )?;
    let consumer: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, group)
        .create_with_context(Logs)
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
    crate::snapshot::write_state(config, model, group, input, checkpoints)?;
    tracing::info!(%group, %from_topic, %input, "models handed over to the input topic");
    Ok(())
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    parts: BTreeMap<i32, ProgressBar>,
}

/// The style of a replay's progress bars: readings done of all, the rate
/// in whole readings a second (indicatif's own `per_sec` prints four
/// decimals: `15,643.0671/s`), the time left.
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>14} [{bar:30}] {human_pos}/{human_len} readings  {rate}  ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", HumanCount(state.per_sec() as u64));
        },
    )
    .progress_chars("=> ")
}

impl Bars {
    fn new(start: &BTreeMap<i32, i64>, end: &BTreeMap<i32, i64>) -> Bars {
        let multi = MultiProgress::new();
        let style = bar_style();
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

    fn update(&self, progress: &engine::Progress) {
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
    fn the_summary_says_where_readings_came_from_and_where_the_service_goes_on() {
        let mut s = Summary {
            readings_per_second: 70.6,
            readings: 120,
            file_readings: 2000,
            seconds: 1.7,
            handed_over: BTreeMap::from([(0, 120), (1, 7)]),
        };
        assert_eq!(
            s.to_string(),
            "replayed 2000 readings from the file and 120 from the topic in 1.7 s \
             (71 readings/s from the topic); the service continues at partition 0 \
             offset 120, partition 1 offset 7"
        );
        s.file_readings = 0;
        s.handed_over.clear();
        assert_eq!(
            s.to_string(),
            "replayed 120 readings from the topic in 1.7 s (71 readings/s from the \
             topic); the service continues at its group's offsets"
        );
    }
}
