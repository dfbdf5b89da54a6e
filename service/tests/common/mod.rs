//! Helpers the integration tests share: the real broker, the real binary,
//! topics read back with read_committed.
#![allow(dead_code, missing_docs)]

pub mod bad;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use streamfit::config::Config;
use streamfit::pipeline::{Input, Pipeline};

/// The address of a local broker whose port is in `var` (else `default`);
/// panics, saying how to start it, when it is not answering.
fn local_broker(var: &str, default: &str, start: &str) -> String {
    let port = std::env::var(var).unwrap_or_else(|_| default.into());
    let addr = format!("127.0.0.1:{port}");
    if std::net::TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(2))
        .is_err()
    {
        panic!(
            "Kafka is not answering on {addr}: start it with `{start}` (these tests never skip)"
        );
    }
    addr
}

pub fn bootstrap() -> String {
    local_broker("STREAMFIT_KAFKA_PORT", "9092", "deploy/kafka.sh up")
}

/// The secured broker of `deploy/kafka.sh up --secure` (SASL_SSL, SCRAM,
/// ACLs).
pub fn secure_bootstrap() -> String {
    local_broker(
        "STREAMFIT_KAFKA_SECURE_PORT",
        "9192",
        "deploy/kafka.sh up --secure",
    )
}

/// Where the secured broker keeps its state (admin password, clients'
/// settings).
pub fn secure_state(bootstrap: &str) -> PathBuf {
    let port = bootstrap.rsplit(':').next().expect("port");
    let cache = std::env::var("STREAMFIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/streamfit")
        });
    cache.join(format!("kafka-{port}-secure"))
}

/// Client properties for `bootstrap`: on the secured broker, its super
/// user's (from deploy/kafka.sh), so that tests publish and read freely.
pub fn client_props(bootstrap: &str) -> BTreeMap<String, String> {
    let mut props = BTreeMap::new();
    let admin = secure_state(bootstrap).join("admin.librdkafka");
    if let Ok(text) = std::fs::read_to_string(&admin) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                props.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    props.insert("bootstrap.servers".to_owned(), bootstrap.to_owned());
    props
}

/// A client config for `bootstrap` (see [`client_props`]).
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in client_props(bootstrap) {
        c.set(k, v);
    }
    c
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub struct Service {
    pub child: Child,
}

impl Service {
    pub fn start(config: &Path) -> Service {
        Service::start_with(config, &[])
    }

