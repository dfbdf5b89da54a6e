//! End to end against the real broker (deploy/kafka.sh up): the real
//! `streamfit` binary consumes real readings, publishes predictions and dead
//! letters, answers /predict, and resumes from committed offsets after a
//! restart. Fails loudly when Kafka is not there; never skips.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn write_config(
    dir: &Path,
    bootstrap: &str,
    http: &str,
    input: &str,
    output: &str,
    dead: &str,
) -> std::path::PathBuf {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml"),
    )
    .expect("config");
    let heart_start = base.find("name = \"heart\"").expect("heart model");
    let heart_table = &base[heart_start..];
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{bootstrap}\"\n[service]\ngroup_id = \"{group}\"\nhttp_addr = \"{http}\"\n[topics]\npartitions = 2\nreplication_factor = 1\n[[model]]\n{heart}",
        group = unique("group"),
        heart = heart_table
            .replace("input_topic = \"clinical.readings\"", &format!("input_topic = \"{input}\""))
            .replace("output_topic = \"heart.predictions\"", &format!("output_topic = \"{output}\""))
            .replace("dead_letter_topic = \"clinical.dead-letter\"", &format!("dead_letter_topic = \"{dead}\"\nbatch = {{ max_readings = 50, max_linger_ms = 20 }}")),
    );
    let path = dir.join("streamfit.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicts_learns_dead_letters_and_resumes_on_real_kafka() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output, dead) = (unique("e2e.in"), unique("e2e.out"), unique("e2e.dead"));
    let http = format!("127.0.0.1:{}", free_port());
    let config = write_config(dir.path(), &bootstrap, &http, &input, &output, &dead);
    let client = reqwest::Client::new();
    let probe = r#"{"patient_id":"probe","age":61,"sex":"M","chest_pain_type":"ASY","resting_bp":140,"cholesterol":0,"fasting_bs":1,"resting_ecg":"ST","max_hr":110,"exercise_angina":"Y","oldpeak":2.0,"st_slope":"Flat"}"#;
    let predict = |client: reqwest::Client, http: String| async move {
        let r = client
            .post(format!("http://{http}/v1/models/heart/predict"))
            .header("content-type", "application/json")
            .body(probe)
            .send()
            .await
            .expect("answers");
        assert!(r.status().is_success());
        r.json::<serde_json::Value>().await.expect("json")
    };

    // first run: 400 real readings with one malformed reading among them
    let svc = Service::start(&config);
    wait_ready(&http).await;
    let before = predict(client.clone(), http.clone()).await;
    assert_eq!(before["model_version"], 0);
    assert_eq!(before["probability"], 0.5);
    let mut first: Vec<(Option<String>, Vec<u8>)> = heart().into_iter().take(400).collect();
    let bad = b"{\"patient_id\": \"hf-bad\", \"age\": \"sixty\"}".to_vec();
    first.insert(123, (Some("hf-bad".into()), bad.clone()));
    produce(&bootstrap, &input, &first);
    let preds = read_topic(&bootstrap, &output, 2, 400, Duration::from_secs(90));
    assert_eq!(preds.len(), 400, "one prediction per valid reading");
    let deads = read_topic(&bootstrap, &dead, 2, 1, Duration::from_secs(30));
    assert_eq!(deads.len(), 1, "the malformed reading is dead-lettered");
    assert_eq!(deads[0].1, bad, "with its original bytes");
    assert!(
        deads[0].2["streamfit.error"].contains("`age` should be a number"),
        "{:?}",
        deads[0].2
    );
    assert_eq!(deads[0].2["streamfit.field"], "age");

    // every prediction names its source; offsets are unique; versions never go down
    let mut seen: HashMap<(i64, i64), u32> = HashMap::new();
    let mut last_version: HashMap<i64, u64> = HashMap::new();
    for (key, value, _) in &preds {
        let v: serde_json::Value = serde_json::from_slice(value).expect("prediction is JSON");
        assert_eq!(v["model"], "heart");
        assert_eq!(v["source"]["topic"], input.as_str());
        let (p, o) = (
            v["source"]["partition"].as_i64().expect("partition"),
            v["source"]["offset"].as_i64().expect("offset"),
        );
        *seen.entry((p, o)).or_default() += 1;
        let version = v["model_version"].as_u64().expect("version");
        let prev = last_version.insert(p, version).unwrap_or(0);
        assert!(
            version >= prev,
            "model versions should not decrease within a partition"
        );
        assert_eq!(key.as_deref(), v["key"].as_str().map(str::as_bytes));
        assert!(v["probability"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)));
        assert!(v["label"].is_number());
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "each input offset predicted once"
    );

    // the live model has learned and /predict answers with it
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let a = predict(client.clone(), http.clone()).await;
        if a["model_version"].as_u64().unwrap_or(0) > 0 || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        after["model_version"].as_u64().expect("version") > 0,
        "{after}"
    );
    assert_ne!(after["probability"], before["probability"]);
    let model = model_detail(&http, "heart").await;
    assert_eq!(model["model"]["readings_learned"], 400);
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("streamfit_readings_dead_lettered_total{model=\"heart\"} 1"),
        "{metrics}"
    );
    // every committed transaction's round trips are timed (one page: a
    // commit finishing as it is read may be timed, not yet counted)
    let value = |name: &str| -> f64 {
        metric_in(&metrics, name, "heart")
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    let commits = value("streamfit_commits_total");
    let timed = value("streamfit_commit_seconds_count");
    assert!(commits > 0.0, "the outputs were committed in transactions");
    assert!(
        timed >= commits && timed <= commits + 1.0,
        "{timed} commits timed, {commits} committed"
    );
    for step in [
        "streamfit_commit_offsets_seconds",
        "streamfit_commit_end_seconds",
    ] {
        let count = value(&format!("{step}_count"));
        assert!(
            count >= timed && count <= timed + 1.0,
            "{step}: {count} of {timed}"
        );
        assert!(
            value(&format!("{step}_sum")) > 0.0,
            "{step}: a round trip takes time"
        );
    }
    svc.stop();

    // second run: resumes from the committed offsets, nothing predicted twice
    let svc = Service::start(&config);
    wait_ready(&http).await;
    let second: Vec<_> = heart().into_iter().skip(400).take(100).collect();
    produce(&bootstrap, &input, &second);
    let all = read_topic(&bootstrap, &output, 2, 500, Duration::from_secs(90));
    assert_eq!(all.len(), 500);
    let extra = read_topic(&bootstrap, &output, 2, 501, Duration::from_secs(3));
    assert_eq!(
        extra.len(),
        500,
        "no reading predicted twice after the restart"
    );
    // the models continued from their checkpoints, not from scratch
    let deadline = Instant::now() + Duration::from_secs(30);
    let learned = loop {
        let model = model_detail(&http, "heart").await;
        let n = model["model"]["readings_learned"].as_u64().unwrap_or(0);
        if n >= 500 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        learned, 500,
        "restored from the checkpoint, then learned 100 more"
    );
    svc.stop();
}
