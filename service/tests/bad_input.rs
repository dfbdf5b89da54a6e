//! Bad input never stops a partition: generated bad readings of every kind
//! (common/bad.rs) go through the decoder and the service's pipeline a
//! million at a time, through the HTTP API, and through the real binary on
//! the real broker. Every reading ends as a prediction or a dead letter with
//! a reason; nothing panics.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::bad::{BadReadings, KINDS};
use common::*;
use streamfit::config::Config;
use streamfit::engine::ModelHandle;
use streamfit::http::{app, AppState};
use streamfit::pipeline::{Input, Outcome, Pipeline};
use tower::ServiceExt;

fn deploy_config() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml"))
        .expect("deploy/streamfit.toml is valid")
}

#[test]
fn a_million_bad_readings_through_the_pipeline() {
    let config = deploy_config();
    let total = 1_000_000;
    let mut per_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (name, seed) in [("waits", 7u64), ("waits-v1", 8)] {
        let mut pipeline = Pipeline::new(config.model(name).expect("model")).expect("pipeline");
        let mut gen = BadReadings::new(seed, 4096);
        let mut done = 0;
        while done < total / 2 {
            let mut out = Vec::new();
            let batch: Vec<(&str, Option<String>, Vec<u8>)> = gen.by_ref().take(500).collect();
            let inputs: Vec<Input<'_>> = batch
                .iter()
                .map(|(_, k, b)| Input {
                    key: k.as_deref(),
                    bytes: b,
                })
                .collect();
            pipeline.process(&inputs, &mut out);
            assert_eq!(out.len(), inputs.len(), "one outcome per reading");
            for ((kind, _, bytes), outcome) in batch.iter().zip(&out) {
                let e = per_kind.entry(kind).or_default();
                match outcome {
                    Outcome::Predicted(p) => {
                        assert!(
                            p.prediction.is_finite(),
                            "{kind}: a prediction should be finite: {:?}",
                            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                        );
                        e.0 += 1;
                    }
                    Outcome::Invalid(err) => {
                        assert!(!err.to_string().is_empty(), "{kind}: a reason");
                        e.1 += 1;
                    }
                }
            }
            done += inputs.len();
        }
        // and the model still learns and predicts sensibly afterwards
        let good = br#"{"ride":"soarin","ts":"2018-03-02T10:00:00","posted_wait":30.0}"#;
        let p = pipeline
            .predict_one(good, Some("soarin"))
            .expect("predicts");
        assert!(p.prediction.is_finite());
    }
    let accounted: u64 = per_kind.values().map(|(a, b)| a + b).sum();
    assert_eq!(accounted, total as u64);
    for kind in KINDS {
        let (predicted, dead) = per_kind.get(kind).copied().unwrap_or_default();
        eprintln!("{kind:>18}: {predicted:>7} predicted, {dead:>7} dead-lettered");
    }
    for kind in [
        "malformed JSON",
        "empty message",
        "invalid UTF-8",
        "wrong types",
        "NaN and Inf",
        "random bytes",
    ] {
        assert_eq!(per_kind[kind].0, 0, "{kind} should never be predicted");
    }
    for kind in ["unknown fields", "unseen category"] {
        assert_eq!(per_kind[kind].1, 0, "{kind} should be predicted");
    }
}

#[test]
fn huge_readings_are_decoded_or_refused_without_trouble() {
    let config = deploy_config();
    let mut pipeline = Pipeline::new(config.model("waits").expect("model")).expect("pipeline");
    let mut gen = BadReadings::new(3, 4 << 20);
    let mut big: Vec<_> = gen
        .by_ref()
        .filter(|(k, _, _)| *k == "oversized message")
        .take(2)
        .collect();
    // nesting a million deep in an ignored field: no stack overflow
    let depth = 1_000_000;
    let mut deep =
        br#"{"ride":"soarin","ts":"2018-03-01T10:00:00","posted_wait":30,"deep":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', depth));
    deep.extend(std::iter::repeat_n(b']', depth));
    deep.push(b'}');
    big.push(("deep nesting", Some("soarin".into()), deep));
    let inputs: Vec<Input<'_>> = big
        .iter()
        .map(|(_, k, b)| Input {
            key: k.as_deref(),
            bytes: b,
        })
        .collect();
    let mut out = Vec::new();
    pipeline.process(&inputs, &mut out);
    assert_eq!(out.len(), 3);
}

#[tokio::test]
async fn the_http_api_answers_bad_readings_with_json_4xx() {
    let config = deploy_config();
    let handles = config
        .models
        .iter()
        .map(|m| ModelHandle::new(m.clone()).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()
        .expect("handles");
    let router = app(AppState::new(handles, &config.service), 64 * 1024);
    let mut gen = BadReadings::new(11, 100 * 1024);
    for (kind, _, bytes) in gen.by_ref().take(14 * 40) {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/models/waits/predict")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes.clone()))
            .expect("request");
        let res = router.clone().oneshot(req).await.expect("answers");
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{kind}: the answer ({status}) should be JSON: {e}"));
        if status == StatusCode::OK {
            let preds = v["predictions"]
                .as_array()
                .cloned()
                .unwrap_or_else(|| vec![v.clone()]);
            for p in preds {
                assert!(
                    p["prediction"].as_f64().is_some_and(f64::is_finite),
                    "{kind}: {v}"
                );
            }
        } else {
            assert!(status.is_client_error(), "{kind}: {status} {v}");
            assert!(
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{kind}: an error that says what to fix: {v}"
            );
        }
        if kind == "oversized message" {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_kafka_accounts_for_every_bad_reading() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // bad readings of every kind, each kind 150 times, between real ones
    let mut readings: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let good = waits(2_100);
    let mut gen = BadReadings::new(5, 512 * 1024);
    for g in good {
        readings.push(g);
        if let Some((_, k, b)) = gen.next() {
            readings.push((k, b));
        }
    }
    let n = readings.len();
    produce(&bootstrap, &run.input, &readings);
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(180));
    // the service is still up and ready
    wait_ready(&run.http).await;
    svc.stop();
    let counts = outputs_per_offset(
        &bootstrap,
        &run.output,
        &run.dead,
        3,
        n + 1,
        Duration::from_secs(10),
    );
    assert_eq!(counts.len(), n, "every reading accounted for");
    assert!(counts.values().all(|&c| c == 1), "and only once");
    let deads = read_topic(&bootstrap, &run.dead, 3, n, Duration::from_secs(10));
    assert!(
        deads.len() >= 2_100 / 14 * 5,
        "the bad ones are dead-lettered: {}",
        deads.len()
    );
    for (_, _, headers) in &deads {
        assert!(
            headers
                .get("streamfit.error")
                .is_some_and(|e| !e.is_empty()),
            "every dead letter says why: {headers:?}"
        );
    }
}
