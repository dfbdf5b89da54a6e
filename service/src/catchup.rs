//! `streamfit wait`: returns once the models have caught up with their
//! input topics as they stand when it starts. Caught up means Kafka's own
//! consumer-group lag is 0 on every input partition (the group's committed
//! offset at the partition's end: with exactly once, every prediction up to
//! there is committed and readable), and, when asked, each model's
//! predicted counter has reached a number (the readings a script has just
//! published, on top of what the service had predicted before).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka;
use crate::kafka::Logs;

/// What to wait for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Models to wait for (empty: every configured model).
    pub models: Vec<String>,
    /// Predicted counters to reach, by model (read from `/metrics`).
    pub predicted: BTreeMap<String, u64>,
    /// The service's base URL for `/metrics` (default: `service.http_addr`).
    pub url: Option<String>,
    /// Give up after this long.
    pub timeout: Duration,
    /// Say where things stand this often.
    pub every: Duration,
    /// The service's process: the wait fails as soon as it has exited.
    pub pid: Option<u32>,
}

/// True while process `pid` runs (a zombie, exited but not yet reaped by
/// its parent, does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // the state follows the command name, which is in parentheses
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// One model's standing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Standing {
    /// Model name.
    pub model: String,
    /// Input partitions' ends when the wait started.
    pub ends: BTreeMap<i32, i64>,
    /// The group's committed offsets (-1: none yet).
    pub committed: BTreeMap<i32, i64>,
    /// Readings between the committed offsets and the ends.
    pub lag: i64,
    /// The predicted counter and the number waited for, when asked.
    pub predicted: Option<(u64, u64)>,
}

impl Standing {
    /// Lag 0 everywhere and the predicted counter reached.
    pub fn caught_up(&self) -> bool {
        self.lag == 0 && self.predicted.is_none_or(|(got, want)| got >= want)
    }

    fn describe(&self) -> String {
        let per: Vec<String> = self
            .ends
            .iter()
            .map(|(p, end)| {
                let c = self.committed.get(p).copied().unwrap_or(-1);
                format!("p{p} {}/{end}", c.max(0))
            })
            .collect();
        let predicted = self
            .predicted
            .map(|(got, want)| format!(", predicted {got}/{want}"))
            .unwrap_or_default();
        format!(
            "{}: lag {} ({}){predicted}",
            self.model,
            self.lag,
            per.join(" ")
        )
    }
}

/// Lag of `committed` behind `ends` (a partition with nothing committed
/// lags by its whole length).
pub fn lag(ends: &BTreeMap<i32, i64>, committed: &BTreeMap<i32, i64>) -> i64 {
    ends.iter()
        .map(|(p, &end)| (end - committed.get(p).copied().unwrap_or(-1).max(0)).max(0))
        .sum()
}

/// The value of `streamfit_readings_predicted_total{model="NAME"}` in a
/// Prometheus text page.
pub fn predicted_in(page: &str, model: &str) -> Option<u64> {
    let head = format!("streamfit_readings_predicted_total{{model=\"{model}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&head))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

struct Watched {
    model: String,
    topic: String,
    consumer: BaseConsumer<Logs>,
    ends: BTreeMap<i32, i64>,
}

impl Watched {
    fn committed(&self) -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in self.ends.keys() {
            tpl.add_partition(&self.topic, *p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .with_context(|| format!("cannot read model {}'s committed offsets", self.model))?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                let at = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (e.partition(), at)
            })
            .collect())
    }
}

/// Reads the service's `/metrics` page: one runtime and one keep-alive
/// client for the whole wait, not one per look.
struct MetricsReader {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl MetricsReader {
    fn new() -> Result<MetricsReader> {
        Ok(MetricsReader {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?,
            client: reqwest::Client::new(),
        })
    }

