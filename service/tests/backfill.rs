//! A live backfill over HTTP on the real broker: while readings keep
//! arriving, a shadow model learns the topic from the start and swaps in
//! once caught up; /predict never fails and never answers from a
//! half-built model, and the final model equals one pass over every reading.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_backfill_swaps_in_without_a_gap() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (history, live) = (60_000, 20_000);
    let readings = waits(history + live);
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &readings[..history]);

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    wait_seen(
        &run.http,
        "waits",
        history as u64,
        Duration::from_secs(120),
        "the history",
    )
    .await;

    // ask /predict and the model all along: every answer 200, versions
    // never going back, the model never knowing fewer readings than before
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, http, body) = (stop.clone(), run.http.clone(), readings[0].1.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut answers, mut fewest, mut last_version) = (0u64, u64::MAX, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let r = client
                    .post(format!("http://{http}/v1/models/waits/predict"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("/predict answers");
                let status = r.status();
                let v: serde_json::Value = r.json().await.expect("json");
                assert_eq!(status, 200, "/predict failed during the backfill: {v}");
                let version = v["model_version"].as_u64().expect("a version");
                assert!(
                    version >= last_version,
                    "the version went back: {version} after {last_version}"
                );
                last_version = version;
                fewest = fewest.min(readings_seen(&http, "waits").await);
                answers += 1;
            }
            (answers, fewest)
        })
    };
    // live readings keep arriving during the backfill
    let publisher = {
        let (bootstrap, topic) = (bootstrap.clone(), run.input.clone());
        let rest = readings[history..].to_vec();
        tokio::task::spawn_blocking(move || {
            for chunk in rest.chunks(1_000) {
                produce(&bootstrap, &topic, chunk);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/v1/models/waits/backfill", run.http))
        .json(&serde_json::json!({ "from": "earliest" }))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let m = model_detail(&run.http, "waits").await;
        let b = &m["backfill"];
        assert_ne!(b["state"], "failed", "the backfill failed: {b}");
        if b["state"] == "swapped" {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "no swap within 120 s: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let learned = status["readings"].as_u64().expect("a count");
    assert!(
        learned >= history as u64,
        "the shadow learned the history: {status}"
    );
    for (p, x) in status["partitions"].as_object().expect("partitions") {
        assert_eq!(
            x["position"], x["live"],
            "partition {p} caught up exactly: {status}"
        );
    }

    publisher.await.expect("published");
    wait_for_outputs(&bootstrap, &run, history + live, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let (answers, fewest) = prober.await.expect("prober");
    assert!(
        answers > 10,
        "/predict was asked during the backfill ({answers} times)"
    );
    assert!(
        fewest >= history as u64,
        "a model knowing only {fewest} readings answered: half-built"
    );
    svc.stop();
    // one output per reading, and each partition's model equals one pass
    verify(&bootstrap, &run, "waits", history + live);
}

/// A backfill from the middle of the history would leave the model knowing
/// fewer readings than the live one: it is learned, but not swapped in
/// (the live model and its count stay), unless the request says `force`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_that_would_forget_is_swapped_in_only_when_forced() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let n = 9_000;
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &waits(n));
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    wait_seen(
        &run.http,
        "waits",
        n as u64,
        Duration::from_secs(120),
        "the history",
    )
    .await;
    // from the middle of each partition
    let detail = model_detail(&run.http, "waits").await;
    let from: Vec<String> = detail["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            let seen = p["readings_seen"].as_u64().expect("seen");
            format!("{}:{}", p["partition"], seen / 2)
        })
        .collect();
    let from = from.join(",");
    let client = reqwest::Client::new();
    let ask = |force: bool| {
        client
            .post(format!("http://{}/v1/models/waits/backfill", run.http))
            .json(&serde_json::json!({ "from": from, "force": force }))
            .send()
    };
    let r = ask(false).await.expect("answers");
    assert_eq!(r.status(), 202);
    let b = backfill_ends(&run.http, "failed").await;
    let why = b["error"].as_str().expect("why");
    assert!(
        why.contains("fewer than the live model's") && why.contains("\"force\": true"),
        "{why}"
    );
    assert_eq!(
        readings_seen(&run.http, "waits").await,
        n as u64,
        "not swapped: the live model still knows every reading"
    );

    let r = ask(true).await.expect("answers");
    assert_eq!(r.status(), 202);
    let b = backfill_ends(&run.http, "swapped").await;
    let seen = readings_seen(&run.http, "waits").await;
    assert!(
        seen < n as u64 && seen >= (n / 2 - 3) as u64,
        "forced: the backfilled model, which knows about half, is live ({seen} of {n}): {b}"
    );
    svc.stop();
}

/// Waits until the latest backfill is `want` (failing on the other end).
async fn backfill_ends(http: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = model_detail(http, "waits").await;
        let b = m["backfill"].clone();
        if b["state"] == want {
            return b;
        }
        assert!(
            b["state"] != "swapped" && b["state"] != "failed",
            "the backfill ended {b}, expected {want}"
        );
        assert!(Instant::now() < deadline, "no {want} within 120 s: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
