//! `load-test`: publishes the real data sets to Kafka as readings
//! (BENCHMARKS.md), drives streamfit's `/predict` and measures
//! reading-to-prediction latency through a running service.

mod consume;
mod e2e;
mod predict;
mod publish;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};

/// `--bootstrap`, shared by the subcommands that talk to Kafka.
#[derive(Debug, Args)]
struct Kafka {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        default_value = "127.0.0.1:9092",
        env = "STREAMFIT_KAFKA_BOOTSTRAP_SERVERS"
    )]
    bootstrap: String,
}

/// Load tools for streamfit.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Publish a data set's readings to a topic (key = ride or patient id).
    Publish {
        /// The wait-time directory, the heart CSV, or a JSONL file.
        #[arg(long)]
        data: PathBuf,
        /// Topic to publish to.
        #[arg(long)]
        topic: String,
        /// Kafka bootstrap servers.
        #[command(flatten)]
        kafka: Kafka,
        /// Readings per second (0 = flat out).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Publish at most this many readings.
        #[arg(long)]
        limit: Option<usize>,
        /// Fan the readings out to N keys: reading i gets the key `k<i mod N>`
        /// (keyed-state benchmarks).
        #[arg(long, conflicts_with = "key_field")]
        keys: Option<usize>,
        /// Key each reading by this field of its JSON (a string, or a
        /// number as written): `--key-field id` for the tweets, which
        /// have no key of their own, so that each tweet lands on its key's
        /// partition instead of wherever the producer's sticky batches go.
        #[arg(long)]
        key_field: Option<String>,
        /// Extra librdkafka producer property, KEY=VALUE (repeatable):
        /// `-X security.protocol=SASL_SSL -X sasl.username=...`.
        #[arg(short = 'X', value_parser = parse_prop)]
        property: Vec<(String, String)>,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Drive POST /v1/models/{name}/predict with concurrent keep-alive
    /// clients and report latency percentiles.
    Predict {
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Model to ask.
        #[arg(long)]
        model: String,
        /// Data set whose readings are the request bodies.
        #[arg(long)]
        data: PathBuf,
        /// Requests per second, open-loop (0 = flat out).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds to drive.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Readings per request (more than 1 sends JSON arrays).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Bearer token sent with every request.
        #[arg(long, env = "STREAMFIT_LOAD_TOKEN")]
        token: Option<String>,
        /// PEM CA certificate to trust for an https:// URL.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Read a topic from the start to its end with librdkafka alone (no
    /// decoding, no model) and report messages/s: streamfit's ceiling.
    Consume {
        /// Topic to read.
        #[arg(long)]
        topic: String,
        /// Kafka bootstrap servers.
        #[command(flatten)]
        kafka: Kafka,
        /// Extra librdkafka consumer property, KEY=VALUE (repeatable).
        #[arg(short = 'X', value_parser = parse_prop)]
        property: Vec<(String, String)>,
    },
    /// Publish readings at a fixed rate to a running service's input topic
    /// and measure the time until each one's prediction is readable
    /// (read_committed) on its output topic.
    E2e {
        /// Data set to publish (cycled if --count is larger).
        #[arg(long)]
        data: PathBuf,
        /// The model's input topic.
        #[arg(long)]
        topic: String,
        /// The model's output topic.
        #[arg(long)]
        output_topic: String,
        /// Kafka bootstrap servers.
        #[command(flatten)]
        kafka: Kafka,
        /// Readings per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Readings to publish.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Write "send time µs, partition, latency µs" per reading to this file.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// A progress bar of `len` steps, hidden when `quiet`.
pub(crate) fn bar(len: u64, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {human_pos}/{human_len}  {rate}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // whole readings a second: indicatif's `per_sec` prints four decimals
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", HumanCount(state.per_sec() as u64));
            },
        )
        .progress_chars("=> "),
    );
    bar
}

fn parse_prop(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn print<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).context("cannot encode the report")?
        );
    } else {
        println!("{}", text(report));
    }
    Ok(())
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Publish {
            data,
            topic,
            kafka,
            rate,
            limit,
            keys,
            key_field,
            property,
            quiet,
        } => publish::publish(
            data,
            topic,
            kafka.bootstrap,
            publish::Options {
                rate,
                limit,
                keys,
                key_field,
                property,
                quiet,
            },
        ),
        Cmd::Predict {
            url,
            model,
            data,
            rate,
            duration,
            connections,
            batch,
            token,
            cacert,
            json,
            quiet,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let opts = predict::Options {
                url,
                model,
                data,
                rate,
                duration,
                connections,
                batch,
                token,
                cacert,
                quiet,
            };
            let r = rt.block_on(predict::run(opts))?;
            print(&r, json, |r| {
                format!(
                    "{} requests in {:.1} s ({:.0} req/s, {} errors{}); latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; the service learned {:.0} readings/s meanwhile",
                    r.requests,
                    r.seconds,
                    r.requests_per_second,
                    r.errors,
                    r.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default(),
                    r.p50_ms,
                    r.p90_ms,
                    r.p99_ms,
                    r.p999_ms,
                    r.max_ms,
                    r.learned_per_second
                )
            })
        }
        Cmd::Consume {
            topic,
            kafka,
            property,
        } => {
            let (n, secs) = consume::run(&kafka.bootstrap, &topic, &property)?;
            println!(
                "read {n} messages from {topic} in {secs:.2} s ({:.0} messages/s)",
                n as f64 / secs
            );
            Ok(())
        }
        Cmd::E2e {
            data,
            topic,
            output_topic,
            kafka,
            rate,
            count,
            dump,
            json,
            quiet,
        } => {
            let r = e2e::run(e2e::Options {
                data,
                topic,
                output_topic,
                bootstrap: kafka.bootstrap,
                rate,
                count,
                quiet,
                dump,
            })?;
            print(&r, json, |r| {
                format!(
                    "published {} readings at {:.0}/s; {} predictions arrived, {} missing; reading to prediction ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
                    r.published, r.published_per_second, r.predicted, r.missing, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
                )
            })
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