    /// Starts the binary with extra environment variables.
    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_streamfit"))
            .args(["run", "--config"])
            .arg(config)
            .env("STREAMFIT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the streamfit binary starts");
        Service { child }
    }

    /// Starts the binary with its log in `log` instead of the test's output.
    pub fn start_logged(config: &Path, env: &[(&str, &str)], log: &Path) -> Service {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_streamfit"))
            .args(["run", "--config"])
            .arg(config)
            .env("STREAMFIT_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the streamfit binary starts");
        Service { child }
    }

    /// Waits for the process to exit by itself (a refused start, say).
    pub async fn exited(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "streamfit still runs {within:?} after a start that should have been refused"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to finish, flush or commit anything.
    pub fn crash(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(code) = self.child.try_wait().expect("wait") {
                assert!(
                    code.success(),
                    "streamfit should exit 0 on SIGTERM, got {code}"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "streamfit did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub async fn wait_ready(http: &str) {
    wait_ready_with(&reqwest::Client::new(), &format!("http://{http}")).await;
}

/// Waits (60 s at most) for `{base}/readyz` to answer 200 through `client`
/// (one that trusts a test CA, for HTTPS).
pub async fn wait_ready_with(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "streamfit was not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA and a certificate for 127.0.0.1 it signed: (ca.pem, cert, key).
pub fn make_cert(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let f = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "http.key",
        "-out",
        "http.csr",
    ]);
    std::fs::write(f("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "http.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "http.pem",
    ]);
    (f("ca.pem"), f("http.pem"), f("http.key"))
}

pub fn produce(bootstrap: &str, topic: &str, readings: &[(Option<String>, Vec<u8>)]) {
    produce_with(bootstrap, topic, readings, &[]);
}

/// `produce` with more producer properties (`message.max.bytes`, say).
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    readings: &[(Option<String>, Vec<u8>)],
    props: &[(&str, &str)],
) {
    let mut c = client(bootstrap);
    c.set("enable.idempotence", "true");
    for (k, v) in props {
        c.set(*k, *v);
    }
    let p: BaseProducer = c.create().expect("producer");
    send_all(&p, topic, readings, None);
    p.flush(Duration::from_secs(30)).expect("flushed");
}

/// Sends `readings` in order; paced at `per_second` (reading i goes out at
/// i / per_second seconds), counting what is sent in `sent`, when given.
fn send_all(
    p: &BaseProducer,
    topic: &str,
    readings: &[(Option<String>, Vec<u8>)],
    paced: Option<(usize, &AtomicUsize)>,
) {
    let started = Instant::now();
    for (i, (key, value)) in readings.iter().enumerate() {
        if let Some((per_second, _)) = paced {
            let due = Duration::from_secs_f64(i as f64 / per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut rec = BaseRecord::to(topic).payload(value.as_slice());
        if let Some(k) = key {
            rec = rec.key(k.as_str());
        }
        p.send(rec).map_err(|(e, _)| e).expect("queued");
        p.poll(Duration::ZERO);
        if let Some((_, sent)) = paced {
            sent.store(i + 1, Ordering::Relaxed);
        }
    }
}

/// Readings published at a steady rate on a thread of their own.
pub struct Paced {
    sent: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Paced {
    /// Readings handed to the producer so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until every reading is published.
    pub fn join(self) {
        self.thread.join().expect("publisher");
    }
}

/// How long a paced publisher waits for its last readings to be acknowledged
/// (within the producer's own `message.timeout.ms`, 300 s).
const PACED_FLUSH: Duration = Duration::from_secs(120);

/// Publishes `readings` to `topic` at `per_second`.
pub fn publish_steadily(
    bootstrap: &str,
    topic: &str,
    readings: Vec<(Option<String>, Vec<u8>)>,
    per_second: usize,
) -> Paced {
    let sent = Arc::new(AtomicUsize::new(0));
    let (bootstrap, topic, count) = (bootstrap.to_owned(), topic.to_owned(), sent.clone());
    let thread = std::thread::spawn(move || {
        let p: BaseProducer = client(&bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        send_all(&p, &topic, &readings, Some((per_second, &count)));
        // a test may stop the broker while this publishes: what it buffered
        // goes out once the broker is back, which on a loaded 2-core machine
        // (a JVM starting, leaders elected again) took longer than 30 s
        if let Err(e) = p.flush(PACED_FLUSH) {
            panic!(
                "{} of {} readings to {topic} not acknowledged {} s after the last was sent \
                 ({e}): was the broker serving? its log is \
                 ~/.cache/streamfit/kafka-<port>/kafka.log, kafka.log.1 the start before",
                p.in_flight_count(),
                readings.len(),
                PACED_FLUSH.as_secs()
            );
        }
    });
    Paced { sent, thread }
}

pub type Received = (Option<Vec<u8>>, Vec<u8>, BTreeMap<String, String>);

/// Reads `topic` from the beginning (read_committed) until `want` messages or the deadline.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    want: usize,
    within: Duration,
) -> Vec<Received> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let mut headers = BTreeMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_owned(),
                        String::from_utf8_lossy(hd.value.unwrap_or(&[])).into_owned(),
                    );
                }
            }
            out.push((
                m.key().map(<[u8]>::to_vec),
                m.payload().unwrap_or(&[]).to_vec(),
                headers,
            ));
        }
    }
    out
}

pub fn heart() -> Vec<(Option<String>, Vec<u8>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/heart-failure/heart.csv");
    features::datasets::load_readings(&path)
        .expect("the heart data set is in ../shared")
        .into_iter()
        .map(|r| (r.key, r.json))
        .collect()
}

/// The first `n` wait-time readings in file order, keyed by ride.
pub fn waits(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wdw-waits-2018");
    features::datasets::load_readings(&path)
        .expect("the wait-time data set is in ../shared")
        .into_iter()
        .take(n)
        .map(|r| (r.key, r.json))
        .collect()
}

/// The first `n` airline tweets in time order, as JSON readings (no key).
pub fn tweets(n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/airline-tweets/tweets.jsonl");
    features::datasets::load_readings(&path)
        .expect("the airline tweets are in ../shared")
        .into_iter()
        .take(n)
        .map(|r| (r.key, r.json))
        .collect()
}

/// One input message as the broker holds it.
pub struct InputMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

