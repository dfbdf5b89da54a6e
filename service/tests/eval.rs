//! `streamfit eval`, the real binary on the real data sets of `../shared`:
//! its JSON contract, and the accuracy goals of the shipped models (speed
//! is measured by `deploy/bench-eval.sh`, not asserted here).

mod common;

use std::path::PathBuf;

use common::*;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the service crate sits in the workspace")
        .to_path_buf()
}

fn eval(model: &str, data: &str, passes: &str) -> serde_json::Value {
    let data = workspace().join("../shared/data").join(data);
    let out = eval_shipped(model, &data, &["--passes", passes, "--json"]);
    assert!(
        out.status.success(),
        "eval of {model} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.lines().count(), 1, "exactly one JSON object: {out}");
    serde_json::from_str(&out).expect("one JSON object")
}

fn num(report: &serde_json::Value, key: &str) -> f64 {
    report[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} should be a number in {report}"))
}

/// `streamfit eval --model MODEL --data DATA` with the shipped config,
/// then `extra`.
fn eval_shipped(model: &str, data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let config = workspace().join("deploy/streamfit.toml");
    let mut args = vec![
        "eval",
        "--model",
        model,
        "--data",
        data.to_str().expect("utf-8 path"),
        "--config",
        config.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    streamfit(&args)
}

#[test]
fn waits_models_meet_their_goals_and_keep_the_contract() {
    for model in ["waits-v1", "waits"] {
        let r = eval(model, "wdw-waits-2018", "1");
        assert_eq!(r["model"], model);
        assert_eq!(r["batch"], 1);
        assert_eq!(r["scored"], 559_629);
        for key in ["seconds", "readings_per_second", "mae", "rmse"] {
            assert!(num(&r, key) > 0.0, "{key} in {r}");
        }
        for part in ["second_half", "last_20pct"] {
            assert!(
                num(&r[part], "mae") > 0.0 && num(&r[part], "rmse") > 0.0,
                "{r}"
            );
        }
        let (mae, rmse) = (num(&r, "mae"), num(&r, "rmse"));
        // BENCHMARKS.md: Vowpal Wabbit's best RMSE, and persistence's MAE
        assert!(rmse <= 8.94, "{model}: RMSE {rmse}");
        if model == "waits" {
            assert!(mae < 4.165, "{model}: MAE {mae}");
        }
    }
}

#[test]
fn heart_models_meet_their_goals_and_every_pass_agrees() {
    for model in ["heart-v1", "heart"] {
        // two passes: the second must predict the first's figures to the bit
        let r = eval(model, "heart-failure/heart.csv", "2");
        assert_eq!(r["scored"], 918);
        assert_eq!(r["passes"], 2);
        let (log_loss, auc) = (num(&r, "log_loss"), num(&r, "roc_auc"));
        assert!(log_loss <= 0.355, "{model}: log loss {log_loss}");
        assert!(auc >= 0.92, "{model}: ROC AUC {auc}");
        assert!(num(&r, "accuracy") > 0.8, "{r}");
        for part in ["second_half", "last_20pct"] {
            assert!(num(&r[part], "log_loss") > 0.0, "{r}");
        }
    }
}

#[test]
fn text_models_keep_their_figures_and_the_contract() {
    let data = "airline-tweets/tweets.jsonl";
    let r = eval("tweets", data, "2");
    assert_eq!(r["scored"], 14_640);
    let (log_loss, auc) = (num(&r, "log_loss"), num(&r, "roc_auc"));
    // the issue's goals over the whole stream (the README: 0.3497 / 0.9172)
    assert!(
        log_loss <= 0.355 && auc >= 0.915,
        "tweets: {log_loss} / {auc}"
    );
    // better than scikit-learn's hashing + SGD on the same protocol
    assert!(log_loss < 0.4144 && auc > 0.8834, "{r}");
    for part in ["first_20pct", "last_80pct", "last_20pct"] {
        assert!(num(&r[part], "roc_auc") > 0.8, "{part} in {r}");
    }
    let r = eval("sentiment", data, "1");
    assert_eq!(r["scored"], 14_640);
    let (accuracy, macro_f1) = (num(&r, "accuracy"), num(&r, "macro_f1"));
    // the issue's goals over the whole stream (the README: 0.8050 / 0.7386)
    assert!(
        accuracy >= 0.80 && macro_f1 >= 0.73,
        "sentiment: {accuracy} / {macro_f1}"
    );
    // far above River's softmax (0.7483 / 0.6331)
    assert!(num(&r, "log_loss") > 0.0 && r["roc_auc"].is_null(), "{r}");
    let per_class = r["class_f1"].as_array().expect("class_f1");
    assert_eq!(per_class.len(), 3, "{r}");
    for part in ["first_20pct", "last_80pct"] {
        assert!(num(&r[part], "macro_f1") > 0.6, "{part} in {r}");
    }
    // no batch model fits 2^20 hashed columns: said, not attempted
    let root = workspace();
    let out = eval_shipped(
        "tweets",
        &root.join("../shared/data").join(data),
        &["--hindsight"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--hindsight") && err.contains("text"), "{err}");
}

#[test]
fn a_model_that_learns_its_classes_is_scored_from_its_first_reading() {
    // `target.classes` left out: the classes are learned in order of
    // appearance, and the first reading is predicted knowing none (which
    // aborted the process, asking for 100 GB, until this test)
    let data = workspace().join("../shared/data/airline-tweets/tweets.jsonl");
    let config = workspace().join("deploy/streamfit.toml");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("predictions.arrow");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    let (data_arg, config_arg, log_arg) = (path(&data), path(&config), path(&log));
    let out = streamfit_with(
        &[
            "eval",
            "--model",
            "sentiment",
            "--passes",
            "1",
            "--json",
            "--data",
            &data_arg,
            "--config",
            &config_arg,
            "--predictions-out",
            &log_arg,
        ],
        &[(
            "STREAMFIT_MODEL_SENTIMENT__TARGET",
            r#"{ field = "sentiment" }"#,
        )],
    );
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(r["scored"], 14_640, "every reading scored, the first too");
    // the classes in the order the stream brings them, naming class_f1
    let mut appear: Vec<String> = Vec::new();
    let mut labels: Vec<Option<String>> = Vec::new();
    for line in std::fs::read_to_string(&data).expect("tweets").lines() {
        let t: serde_json::Value = serde_json::from_str(line).expect("a tweet");
        let class = t["sentiment"].as_str().expect("a sentiment").to_owned();
        if !appear.contains(&class) {
            appear.push(class.clone());
        }
        labels.push(Some(class));
    }
    // the predictions log names the classes: each label, and the first
    // prediction as none (no class known yet)
    let file = std::fs::File::open(&log).expect("the predictions log");
    let batches: Vec<arrow::record_batch::RecordBatch> =
        arrow::ipc::reader::FileReader::try_new(file, None)
            .expect("an Arrow IPC file")
            .collect::<Result<_, _>>()
            .expect("batches");
    let names = |column: &str| -> Vec<Option<String>> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column_by_name(column)
                    .and_then(|a| a.as_any().downcast_ref::<arrow::array::StringArray>())
                    .unwrap_or_else(|| panic!("a string column {column}"));
                a.iter().map(|v| v.map(str::to_owned)).collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(names("label_class"), labels);
    let predicted = names("predicted_class");
    assert_eq!(predicted.len(), 14_640);
    assert_eq!(predicted[0], None, "no class known before the first tweet");
    assert!(predicted[1..].iter().all(Option::is_some));
    assert_eq!(r["classes"], serde_json::json!(appear), "{r}");
    assert_eq!(r["class_f1"].as_array().map(Vec::len), Some(3), "{r}");
    let (accuracy, macro_f1) = (num(&r, "accuracy"), num(&r, "macro_f1"));
    // as good as with the classes declared (0.8050 / 0.7386)
    assert!(
        accuracy >= 0.80 && macro_f1 >= 0.73,
        "learned classes: {accuracy} / {macro_f1}"
    );
}

#[test]
fn a_label_delay_learns_later_and_says_what_it_needs() {
    let root = workspace();
    let heart = root.join("../shared/data/heart-failure/heart.csv");
    let run = |delay: &str| {
        eval_shipped(
            "heart",
            &heart,
            &["--passes", "1", "--json", "--label-delay", delay],
        )
    };
    let report = |delay: &str| -> serde_json::Value {
        let out = run(delay);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let now = report("0");
    let later = report("100");
    assert_eq!(now["learned"], 918);
    assert!(now.get("label_delay").is_none(), "{now}");
    assert_eq!(
        later["learned"], 818,
        "the last 100 labels are never revealed"
    );
    assert_eq!(later["label_delay"], "100 readings");
    assert_eq!(
        later["scored"], 918,
        "every reading is still scored on arrival"
    );
    assert!(
        num(&later, "log_loss") > num(&now, "log_loss"),
        "a delay costs: {later} against {now}"
    );
    // a delay in time needs event times; a bad value says what is wanted
    let out = run("30m");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timestamp") && err.contains("readings"),
        "{err}"
    );
    let out = run("soon");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("30m") && err.contains("100"), "{err}");
}

#[test]
fn bad_flags_are_clear_errors() {
    let root = workspace();
    let config = root.join("deploy/streamfit.toml");
    let config = config.to_str().expect("utf-8 path");
    let data = root.join("../shared/data/heart-failure/heart.csv");
    let data = data.to_str().expect("utf-8 path");
    for (flag, value, says) in [
        ("--passes", "0", "`--passes` should be at least 1"),
        ("--batch", "0", "`--batch` should be at least 1"),
    ] {
        let out = streamfit(&[
            "eval", "--model", "heart", "--data", data, "--config", config, flag, value,
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}

/// Invalid readings are counted and the first few shown with their place
/// and reason, in the JSON and the text report, so that a user can fix the
/// data; the valid ones are scored as if the invalid were not there.
#[test]
fn invalid_readings_are_shown_with_their_place_and_reason() {
    let root = workspace();
    let tweets = std::fs::read_to_string(root.join("../shared/data/airline-tweets/tweets.jsonl"))
        .expect("the tweets");
    let good: Vec<&str> = tweets.lines().take(40).collect();
    let bad = [
        r#"{"id": "x", "text": "bad label", "airline": "United", "sentiment": "angry"}"#,
        "not json",
    ];
    // the bad lines at readings 11 and 22 (1-based), then 7 more of the second kind
    let mut lines: Vec<&str> = Vec::new();
    lines.extend(&good[..10]);
    lines.push(bad[0]);
    lines.extend(&good[10..20]);
    lines.push(bad[1]);
    lines.extend(std::iter::repeat_n(bad[1], 7));
    lines.extend(&good[20..]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mixed = dir.path().join("mixed.jsonl");
    std::fs::write(&mixed, lines.join("\n")).expect("written");
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(&clean, good.join("\n")).expect("written");
    let run = |data: &std::path::Path, json: bool| {
        let extra: &[&str] = if json {
            &["--passes", "1", "--json"]
        } else {
            &["--passes", "1"]
        };
        let out = eval_shipped("sentiment", data, extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let r: serde_json::Value = serde_json::from_str(&run(&mixed, true)).expect("JSON");
    assert_eq!(r["invalid"], 9, "{r}");
    assert_eq!(r["scored"], 40, "{r}");
    let examples = r["invalid_examples"].as_array().expect("examples");
    assert_eq!(examples.len(), 5, "the first five: {r}");
    assert_eq!(examples[0]["reading"], 11);
    assert!(
        examples[0]["error"]
            .as_str()
            .expect("text")
            .contains("`sentiment` should be one of the classes"),
        "{r}"
    );
    assert_eq!(examples[1]["reading"], 22);
    assert!(
        examples[1]["error"]
            .as_str()
            .expect("text")
            .contains("should be a JSON object"),
        "{r}"
    );
    let c: serde_json::Value = serde_json::from_str(&run(&clean, true)).expect("JSON");
    assert_eq!(c["invalid"], 0);
    assert!(c.get("invalid_examples").is_none(), "none to show: {c}");
    for key in ["log_loss", "accuracy", "macro_f1"] {
        assert_eq!(r[key], c[key], "the valid readings scored alike: {key}");
    }
    let text = run(&mixed, false);
    assert!(
        text.contains("invalid readings (the first 5 of 9;"),
        "{text}"
    );
    assert!(
        text.contains("reading 22: reading should be a JSON object"),
        "{text}"
    );
}

/// A file whose readings have no label (the texts alone, or a target field
/// named otherwise) scores nothing: `eval` fails saying why, rather than
/// print a report of n/a with success.
#[test]
fn a_file_without_labels_is_refused_saying_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let texts = dir.path().join("texts.jsonl");
    std::fs::write(
        &texts,
        "{\"text\": \"great crew\", \"airline\": \"United\"}\n{\"text\": \"lost my bag\", \"airline\": \"Delta\"}\nnot json\n",
    )
    .expect("written");
    let out = eval_shipped("sentiment", &texts, &["--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it failed: {err}");
    assert!(
        err.contains("none of the 3 readings could be scored: 2 without a label in `sentiment`")
            && err.contains("1 invalid (reading 3: "),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no report");
}

/// A `format = "text"` model's messages are bare texts, but the file it is
/// evaluated on holds records: `eval` reads their fields, so it scores the
/// same as the model reading JSON messages (it used to read each line as a
/// text without a label and score nothing).
#[test]
fn a_plain_text_model_is_evaluated_on_the_records_of_a_file() {
    let root = workspace();
    let data = root.join("../shared/data/airline-tweets/tweets.jsonl");
    let data = data.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("texts.toml");
    let model = |name: &str, format: &str| {
        format!(
            r#"[[model]]
name = "{name}"
task = "multiclass"
format = "{format}"
input_topic = "{name}.in"
target = {{ field = "sentiment", classes = ["negative", "neutral", "positive"] }}
features = [ {{ kind = "text", field = "text", bits = 18, ngrams = 1, sublinear = true }} ]
"#
        )
    };
    std::fs::write(
        &config,
        format!(
            "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9092\"\n{}{}",
            model("texts", "text"),
            model("records", "json")
        ),
    )
    .expect("config written");
    let config = config.to_str().expect("utf-8 path");
    let run = |model: &str| {
        let out = streamfit_ok(&[
            "eval", "--model", model, "--data", data, "--config", config, "--passes", "1", "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")
    };
    let (text, json) = (run("texts"), run("records"));
    assert_eq!(text["scored"], 14_640, "{text}");
    for key in ["log_loss", "accuracy", "macro_f1"] {
        assert_eq!(text[key], json[key], "{key}");
    }
}

/// `--horizon`: the shipped waits a day ahead rest on the rides' usual
/// waits at that hour (the profile), and beat persistence a day ahead by
/// far; an hour ahead they still beat it. A stream without event times
/// and a horizon in readings are refused.
#[test]
fn waits_answer_for_a_time_ahead_better_than_persistence() {
    let root = workspace();
    let config = root.join("deploy/streamfit.toml");
    let config = config.to_str().expect("utf-8 path");
    let waits = root.join("../shared/data/wdw-waits-2018");
    let heart = root.join("../shared/data/heart-failure/heart.csv");
    let eval = |model: &str, data: &std::path::Path, horizon: &str| {
        let data = data.to_str().expect("utf-8 path");
        streamfit(&[
            "eval",
            "--model",
            model,
            "--data",
            data,
            "--config",
            config,
            "--horizon",
            horizon,
            "--json",
        ])
    };
    let run = |h: &str| -> serde_json::Value {
        let out = eval("waits", &waits, h);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    };
    let day = run("1d");
    assert_eq!(day["horizon"], "1d");
    assert_eq!(day["scored"], 559_629);
    let on_profile = day["basis"]["profile"].as_u64().unwrap_or(0);
    assert!(on_profile > 550_000, "{}", day["basis"]);
    let basis = &day["basis"];
    assert!(basis.get("lag1").is_none(), "no lag is a day old: {basis}");
    let (m, p) = (&day["all"]["model"], &day["all"]["persistence"]);
    assert!(
        num(m, "mae") < 0.9 * num(p, "mae"),
        "a day ahead: {m} vs {p}"
    );
    assert!(
        num(m, "rmse") < 0.9 * num(p, "rmse"),
        "a day ahead: {m} vs {p}"
    );
    let hour = run("60m");
    let (m, p) = (&hour["all"]["model"], &hour["all"]["persistence"]);
    assert!(
        num(m, "mae") < num(p, "mae") && num(m, "rmse") < num(p, "rmse"),
        "{m} vs {p}"
    );
    // with no horizon waits' MAE is 4.1: an hour ahead is far worse, so
    // the hour between the state and the reading was really kept out
    assert!(num(m, "mae") > 2.0 * 4.2, "{m}");

    for (model, data, horizon, says) in [
        ("heart", &heart, "1d", "needs event times"),
        ("waits", &waits, "100", "not a number of readings"),
    ] {
        let out = eval(model, data, horizon);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
