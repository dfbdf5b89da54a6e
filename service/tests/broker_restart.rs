//! The broker is stopped and started again while the real binary works
//! through real wait-time readings: /readyz says not ready while it is away,
//! and afterwards every input offset has exactly one output and the models
//! equal an uninterrupted pass. Restarts the shared broker, so it is a test
//! binary of its own (cargo runs test binaries one after another).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn kafka(action: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka.sh");
    let status = Command::new(script)
        .arg(action)
        .status()
        .expect("deploy/kafka.sh runs");
    assert!(status.success(), "deploy/kafka.sh {action} failed");
}

/// Starts the broker again even if the test fails half-way.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        kafka("up");
    }
}

/// The tests of this file stop the shared broker: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 30_000;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // a steady stream (30 s) that goes on through the outage: the
    // publisher's client buffers while the broker is away
    let publisher = publish_steadily(&bootstrap, &run.input, waits(n), 1_000);
    let before = wait_seen(
        &run.http,
        "waits",
        2_000,
        Duration::from_secs(120),
        "before the outage",
    )
    .await;
    eprintln!("stopping the broker after {before} of {n} readings");
    assert!(
        before > 0 && before < n as u64,
        "the outage must land mid-stream: {before} of {n} readings seen"
    );
    let guard = BrokerGuard;
    kafka("down");
    let down_at = Instant::now();

    // /readyz reports the outage with a reason
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let reason = loop {
        let r = client
            .get(format!("http://{}/readyz", run.http))
            .send()
            .await
            .expect("HTTP answers while the broker is down");
        if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            let v: serde_json::Value = r.json().await.expect("json");
            break v["error"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still says ready 60 s after the broker went down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("/readyz while the broker is down: {reason}");
    assert!(!reason.is_empty());
    // longer than a whole commit retry cycle: a commit attempt times out
    // after 10 s and the backoff between attempts grows to 5 s
    let outage = Duration::from_secs(16);
    if let Some(rest) = outage.checked_sub(down_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let during = readings_seen(&run.http, "waits").await;
    eprintln!(
        "broker down for {:.1} s; the model has seen {during} of {n}, {} handed to the publisher",
        down_at.elapsed().as_secs_f64(),
        publisher.sent()
    );
    assert!(down_at.elapsed() >= outage);
    drop(guard); // starts the broker again

    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_broker_down_exits_within_the_shutdown_timeout() {
    let _serial = SERIAL.lock().await;
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 5_000;
    let timeout_ms = 3_000;
    let env = [("STREAMFIT_SERVICE_SHUTDOWN_TIMEOUT_MS", "3000")];
    let mut svc = Service::start_with(&run.config, &env);
    wait_ready(&run.http).await;
    produce(&bootstrap, &run.input, &waits(n));
    wait_seen(
        &run.http,
        "waits",
        1,
        Duration::from_secs(60),
        "before the outage",
    )
    .await;
    let guard = BrokerGuard;
    kafka("down");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = svc.child.id().to_string();
    let sent = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs")
        .success());
    // the workers give up on the broker after the shutdown timeout; the
    // server allows them 5 s more
    let limit = Duration::from_millis(timeout_ms) + Duration::from_secs(8);
    let code = loop {
        if let Some(code) = svc.child.try_wait().expect("wait") {
            break code;
        }
        assert!(
            sent.elapsed() < limit,
            "streamfit still running {:.1} s after SIGTERM with the broker down",
            sent.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "exited {code} {:.1} s after SIGTERM with the broker down",
        sent.elapsed().as_secs_f64()
    );
    drop(guard); // starts the broker again

    // what it could not commit is processed again, once
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);
}