/// Reads a whole topic (read_committed), in offset order per partition.
pub fn read_input(bootstrap: &str, topic: &str, partitions: i32) -> Vec<InputMessage> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", unique("input-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for p in 0..partitions {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if hi > lo {
            remaining.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        assert!(Instant::now() < deadline, "could not read {topic} back");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            if remaining
                .get(&m.partition())
                .is_some_and(|&h| m.offset() + 1 >= h)
            {
                remaining.remove(&m.partition());
            }
            out.push(InputMessage {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                payload: m.payload().unwrap_or(&[]).to_vec(),
            });
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

/// How many outputs (predictions and dead letters) name each input offset,
/// read with read_committed until `want` outputs or the deadline.
pub fn outputs_per_offset(
    bootstrap: &str,
    output: &str,
    dead: &str,
    partitions: i32,
    want: usize,
    within: Duration,
) -> std::collections::HashMap<(i64, i64), u32> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", unique("output-reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in [output, dead] {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut counts = std::collections::HashMap::new();
    let (mut total, deadline) = (0, Instant::now() + within);
    while total < want && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("message");
        let key = if m.topic() == output {
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or(&[])).expect("prediction is JSON");
            (
                v["source"]["partition"].as_i64().expect("partition"),
                v["source"]["offset"].as_i64().expect("offset"),
            )
        } else {
            let mut h = BTreeMap::new();
            for hd in m.headers().expect("dead letters have headers").iter() {
                h.insert(
                    hd.key.to_owned(),
                    String::from_utf8_lossy(hd.value.unwrap_or(&[])).into_owned(),
                );
            }
            (
                h["streamfit.source.partition"].parse().expect("partition"),
                h["streamfit.source.offset"].parse().expect("offset"),
            )
        };
        *counts.entry(key).or_insert(0) += 1;
        total += 1;
    }
    counts
}

/// Asserts two models learned the same: a dense one's weights within 1e-9
/// (shared and per key) and its count of readings learned; a sparse one
/// exactly (its snapshots are sorted, so equal as JSON).
pub fn assert_same_model(got: &models::Learner, want: &models::Learner, what: &str) {
    match (got, want) {
        (models::Learner::Dense(a), models::Learner::Dense(b)) => assert_same_dense(a, b, what),
        (models::Learner::Sparse(a), models::Learner::Sparse(b)) => {
            assert_eq!(a.learned(), b.learned(), "{what}: readings learned");
            assert_eq!(
                serde_json::to_string(a).expect("json"),
                serde_json::to_string(b).expect("json"),
                "{what}: the sparse model differs from an uninterrupted run's"
            );
        }
        _ => panic!("{what}: one model is dense, the other sparse"),
    }
}

fn assert_same_dense(got: &models::KeyedModel, want: &models::KeyedModel, what: &str) {
    let close = |a: &models::LinearModel, b: &models::LinearModel, which: &str| {
        assert_eq!(a.learned(), b.learned(), "{what} {which}: readings learned");
        for (i, (x, y)) in a.weights().iter().zip(b.weights().iter()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-9,
                "{what} {which}: weight {i} is {x}, an uninterrupted run has {y}"
            );
        }
        assert!(
            (a.intercept() - b.intercept()).abs() <= 1e-9,
            "{what} {which}: intercept {} vs {}",
            a.intercept(),
            b.intercept()
        );
    };
    close(got.shared(), want.shared(), "shared model");
    let got_keys: Vec<&str> = got.per_key().map(|(k, _)| k).collect();
    let want_keys: Vec<&str> = want.per_key().map(|(k, _)| k).collect();
    assert_eq!(got_keys, want_keys, "{what}: per-key models");
    for ((k, a), (_, b)) in got.per_key().zip(want.per_key()) {
        close(a, b, k);
    }
}

/// The `[[model]]` table named `name` from deploy/streamfit.toml, with its
/// topics replaced and micro-batches of `batch` readings.
pub fn model_table(name: &str, input: &str, output: &str, dead: &str, batch: usize) -> String {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml"),
    )
    .expect("config");
    let start = base
        .find(&format!("name = \"{name}\"\n"))
        .unwrap_or_else(|| panic!("model {name} in deploy/streamfit.toml"));
    let rest = &base[start..];
    let end = rest
        .find("\n[[model]]")
        .or_else(|| rest.find("\n# ---"))
        .unwrap_or(rest.len());
    let mut lines: Vec<String> = Vec::new();
    for line in rest[..end].lines() {
        let l = if line.starts_with("input_topic") {
            format!("input_topic = \"{input}\"")
        } else if line.starts_with("output_topic") {
            format!("output_topic = \"{output}\"")
        } else if line.starts_with("dead_letter_topic") {
            format!("dead_letter_topic = \"{dead}\"\nbatch = {{ max_readings = {batch}, max_linger_ms = 20 }}")
        } else {
            line.to_owned()
        };
        lines.push(l);
    }
    format!("[[model]]\n{}\n", lines.join("\n"))
}

