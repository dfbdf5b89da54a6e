//! The command line: `streamfit eval|run|...`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

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

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: consume, predict, learn, publish, serve HTTP.
    Run {
        /// Config file.
        #[arg(
            long,
            default_value = "deploy/streamfit.toml",
            env = "STREAMFIT_CONFIG"
        )]
        config: PathBuf,
    },
    /// Train a model from a topic's history at full speed and hand it over
    /// to the service: checkpoints and the group's offsets in one transaction.
    Replay {
        /// Model name from the config.
        #[arg(long)]
        model: String,
        /// earliest, a time (ISO 8601, UTC unless it has an offset, or Unix
        /// ms; resolved per partition), or PARTITION:OFFSET,...
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
        /// Config file.
        #[arg(
            long,
            default_value = "deploy/streamfit.toml",
            env = "STREAMFIT_CONFIG"
        )]
        config: PathBuf,
        /// Print one JSON object instead of progress bars and text.
        #[arg(long)]
        json: bool,
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
        #[arg(
            long,
            default_value = "deploy/streamfit.toml",
            env = "STREAMFIT_CONFIG"
        )]
        config: PathBuf,
        /// Micro-batch size.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
        /// Write every prediction to this Arrow IPC file.
        #[arg(long)]
        predictions_out: Option<PathBuf>,
        /// Also fit a smartcore batch model on the first 80% and score it on the last 20%.
        #[arg(long)]
        hindsight: bool,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let shutdown = crate::server::shutdown_on_signals();
                crate::server::run(config, shutdown).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            model,
            from,
            to,
            topic,
            publish,
            config,
            json,
        } => {
            let config = Config::load(&config)?;
            let opts = crate::replay::Options {
                model,
                from: crate::replay::parse_from(&from)?,
                to: crate::replay::parse_to(&to)?,
                topic,
                publish,
                progress: !json,
            };
            let summary = crate::replay::run(&config, &opts)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!(
                    "replayed {} readings in {:.1} s ({:.0} readings/s); the service continues from {:?}",
                    summary.readings,
                    summary.seconds,
                    summary.readings_per_second,
                    summary.handed_over
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            model,
            data,
            config,
            batch,
            json,
            predictions_out,
            hindsight,
        } => {
            let config = Config::load(&config)?;
            let model = config.model(&model)?;
            let readings = eval::load(&data)?;
            let mut log = predictions_out
                .as_ref()
                .map(|_| features::arrow_io::PredictionLog::default());
            let mut report = eval::run(model, &readings, batch, log.as_mut())?;
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
