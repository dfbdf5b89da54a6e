//! Drift on the real broker. The real January 2018 waits, with every
//! posted wait of three rides 30 minutes longer from 15 January on (the
//! injected drift), go through the drift experiment's model
//! (deploy/forecast.toml): a calendar-only forecast that learns slowly
//! (AdaGrad 0.05), a Page-Hinkley detector, and a challenger that learns
//! ten times faster and may take over only in the window a drift opens
//! (`promotion.after_drift`). The same stream without the drift is
//! the control: no drift, no promotion. Through a SIGKILL mid-stream the
//! drift is detected within a bounded number of readings after the
//! injection, the challenger is promoted, every drift and promotion event
//! is published once, and the promotion survives a restart; a rollback
//! and a promotion by hand do too.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use streamfit::config::Config;
use streamfit::pipeline::Pipeline;

/// The rides whose posted waits drift, and from when.
const RIDES: [&str; 3] = ["soarin", "pirates_of_caribbean", "spaceship_earth"];
const FROM: &str = "2018-01-15";

/// The most labelled readings between the first drifted one and the
/// detector's signal (the detector signalled after about 1,500 readings,
/// a day of the park, when this test was written).
const DETECTED_WITHIN: u64 = 3_000;

/// A reading and its Kafka key.
type Keyed = (Option<String>, Vec<u8>);

/// January's readings (drifted or not), and how many labelled readings
/// come before the first drifted one.
fn january(drift: bool) -> (Vec<Keyed>, u64) {
    let mut labelled_before = None;
    let mut labelled = 0;
    let mut out = Vec::new();
    for (key, bytes) in waits(usize::MAX) {
        let mut r: Value = serde_json::from_slice(&bytes).expect("a JSON reading");
        let ts = r["ts"].as_str().expect("ts").to_owned();
        if ts.as_str() >= "2018-02-01" {
            break;
        }
        let ride = r["ride"].as_str().expect("ride").to_owned();
        if let Some(w) = r["posted_wait"].as_f64().filter(|w| *w >= 0.0) {
            if ts.as_str() >= FROM && RIDES.contains(&ride.as_str()) {
                labelled_before.get_or_insert(labelled);
                if drift {
                    r["posted_wait"] = json!(w + 30.0);
                }
            }
            labelled += 1;
        }
        out.push((key, serde_json::to_vec(&r).expect("encodes")));
    }
    (out, labelled_before.expect("readings after the drift date"))
}

