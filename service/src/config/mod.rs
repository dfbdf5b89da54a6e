//! The service config: one TOML file, every value overridable from the
//! environment, checked completely before anything starts.
//!
//! Environment overrides (values are parsed as TOML, else taken as text):
//! - `STREAMFIT_KAFKA_<PROPERTY>`: a librdkafka property, `_` read as `.`
//!   (`STREAMFIT_KAFKA_BOOTSTRAP_SERVERS` sets `bootstrap.servers`).
//! - `STREAMFIT_SERVICE_<KEY>`, `STREAMFIT_TOPICS_<KEY>`, `STREAMFIT_HTTP_<KEY>`: a key of `[service]`
//!   `[topics]` or `[http]` (`STREAMFIT_SERVICE_HTTP_ADDR`, `STREAMFIT_HTTP_TOKENS`).
//! - `STREAMFIT_MODEL_<NAME>__<KEY>`: a top-level key of the `[[model]]` named
//!   NAME (upper case, `-` as `_`): `STREAMFIT_MODEL_WAITS__INPUT_TOPIC`.

mod env;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use features::spec::{FeatureDef, TargetSpec};
use features::FeatureSpec;
use models::LinearParams;
use serde::{Deserialize, Serialize};

use env::{apply_env, expand_home, expand_home_path, wrong_key};

/// The whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// librdkafka properties, passed through untouched.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Service settings.
    #[serde(default)]
    pub service: ServiceConfig,
    /// How missing topics are created.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// The HTTP API's TLS, tokens and limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// The models.
    #[serde(rename = "model")]
    pub models: Vec<ModelConfig>,
}

/// `[service]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Kafka consumer group.
    pub group_id: String,
    /// Address the HTTP API listens on.
    pub http_addr: String,
    /// Longest a shutdown may take before in-flight work is abandoned, in ms.
    pub shutdown_timeout_ms: u64,
    /// Largest HTTP request body, in bytes.
    pub max_body_bytes: usize,
    /// Exactly once: outputs, offsets and model checkpoints go into one Kafka
    /// transaction per commit interval. `false`: at least once, offsets
    /// committed after the outputs are acknowledged, no checkpoints.
    pub exactly_once: bool,
    /// How often outputs, offsets and checkpoints are committed, in ms.
    pub commit_interval_ms: u64,
    /// The compacted topic model checkpoints go to (exactly once only).
    /// Unset (the default): one per model, `<group_id>.<model>.checkpoints`,
    /// so a restore reads only its model's records. Set: one topic shared
    /// by every model (each partition's records in one of its partitions).
    pub checkpoint_topic: Option<String>,
    /// Partitions of the checkpoint topic when streamfit creates it; each
    /// input partition's checkpoint lives in one of them, so a restore reads
    /// only those of the partitions it restores. Do not add partitions to
    /// an existing checkpoint topic (a restore then reads all of them).
    pub checkpoint_partitions: i32,
    /// Names this instance within its group: its producers'
    /// `transactional.id` and its consumers' `group.instance.id` are
    /// `<group_id>.<model>.<instance_id>`, so two deployments (groups) never
    /// fence each other. Unset (the default): `<host name>-<HTTP port>`,
    /// which differs between instances on one host (they cannot share a
    /// port) and stays the same when an instance restarts, so a restarted
    /// instance fences its own zombie (KIP-447) and takes its partitions
    /// back at once (static membership).
    pub instance_id: Option<String>,
    /// The URL other instances forward `/predict` requests to when this
    /// instance owns the key's partition (published through the consumer
    /// group as the member's `client.id`). Unset: `http://<http_addr>`,
    /// with the host name in place of an unspecified address (0.0.0.0).
    pub advertised_url: Option<String>,
    /// How the producers of the input topics spread keys over partitions,
    /// so that any instance knows which partition (and so which instance)
    /// holds a key's state: `consistent_random` (librdkafka's default) or
    /// `murmur2_random` (the Java client's).
    pub key_partitioner: crate::routing::KeyPartitioner,
    /// How often freed memory is given back to the system, in ms (see
    /// `memory`); 0: never.
    pub memory_trim_interval_ms: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            group_id: "streamfit".into(),
            http_addr: "127.0.0.1:8080".into(),
            shutdown_timeout_ms: 30_000,
            max_body_bytes: 1 << 20,
            exactly_once: true,
            commit_interval_ms: 100,
            checkpoint_topic: None,
            checkpoint_partitions: 6,
            instance_id: None,
            advertised_url: None,
            key_partitioner: crate::routing::KeyPartitioner::ConsistentRandom,
            memory_trim_interval_ms: 10_000,
        }
    }
}

impl ServiceConfig {
    /// The checkpoint topic of `model`: `checkpoint_topic`, or
    /// `<group_id>.<model>.checkpoints`.
    pub fn checkpoint_topic(&self, model: &str) -> String {
        match &self.checkpoint_topic {
            Some(t) => t.clone(),
            None => format!("{}.{model}.checkpoints", self.group_id),
        }
    }

    /// This instance's name within its group: `instance_id`, or
    /// `<host name>-<HTTP port>`.
    pub fn instance(&self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        let port = self
            .http_addr
            .parse::<std::net::SocketAddr>()
            .map_or(0, |a| a.port());
        format!("{}-{port}", sanitise(&host_name()))
    }