pub struct Run {
    /// The model's name.
    pub model: String,
    pub config: PathBuf,
    pub partitions: i32,
    pub http: String,
    pub input: String,
    pub output: String,
    pub dead: String,
    pub group: String,
}

pub fn setup(dir: &Path, bootstrap: &str, model: &str) -> Run {
    setup_with(dir, bootstrap, model, 3, "")
}

/// A run's config over `partitions` partitions; `service` lines are added
/// to `[service]` (the instance id is left to its default).
pub fn setup_with(dir: &Path, bootstrap: &str, model: &str, partitions: i32, service: &str) -> Run {
    setup_table(
        dir,
        bootstrap,
        model,
        partitions,
        service,
        |input, output, dead| model_table(model, input, output, dead, 500),
    )
}

/// Like [`setup_with`], with the `[[model]]` table that `table` writes for
/// the run's input, output and dead-letter topics.
pub fn setup_table(
    dir: &Path,
    bootstrap: &str,
    model: &str,
    partitions: i32,
    service: &str,
    table: impl FnOnce(&str, &str, &str) -> String,
) -> Run {
    let (input, output, dead) = (unique("eos.in"), unique("eos.out"), unique("eos.dead"));
    let group_id = unique("eos-group");
    let http = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{bootstrap}\"\n[service]\ngroup_id = \"{group_id}\"\nhttp_addr = \"{http}\"\n{service}\n[topics]\npartitions = {partitions}\nreplication_factor = 1\n{}",
        table(&input, &output, &dead)
    );
    let config = dir.join("streamfit.toml");
    std::fs::write(&config, text).expect("write config");
    Run {
        config,
        partitions,
        http,
        input,
        output,
        dead,
        group: format!("{group_id}.{model}"),
        model: model.to_owned(),
    }
}

/// Every input offset has exactly one output, and each partition's
/// checkpointed model equals one uninterrupted pass over its readings.
pub fn verify(bootstrap: &str, run: &Run, model: &str, n: usize) {
    let counts = outputs_per_offset(
        bootstrap,
        &run.output,
        &run.dead,
        run.partitions,
        n + 1,
        Duration::from_secs(10),
    );
    let twice: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "offsets with more than one output: {twice:?}"
    );
    let input = read_input(bootstrap, &run.input, run.partitions);
    assert_eq!(input.len(), n);
    let missing: Vec<_> = input
        .iter()
        .filter(|m| !counts.contains_key(&(i64::from(m.partition), m.offset)))
        .take(5)
        .map(|m| (m.partition, m.offset))
        .collect();
    assert!(missing.is_empty(), "offsets without an output: {missing:?}");
    assert_eq!(counts.len(), n, "one output per input offset, nothing else");

    let config = Config::load(&run.config).expect("config");
    let m = config.model(model).expect("model");
    let checkpoints = checkpoints(run);
    for p in 0..run.partitions {
        let mine: Vec<&InputMessage> = input.iter().filter(|x| x.partition == p).collect();
        if mine.is_empty() {
            continue;
        }
        let mut want = Pipeline::new(m).expect("pipeline");
        let inputs: Vec<Input<'_>> = mine
            .iter()
            .map(|x| Input {
                key: x.key.as_deref(),
                bytes: &x.payload,
            })
            .collect();
        let mut out = Vec::new();
        for chunk in inputs.chunks(997) {
            want.process(chunk, &mut out);
        }
        let ck = checkpoints
            .get(&p)
            .unwrap_or_else(|| panic!("partition {p} has a checkpoint"));
        assert_eq!(
            ck.next_offset,
            mine.last().map_or(0, |x| x.offset + 1),
            "partition {p}: the checkpoint covers every reading"
        );
        let mut got = Pipeline::new(m).expect("pipeline");
        got.restore(ck.pipeline.clone()).expect("restores");
        assert_eq!(got.seen(), want.seen(), "partition {p}: readings seen");
        assert_same_model(got.model(), want.model(), &format!("partition {p}"));
        assert_eq!(
            got.extractor().state(),
            want.extractor().state(),
            "partition {p}: lags and running means"
        );
    }
}

/// Waits until `n` outputs are committed, or panics after `within`.
pub fn wait_for_outputs(bootstrap: &str, run: &Run, n: usize, within: Duration) {
    let counts = outputs_per_offset(bootstrap, &run.output, &run.dead, run.partitions, n, within);
    let total: u32 = counts.values().sum();
    assert!(
        total as usize >= n,
        "only {total} of {n} outputs committed within {within:?}"
    );
}

