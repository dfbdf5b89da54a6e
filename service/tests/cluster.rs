//! On a 3-broker KRaft cluster (`deploy/kafka.sh up --brokers 3`, on ports
//! of its own): the service's topics are created with replication factor 3
//! and `min.insync.replicas = 2`, and a broker SIGKILLed mid-stream and
//! started again loses and duplicates nothing: every input offset has
//! exactly one output and the models equal one uninterrupted pass.
//! Starts and stops its own cluster, so it is a test binary of its own.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The cluster's first port (its nodes: 29092, 29094, 29096).
const PORT: &str = "29092";
const BOOTSTRAP: &str = "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096";

fn cluster(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka.sh");
    let status = Command::new(script)
        .args(args)
        .args(["--brokers", "3"])
        .env("STREAMFIT_KAFKA_PORT", PORT)
        .status()
        .expect("deploy/kafka.sh runs");
    assert!(
        status.success(),
        "deploy/kafka.sh {args:?} --brokers 3 failed"
    );
}

/// Stops the cluster even if the test fails half-way.
struct ClusterGuard;

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        cluster(&["down"]);
    }
}

/// (replicas of partition 0, `min.insync.replicas`) of a topic.
async fn replication_of(topic: &str) -> (usize, String) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .create()
        .expect("client");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let replicas = md.topics()[0].partitions()[0].replicas().len();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BOOTSTRAP)
        .create()
        .expect("admin");
    let configs = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .expect("describe");
    let min_isr = configs[0]
        .as_ref()
        .expect("topic config")
        .get("min.insync.replicas")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    (replicas, min_isr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_loses_and_duplicates_nothing() {
    cluster(&["up"]);
    let _guard = ClusterGuard;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut run = setup_with(dir.path(), BOOTSTRAP, "waits", 3, "");
    let text = std::fs::read_to_string(&run.config).expect("config");
    // unset: created topics take the cluster's defaults (3 replicas, 2 in sync)
    let text = text.replace("replication_factor = 1\n", "");
    let checkpoints = unique("cluster.checkpoints");
    let text = text.replace(
        "[service]\n",
        &format!("[service]\ncheckpoint_topic = \"{checkpoints}\"\n"),
    );
    std::fs::write(&run.config, text).expect("config");
    run.partitions = 3;

    let n = 20_000;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    for topic in [&run.output, &run.dead, &checkpoints] {
        let (replicas, min_isr) = replication_of(topic).await;
        assert_eq!(replicas, 3, "{topic}: replication factor");
        assert_eq!(min_isr, "2", "{topic}: min.insync.replicas");
    }
    // a 20 s stream; node 2 dies once the service is learning from it (on
    // a fresh cluster the first transaction waits for the coordinator to
    // load, so a fixed sleep could kill it before a reading was seen)
    let publisher = publish_steadily(BOOTSTRAP, &run.input, waits(n), 1_000);
    let before = wait_seen(
        &run.http,
        "waits",
        2_000,
        Duration::from_secs(120),
        "before the kill",
    )
    .await;
    eprintln!(
        "SIGKILL broker node 2 after {before} of {n} readings ({} published)",
        publisher.sent()
    );
    assert!(
        before > 0 && before < n as u64,
        "the broker must die mid-stream: {before} of {n} readings seen"
    );
    cluster(&["kill-node", "2"]);
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = readings_seen(&run.http, "waits").await;
    eprintln!("with node 2 down for 8 s the model went from {before} to {during}");
    cluster(&["start-node", "2"]);
    eprintln!("node 2 back after {:.1} s", down_at.elapsed().as_secs_f64());
    publisher.join();
    wait_for_outputs(BOOTSTRAP, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(BOOTSTRAP, &run, "waits", n);
}