    /// The URL other instances reach this one's HTTP API at.
    pub fn advertised(&self) -> String {
        if let Some(url) = &self.advertised_url {
            return url.trim_end_matches('/').to_owned();
        }
        match self.http_addr.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_unspecified() => format!("http://{}:{}", host_name(), a.port()),
            _ => format!("http://{}", self.http_addr),
        }
    }

    /// The identity of one model's clients: `<group>.<instance>`, used as
    /// `transactional.id` and `group.instance.id`.
    pub fn client_identity(&self, group: &str) -> String {
        format!("{group}.{}", self.instance())
    }
}

/// The machine's host name (`localhost` if it cannot be read).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Keeps the characters a Kafka client id may hold; others become `-`.
fn sanitise(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `[http]`: TLS, bearer tokens and the bounds on connections and requests
/// of the HTTP API (its address and body limit are in `[service]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// PEM certificate chain: HTTPS instead of HTTP (with `tls_key`).
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) of the other instances' HTTPS certificates, trusted
    /// when `/predict` is forwarded to a key's owner (default: `tls_cert`'s
    /// own chain is not trusted; no forwarding over HTTPS without it).
    pub peer_ca: Option<std::path::PathBuf>,
    /// A file of tokens, lines `ROLE TOKEN` (`predict` or `admin`).
    pub tokens_file: Option<std::path::PathBuf>,
    /// Tokens as `ROLE:TOKEN,...`, meant for `STREAMFIT_HTTP_TOKENS`.
    #[serde(skip_serializing)]
    pub tokens: Option<String>,
    /// Paths open without a token (probes, scrapers).
    pub open_paths: Vec<String>,
    /// Serve without tokens on an address other hosts can reach.
    pub allow_unauthenticated: bool,
    /// Longest a request may take, in ms (then 503).
    pub request_timeout_ms: u64,
    /// Longest wait for a request's headers or a TLS handshake, in ms.
    pub header_timeout_ms: u64,
    /// Requests handled at once; past it 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// Open connections at most; past it new ones are closed.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            tls_cert: None,
            tls_key: None,
            peer_ca: None,
            tokens_file: None,
            tokens: None,
            open_paths: vec!["/healthz".into(), "/readyz".into(), "/metrics".into()],
            allow_unauthenticated: false,
            request_timeout_ms: 30_000,
            header_timeout_ms: 10_000,
            max_in_flight: 512,
            max_connections: 10_000,
        }
    }
}

/// True when `addr` (`host:port`) is reachable only from this host.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[topics]`: how missing topics are created.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Create missing input, output and dead-letter topics at start-up.
    pub create: bool,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic (outputs, dead letters and
    /// checkpoints included). Unset: the cluster's
    /// `default.replication.factor` (3 on `deploy/kafka.sh up --brokers 3`,
    /// 1 on the single node).
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of a created topic: how many replicas must
    /// have a write before it counts (with `acks=all`). Unset: one less
    /// than `replication_factor` if that is set (at least 1; 3 replicas:
    /// 2), else the cluster's default.
    pub min_insync_replicas: Option<i32>,
}

impl TopicsConfig {
    /// The replication factor to create topics with (-1: the cluster's default).
    pub fn replication(&self) -> i32 {
        self.replication_factor.unwrap_or(-1)
    }

    /// The `min.insync.replicas` created topics get (`None`: the cluster's).
    pub fn min_isr(&self) -> Option<i32> {
        self.min_insync_replicas
            .or(self.replication_factor.map(|r| (r - 1).max(1)))
    }
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            create: true,
            partitions: 3,
            replication_factor: None,
            min_insync_replicas: None,
        }
    }
}

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskName {
    /// A number.
    Regression,
    /// A 0/1 label and its probability.
    Classification,
    /// One of several classes, with a probability per class.
    Multiclass,
}

/// See [`ModelConfig::test_then_train`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestThenTrain {
    /// Each reading predicted, then learned, in order.
    #[default]
    Reading,
    /// The whole batch predicted, then learned.
    Batch,
}

/// Micro-batch limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most readings in one micro-batch.
    pub max_readings: usize,
    /// Longest a micro-batch waits to fill, in ms.
    pub max_linger_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_readings: 1000,
            max_linger_ms: 20,
        }
    }
}

