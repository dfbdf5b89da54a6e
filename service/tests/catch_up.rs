//! `streamfit wait` (the quickstart's wait) on the real broker: it returns
//! only once every reading published before it started has its prediction
//! committed and the predicted counter is at the published count, and it
//! fails, saying how far behind, when the service is not there to catch up.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn wait(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let config = config.to_str().expect("utf-8 path");
    let mut all = vec!["wait", "--config", config, "--every", "1"];
    all.extend_from_slice(args);
    streamfit(&all)
}

/// The group's committed offsets on `topic`'s partitions.
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// The ends of `topic`'s partitions.
fn ends(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = client(bootstrap).create().expect("consumer");
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_returns_once_every_reading_is_predicted_and_not_before() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    create_topic(&bootstrap, &run.input, 3).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;

    let n = 300_000;
    for chunk in waits(n).chunks(50_000) {
        produce(&bootstrap, &run.input, chunk);
    }
    let out = wait(
        &run.config,
        &["--predicted", &format!("waits={n}"), "--timeout", "300"],
    );
    // right as it returns: every partition's offsets committed at its end
    // and the counter at the published count
    let at_return = committed(&bootstrap, &run.group, &run.input, 3);
    let predicted = metric(&run.http, "streamfit_readings_predicted_total", "waits").await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(at_return, ends(&bootstrap, &run.input, 3), "{err}");
    assert_eq!(predicted, n as u64, "{err}");
    // it looked while the service was behind (else this shows nothing)
    let behind = err
        .lines()
        .filter(|l| l.starts_with("waiting") && !l.contains("lag 0 "))
        .count();
    assert!(behind > 0, "the wait never saw the service behind: {err}");
    assert!(err.contains("caught up after"), "{err}");

    // a question about a day no reading of which exists yet rests on the
    // ride's usual wait at that hour on earlier days, and says so (before
    // the profile it rested on nothing and answered 10 minutes here)
    let ask = |ts: &'static str| {
        let http = run.http.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("http://{http}/v1/models/waits/predict"))
                .json(&serde_json::json!({ "ride": "soarin", "ts": ts }))
                .send()
                .await
                .expect("predict");
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    let ahead = ask("2018-12-31T14:00:00").await;
    assert_eq!(ahead["basis"]["baseline"], "profile", "{ahead}");
    assert_eq!(
        ahead["basis"]["preference"],
        serde_json::json!(["lag1", "profile"])
    );
    let usual = ahead["basis"]["baseline_value"].as_f64().expect("a value");
    let answer = ahead["prediction"].as_f64().expect("a number");
    assert!(usual > 20.0 && (answer - usual).abs() < 30.0, "{ahead}");
    // at 3 in the morning the park is closed: no profile, nothing to rest on
    let night = ask("2018-12-31T03:00:00").await;
    assert_eq!(
        night["basis"]["baseline"],
        serde_json::Value::Null,
        "{night}"
    );

    // the published predictions say what each rested on, as /predict does
    let mut on: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, value, _) in read_topic(&bootstrap, &run.output, 3, 20_000, Duration::from_secs(60)) {
        let v: serde_json::Value = serde_json::from_slice(&value).expect("prediction is JSON");
        let basis = &v["basis"];
        let name = match &basis["baseline"] {
            serde_json::Value::Null => "none".to_owned(),
            b => b.as_str().expect("a baseline's name").to_owned(),
        };
        assert!(
            basis["baseline_value"].is_number()
                && ["lag1", "profile", "none"].contains(&name.as_str()),
            "{v}"
        );
        *on.entry(name).or_default() += 1;
    }
    assert_eq!(on.values().sum::<usize>(), 20_000);
    assert!(
        on.get("lag1") > on.get("profile") && on.get("profile").is_some_and(|&n| n > 0),
        "most rest on the last posted wait, the day's first ones on the profile: {on:?}"
    );

    // a service that is gone never catches up: the wait says how far behind
    svc.crash();
    produce(&bootstrap, &run.input, &waits(1_000));
    let started = std::time::Instant::now();
    let out = wait(&run.config, &["--timeout", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "no service, yet caught up: {err}");
    assert!(
        err.contains("did not catch up within 3 s") && err.contains("waits: lag 1000"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    // a counter that cannot be read says so, and what to give
    let out = wait(
        &run.config,
        &[
            "--timeout",
            "2",
            "--predicted",
            "waits=1",
            "--url",
            "http://127.0.0.1:1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the predicted counters could not be read") && err.contains("--url"),
        "{err}"
    );
}
