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
