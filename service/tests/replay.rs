//! `streamfit replay` on the real broker: history learned at full speed is
//! handed over to the service without a gap and without a reading learned
//! twice; a time start resolves per partition.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn replay(config: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let config = config.to_str().expect("utf-8 path");
    let mut all = vec!["replay", "--json", "--config", config];
    all.extend_from_slice(args);
    serde_json::from_str(&streamfit_ok(&all)).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_history_then_live_equals_one_pass() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (history, live) = (100_000, 5_000);
    let readings = waits(history + live);
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &readings[..history]);

    let summary = replay(&run.config, &["--model", "waits", "--publish"]);
    assert_eq!(summary["readings"], history, "{summary}");

    // the service continues from the replay's checkpoints and offsets
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    assert_eq!(
        readings_seen(&run.http, "waits").await,
        history as u64,
        "the service starts from the replayed models"
    );
    produce(&bootstrap, &run.input, &readings[history..]);
    wait_for_outputs(&bootstrap, &run, history + live, Duration::from_secs(180));
    svc.stop();
    verify(&bootstrap, &run, "waits", history + live);
}

#[test]
fn a_time_start_resolves_per_partition() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "heart");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(create_topic(&bootstrap, &run.input, 3));
    // three partitions, different sizes and paces: 1 reading per 1 s, 2 s, 0.5 s
    let t0: i64 = 1_700_000_000_000;
    let plan = [(0, 100, 1_000), (1, 50, 2_000), (2, 200, 500)];
    let heart = heart();
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    let mut i = 0;
    for (partition, count, step) in plan {
        for k in 0..count {
            let (key, value) = &heart[i % heart.len()];
            i += 1;
            let mut rec = BaseRecord::to(&run.input)
                .partition(partition)
                .timestamp(t0 + k * step)
                .payload(value.as_slice());
            if let Some(key) = key {
                rec = rec.key(key.as_str());
            }
            p.send(rec).map_err(|(e, _)| e).expect("queued");
        }
    }
    p.flush(Duration::from_secs(30)).expect("flushed");

    // t0 + 40 s: offset 40 in partition 0, 20 in 1, 80 in 2
    let from = (t0 + 40_000).to_string();
    let summary = replay(&run.config, &["--model", "heart", "--from", &from]);
    assert_eq!(summary["readings"], 60 + 30 + 120, "{summary}");
    let checkpoints = checkpoints(&run);
    for (partition, count, _) in plan {
        let ck = &checkpoints[&partition];
        assert_eq!(
            ck.next_offset, count,
            "partition {partition} handed over at its end"
        );
        let learned_from = count - (40_000 / plan[partition as usize].2);
        assert_eq!(
            ck.pipeline.seen as i64, learned_from,
            "partition {partition} learned from the first reading at or after the time"
        );
    }
    // an ISO 8601 start gives the same offsets
    let run2 = setup(dir.path(), &bootstrap, "heart");
    let iso = {
        let secs = (t0 + 40_000) / 1000;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (y, m, d) = features::time::civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    };
    let config2 = std::fs::read_to_string(&run2.config)
        .expect("config")
        .replace(&run2.input, &run.input);
    std::fs::write(&run2.config, config2).expect("config");
    let summary = replay(&run2.config, &["--model", "heart", "--from", &iso]);
    assert_eq!(summary["readings"], 210, "{iso}: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_then_the_topic_equals_one_pass() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (file_part, topic_part) = (8_000, 4_000);
    let readings = waits(file_part + topic_part);
    // history that never went through Kafka, as JSON lines without keys:
    // the model's key field names the ride
    let file = dir.path().join("history.jsonl");
    let lines: Vec<&str> = readings[..file_part]
        .iter()
        .map(|(_, b)| std::str::from_utf8(b).expect("utf-8"))
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("history written");
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &readings[file_part..]);

    let summary = replay(
        &run.config,
        &["--model", "waits", "--file", file.to_str().expect("utf-8")],
    );
    assert_eq!(summary["file_readings"], file_part, "{summary}");
    assert_eq!(summary["readings"], topic_part, "{summary}");

    // every partition: the file's model, then the partition's readings
    let config = streamfit::config::Config::load(&run.config).expect("config");
    let m = config.model("waits").expect("model");
    let input = read_input(&bootstrap, &run.input, 3);
    let checkpoints = checkpoints(&run);
    assert_eq!(checkpoints.len(), 3, "every partition starts from the file");
    for p in 0..3 {
        let mut seq: Vec<(Option<&str>, &[u8])> = readings[..file_part]
            .iter()
            .map(|(_, b)| (None, b.as_slice()))
            .collect();
        seq.extend(
            input
                .iter()
                .filter(|x| x.partition == p)
                .map(|x| (x.key.as_deref(), x.payload.as_slice())),
        );
        let want = one_pass(m, &seq);
        let ck = &checkpoints[&p];
        let mut got = streamfit::pipeline::Pipeline::new(m).expect("pipeline");
        got.restore(ck.pipeline.clone()).expect("restores");
        assert_eq!(got.seen(), want.seen(), "partition {p}: readings seen");
        assert_same_model(got.model(), want.model(), &format!("partition {p}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_topic_hands_over_at_the_inputs_end() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (archived, live) = (6_000, 2_000);
    let readings = waits(archived + live);
    let archive = unique("eos.archive");
    create_topic(&bootstrap, &archive, 3).await;
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &archive, &readings[..archived]);

    let summary = replay(&run.config, &["--model", "waits", "--topic", &archive]);
    assert_eq!(summary["readings"], archived, "{summary}");
    let handed = checkpoints(&run);
    assert_eq!(handed.len(), 3, "every partition handed over");
    assert!(
        handed
            .values()
            .all(|c| c.next_offset == 0 && c.topic == run.input),
        "valid from the input topic's (empty) end"
    );

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    assert_eq!(readings_seen(&run.http, "waits").await, archived as u64);
    produce(&bootstrap, &run.input, &readings[archived..]);
    wait_for_outputs(&bootstrap, &run, live, Duration::from_secs(120));
    svc.stop();

    // each partition: its archived readings, then its live ones
    let config = streamfit::config::Config::load(&run.config).expect("config");
    let m = config.model("waits").expect("model");
    let old = read_input(&bootstrap, &archive, 3);
    let new = read_input(&bootstrap, &run.input, 3);
    let done = checkpoints(&run);
    for p in 0..3 {
        let seq: Vec<(Option<&str>, &[u8])> = old
            .iter()
            .chain(new.iter())
            .filter(|x| x.partition == p)
            .map(|x| (x.key.as_deref(), x.payload.as_slice()))
            .collect();
        let want = one_pass(m, &seq);
        let mut got = streamfit::pipeline::Pipeline::new(m).expect("pipeline");
        got.restore(done[&p].pipeline.clone()).expect("restores");
        assert_eq!(got.seen(), want.seen(), "partition {p}: readings seen");
        assert_same_model(got.model(), want.model(), &format!("partition {p}"));
    }
}

/// The members the broker lists for `group`.
fn members_of(bootstrap: &str, group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let probe: BaseConsumer = client(bootstrap).create().expect("consumer");
    probe
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("group list")
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .map_or(0, |g| g.members().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_right_after_a_graceful_stop_runs_and_a_running_service_is_refused_at_once() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "heart");
    let readings = heart();
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &readings);
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    wait_for_outputs(&bootstrap, &run, readings.len(), Duration::from_secs(120));

    // while the service runs: refused at once, naming the instance that answers
    let config = run.config.to_str().expect("utf-8 path");
    let started = std::time::Instant::now();
    let out = streamfit(&["replay", "--json", "--config", config, "--model", "heart"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a replay beside a running service must be refused"
    );
    assert!(err.contains("answers at http://"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "refused without waiting out a session: {:?}",
        started.elapsed()
    );

    // SIGTERM, then at once: the stopped static member is still listed ...
    svc.stop();
    let stopped = std::time::Instant::now();
    assert!(
        members_of(&bootstrap, &run.group) > 0,
        "the stopped service's membership should linger (else this test shows nothing)"
    );
    // ... and the replay waits it out, saying why, then runs
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_streamfit"))
        .args(["replay", "--json", "--config", config, "--model", "heart"])
        .env("STREAMFIT_LOG", "info")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay after a graceful stop: {err}");
    assert!(
        err.contains("stays a member until its session times out"),
        "the wait says why: {err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(summary["readings"], readings.len(), "{summary}");
    assert!(
        stopped.elapsed() < Duration::from_secs(75),
        "the wait ends with the session (45 s), not later: {:?}",
        stopped.elapsed()
    );
}