/// The experiment's model (deploy/forecast.toml) on the run's topics.
fn table(input: &str, output: &str, dead: &str, events: &str) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/forecast.toml"),
    )
    .expect("deploy/forecast.toml");
    let from = text.find("[[model]]").expect("a [[model]] table");
    text[from..]
        .lines()
        .map(|l| {
            if l.starts_with("input_topic") {
                format!("input_topic = \"{input}\"")
            } else if l.starts_with("output_topic") {
                format!("output_topic = \"{output}\"\nevents_topic = \"{events}\"")
            } else if l.starts_with("dead_letter_topic") {
                format!("dead_letter_topic = \"{dead}\"\nbatch = {{ max_readings = 500, max_linger_ms = 20 }}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn reference(
    m: &streamfit::config::ModelConfig,
    readings: &[(Option<String>, Vec<u8>)],
) -> Pipeline {
    let r: Vec<(Option<&str>, &[u8])> = readings
        .iter()
        .map(|(k, b)| (k.as_deref(), b.as_slice()))
        .collect();
    one_pass(m, &r)
}

async fn post(http: &str, path: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("answers");
    let status = r.status().as_u16();
    (status, r.json().await.expect("a JSON answer"))
}

/// The one partition's challengers block of `GET /v1/models/forecast`.
async fn standing(http: &str) -> Value {
    model_detail(http, "forecast").await["challengers"]["partitions"][0].clone()
}

/// The events topic's messages, once at least `want` are committed.
fn events(bootstrap: &str, topic: &str, want: usize) -> Vec<Value> {
    read_topic(bootstrap, topic, 1, want + 5, Duration::from_secs(15))
        .into_iter()
        .map(|(_, v, _)| serde_json::from_slice(&v).expect("a JSON event"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_drift_is_detected_and_a_faster_challenger_takes_over_for_good() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let events_topic = unique("drift.events");
    let run = setup_table(dir.path(), &bootstrap, "forecast", 1, "", |i, o, d| {
        table(i, o, d, &events_topic)
    });
    let config = Config::load(&run.config).expect("config");
    let m = config.model("forecast").expect("model");

    // the control: the real stream as it is signals no drift and promotes nothing
    let (plain, _) = january(false);
    let control = reference(m, &plain);
    assert_eq!(
        control.drift().map(|d| d.count),
        Some(0),
        "no drift in the real January"
    );
    assert!(
        control.promotions().is_empty(),
        "nothing promoted without a drift"
    );

    // the drifted stream in one pass: what the service must end with
    let (readings, injected) = january(true);
    let n = readings.len();
    let want = reference(m, &readings);
    let drifts = want.drift().expect("a detector").events.clone();
    let first = drifts.first().expect("the injected drift is detected");
    assert!(
        first.at > injected && first.at - injected <= DETECTED_WITHIN,
        "detected {} labelled readings after the injection (reading {injected}), within {DETECTED_WITHIN}",
        first.at.saturating_sub(injected)
    );
    let promoted = want.promotions().to_vec();
    assert_eq!(promoted.len(), 1, "one promotion: {promoted:?}");
    assert_eq!(
        (promoted[0].from.as_str(), promoted[0].to.as_str()),
        ("base", "fast")
    );
    let (champion_loss, challenger_loss) =
        promoted[0].losses.expect("the deciding window's losses");
    assert!(
        promoted[0].at > first.at,
        "promoted in the window the drift opened"
    );
    eprintln!(
        "drift injected at labelled reading {injected}, detected at {} ({} later); challenger promoted at {} (window mean absolute error {champion_loss:.2} champion, {challenger_loss:.2} challenger)",
        first.at,
        first.at - injected,
        promoted[0].at
    );

    // the service, killed mid-stream
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, readings.clone(), 10_000);
    kill_mid_stream(svc, &run, n as u64 / 3, n).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));

    // as the one pass: every reading once, the same models, the same record
    verify(&bootstrap, &run, "forecast", n);
    let s = standing(&run.http).await;
    assert_eq!(s["champion"], "fast", "{s}");
    assert_eq!(s["promotions_total"], 1, "{s}");
    assert_eq!(s["promotions"][0]["at"], promoted[0].at, "{s}");
    let detail = model_detail(&run.http, "forecast").await;
    assert_eq!(
        detail["drift"]["count"],
        drifts.len(),
        "{}",
        detail["drift"]
    );
    assert_eq!(
        metric(&run.http, "streamfit_promotions", "forecast").await,
        1
    );
    let got = events(&bootstrap, &events_topic, drifts.len() + 1);
    let drift_at: Vec<&Value> = got
        .iter()
        .filter(|e| e["kind"] == "drift")
        .map(|e| &e["at"])
        .collect();
    let want_at: Vec<Value> = drifts.iter().map(|d| json!(d.at)).collect();
    assert_eq!(
        drift_at,
        want_at.iter().collect::<Vec<_>>(),
        "each drift published once"
    );
    let promotions: Vec<&Value> = got.iter().filter(|e| e["kind"] == "promotion").collect();
    assert_eq!(
        promotions.len(),
        1,
        "the promotion published once: {promotions:?}"
    );
    assert_eq!(promotions[0]["to"], "fast");
    assert_eq!(promotions[0]["model"], "forecast");
    let time_ms = s["promotions"][0]["time_ms"].clone();

    // a restart keeps it: restored, not made again (the same wall-clock time)
    svc.stop();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let s = standing(&run.http).await;
    assert_eq!(
        (&s["champion"], &s["promotions"][0]["time_ms"]),
        (&json!("fast"), &time_ms),
        "{s}"
    );
    assert_eq!(readings_seen(&run.http, "forecast").await, n as u64);

    // people roll back and promote; mistakes get a JSON 4xx naming them
    let (status, body) = post(
        &run.http,
        "/v1/models/forecast/promote",
        r#"{"challenger":"nope"}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope") && e.contains("base")),
        "{body}"
    );
    let (status, body) = post(&run.http, "/v1/models/forecast/promote", "{").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&run.http, "/v1/models/forecast/rollback", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["partitions"][0]["promotion"]["to"], "base", "{body}");
    assert_eq!(standing(&run.http).await["champion"], "base");
    // checkpointed with the next commit: a SIGKILL after it keeps it
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cks = checkpoints(&run);
        let champion = cks[&0].pipeline.learner.clone();
        if champion.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollback is not checkpointed within 30 s: {champion:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    svc.crash();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let s = standing(&run.http).await;
    assert_eq!(
        (&s["champion"], &s["promotions_total"]),
        (&json!("base"), &json!(2)),
        "{s}"
    );
    assert_eq!(s["promotions"][1]["by"], "rollback", "{s}");
    let (status, body) = post(
        &run.http,
        "/v1/models/forecast/promote",
        r#"{"challenger":"fast"}"#,
    )
    .await;
    assert_eq!(
        (status, &body["partitions"][0]["promotion"]["by"]),
        (200, &json!("manual")),
        "{body}"
    );
    let got = events(&bootstrap, &events_topic, drifts.len() + 3);
    let by: Vec<&Value> = got
        .iter()
        .filter(|e| e["kind"] == "promotion")
        .map(|e| &e["by"])
        .collect();
    assert_eq!(
        by,
        [&json!("auto"), &json!("rollback"), &json!("manual")],
        "each change published once"
    );
    svc.stop();
}