    fn page(&self, url: &str) -> Result<String> {
        self.rt.block_on(async {
            let r = self
                .client
                .get(format!("{url}/metrics"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .with_context(|| format!("the service does not answer at {url}/metrics"))?;
            if !r.status().is_success() {
                bail!("{url}/metrics answered {}", r.status());
            }
            r.text().await.context("cannot read /metrics")
        })
    }
}

/// Waits until every model has caught up; prints where things stand to
/// stderr every `opts.every`. Returns the final standings.
pub fn wait(config: &Config, opts: &Options) -> Result<Vec<Standing>> {
    let names: Vec<String> = if opts.models.is_empty() {
        config.models.iter().map(|m| m.name.clone()).collect()
    } else {
        opts.models.clone()
    };
    for name in opts.predicted.keys() {
        if !names.contains(name) {
            bail!(
                "--predicted names model {name:?}, which is not waited for (the models: {})",
                names.join(", ")
            );
        }
    }
    let url = opts
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.service.http_addr));
    let mut watched = Vec::new();
    for name in &names {
        let m = config.model(name)?;
        let topic = m.input_topic()?.to_owned();
        let group = crate::snapshot::group_of(config, name);
        let consumer: BaseConsumer<Logs> = kafka::plain_consumer_config(&config.kafka, &group)
            .create_with_context(Logs)
            .context("cannot create a Kafka consumer; check the [kafka] properties")?;
        let ids = kafka::partition_ids(&consumer, &topic, Duration::from_secs(30))
            .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
        if ids.is_empty() {
            bail!("model {name}'s input topic {topic} does not exist: nothing to wait for");
        }
        let mut ends = BTreeMap::new();
        for p in ids {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(30))
                .with_context(|| format!("cannot read the end of {topic} partition {p}"))?;
            ends.insert(p, high);
        }
        watched.push(Watched {
            model: name.clone(),
            topic,
            consumer,
            ends,
        });
    }
    let started = Instant::now();
    let mut said = Instant::now();
    let mut unreachable: Option<String> = None;
    let reader = MetricsReader::new()?;
    loop {
        let page = if opts.predicted.is_empty() {
            None
        } else {
            // a service restarting does not answer for a moment: not caught up
            match reader.page(&url) {
                Ok(page) => {
                    unreachable = None;
                    Some(page)
                }
                Err(e) => {
                    unreachable = Some(format!("{e:#}"));
                    None
                }
            }
        };
        let mut standings = Vec::new();
        for w in &watched {
            let committed = w.committed()?;
            let predicted = opts.predicted.get(&w.model).map(|&want| {
                let got = page
                    .as_deref()
                    .and_then(|p| predicted_in(p, &w.model))
                    .unwrap_or(0);
                (got, want)
            });
            standings.push(Standing {
                model: w.model.clone(),
                lag: lag(&w.ends, &committed),
                ends: w.ends.clone(),
                committed,
                predicted,
            });
        }
        let text: Vec<String> = standings.iter().map(Standing::describe).collect();
        if standings.iter().all(Standing::caught_up) {
            eprintln!(
                "caught up after {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                text.join("; ")
            );
            return Ok(standings);
        }
        if let Some(pid) = opts.pid.filter(|&p| !alive(p)) {
            bail!(
                "the service (pid {pid}) has exited before the models caught up: {}; see its log",
                text.join("; ")
            );
        }
        if started.elapsed() >= opts.timeout {
            let http = unreachable
                .map(|e| format!("; the predicted counters could not be read: {e} (give the service's URL with --url)"))
                .unwrap_or_default();
            bail!(
                "the models did not catch up within {} s: {}{http}; is the service running (log, GET /readyz)?",
                opts.timeout.as_secs(),
                text.join("; ")
            );
        }
        if said.elapsed() >= opts.every {
            eprintln!(
                "waiting ({:.0} s): {}",
                started.elapsed().as_secs_f64(),
                text.join("; ")
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_what_is_not_committed() {
        let ends = BTreeMap::from([(0, 10), (1, 5), (2, 0)]);
        assert_eq!(lag(&ends, &BTreeMap::new()), 15);
        assert_eq!(lag(&ends, &BTreeMap::from([(0, 10), (1, 2)])), 3);
        assert_eq!(lag(&ends, &BTreeMap::from([(0, 10), (1, 5), (2, -1)])), 0);
    }

    #[test]
    fn caught_up_needs_the_predicted_count_too() {
        let mut s = Standing {
            model: "m".into(),
            ends: BTreeMap::from([(0, 4)]),
            committed: BTreeMap::from([(0, 4)]),
            lag: 0,
            predicted: Some((3, 4)),
        };
        assert!(!s.caught_up());
        s.predicted = Some((4, 4));
        assert!(s.caught_up());
        s.lag = 1;
        assert!(!s.caught_up());
        assert_eq!(s.describe(), "m: lag 1 (p0 4/4), predicted 4/4");
    }

    #[test]
    fn this_process_is_alive_and_an_exited_child_is_not() {
        assert!(alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        // exited but not reaped: a zombie
        std::thread::sleep(Duration::from_millis(200));
        assert!(!alive(child.id()));
        child.wait().expect("reaped");
        assert!(!alive(child.id()));
    }

    #[test]
    fn the_predicted_counter_is_read_from_the_metrics_page() {
        let page = "# HELP x\nstreamfit_readings_predicted_total{model=\"waits\"} 637768\nstreamfit_readings_predicted_total{model=\"waits-v1\"} 5\n";
        assert_eq!(predicted_in(page, "waits"), Some(637_768));
        assert_eq!(predicted_in(page, "waits-v1"), Some(5));
        assert_eq!(predicted_in(page, "heart"), None);
    }
}
