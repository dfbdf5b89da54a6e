//! Keyed state larger than a Kafka message: the shipped per-key `waits`
//! model over the real wait-time readings fanned out to about 2,000 keys
//! (each partition's checkpoint several MB, over the producer's 1,000,000
//! bytes: it stopped the service at its first checkpoint). Checkpoints go
//! in chunks; the service is SIGKILLed mid-stream, restores from them and
//! goes on exactly once: one output per input offset, and every partition's
//! model (shared and per key) equals one uninterrupted pass within 1e-9.

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
    // the checkpoints pass the size of a message before the kill
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let detail = model_detail(&run.http, "waits").await;
        let per_key: usize = detail["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| p["per_key_models"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        let commits = detail["commits"].as_u64().unwrap_or(0);
        if per_key >= 1_000 && commits > 0 {
            eprintln!("{per_key} per-key models, {commits} commits");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the model did not reach 1,000 keys with commits: {per_key} keys, {commits} commits"
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
