//! Text streams on the real broker: the shipped `sentiment` model (hashed
//! text, three classes) learns real airline tweets through a SIGKILL
//! exactly once; and a `format = "text"` model reads plain-text messages,
//! as `kafka-console-producer` sends them, dead-letters one that is not
//! UTF-8, and predicts every other one exactly once across a SIGKILL.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentiment_learns_tweets_exactly_once_across_a_sigkill() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "sentiment");
    let n = 6_000;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // 1,000 tweets a second: six seconds of stream to kill into
    let publisher = publish_steadily(&bootstrap, &run.input, tweets(n), 1_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    kill_mid_stream(svc, &run, 1, n).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));

    // the live model reports the multiclass metrics, and its classes
    let detail = model_detail(&run.http, "sentiment").await;
    let cumulative = &detail["metrics"]["cumulative"];
    for k in ["accuracy", "macro_f1", "log_loss"] {
        assert!(cumulative[k].as_f64().is_some(), "{k} in {cumulative}");
    }
    assert_eq!(
        detail["classes"],
        serde_json::json!(["negative", "neutral", "positive"])
    );
    svc.stop();

    // every prediction names its class and gives the three probabilities
    let outputs = read_topic(&bootstrap, &run.output, 3, n, Duration::from_secs(30));
    assert_eq!(outputs.len(), n);
    for (_, payload, _) in &outputs {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
        let p = v["probabilities"].as_object().expect("probabilities");
        assert_eq!(p.len(), 3, "{v}");
        let sum: f64 = p.values().filter_map(serde_json::Value::as_f64).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{v}");
        let class = v["prediction"].as_str().expect("a class name");
        let top = p
            .values()
            .filter_map(serde_json::Value::as_f64)
            .fold(0.0, f64::max);
        assert_eq!(p[class].as_f64(), Some(top), "the most probable class: {v}");
        assert!(v["label"].is_string(), "the tweet's own label: {v}");
    }
    // nothing lost, nothing twice, and each partition's model is the model
    // of one uninterrupted pass over its tweets
    verify(&bootstrap, &run, "sentiment", n);

    // `predictions export` writes every one with its class, its label's
    // and a probability per class (it wrote none of a multiclass model's)
    let file = dir.path().join("sentiment.arrow");
    let config = run.config.to_str().expect("utf-8 path");
    let file_arg = file.to_str().expect("utf-8 path");
    let said = streamfit_ok(&[
        "predictions",
        "export",
        "--model",
        "sentiment",
        "--config",
        config,
        "--out",
        file_arg,
    ]);
    assert!(said.contains(&format!("wrote {n} predictions")), "{said}");
    let reader =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(&file).expect("written"), None)
            .expect("an Arrow IPC file");
    let mut rows = 0;
    for batch in reader {
        let batch = batch.expect("a batch");
        let text = |name: &str| column::<arrow::array::StringArray>(&batch, name);
        let number = |name: &str| column::<arrow::array::Float64Array>(&batch, name);
        let (class, label) = (text("predicted_class"), text("label_class"));
        let index = number("prediction");
        let classes = ["negative", "neutral", "positive"];
        let probs = classes.map(|c| number(&format!("probability_{c}")));
        for i in 0..batch.num_rows() {
            let k = index.value(i) as usize;
            assert_eq!(
                class.value(i),
                classes[k],
                "prediction is the class's index"
            );
            assert!(classes.contains(&label.value(i)), "the tweet's own label");
            let top = probs.iter().map(|p| p.value(i)).fold(0.0, f64::max);
            assert_eq!(probs[k].value(i), top, "the most probable class");
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_messages_are_predicted_exactly_once_and_non_utf8_is_dead_lettered() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup_table(dir.path(), &bootstrap, "texts", 3, "", plain_text_model);
    // the tweets' texts as plain messages keyed by the tweet's id; one in
    // the middle is Latin-1, not UTF-8
    let n = 4_000;
    let bad_at = 1_234;
    let messages: Vec<(Option<String>, Vec<u8>)> = tweets(n)
        .into_iter()
        .enumerate()
        .map(|(i, (_, json))| {
            let v: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
            let id = v["id"].as_str().expect("id").to_owned();
            let text = if i == bad_at {
                b"caf\xe9 au lait on board \xa1delicious!".to_vec()
            } else {
                v["text"].as_str().expect("text").as_bytes().to_vec()
            };
            (Some(id), text)
        })
        .collect();
    let bad_key = messages[bad_at].0.clone().expect("key");
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish_steadily(&bootstrap, &run.input, messages, 800);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    kill_mid_stream(svc, &run, 1, n).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));
    svc.stop();

    let deads = read_topic(&bootstrap, &run.dead, 3, 1, Duration::from_secs(30));
    assert_eq!(deads.len(), 1, "exactly the one non-UTF-8 message");
    let (key, payload, headers) = &deads[0];
    assert_eq!(key.as_deref(), Some(bad_key.as_bytes()));
    assert!(
        payload.starts_with(b"caf\xe9"),
        "the message as it was sent"
    );
    let why = headers.get("streamfit.error").expect("a reason");
    assert!(
        why.contains("UTF-8"),
        "the reason says what is wrong: {why}"
    );

    let outputs = read_topic(&bootstrap, &run.output, 3, n - 1, Duration::from_secs(30));
    assert_eq!(outputs.len(), n - 1);
    for (key, payload, _) in &outputs {
        let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
        assert_eq!(
            v["key"].as_str().map(str::as_bytes),
            key.as_deref(),
            "the message key is the reading's key"
        );
        assert_eq!(v["probabilities"].as_object().map(|p| p.len()), Some(3));
        assert!(v.get("label").is_none(), "a plain text has no label: {v}");
    }
    verify(&bootstrap, &run, "texts", n);
}

