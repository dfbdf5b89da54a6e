//! The command line: `streamfit eval|run|...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::eval;

/// streamfit: an online-learning prediction service for Kafka.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--config FILE` (or `STREAMFIT_CONFIG`), shared by the subcommands.
#[derive(Debug, Args)]
pub struct ConfigFile {
    /// Config file.
    #[arg(
        long = "config",
        value_name = "CONFIG",
        default_value = "deploy/streamfit.toml",
        env = "STREAMFIT_CONFIG"
    )]
    pub path: PathBuf,
}

impl ConfigFile {
    /// Loads and validates the file.
    pub fn load(&self) -> Result<Config> {
        Config::load(&self.path)
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: consume, predict, learn, publish, serve HTTP.
    Run {
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Wait until the models have caught up with their input topics as they
    /// stand now: the consumer group's lag 0 on every partition (every
    /// prediction committed) and, with --predicted, the service's predicted
    /// counters at the given numbers. Says where things stand meanwhile.
    Wait {
        /// Models to wait for (repeatable; default: every configured model).
        #[arg(long)]
        model: Vec<String>,
        /// MODEL=N: also wait until the service's
        /// streamfit_readings_predicted_total of MODEL reaches N (repeatable).
        #[arg(long, value_parser = parse_count)]
        predicted: Vec<(String, u64)>,
        /// The service's base URL for /metrics (default: http:// and
        /// `service.http_addr`).
        #[arg(long)]
        url: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Say where things stand every this many seconds.
        #[arg(long, default_value_t = 5)]
        every: u64,
        /// The service's process id: fail as soon as it has exited.
        #[arg(long)]
        pid: Option<u32>,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Train a model from a topic's history at full speed and hand it over
    /// to the service: checkpoints and the group's offsets in one transaction.
    Replay {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// earliest, latest (nothing from the topic: with --file), a time
        /// (ISO 8601, UTC unless it has an offset, or Unix ms; resolved per
        /// partition), or PARTITION:OFFSET,...
        #[arg(long, default_value = "earliest")]
        from: String,
        /// latest (the end when the replay starts) or a time.
        #[arg(long, default_value = "latest")]
        to: String,
        /// Read this topic (same readings) instead of the model's input topic;
        /// the models are handed over at the input topic's current end.
        #[arg(long)]
        topic: Option<String>,
        /// Publish predictions and dead letters, as the service would.
        #[arg(long)]
        publish: bool,
        /// Learn this file of readings first (.csv with a header of field
        /// names, .parquet, or .jsonl): history that never went through
        /// Kafka. With `--from latest`, only the file.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
        /// Print one JSON object instead of progress bars and text.
        #[arg(long)]
        json: bool,
    },
    /// Export or import a model in the versioned snapshot format.
    Model {
        /// export or import.
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Export a model's committed predictions (its output topic) to an Arrow
    /// IPC or Parquet file for notebooks.
    Predictions {
        /// export.
        #[command(subcommand)]
        action: PredictionsAction,
    },
    /// Run the prequential (test-then-train) protocol over a data set and print its figures.
    Eval {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// The wait-time directory, the heart CSV, or a JSONL file of readings.
        #[arg(long)]
        data: PathBuf,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
        /// Micro-batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed passes over the stream, each on a fresh model; the speed
        /// figures are the medians (the machine is shared and noisy), the
        /// metrics the first pass's (every pass must predict the same).
        #[arg(long, default_value_t = 3)]
        passes: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
        /// Write every prediction to this Arrow IPC file.
        #[arg(long)]
        predictions_out: Option<PathBuf>,
        /// Also fit a smartcore batch model on the first 80% and score it on the last 20%.
        #[arg(long)]
        hindsight: bool,
        /// Reveal each label to the learner only this much later: a number
        /// of readings (100), or event time (90s, 30m, 2h, 1d). Readings are
        /// still predicted and scored on arrival.
        #[arg(long, default_value = "0")]
        label_delay: crate::pipeline::LabelDelay,
        /// Predict each reading from the model and state as they were this
        /// much earlier in event time (60m, 1d), through the `/predict`
        /// path, beside persistence at the same horizon (regressions).
        #[arg(long, default_value = "0")]
        horizon: crate::horizon::Horizon,
    },
}

/// `streamfit model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Write the model's latest committed checkpoints (every input
    /// partition's state and offset) as one JSON snapshot.
    Export {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// File to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
    },
    /// Make a snapshot the state the model's consumer group continues from:
    /// its checkpoints and the group's offsets, in one transaction. The
    /// service must be stopped.
    Import {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// Snapshot file (from `model export` or GET /v1/models/{name}/snapshot).
        #[arg(long)]
        file: PathBuf,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// `streamfit predictions ...`.
#[derive(Debug, Subcommand)]
pub enum PredictionsAction {
    /// Write every committed prediction of the model's output topic, up to
    /// its end as of now, to an Arrow IPC file, or Parquet when the name
    /// ends in .parquet (partition, offset, key, model_version, prediction,
    /// probability, label, event_time_ms; a multiclass model's prediction
    /// and label are class indices, and predicted_class, label_class and a
    /// probability_<class> column per class follow).
    Export {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// File to write: predictions.arrow (Arrow IPC) or predictions.parquet.
        #[arg(long)]
        out: PathBuf,
        /// Config file.
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// `MODEL=N`.
fn parse_count(s: &str) -> Result<(String, u64), String> {
    let (model, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected MODEL=N, got {s:?}"))?;
    let n = n
        .parse::<u64>()
        .map_err(|_| format!("expected MODEL=N with N a count, got {s:?}"))?;
    Ok((model.to_owned(), n))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let config = config.load()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let result = rt.block_on(async {
                let shutdown = crate::server::shutdown_on_signals();
                crate::server::run(config, shutdown).await
            });
            // a worker stuck on the broker must not hold the exit (dropping
            // the runtime would wait for its blocking join)
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait {
            model,
            predicted,
            url,
            timeout,
            every,
            pid,
            config,
        } => {
            let config = config.load()?;
            let opts = crate::catchup::Options {
                models: model,
                predicted: predicted.into_iter().collect(),
                url,
                timeout: std::time::Duration::from_secs(timeout),
                every: std::time::Duration::from_secs(every),
                pid,
            };
            crate::catchup::wait(&config, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            model,
            from,
            to,
            topic,
            publish,
            file,
            config,
            json,
        } => {
            let config = config.load()?;
            let opts = crate::replay::Options {
                model,
                from: crate::engine::offsets::parse_from(&from)?,
                to: crate::engine::offsets::parse_to(&to)?,
                topic,
                publish,
                file,
                progress: !json,
            };
            let summary = crate::replay::run(&config, &opts)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Predictions {
            action: PredictionsAction::Export { model, out, config },
        } => {
            let config = config.load()?;
            let done = crate::predlog::export(&config, &model, &out)?;
            println!(
                "wrote {} predictions of {model} to {} ({} other messages skipped)",
                done.rows,
                out.display(),
                done.skipped
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Model { action } => {
            match action {
                ModelAction::Export { model, out, config } => {
                    let config = config.load()?;
                    let snap = crate::snapshot::export(&config, &model)?;
                    let bytes = serde_json::to_vec(&snap).context("cannot encode the snapshot")?;
                    match out {
                        Some(path) => {
                            std::fs::write(&path, &bytes)
                                .with_context(|| format!("cannot write {}", path.display()))?;
                            let next = snap
                                .partitions
                                .iter()
                                .map(|c| (c.partition, c.next_offset))
                                .collect();
                            eprintln!(
                                "exported model {model}: {} partition(s), the state up to {}, to {}",
                                snap.partitions.len(),
                                crate::engine::offsets::in_words(&next),
                                path.display()
                            );
                        }
                        None => {
                            use std::io::Write;
                            std::io::stdout()
                                .write_all(&bytes)
                                .context("cannot write to standard output")?;
                        }
                    }
                }
                ModelAction::Import {
                    model,
                    file,
                    config,
                } => {
                    let config = config.load()?;
                    let bytes = std::fs::read(&file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    let snap = crate::snapshot::ModelSnapshot::decode(&bytes)
                        .with_context(|| format!("{} is not a snapshot", file.display()))?;
                    let at = crate::snapshot::import(&config, &model, snap)?;
                    println!(
                        "imported model {model}; the service continues at {}",
                        crate::engine::offsets::in_words(&at)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            model,
            data,
            config,
            batch,
            passes,
            json,
            predictions_out,
            hindsight,
            label_delay,
            horizon,
        } => {
            let config = config.load()?;
            let model = &config.model(&model)?.for_records();
            let readings = eval::load(&data)?;
            if horizon.ms > 0 {
                anyhow::ensure!(
                    batch == 1
                        && label_delay == crate::pipeline::LabelDelay::None
                        && !hindsight
                        && predictions_out.is_none(),
                    "`--horizon` runs its own protocol: leave out --batch, --label-delay, --hindsight and --predictions-out"
                );
                let report = crate::horizon::run(model, &readings, &horizon)?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!("{}", report.to_text());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut log = predictions_out
                .as_ref()
                .map(|_| features::arrow_io::PredictionLog::default());
            let mut report =
                eval::run_delayed(model, &readings, batch, passes, label_delay, log.as_mut())?;
            if hindsight {
                report.hindsight_last_20pct = Some(eval::hindsight(model, &readings)?);
            }
            if let (Some(path), Some(log)) = (&predictions_out, &log) {
                log.write_ipc(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let task = crate::pipeline::Pipeline::new(model)?.task();
                println!("{}", report.to_text(task));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