/// One `[[model]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model's name (URL path segment, so letters, digits, `-`, `_`).
    pub name: String,
    /// Regression or classification.
    pub task: TaskName,
    /// Topic the readings come from.
    #[serde(default)]
    pub input_topic: Option<String>,
    /// Topic predictions go to.
    #[serde(default)]
    pub output_topic: Option<String>,
    /// Topic invalid readings go to.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Field with the entity key (when the Kafka message has no key).
    #[serde(default)]
    pub key: Option<String>,
    /// Field with the event time.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The target field and its missing sentinels.
    pub target: TargetSpec,
    /// Learn residuals over this `lag` or `profile` feature, or over the
    /// first of a list of them that has a value.
    #[serde(default)]
    pub baseline: Option<features::spec::Baseline>,
    /// One model per key (falling back to a shared model for unseen keys).
    #[serde(default)]
    pub per_key: bool,
    /// The most keys a partition keeps state for (its own model, lags);
    /// past it the least recently used key is evicted and falls back to
    /// the shared model. No cap when absent.
    #[serde(default)]
    pub max_keys: Option<usize>,
    /// Loss, optimiser and penalties.
    #[serde(default)]
    pub learner: LinearParams,
    /// Regression: round predictions to a multiple of this (the grid the
    /// target lives on, e.g. 5 for posted waits in 5-minute steps).
    #[serde(default)]
    pub round_to: Option<f64>,
    /// Micro-batch limits.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Largest reading accepted, in bytes.
    #[serde(default = "default_max_reading_bytes")]
    pub max_reading_bytes: usize,
    /// What a message is: `json` (an object with the fields), or `text`
    /// (the value is the text of the one `text` feature, the key the
    /// message key: what `kafka-console-producer` sends).
    #[serde(default)]
    pub format: features::spec::InputFormat,
    /// Rolling window of the live metrics, in readings.
    #[serde(default = "default_metrics_window")]
    pub metrics_window: usize,
    /// When a micro-batch's readings are predicted: each by the model that
    /// has learned every earlier reading (`reading`: the live metrics equal
    /// `eval --batch 1` whatever the backlog), or all by the model as it
    /// was before the batch (`batch`).
    #[serde(default)]
    pub test_then_train: TestThenTrain,
    /// A drift detector on the model's prequential losses (absolute error,
    /// or log loss), per partition: `drift = { kind = "page_hinkley" }`.
    #[serde(default)]
    pub drift: Option<models::drift::DriftParams>,
    /// Challengers: other learners (or feature sets) that learn the same
    /// readings in shadow, scored on the same readings; one that beats the
    /// model by `promotion.margin` over a window takes over.
    #[serde(default)]
    pub challenger: Vec<ChallengerConfig>,
    /// When a challenger takes over.
    #[serde(default)]
    pub promotion: PromotionConfig,
    /// Topic the labels of the readings arrive on, co-partitioned with the
    /// input: JSON objects with the reading's id (`label_id`) and the
    /// label (the target's field). Readings wait for their label.
    #[serde(default)]
    pub labels_topic: Option<String>,
    /// The field with a reading's id, in the reading and in its label
    /// (default `id`; a `format = "text"` reading's id is its message key).
    #[serde(default)]
    pub label_id: Option<String>,
    /// How long a reading waits for its label, and a label for its
    /// reading: a number of readings (`10000`, the default) or event time
    /// (`"2h"`, `"1d"`).
    #[serde(default)]
    pub label_window: Option<toml::Value>,
    /// Topic drift and promotion events go to (default `<name>.events`;
    /// used when the model has a drift detector or challengers).
    #[serde(default)]
    pub events_topic: Option<String>,
    /// The features, in row order.
    pub features: Vec<FeatureDef>,
}

/// One `[[model.challenger]]` table: a learner in shadow of the model's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengerConfig {
    /// Its name (letters, digits, `-`, `_`; not `base`, which names the
    /// model's own learner).
    pub name: String,
    /// Learner settings that differ from the model's: merged over the
    /// model's `learner` (an optimiser of another `kind` replaces it whole).
    #[serde(default)]
    pub learner: Option<toml::Table>,
    /// Another feature set (default: the model's).
    #[serde(default)]
    pub features: Option<Vec<FeatureDef>>,
}

/// When a challenger takes over (`promotion = { window = 1000, margin = 0.05 }`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionConfig {
    /// Labelled readings per comparison window: the champion's and each
    /// challenger's mean loss over the same readings are compared when a
    /// window closes.
    pub window: u64,
    /// How much lower a challenger's mean loss must be than the
    /// champion's, as a fraction (0.05: 5% lower).
    pub margin: f64,
    /// Promote automatically (false: only `POST .../promote` does).
    pub auto: bool,
    /// Promote only on a drift: the champion's detector signalling opens
    /// one window, started at that reading, and a challenger that wins it
    /// by the margin takes over; no other window promotes (needs `drift`).
    pub after_drift: bool,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        PromotionConfig {
            window: 1000,
            margin: 0.05,
            auto: true,
            after_drift: false,
        }
    }
}

/// The name of a model's own learner among its challengers.
pub const BASE_LEARNER: &str = "base";

/// How many readings a reading waits for its label (`label_window`) when
/// the config does not say.
pub const DEFAULT_LABEL_WINDOW: u64 = 10_000;

fn default_max_reading_bytes() -> usize {
    64 * 1024
}
fn default_metrics_window() -> usize {
    1000
}

impl ModelConfig {
    /// The baseline features in order of preference (none without `baseline`).
    pub fn baseline_names(&self) -> &[String] {
        self.baseline.as_ref().map_or(&[], |b| b.names())
    }

    /// This model as it reads the records of a file (`eval --data`,
    /// `replay --file`: CSV, Parquet or JSONL rows with named fields)
    /// rather than its messages: a `format = "text"` model's messages are
    /// bare text, but its labelled history in a file has the text and the
    /// label as fields. Its columns, and so its snapshot, are the same.
    pub fn for_records(&self) -> ModelConfig {
        let mut m = self.clone();
        m.format = features::spec::InputFormat::Json;
        m
    }