/// A counter of `model` from `GET /metrics` (0 if absent).
pub async fn metric(http: &str, name: &str, model: &str) -> u64 {
    metric_in(&metrics_page(http).await, name, model).map_or(0, |v| v as u64)
}

/// `GET /metrics`: the Prometheus page.
pub async fn metrics_page(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("text")
}

/// The value of `name{model="model"}` on a Prometheus page, if there.
pub fn metric_in(page: &str, name: &str, model: &str) -> Option<f64> {
    let prefix = format!("{name}{{model=\"{model}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET /v1/models/{model}`.
pub async fn model_detail(http: &str, model: &str) -> serde_json::Value {
    get_json(http, &format!("/v1/models/{model}")).await
}

/// `GET http://{http}{path}` as JSON (no token).
pub async fn get_json(http: &str, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{http}{path}"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("json")
}

/// Readings the live model has seen (restored from checkpoints included).
pub async fn readings_seen(http: &str, model: &str) -> u64 {
    model_detail(http, model).await["model"]["readings_seen"]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the live model has seen at least `at_least` readings and
/// returns how many it has seen; fails naming `what` after `within`.
pub async fn wait_seen(
    http: &str,
    model: &str,
    at_least: u64,
    within: Duration,
    what: &str,
) -> u64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let seen = readings_seen(http, model).await;
        if seen >= at_least {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: {seen} of {at_least} readings seen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 60 s) until the live model has seen at least `at_least`
/// readings, asserts that a kill now lands mid-stream (more than none and
/// fewer than all `n` seen) and SIGKILLs the service; returns the readings
/// seen.
pub async fn kill_mid_stream(svc: Service, run: &Run, at_least: u64, n: usize) -> u64 {
    let seen = wait_seen(
        &run.http,
        &run.model,
        at_least,
        Duration::from_secs(60),
        "before the kill",
    )
    .await;
    assert!(
        seen > 0 && seen < n as u64,
        "the kill must land mid-stream: {seen} of {n} readings seen"
    );
    eprintln!("SIGKILL after {seen} of {n} readings");
    svc.crash();
    seen
}

/// Creates a topic on the test broker.
pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let props = client_props(bootstrap);
    streamfit::kafka::ensure_topics(&props, &[topic.to_owned()], partitions, 1)
        .await
        .expect("topic created");
}

/// A copy of `config` at `dir/name` for another deployment: the same
/// models under consumer group id `group_id` (and instance id, if set).
pub fn with_group_id(config: &Path, dir: &Path, name: &str, group_id: &str) -> PathBuf {
    let text = std::fs::read_to_string(config).expect("config");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("group_id") || l.starts_with("instance_id") {
                format!(
                    "{} = \"{group_id}\"",
                    l.split('=').next().unwrap_or("").trim()
                )
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config written");
    path
}

/// Runs a `streamfit` subcommand to completion.
pub fn streamfit(args: &[&str]) -> std::process::Output {
    streamfit_with(args, &[])
}

/// [`streamfit`] with more environment variables (config overrides).
pub fn streamfit_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_streamfit"))
        .args(args)
        .env("STREAMFIT_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("the streamfit binary runs")
}

/// Runs a `streamfit` subcommand that must succeed; returns its stdout.
pub fn streamfit_ok(args: &[&str]) -> String {
    let out = streamfit(args);
    assert!(
        out.status.success(),
        "streamfit {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pipeline that learned `readings` in order, one pass.
pub fn one_pass(
    model: &streamfit::config::ModelConfig,
    readings: &[(Option<&str>, &[u8])],
) -> Pipeline {
    let mut p = Pipeline::new(model).expect("pipeline");
    let inputs: Vec<Input<'_>> = readings
        .iter()
        .map(|(k, b)| Input { key: *k, bytes: b })
        .collect();
    let mut out = Vec::new();
    for chunk in inputs.chunks(997) {
        p.process(chunk, &mut out);
    }
    p
}

/// The latest committed checkpoint of each input partition of the run's model.
pub fn checkpoints(run: &Run) -> std::collections::HashMap<i32, streamfit::checkpoint::Checkpoint> {
    let config = Config::load(&run.config).expect("config");
    streamfit::checkpoint::read_latest(
        &config.kafka,
        &config.service.checkpoint_topic(&run.model),
        &run.group,
        &run.input,
        &[],
        Duration::from_secs(60),
    )
    .expect("checkpoints read")
}
