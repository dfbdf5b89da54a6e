//! Exactly once on the real broker: the real binary is killed with SIGKILL
//! at random points while it works through real wait-time readings, and
//! restarted each time. Afterwards every input offset has exactly one output
//! (read with read_committed) and every partition's model equals the model
//! of one uninterrupted pass over that partition's readings.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_changes_nothing() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 30_000;
    let readings = waits(n);
    let seed: u64 = std::env::var("STREAMFIT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("crash test seed {seed} (STREAMFIT_CRASH_SEED={seed} reruns it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // a steady stream (15 s): every kill lands while readings still arrive
    let publisher = publish_steadily(&bootstrap, &run.input, readings, 2_000);
    let started = Instant::now();
    let mut before = 0;
    for kill in 1..=4 {
        let after = Duration::from_millis(rng.random_range(200..1500));
        tokio::time::sleep(after).await;
        // the kill lands mid-stream: this run of the service has learned
        // something since its restart, and not everything
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = readings_seen(&run.http, "waits").await;
        while seen <= before {
            assert!(
                Instant::now() < deadline,
                "kill {kill}: no progress past {before} readings within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            seen = readings_seen(&run.http, "waits").await;
        }
        eprintln!(
            "kill {kill} after {:.1} s: the model has seen {seen} of {n} readings, {} published",
            started.elapsed().as_secs_f64(),
            publisher.sent(),
        );
        assert!(
            seen > before && seen < n as u64,
            "kill {kill} must land mid-stream: {seen} of {n} readings seen, {before} before this run"
        );
        before = seen;
        svc.crash();
        svc = Service::start(&run.config);
        wait_ready(&run.http).await;
    }
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}

/// A transactional call that never returns (librdkafka #5456/#5511 after a
/// coordinator moves; injected here): the service gives its Kafka clients
/// up, starts new ones under the same identity (fencing the stuck
/// transaction) and resumes from the last checkpoints, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_stuck_in_librdkafka_is_recovered_exactly_once() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 20_000;
    let env = [
        ("STREAMFIT_TEST_STALL_COMMIT", "5"),
        ("STREAMFIT_TEST_STUCK_AFTER_MS", "3000"),
    ];
    let svc = Service::start_with(&run.config, &env);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, waits(n), 2_000);
    // the stall and the recovery land while readings still arrive (10 s)
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&run.http, "streamfit_client_restarts_total", "waits").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the stuck commit was not noticed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = publisher.sent();
    eprintln!("clients restarted after the stuck commit with {published} of {n} published");
    assert!(
        published > 0 && published < n,
        "the stuck commit must land mid-stream: {published} of {n} published"
    );
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    // a commit slower than the shortened 3 s (a loaded machine) may restart
    // the clients once more: harmless, and exactly once all the same
    let restarts = metric(&run.http, "streamfit_client_restarts_total", "waits").await;
    assert!(restarts >= 1, "the clients restarted");
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}