/// A `format = "text"` model named `texts`: the message is the text.
fn plain_text_model(input: &str, output: &str, dead: &str) -> String {
    format!(
        r#"[[model]]
name = "texts"
task = "multiclass"
format = "text"
input_topic = "{input}"
output_topic = "{output}"
dead_letter_topic = "{dead}"
batch = {{ max_readings = 200, max_linger_ms = 20 }}
target = {{ field = "sentiment", classes = ["negative", "neutral", "positive"] }}
features = [ {{ kind = "text", field = "text", bits = 18, ngrams = 1, sublinear = true }} ]
"#
    )
}

/// A plain-text model's messages carry no label, so its labelled history
/// comes from a file (`replay --file`, JSON lines with the text and the
/// label as fields; it used to read each line as a bare text and learn
/// nothing): the service then starts from that model and answers plain
/// texts with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_model_learns_its_labelled_history_from_a_file() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup_table(dir.path(), &bootstrap, "texts", 1, "", plain_text_model);
    let history = tweets(3_000);
    let file = dir.path().join("labelled.jsonl");
    let lines: Vec<&str> = history
        .iter()
        .map(|(_, b)| std::str::from_utf8(b).expect("utf-8"))
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("written");
    create_topic(&bootstrap, &run.input, 1).await;
    let config = run.config.to_str().expect("utf-8 path");
    let said = streamfit_ok(&[
        "replay",
        "--json",
        "--config",
        config,
        "--model",
        "texts",
        "--from",
        "latest",
        "--file",
        file.to_str().expect("utf-8 path"),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    assert_eq!(summary["file_readings"], 3_000, "{summary}");

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let detail = model_detail(&run.http, "texts").await;
    assert_eq!(detail["model"]["readings_learned"], 3_000, "{detail}");
    let texts = [
        "thank you so much, the crew was wonderful",
        "cancelled again, worst airline ever, still waiting on hold",
    ];
    let messages: Vec<(Option<String>, Vec<u8>)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (Some(format!("m{i}")), t.as_bytes().to_vec()))
        .collect();
    produce(&bootstrap, &run.input, &messages);
    wait_for_outputs(&bootstrap, &run, texts.len(), Duration::from_secs(60));
    let outputs: Vec<serde_json::Value> = read_topic(
        &bootstrap,
        &run.output,
        1,
        texts.len(),
        Duration::from_secs(30),
    )
    .iter()
    .map(|(_, payload, _)| serde_json::from_slice(payload).expect("JSON"))
    .collect();
    let classes: Vec<&str> = outputs
        .iter()
        .map(|v| v["prediction"].as_str().expect("a class"))
        .collect();
    // an untrained model says "negative" (the first class) to both
    assert_eq!(
        classes,
        ["positive", "negative"],
        "the file's model answers"
    );

    // over HTTP a reading is the text (a JSON string, or the text field of
    // an object), scored as the same text sent as a message (the model has
    // learned nothing since); the whole body used to be read as the text,
    // braces and field name too
    let url = format!("http://{}/v1/models/texts/predict", run.http);
    let post = |body: serde_json::Value| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("answers");
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    for body in [
        serde_json::json!({ "text": texts[1] }),
        serde_json::json!(texts[1]),
    ] {
        let (status, got) = post(body.clone()).await;
        assert_eq!(status, 200, "{body}: {got}");
        assert_eq!(
            (&got["prediction"], &got["probabilities"]),
            (&outputs[1]["prediction"], &outputs[1]["probabilities"]),
            "{body} is scored as the message of the same text"
        );
    }
    let (status, got) = post(serde_json::json!([texts[0], { "text": texts[1] }])).await;
    assert_eq!(status, 200, "{got}");
    for (i, answer) in got["predictions"]
        .as_array()
        .expect("answers")
        .iter()
        .enumerate()
    {
        assert_eq!(
            answer["probabilities"], outputs[i]["probabilities"],
            "{got}"
        );
    }
    for (body, field) in [
        (serde_json::json!({ "txt": "a typo" }), "text"),
        (serde_json::json!({ "text": 5 }), "text"),
        (serde_json::json!([texts[0], 7]), "text"),
    ] {
        let (status, got) = post(body.clone()).await;
        assert_eq!(
            (status, &got["field"]),
            (400, &serde_json::json!(field)),
            "{body}: {got}"
        );
    }
    svc.stop();
}