    /// The field of the one `text` feature whose text a `format = "text"`
    /// model's messages are (`None` for JSON messages).
    pub fn plain_text_field(&self) -> Option<&str> {
        if self.format != features::spec::InputFormat::Text {
            return None;
        }
        self.features.iter().find_map(|f| match f {
            FeatureDef::Text { field, .. } => Some(field.as_str()),
            _ => None,
        })
    }

    /// The feature spec part of the table.
    pub fn feature_spec(&self) -> FeatureSpec {
        FeatureSpec {
            key: self.key.clone(),
            timestamp: self.timestamp.clone(),
            target: self.target.clone(),
            baseline: self.baseline.clone(),
            features: self.features.clone(),
            max_reading_bytes: self.max_reading_bytes,
            format: self.format,
        }
    }

    /// What the model predicts.
    pub fn model_task(&self) -> models::Task {
        match self.task {
            TaskName::Regression => models::Task::Regression,
            TaskName::Classification => models::Task::Classification,
            TaskName::Multiclass => models::Task::Multiclass,
        }
    }

    /// The feature extractor of the model's spec and task.
    pub fn extractor(&self) -> Result<features::FeatureExtractor, features::FeatureError> {
        let label = match self.task {
            TaskName::Regression => features::LabelKind::Number,
            TaskName::Classification => features::LabelKind::Binary,
            TaskName::Multiclass => features::LabelKind::Classes,
        };
        features::FeatureExtractor::for_label(self.feature_spec(), label)
    }

    /// The input topic, or an error naming the key to set.
    pub fn input_topic(&self) -> Result<&str> {
        self.input_topic.as_deref().with_context(|| {
            format!(
                "model `{}` has no `input_topic`; set it in its [[model]] table",
                self.name
            )
        })
    }

    /// The output topic (default `<input>.predictions` style: `<name>.predictions`).
    pub fn output_topic(&self) -> String {
        self.output_topic
            .clone()
            .unwrap_or_else(|| format!("{}.predictions", self.name))
    }

