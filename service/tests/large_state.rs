//! Keyed state larger than a Kafka message.
//!
//! - The shipped per-key `waits` model over the real wait-time readings
//!   fanned out to about 2,000 keys (each partition's state several MB,
//!   over the producer's 1,000,000 bytes: it stopped the service at its
//!   first checkpoint). The service is SIGKILLed mid-stream, restores and
//!   goes on exactly once: one output per input offset, and every
//!   partition's model (shared and per key) equals one uninterrupted pass
//!   within 1e-9.
//! - A per-key model over the waits readings fanned out to 100,000 keys:
//!   every commit writes only the keys that changed, a SIGKILL mid-stream,
//!   a restore of tens of thousands of key records, and again exactly once.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_keys_checkpoint_in_chunks_and_restore_exactly_once() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 12_000;
    // ride x 170 buckets: the rides open in the first readings give about 2,000 keys
    let readings: Vec<(Option<String>, Vec<u8>)> = waits(n)
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| (k.map(|k| format!("{k}-{}", i % 170)), v))
        .collect();
    let keys: std::collections::BTreeSet<&str> =
        readings.iter().filter_map(|(k, _)| k.as_deref()).collect();
    eprintln!("{} readings over {} keys", readings.len(), keys.len());
    assert!(keys.len() >= 1_900, "about 2,000 keys, got {}", keys.len());

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, readings, 1_000);
    // the checkpoints pass the size of a message before the kill: enough
    // keys live, then a commit after that (the keys it checkpoints), so the
    // kill does not land between reaching the keys and committing them
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut committed_before: Option<u64> = None;
    loop {
        let detail = model_detail(&run.http, "waits").await;
        let per_key: usize = detail["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["per_key_models"].as_u64().unwrap_or(0) as usize)
                    .sum()
            })
            .unwrap_or(0);
        let commits = detail["commits"].as_u64().unwrap_or(0);
        match committed_before {
            None if per_key >= 1_300 => committed_before = Some(commits),
            Some(c) if commits > c => {
                eprintln!("{per_key} per-key models, {commits} commits");
                break;
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the model did not reach 1,300 keys and commit them: {per_key} keys, {commits} commits"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = readings_seen(&run.http, "waits").await;
    eprintln!(
        "SIGKILL after {seen} of {n} readings ({} published)",
        publisher.sent()
    );
    assert!(
        seen > 0 && seen < n as u64,
        "the kill must land mid-stream: {seen} of {n}"
    );
    svc.crash();
    // the restarted instance fences the dead one's open transaction (until
    // then it holds back every read_committed reader of the checkpoint topic)
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let checkpoints = checkpoints(&run);
    let largest = checkpoints
        .values()
        .map(|c| serde_json::to_vec(c).map_or(0, |b| b.len()))
        .max()
        .unwrap_or(0);
    eprintln!("largest partition checkpoint: {largest} bytes");
    assert!(
        largest > 1_000_000,
        "a checkpoint larger than a message was written (in chunks) and read back"
    );

    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}

/// A per-key model small enough per key for 100,000 of them in a test: the
/// hour and the last posted wait, AdaGrad, one model per key.
fn keyed_table(input: &str, output: &str, dead: &str) -> String {
    format!(
        r#"[[model]]
name = "keyed"
task = "regression"
input_topic = "{input}"
output_topic = "{output}"
dead_letter_topic = "{dead}"
batch = {{ max_readings = 2000, max_linger_ms = 20 }}
key = "ride"
timestamp = "ts"
target = {{ field = "posted_wait", missing = [-999.0] }}
per_key = true
features = [
  {{ kind = "hour_of_day" }},
  {{ kind = "lag", field = "posted_wait", missing = [-999.0], reset = "daily", name = "lag1" }},
]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_keys_commit_what_changed_and_restore_exactly_once() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup_table(dir.path(), &bootstrap, "keyed", 2, "", keyed_table);
    let n = 150_000;
    let keys = 100_000;
    let readings: Vec<(Option<String>, Vec<u8>)> = waits(n)
        .into_iter()
        .enumerate()
        .map(|(i, (_, v))| (Some(format!("k{}", i % keys)), v))
        .collect();
    assert_eq!(readings.len(), n, "the data set has {n} readings");

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, readings, 10_000);
    // mid-stream: most keys have state, and commits have written them
    let deadline = Instant::now() + Duration::from_secs(180);
    let seen = loop {
        let seen = readings_seen(&run.http, "keyed").await;
        let commits = metric(&run.http, "streamfit_commits_total", "keyed").await;
        if seen >= 80_000 && commits > 5 {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the model did not reach 80,000 readings with commits: {seen} seen, {commits} commits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let commits = metric(&run.http, "streamfit_commits_total", "keyed").await;
    let records = metric(&run.http, "streamfit_checkpoint_key_records_total", "keyed").await;
    let bytes = metric(&run.http, "streamfit_checkpoint_bytes_total", "keyed").await;
    eprintln!(
        "SIGKILL after {seen} of {n} readings ({} published): {commits} commits wrote {records} key records, {bytes} bytes",
        publisher.sent()
    );
    assert!(
        seen > 0 && seen < n as u64,
        "the kill must land mid-stream: {seen} of {n}"
    );
    // only what changed: about one key record per reading learned, not
    // every key at every commit (which would be tens of millions)
    assert!(
        records <= seen + 2 * keys as u64 / 10,
        "{records} key records for {seen} readings over {commits} commits: more than the keys that changed"
    );
    svc.crash();
    let svc = Service::start(&run.config);
    let started = Instant::now();
    wait_ready(&run.http).await;
    eprintln!("restarted and ready in {:?}", started.elapsed());
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    let checkpoints = checkpoints(&run);
    let total_keys: u64 = checkpoints.values().map(|c| c.keys).sum();
    assert_eq!(
        total_keys, keys as u64,
        "every key has its state in the checkpoints"
    );
    verify(&bootstrap, &run, "keyed", n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capped_keys_evict_the_least_recently_used_and_restore_exactly_once() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    // the shipped per-key waits model, capped at 300 keys per partition
    let run = setup_table(dir.path(), &bootstrap, "waits", 3, "", |i, o, d| {
        model_table("waits", i, o, d, 500)
            .replace("per_key = true", "per_key = true\nmax_keys = 300")
    });
    let n = 12_000;
    let readings: Vec<(Option<String>, Vec<u8>)> = waits(n)
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| (k.map(|k| format!("{k}-{}", i % 170)), v))
        .collect();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, readings, 1_500);
    let deadline = Instant::now() + Duration::from_secs(120);
    let evicted = loop {
        let evicted = metric(&run.http, "streamfit_key_evictions_total", "waits").await;
        let commits = metric(&run.http, "streamfit_commits_total", "waits").await;
        if evicted > 100 && commits > 0 {
            break evicted;
        }
        assert!(
            Instant::now() < deadline,
            "no evictions with commits within 120 s: {evicted} evicted, {commits} commits"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = readings_seen(&run.http, "waits").await;
    eprintln!("SIGKILL after {seen} of {n} readings, {evicted} keys evicted");
    assert!(
        seen > 0 && seen < n as u64,
        "the kill must land mid-stream: {seen} of {n}"
    );
    svc.crash();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let detail = model_detail(&run.http, "waits").await;
    for p in detail["partitions"].as_array().expect("partitions") {
        let keys = p["keys"].as_u64().unwrap_or(u64::MAX);
        assert!(
            keys <= 300,
            "a partition holds {keys} keys, over max_keys = 300"
        );
    }
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    // the same evictions as one uninterrupted pass: same models, same lags
    verify(&bootstrap, &run, "waits", n);
}