/// Publishes each (partition, value) to that partition of `topic`, in order.
fn produce_to(bootstrap: &str, topic: &str, readings: &[(i32, Vec<u8>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = client(bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (partition, value) in readings {
        let rec = BaseRecord::<(), _>::to(topic)
            .partition(*partition)
            .payload(value.as_slice());
        p.send(rec).map_err(|(e, _)| e).expect("queued");
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flushed");
}

/// Per class of `classes`, in order: true positives, false positives and
/// false negatives of (predicted, label) class names (`None`: no class
/// predicted).
fn confusion(classes: &[&str], scored: &[(Option<String>, String)]) -> Vec<[u64; 3]> {
    let mut counts = vec![[0u64; 3]; classes.len()];
    let at = |c: &str| classes.iter().position(|x| *x == c).expect("a known class");
    for (predicted, label) in scored {
        match predicted.as_deref() {
            Some(p) if p == label => counts[at(label)][0] += 1,
            Some(p) => {
                counts[at(p)][1] += 1;
                counts[at(label)][2] += 1;
            }
            None => counts[at(label)][2] += 1,
        }
    }
    counts
}

/// Per-class F1 of confusion counts, and their mean over the classes with
/// any count.
fn f1s(counts: &[[u64; 3]]) -> (Vec<f64>, f64) {
    let f1: Vec<f64> = counts
        .iter()
        .map(|&[tp, fp, fn_]| match 2 * tp + fp + fn_ {
            0 => 0.0,
            d => 2.0 * tp as f64 / d as f64,
        })
        .collect();
    let live: Vec<f64> = counts
        .iter()
        .zip(&f1)
        .filter(|(c, _)| c.iter().any(|&n| n > 0))
        .map(|(_, &f)| f)
        .collect();
    let mean = live.iter().sum::<f64>() / live.len() as f64;
    (f1, mean)
}

/// The shipped `sentiment` model with its classes learned, not declared,
/// on three partitions that each meet the classes in another order: every
/// tweet is predicted (the first of each partition knowing no class, which
/// aborted the service), and `GET /v1/models/sentiment` merges the
/// partitions' metrics by class name (they were merged by class number, so
/// one partition's `positive` counted as another's `negative`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_classes_are_merged_by_name_over_partitions() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup_table(dir.path(), &bootstrap, "sentiment", 3, "", |i, o, d| {
        let table = model_table("sentiment", i, o, d, 50);
        let learned = table.replace(
            r#"target = { field = "sentiment", classes = ["negative", "neutral", "positive"] }"#,
            r#"target = { field = "sentiment" }"#,
        );
        assert_ne!(learned, table, "the classes left out");
        learned
    });
    let class_of = |t: &[u8]| -> String {
        let v: serde_json::Value = serde_json::from_slice(t).expect("a tweet");
        v["sentiment"].as_str().expect("a sentiment").to_owned()
    };
    let all = tweets(1_200);
    let first_of = |class: &str, skip: usize| -> Vec<u8> {
        all.iter()
            .map(|(_, t)| t)
            .filter(|t| class_of(t) == class)
            .nth(skip)
            .expect("a tweet of the class")
            .clone()
    };
    // each partition: one tweet of each class in its own order, then 150
    // tweets of the stream
    let orders = [
        ["negative", "neutral", "positive"],
        ["positive", "negative", "neutral"],
        ["neutral", "positive", "negative"],
    ];
    let mut readings = Vec::new();
    for (p, order) in orders.iter().enumerate() {
        for class in order {
            readings.push((p as i32, first_of(class, p)));
        }
        for (_, t) in &all[p * 150..(p + 1) * 150] {
            readings.push((p as i32, t.clone()));
        }
    }
    let n = readings.len();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    produce_to(&bootstrap, &run.input, &readings);
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));

    // (partition, predicted, label) of every output
    let outputs: Vec<(i64, Option<String>, String)> =
        read_topic(&bootstrap, &run.output, 3, n, Duration::from_secs(30))
            .iter()
            .map(|(_, payload, _)| {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
                (
                    v["source"]["partition"].as_i64().expect("a partition"),
                    v["prediction"].as_str().map(str::to_owned),
                    v["label"].as_str().expect("a label").to_owned(),
                )
            })
            .collect();
    assert_eq!(outputs.len(), n, "every tweet predicted");
    let detail = model_detail(&run.http, "sentiment").await;
    let classes: Vec<String> = serde_json::from_value(detail["classes"].clone()).expect("classes");
    // the busiest partition's order (all as busy: partition 0)
    assert_eq!(classes, orders[0], "{}", detail["classes"]);
    let scored = |only: Option<i64>| -> Vec<(Option<String>, String)> {
        outputs
            .iter()
            .filter(|(p, _, _)| only.is_none_or(|o| o == *p))
            .map(|(_, predicted, label)| (predicted.clone(), label.clone()))
            .collect()
    };
    let close = |got: &serde_json::Value, want: &[f64], what: &str| {
        let got: Vec<f64> = serde_json::from_value(got.clone()).expect("numbers");
        assert_eq!(got.len(), want.len(), "{what}: {got:?} against {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{what}: {got:?} against {want:?}");
        }
    };
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let (f1, macro_f1) = f1s(&confusion(&names, &scored(None)));
    let cumulative = &detail["metrics"]["cumulative"];
    close(&cumulative["class_f1"], &f1, "merged class_f1");
    close(
        &serde_json::json!([cumulative["macro_f1"]]),
        &[macro_f1],
        "merged macro_f1",
    );
    for part in detail["partitions"].as_array().expect("partitions") {
        let p = part["partition"].as_i64().expect("a partition");
        let (f1, _) = f1s(&confusion(&names, &scored(Some(p))));
        close(
            &part["metrics"]["cumulative"]["class_f1"],
            &f1,
            &format!("partition {p}'s class_f1"),
        );
    }
    // merged by each partition's own class numbers, the figures differ:
    // the test tells the two apart
    let mut by_number = [[0u64; 3]; 3];
    for (p, order) in orders.iter().enumerate() {
        for (sum, c) in by_number
            .iter_mut()
            .zip(confusion(order, &scored(Some(p as i64))))
        {
            for (x, y) in sum.iter_mut().zip(c) {
                *x += y;
            }
        }
    }
    let (wrong, _) = f1s(&by_number);
    assert!(
        wrong.iter().zip(&f1).any(|(w, r)| (w - r).abs() > 1e-3),
        "merging by number would give the same figures: {wrong:?} {f1:?}"
    );
    // the dashboard's recent predictions name their classes
    let history = get_json(&run.http, "/v1/models/sentiment/history").await;
    let recent = history["recent"].as_array().expect("recent");
    assert!(!recent.is_empty(), "{history}");
    for r in recent {
        assert!(r["label_class"].is_string(), "{r}");
        assert!(classes.iter().any(|c| r["label_class"] == **c), "{r}");
    }
    svc.stop();
}