    /// The dead-letter topic (default `<name>.dead-letter`).
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letter", self.name))
    }

    /// The events topic (default `<name>.events`), when the model has
    /// events to tell: a drift detector or challengers.
    pub fn events_topic(&self) -> Option<String> {
        (self.drift.is_some() || !self.challenger.is_empty()).then(|| {
            self.events_topic
                .clone()
                .unwrap_or_else(|| format!("{}.events", self.name))
        })
    }

    /// How long a reading waits for its label (`label_window`).
    pub fn label_window(&self) -> Result<crate::pipeline::LabelDelay> {
        let text = match &self.label_window {
            None => return Ok(crate::pipeline::LabelDelay::Readings(DEFAULT_LABEL_WINDOW)),
            Some(toml::Value::Integer(n)) => n.to_string(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => bail!(
                "model `{}`: `label_window` should be a number of readings (10000) or a time (\"2h\"), not {other}",
                self.name
            ),
        };
        match text.parse::<crate::pipeline::LabelDelay>() {
            Ok(crate::pipeline::LabelDelay::None) | Err(_) => bail!(
                "model `{}`: `label_window` should be a number of readings above 0 (10000) or a time (\"90s\", \"30m\", \"2h\", \"1d\"), not {text:?}",
                self.name
            ),
            Ok(w) => Ok(w),
        }
    }

    /// The label window as the user wrote it (`10000`, `"2h"`), or the
    /// default's readings.
    pub fn label_window_text(&self) -> String {
        match &self.label_window {
            None => DEFAULT_LABEL_WINDOW.to_string(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// Checks the delayed-labels settings, naming the key at fault.
    fn check_labels(&self, exactly_once: bool) -> Result<()> {
        let at = format!("model `{}`", self.name);
        let Some(topic) = &self.labels_topic else {
            if self.label_id.is_some() || self.label_window.is_some() {
                bail!("{at}: `label_id` and `label_window` need a `labels_topic`");
            }
            return Ok(());
        };
        if Some(topic.as_str()) == self.input_topic.as_deref() {
            bail!("{at}: `labels_topic` should differ from `input_topic` ({topic})");
        }
        if !exactly_once {
            bail!("{at}: `labels_topic` needs `service.exactly_once = true`: the readings waiting for labels are partition state, kept in the checkpoints");
        }
        if self.test_then_train != TestThenTrain::Reading {
            bail!("{at}: `labels_topic` needs `test_then_train = \"reading\"` (readings are learned in turn as their labels come)");
        }
        if !self.challenger.is_empty() {
            bail!("{at}: challengers do not yet learn from a `labels_topic`; remove the `[[model.challenger]]` tables or the `labels_topic`");
        }
        if self.task == TaskName::Multiclass && self.target.classes.is_none() {
            bail!("{at}: a multiclass model with a `labels_topic` should declare its classes (`target.classes`), so that labels mean the same whenever they come");
        }
        self.label_window()?;
        Ok(())
    }

    /// The config a challenger's pipeline is built from: this model's,
    /// with the challenger's learner settings merged over the model's and
    /// its features, without challengers or a drift detector of its own.
    pub fn challenger_config(&self, c: &ChallengerConfig) -> Result<ModelConfig> {
        let at = format!("model `{}`, challenger `{}`", self.name, c.name);
        let mut out = self.clone();
        out.challenger.clear();
        out.drift = None;
        if let Some(over) = &c.learner {
            let mut base = toml::Table::try_from(self.learner)
                .with_context(|| format!("{at}: cannot read the model's `learner`"))?;
            merge_learner(&mut base, over);
            out.learner = toml::Value::Table(base)
                .try_into()
                .with_context(|| format!("{at}: `learner` is not valid"))?;
        }
        if let Some(f) = &c.features {
            out.features = f.clone();
        }
        Ok(out)
    }
}

impl ModelConfig {
    /// Checks the challengers and the promotion settings, naming the key at
    /// fault: unique names, learners and features a pipeline accepts.
    fn check_challengers(&self) -> Result<()> {
        let at = format!("model `{}`", self.name);
        let p = &self.promotion;
        if p.window == 0 {
            bail!("{at}: `promotion.window` should be at least 1 labelled reading");
        }
        if !(p.margin.is_finite() && (0.0..1.0).contains(&p.margin)) {
            bail!(
                "{at}: `promotion.margin` should be a fraction in [0, 1) (0.05: 5% lower loss), but is {}",
                p.margin
            );
        }
        if p.after_drift && self.drift.is_none() {
            bail!("{at}: `promotion.after_drift` needs a drift detector (`drift = {{ kind = \"page_hinkley\" }}`)");
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.challenger {
            let ok = !c.name.is_empty()
                && c.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !ok || c.name == BASE_LEARNER {
                bail!("{at}: `challenger.name` should be letters, digits, `-` or `_`, and not `{BASE_LEARNER}` (the model's own learner), but is {:?}", c.name);
            }
            if !names.insert(c.name.as_str()) {
                bail!(
                    "{at}: `challenger.name` should be unique, but {:?} appears twice",
                    c.name
                );
            }
            let cc = self.challenger_config(c)?;
            if cc.learner.loss.is_classification() != self.learner.loss.is_classification() {
                bail!(
                    "{at}, challenger `{}`: `learner.loss` should be of the model's task ({:?})",
                    c.name,
                    self.task
                );
            }
            crate::pipeline::Pipeline::new(&cc).with_context(|| {
                format!(
                    "{at}, challenger `{}`: its learner or features are not valid",
                    c.name
                )
            })?;
        }
        Ok(())
    }
}

/// Merges `over` into `base`, table by table; a table whose `kind` differs
/// (another optimiser or loss) replaces the base's whole.
fn merge_learner(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if o.get("kind").is_none_or(|kind| b.get("kind") == Some(kind)) =>
            {
                merge_learner(b, o)
            }
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Config {
    /// Reads, overrides from the environment, and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, std::env::vars())
            .with_context(|| format!("config file {} is not valid", path.display()))
    }

    /// Parses config text, applying overrides from `env` (name, value) pairs.
    pub fn parse(text: &str, env: impl Iterator<Item = (String, String)>) -> Result<Config> {
        let mut value: toml::Table = toml::from_str(text).context("not valid TOML")?;
        let env: Vec<(String, String)> = env.collect();
        let env_home = env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| v.clone());
        let overrides = apply_env(&mut value, env.into_iter())?;
        let mut config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(value.clone()))
                .map_err(|e| wrong_key(&value, &e, &overrides))?;
        let home = env_home.or_else(|| std::env::var("HOME").ok());
        expand_home(&mut config.kafka, home.as_deref())?;
        let http = &mut config.http;
        for (key, path) in [
            ("tls_cert", &mut http.tls_cert),
            ("tls_key", &mut http.tls_key),
            ("peer_ca", &mut http.peer_ca),
            ("tokens_file", &mut http.tokens_file),
        ] {
            if let Some(p) = path.as_mut() {
                *p = expand_home_path(p, home.as_deref())
                    .with_context(|| format!("`http.{key}`"))?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, ranges, and every model's spec and learner.
    pub fn validate(&self) -> Result<()> {
        if self.models.is_empty() {
            bail!("`model` should list at least one [[model]] table");
        }
        if self.topics.partitions < 1 {
            bail!(
                "`topics.partitions` should be at least 1, but is {}",
                self.topics.partitions
            );
        }
        if let Some(r) = self.topics.replication_factor.filter(|&r| r < 1) {
            bail!("`topics.replication_factor` should be at least 1 (or unset: the cluster's default), but is {r}");
        }
        if let Some(m) = self.topics.min_insync_replicas {
            let most = self.topics.replication_factor.unwrap_or(i32::MAX);
            if m < 1 || m > most {
                bail!(
                    "`topics.min_insync_replicas` should be at least 1 and at most `topics.replication_factor`, but is {m}"
                );
            }
        }
        let http = &self.http;
        if http.tls_cert.is_some() != http.tls_key.is_some() {
            bail!("`http.tls_cert` and `http.tls_key` go together: set both for HTTPS, or neither");
        }
        for (key, v) in [
            ("http.request_timeout_ms", http.request_timeout_ms),
            ("http.header_timeout_ms", http.header_timeout_ms),
            ("http.max_in_flight", http.max_in_flight as u64),
            ("http.max_connections", http.max_connections as u64),
        ] {
            if v == 0 {
                bail!("`{key}` should be at least 1");
            }
        }
        if self.service.commit_interval_ms == 0 || self.service.commit_interval_ms > 60_000 {
            bail!(
                "`service.commit_interval_ms` should be between 1 and 60000, but is {}",
                self.service.commit_interval_ms
            );
        }
        if !(1..=1000).contains(&self.service.checkpoint_partitions) {
            bail!(
                "`service.checkpoint_partitions` should be between 1 and 1000, but is {}",
                self.service.checkpoint_partitions
            );
        }
        if self
            .service
            .checkpoint_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            bail!("`service.checkpoint_topic` should name a topic, or be left out (one topic per model, `<group_id>.<model>.checkpoints`)");
        }
        if let Some(id) = &self.service.instance_id {
            let id_ok = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !id_ok {
                bail!(
                    "`service.instance_id` should be letters, digits, `-`, `_` or `.`, but is {id:?}"
                );
            }
        }
        if let Some(url) = &self.service.advertised_url {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.contains(char::is_whitespace)
            {
                bail!(
                    "`service.advertised_url` should be an http:// or https:// URL, but is {url:?}"
                );
            }
        }
        self.service
            .http_addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                anyhow::anyhow!(
                    "`service.http_addr` should be an IP address and port such as 127.0.0.1:8080, but is {:?} ({e})",
                    self.service.http_addr
                )
            })?;
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            let ok = !m.name.is_empty()
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                bail!(
                    "`model.name` should be letters, digits, `-` or `_`, but is {:?}",
                    m.name
                );
            }
            if !seen.insert(m.name.as_str()) {
                bail!(
                    "`model.name` should be unique, but {:?} appears twice",
                    m.name
                );
            }
            let at = format!("model `{}`", m.name);
            let logistic = m.learner.loss.is_classification();
            let classification = m.task != TaskName::Regression;
            match (m.task, logistic) {
                (TaskName::Classification, false) => {
                    bail!("{at}: `learner.loss` should be `logistic` for a classification task")
                }
                (TaskName::Regression, true) => {
                    bail!("{at}: `learner.loss` should be squared, absolute or huber for a regression task")
                }
                _ => {}
            }
            if let Some(r) = m.round_to {
                if !(r.is_finite() && r > 0.0) || classification {
                    bail!(
                        "{at}: `round_to` should be a number > 0 on a regression model, but is {r}"
                    );
                }
            }
            if m.baseline.is_some() && classification {
                bail!("{at}: `baseline` is for regression models only");
            }
            let params = m
                .learner
                .validate()
                .with_context(|| format!("{at}: `learner` is not valid"))?;
            let extractor = m
                .extractor()
                .with_context(|| format!("{at}: the feature spec is not valid"))?;
            let multiclass = m.task == TaskName::Multiclass;
            models::Learner::new(
                params,
                extractor.scale_mask(),
                m.per_key,
                extractor.has_sparse(),
                multiclass.then(|| extractor.classes().len()),
            )
            .with_context(|| format!("{at}: the learner does not fit the features or task"))?;
            if m.batch.max_readings == 0 {
                bail!("{at}: `batch.max_readings` should be at least 1");
            }
            if let Some(d) = &m.drift {
                d.validate()
                    .with_context(|| format!("{at}: `drift` is not valid"))?;
            }
            m.check_challengers()?;
            m.check_labels(self.service.exactly_once)?;
            if m.metrics_window == 0 {
                bail!("{at}: `metrics_window` should be at least 1");
            }
            if let Some(k) = m.max_keys {
                let keyed = m.per_key || extractor.keeps_key_state();
                if k == 0 || !keyed {
                    bail!("{at}: `max_keys` should be at least 1, on a model that keeps state per key (`per_key = true`, or lag and running-mean features), but is {k}");
                }
            }
        }
        Ok(())
    }

    /// The model named `name`, or an error listing the ones there are.
    pub fn model(&self, name: &str) -> Result<&ModelConfig> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .with_context(|| {
                let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "no model named {name:?}; the config defines {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        "bootstrap.servers" = "127.0.0.1:9092"
        [[model]]
        name = "heart"
        task = "classification"
        input_topic = "clinical.readings"
        target = { field = "heart_disease" }
        learner = { loss = { kind = "logistic" } }
        features = [ { kind = "numeric", field = "age" } ]
    "#;

    fn no_env() -> std::iter::Empty<(String, String)> {
        std::iter::empty()
    }

    #[test]
    fn the_shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("deploy/streamfit.toml exists");
        let c = Config::parse(&text, no_env()).expect("valid");
        for name in ["waits", "waits-v1", "heart", "heart-v1"] {
            c.model(name).expect("defined");
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/console.toml");
        let text = std::fs::read_to_string(path).expect("deploy/console.toml exists");
        let c = Config::parse(&text, no_env()).expect("valid");
        assert_eq!(
            c.model("console").expect("defined").format,
            features::spec::InputFormat::Text
        );
    }

    /// `deploy/streamfit-secure.toml` says it runs the shipped models: the
    /// same tables as `deploy/streamfit.toml` but `[kafka]` and `[http]`.
    #[test]
    fn the_secure_config_runs_the_shipped_models_as_shipped() {
        let read = |name: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy")
                .join(name);
            let text = std::fs::read_to_string(&path).expect("the config exists");
            Config::parse(&text, no_env()).expect("valid");
            let mut v: toml::Table = text.parse().expect("TOML");
            v.remove("kafka");
            v.remove("http");
            v
        };
        let (shipped, secure) = (read("streamfit.toml"), read("streamfit-secure.toml"));
        assert!(shipped.contains_key("model"));
        assert_eq!(
            secure, shipped,
            "deploy/streamfit-secure.toml's models, [service] or [topics] differ from deploy/streamfit.toml's"
        );
    }

    /// The start-up error for MINIMAL with these model overrides.
    fn refused(env: &[(&str, &str)]) -> String {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        format!("{:#}", Config::parse(MINIMAL, env).expect_err("refused"))
    }

    #[test]
    fn challenger_and_label_settings_are_checked_naming_the_key() {
        let e = refused(&[(
            "STREAMFIT_MODEL_HEART__CHALLENGER",
            r#"[{ name = "base" }]"#,
        )]);
        assert!(e.contains("challenger.name"), "{e}");
        let e = refused(&[(
            "STREAMFIT_MODEL_HEART__CHALLENGER",
            r#"[{ name = "a", learner = { optimizer = { learning_rate = -1.0 } } }]"#,
        )]);
        assert!(
            e.contains("challenger `a`") && e.contains("learning_rate"),
            "{e}"
        );
        let e = refused(&[("STREAMFIT_MODEL_HEART__PROMOTION", "{ margin = 1.5 }")]);
        assert!(e.contains("promotion.margin"), "{e}");
        let e = refused(&[("STREAMFIT_MODEL_HEART__PROMOTION", "{ after_drift = true }")]);
        assert!(
            e.contains("promotion.after_drift") && e.contains("drift"),
            "{e}"
        );
        let e = refused(&[("STREAMFIT_MODEL_HEART__LABEL_ID", "\"visit\"")]);
        assert!(e.contains("labels_topic"), "{e}");
        let labels = ("STREAMFIT_MODEL_HEART__LABELS_TOPIC", "\"clinical.labels\"");
        let e = refused(&[labels, ("STREAMFIT_MODEL_HEART__LABEL_WINDOW", "\"soon\"")]);
        assert!(e.contains("label_window") && e.contains("soon"), "{e}");
        let e = refused(&[labels, ("STREAMFIT_SERVICE_EXACTLY_ONCE", "false")]);
        assert!(e.contains("exactly_once"), "{e}");
        let e = refused(&[
            labels,
            ("STREAMFIT_MODEL_HEART__CHALLENGER", r#"[{ name = "a" }]"#),
        ]);
        assert!(e.contains("challenger"), "{e}");
        let ok = [labels, ("STREAMFIT_MODEL_HEART__LABEL_WINDOW", "\"2h\"")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::parse(MINIMAL, ok.into_iter()).expect("valid");
        assert_eq!(
            c.models[0].label_window().expect("window"),
            crate::pipeline::LabelDelay::EventTime(7_200_000)
        );
    }

    #[test]
    fn environment_overrides_any_value() {
        let env = [
            ("STREAMFIT_KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9093"),
            ("STREAMFIT_SERVICE_HTTP_ADDR", "127.0.0.1:9999"),
            ("STREAMFIT_MODEL_HEART__INPUT_TOPIC", "other"),
            ("STREAMFIT_MODEL_HEART__BATCH", "{ max_readings = 7 }"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::parse(MINIMAL, env.into_iter()).expect("valid");
        assert_eq!(c.kafka["bootstrap.servers"], "10.0.0.1:9093");
        assert_eq!(c.service.http_addr, "127.0.0.1:9999");
        assert_eq!(c.models[0].input_topic.as_deref(), Some("other"));
        assert_eq!(c.models[0].batch.max_readings, 7);
    }

    #[test]
    fn identities_differ_per_instance_and_include_the_group() {
        let env =
            |addr: &str| [("STREAMFIT_SERVICE_HTTP_ADDR".to_owned(), addr.to_owned())].into_iter();
        let a = Config::parse(MINIMAL, env("127.0.0.1:8080")).expect("valid");
        let b = Config::parse(MINIMAL, env("127.0.0.1:8081")).expect("valid");
        assert_ne!(a.service.instance(), b.service.instance());
        assert_eq!(
            a.service.instance(),
            Config::parse(MINIMAL, env("127.0.0.1:8080"))
                .expect("valid")
                .service
                .instance(),
            "a restarted instance keeps its name (it fences its zombie)"
        );
        let id = a.service.client_identity("g1.heart");
        assert!(id.starts_with("g1.heart.") && id.ends_with("-8080"), "{id}");
        assert_ne!(id, a.service.client_identity("g2.heart"));
        assert_eq!(a.service.advertised(), "http://127.0.0.1:8080");
        let named = [(
            "STREAMFIT_SERVICE_INSTANCE_ID".to_owned(),
            "node-1".to_owned(),
        )];
        let c = Config::parse(MINIMAL, named.into_iter()).expect("valid");
        assert_eq!(c.service.client_identity("g.heart"), "g.heart.node-1");
    }

    #[test]
    fn the_local_broker_port_is_not_a_kafka_property() {
        let env = [("STREAMFIT_KAFKA_PORT".to_owned(), "19992".to_owned())];
        let c = Config::parse(MINIMAL, env.into_iter()).expect("valid");
        assert!(!c.kafka.contains_key("port"), "{:?}", c.kafka);
    }

    #[test]
    fn the_scripts_and_notebooks_settings_are_not_overrides() {
        let env = [
            ("STREAMFIT_DATA", "../shared/data"),
            ("STREAMFIT_KAFKA_SECURE_PORT", "9192"),
            ("STREAMFIT_LOAD_TOKEN", "x"),
            ("STREAMFIT_NB_URL", "http://127.0.0.1:8080"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::parse(MINIMAL, env.into_iter()).expect("valid");
        assert!(
            c.kafka.keys().all(|k| !k.contains("secure")),
            "{:?}",
            c.kafka
        );
        let typo = [("STREAMFIT_SERVCE_X".to_owned(), "1".to_owned())];
        assert!(
            Config::parse(MINIMAL, typo.into_iter()).is_err(),
            "a typo is still refused"
        );
    }

    #[test]
    fn kafka_file_paths_may_start_at_home() {
        let env = [
            ("HOME".to_owned(), "/home/ann".to_owned()),
            (
                "STREAMFIT_KAFKA_SSL_CA_LOCATION".to_owned(),
                "~/.cache/streamfit/tls/ca.pem".to_owned(),
            ),
            ("STREAMFIT_KAFKA_SASL_PASSWORD".to_owned(), "~/x".to_owned()),
        ];
        let c = Config::parse(MINIMAL, env.into_iter()).expect("valid");
        assert_eq!(
            c.kafka["ssl.ca.location"],
            "/home/ann/.cache/streamfit/tls/ca.pem"
        );
        assert_eq!(c.kafka["sasl.password"], "~/x", "only paths");
    }

    #[test]
    fn errors_name_the_wrong_key() {
        let cases = [
            (
                MINIMAL.replace("task = \"classification\"", "task = \"clasification\""),
                "clasification",
            ),
            (
                MINIMAL.replace("name = \"heart\"", "name = \"heart\"\nbogus = 1"),
                "bogus",
            ),
            (
                MINIMAL.replace("kind = \"logistic\"", "kind = \"squared\""),
                "learner.loss",
            ),
            (
                MINIMAL.replace(
                    "loss = { kind = \"logistic\" }",
                    "loss = { kind = \"logistic\" }, l2 = -1",
                ),
                "`l2` should be a finite number >= 0, but is -1",
            ),
            (
                MINIMAL.replace("field = \"age\"", "field = \"age\", standardise = true"),
                "standardise",
            ),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Config::parse(&text, no_env()).expect_err("invalid"));
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
        let env = [("STREAMFIT_MODEL_NOPE__X".to_owned(), "1".to_owned())];
        let e = format!(
            "{:#}",
            Config::parse(MINIMAL, env.into_iter()).expect_err("no such model")
        );
        assert!(e.contains("no model is named NOPE"), "{e}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_place_model_and_feature() {
        // serde alone says "invalid type: string \"x\", expected f64", not where
        let second = |learner: &str, feature: &str| {
            format!(
                r#"{MINIMAL}
                [[model]]
                name = "second"
                task = "classification"
                input_topic = "clinical.readings"
                target = {{ field = "heart_disease" }}
                learner = {{ loss = {{ kind = "logistic" }}{learner} }}
                features = [ {{ kind = "numeric", field = "age"{feature} }} ]
            "#
            )
        };
        let cases = [
            (
                second("", ", missing = \"x\""),
                "`model[1].features[0]` (model `second`, its `numeric` feature of `age`): invalid type: string \"x\"",
            ),
            (
                second(", l2 = \"lots\"", ""),
                "`model[1].learner.l2` (model `second`): invalid type: string \"lots\", expected f64",
            ),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Config::parse(&text, no_env()).expect_err("invalid"));
            assert!(e.contains(needle), "{e} should contain {needle}");
        }
        // the same mistake made by an override names its variable
        let env = [(
            "STREAMFIT_MODEL_HEART__FEATURES".to_owned(),
            r#"[ { kind = "numeric", field = "age", standardize = "yes" } ]"#.to_owned(),
        )];
        let e = format!(
            "{:#}",
            Config::parse(MINIMAL, env.into_iter()).expect_err("invalid")
        );
        assert!(
            e.contains("`model[0].features[0]` (model `heart`, its `numeric` feature of `age`), set by the environment variable STREAMFIT_MODEL_HEART__FEATURES: invalid type: string \"yes\", expected a boolean"),
            "{e}"
        );
        let env = [(
            "STREAMFIT_SERVICE_COMMIT_INTERVAL_MS".to_owned(),
            "soon".to_owned(),
        )];
        let e = format!(
            "{:#}",
            Config::parse(MINIMAL, env.into_iter()).expect_err("invalid")
        );
        assert!(
            e.contains("`service.commit_interval_ms`, set by the environment variable STREAMFIT_SERVICE_COMMIT_INTERVAL_MS: invalid type: string \"soon\""),
            "{e}"
        );
    }
}
