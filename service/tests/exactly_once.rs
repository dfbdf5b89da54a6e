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
    produce(&bootstrap, &run.input, &readings);
    let started = Instant::now();
    for kill in 1..=4 {
        let after = Duration::from_millis(rng.random_range(200..1500));
        tokio::time::sleep(after).await;
        let seen = readings_seen(&run.http, "waits").await;
        eprintln!(
            "kill {kill} after {:.1} s: the model has seen {seen} of {n} readings",
            started.elapsed().as_secs_f64(),
        );
        svc.crash();
        svc = Service::start(&run.config);
        wait_ready(&run.http).await;
    }
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}