/// The checkpoint counters of `model`: (commits, bytes, page records).
async fn checkpoint_counters(http: &str, model: &str) -> (f64, f64, f64) {
    let page = metrics_page(http).await;
    let get = |name: &str| metric_in(&page, name, model).unwrap_or(0.0);
    (
        get("streamfit_commits_total"),
        get("streamfit_checkpoint_bytes_total"),
        get("streamfit_checkpoint_page_records_total"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_text_stream_checkpoints_only_the_pages_it_changed_and_restores_them() {
    slow_text_stream("").await;
}

/// With `idf`, the document frequencies (a count per column ever seen)
/// are written in the pages of their columns too: they used to be in the
/// base record, written whole at every commit (896 KB a commit at 5 tweets
/// a second after the whole stream, against 127 KB now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_text_stream_with_idf_checkpoints_its_document_frequencies_in_pages_too() {
    slow_text_stream(", idf = true").await;
}

/// The shipped `tweets` model, with `text_options` added to its text
/// feature, learns 2,000 tweets, then 60 at 5 a second; a commit writes a
/// small part of the model, and a SIGKILL's restore is exact.
async fn slow_text_stream(text_options: &str) {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    // one partition: one model of the whole stream
    let run = setup_table(dir.path(), &bootstrap, "tweets", 1, "", |i, o, d| {
        let table = model_table("tweets", i, o, d, 500);
        let with = table.replace(
            "char_weight = 0.3 }",
            &format!("char_weight = 0.3{text_options} }}"),
        );
        assert!(text_options.is_empty() || with != table, "options added");
        with
    });
    let (fast, slow) = (2_000, 60);
    let n = fast + slow;
    let all = tweets(n);
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    produce(&bootstrap, &run.input, &all[..fast]);
    wait_for_outputs(&bootstrap, &run, fast, Duration::from_secs(120));
    // what a whole checkpoint of this model is: its pages and its bytes
    let ck = checkpoints(&run).remove(&0).expect("a checkpoint");
    let whole = serde_json::to_vec(&ck.pipeline).expect("encodes").len() as f64;
    assert!(ck.pages > 1_000, "{} of 4096 pages hold a column", ck.pages);
    let before = checkpoint_counters(&run.http, "tweets").await;

    // five tweets a second: about one tweet a commit
    let publisher = publish_steadily(&bootstrap, &run.input, all[fast..].to_vec(), 5);
    let seen = wait_seen(
        &run.http,
        "tweets",
        (fast + slow / 2) as u64,
        Duration::from_secs(60),
        "the slow tweets",
    )
    .await;
    let after = checkpoint_counters(&run.http, "tweets").await;
    let tweets_learned = (seen - fast as u64) as f64;
    let (commits, bytes, pages) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);
    eprintln!(
        "slow phase: {tweets_learned} tweets, {commits} commits, {bytes} bytes, {pages} page records; a whole checkpoint {whole} bytes, {} pages",
        ck.pages
    );
    // a commit a tweet or so: rewriting the model whole would write about
    // `whole` bytes a tweet
    assert!(commits >= tweets_learned / 3.0, "{commits} commits");
    assert!(
        bytes < tweets_learned * whole / 5.0,
        "{bytes} bytes for {tweets_learned} tweets: not a fifth of a whole checkpoint ({whole}) a tweet"
    );
    // at most three tweets a commit (above): some 300 of 4,096 pages;
    // writing the document frequencies whole every commit (before `idf`'s
    // were paged) was a fifth of the whole checkpoint
    assert!(
        bytes / commits < whole / 6.0,
        "{bytes} bytes in {commits} commits: not a sixth of a whole checkpoint ({whole}) a commit"
    );
    assert!(
        pages > 0.0 && pages / commits < ck.pages as f64 / 4.0,
        "{pages} page records in {commits} commits"
    );
    // a kill mid-stream: the restore puts the pages written since the
    // model's first checkpoint back
    kill_mid_stream(svc, &run, seen, n).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));
    svc.stop();
    verify(&bootstrap, &run, "tweets", n);
}

/// The column `name` of an exported batch, as the array type it should be.
fn column<T: Clone + 'static>(batch: &arrow::record_batch::RecordBatch, name: &str) -> T {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>().cloned())
        .unwrap_or_else(|| panic!("a column {name} of {}", std::any::type_name::<T>()))
}
