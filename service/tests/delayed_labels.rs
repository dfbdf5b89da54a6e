//! Labels that arrive later, on the real broker. Real airline tweets go to
//! the shipped `sentiment` model without their sentiment; each tweet's
//! label goes to a labels topic up to 1,000 tweets later, out of order,
//! keyed like the tweet (so in the partition of the same number). The
//! service is SIGKILLed mid-stream (asserted) and restarted. Every tweet
//! is predicted exactly once (one output per input offset), every label is
//! joined and learned exactly once (the join's counts in each partition's
//! checkpoint), and each partition's checkpointed model equals its tweets
//! learned in one pass in stream order with their labels in them (1e-9).
//! A label that is not JSON is dead-lettered with the reason. Labels read
//! before any tweet of their partition are committed on their own, and
//! joined when the tweets come.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use streamfit::config::Config;
use streamfit::pipeline::{Input, Pipeline};

/// A message and its key.
type Keyed = (String, Vec<u8>);

/// How late a tweet's label goes out, in tweets: up to 1,000, scattered.
fn delay(i: usize) -> usize {
    (i * 7919) % 1_000
}

/// The tweets with unique ids (some of the data's ids repeat), without
/// their label, and their labels; both keyed by the id.
fn tweets_and_labels(n: usize) -> (Vec<Keyed>, Vec<Keyed>) {
    let mut readings = Vec::new();
    let mut labels = Vec::new();
    for (i, (_, bytes)) in tweets(n).into_iter().enumerate() {
        let mut v: Value = serde_json::from_slice(&bytes).expect("a JSON tweet");
        let id = format!("t{i}");
        let label = serde_json::json!({ "id": id, "sentiment": v["sentiment"].clone() });
        if let Some(o) = v.as_object_mut() {
            o.remove("sentiment");
            o.insert("id".into(), Value::String(id.clone()));
        }
        readings.push((id.clone(), serde_json::to_vec(&v).expect("encodes")));
        labels.push((id, serde_json::to_vec(&label).expect("encodes")));
    }
    (readings, labels)
}

/// Sends the tweets and, up to 1,000 tweets after each, its label, at
/// `per_second` tweets a second, on a thread of its own; then a label of
/// no tweet and one that is not JSON.
fn publish(
    bootstrap: &str,
    input: &str,
    labels_topic: &str,
    readings: Vec<Keyed>,
    labels: Vec<Keyed>,
    per_second: usize,
) -> std::thread::JoinHandle<()> {
    let (bootstrap, input, labels_topic) = (
        bootstrap.to_owned(),
        input.to_owned(),
        labels_topic.to_owned(),
    );
    std::thread::spawn(move || {
        let p: BaseProducer = client(&bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let n = readings.len();
        let mut due: Vec<Vec<usize>> = vec![Vec::new(); n + 1_000];
        for i in 0..n {
            due[i + delay(i)].push(i);
        }
        let started = Instant::now();
        let send = |topic: &str, key: &str, value: &[u8]| {
            p.send(BaseRecord::to(topic).key(key).payload(value))
                .map_err(|(e, _)| e)
                .expect("queued");
            p.poll(Duration::ZERO);
        };
        for (step, labelled) in due.iter().enumerate() {
            let at = Duration::from_secs_f64(step as f64 / per_second as f64);
            if let Some(wait) = at.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            if let Some((key, value)) = readings.get(step) {
                send(&input, key, value);
            }
            for &i in labelled {
                send(&labels_topic, &labels[i].0, &labels[i].1);
            }
        }
        send(
            &labels_topic,
            "t0",
            br#"{"id":"nobody","sentiment":"positive"}"#,
        );
        // after it in the same partition: its dead letter committed, the
        // label of no tweet is in the checkpoint
        send(&labels_topic, "t0", b"not json");
        p.flush(Duration::from_secs(30)).expect("flushed");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_out_of_order_labels_are_learned_exactly_once_across_a_sigkill() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let labels_topic = unique("sentiment.labels");
    let run = setup_table(dir.path(), &bootstrap, "sentiment", 3, "", |i, o, d| {
        format!(
            "{}labels_topic = \"{labels_topic}\"\nlabel_id = \"id\"\nlabel_window = 5000\n",
            model_table("sentiment", i, o, d, 500)
        )
    });
    let n = 6_000;
    let (readings, labels) = tweets_and_labels(n);

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    let publisher = publish(
        &bootstrap,
        &run.input,
        &labels_topic,
        readings.clone(),
        labels.clone(),
        1_500,
    );
    kill_mid_stream(svc, &run, n as u64 / 3, n).await;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join().expect("publisher");

    // every tweet predicted once; the label that is not JSON dead-lettered
    // (the one that names no tweet waits for one, as a label that came
    // before its tweet would)
    let counts = outputs_per_offset(
        &bootstrap,
        &run.output,
        &run.dead,
        3,
        n + 1,
        Duration::from_secs(120),
    );
    let input = read_input(&bootstrap, &run.input, 3);
    assert_eq!(input.len(), n);
    let twice: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "offsets with more than one output: {twice:?}"
    );
    let missing = input
        .iter()
        .filter(|m| !counts.contains_key(&(i64::from(m.partition), m.offset)))
        .count();
    assert_eq!(missing, 0, "every tweet predicted");
    let dead = read_topic(&bootstrap, &run.dead, 3, 1, Duration::from_secs(30));
    let reasons: Vec<&str> = dead
        .iter()
        .filter_map(|(_, _, h)| h.get("streamfit.error").map(String::as_str))
        .collect();
    assert_eq!(dead.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("JSON object"), "{reasons:?}");
    assert!(
        dead.iter()
            .all(|(_, _, h)| h.get("streamfit.source.topic") == Some(&labels_topic)),
        "dead letters name the labels topic"
    );

    // every label joined and learned once: the checkpoints say so, once
    // the service has committed the last of them
    let config = Config::load(&run.config).expect("config");
    let m = config.model("sentiment").expect("model");
    let mut inline = m.clone();
    inline.labels_topic = None;
    inline.label_id = None;
    inline.label_window = None;
    let labels_by_id: std::collections::HashMap<String, Vec<u8>> = readings
        .iter()
        .zip(tweets(n))
        .map(|((id, _), (_, full))| (id.clone(), full))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = loop {
        let cks = checkpoints(&run);
        let joined: u64 = cks
            .values()
            .filter_map(|c| c.pipeline.labels.as_ref().map(|l| l.joined))
            .sum();
        if joined >= n as u64 || Instant::now() > deadline {
            break cks;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut joined_all = 0;
    let mut early = 0;
    for p in 0..3 {
        let mine: Vec<&InputMessage> = input.iter().filter(|x| x.partition == p).collect();
        let ck = &checkpoints[&p];
        let mut got = Pipeline::new(m).expect("pipeline");
        got.restore(ck.pipeline.clone()).expect("restores");
        let (joined, expired, unmatched) = got.label_counts().expect("a join");
        assert_eq!(
            (joined, expired, got.labels_waiting()),
            (mine.len() as u64, 0, Some(0)),
            "partition {p}: every tweet's label joined once, none dropped, none waiting"
        );
        joined_all += joined;
        assert_eq!(unmatched, 0, "partition {p}");
        early += got.labels_early().expect("a join");
        // the same tweets, their labels in them, learned in one pass in stream order
        let full: Vec<Vec<u8>> = mine
            .iter()
            .map(|x| labels_by_id[x.key.as_deref().expect("keyed")].clone())
            .collect();
        let inputs: Vec<Input<'_>> = mine
            .iter()
            .zip(&full)
            .map(|(x, b)| Input {
                key: x.key.as_deref(),
                bytes: b,
            })
            .collect();
        let mut want = Pipeline::new(&inline).expect("pipeline");
        let mut out = Vec::new();
        for chunk in inputs.chunks(997) {
            want.process(chunk, &mut out);
        }
        assert_eq!(
            got.learned(),
            mine.len() as u64,
            "partition {p}: learned once each"
        );
        assert_same_model(got.model(), want.model(), &format!("partition {p}"));
        assert!(
            ck.labels_next_offset.is_some(),
            "partition {p}: the labels' offset is checkpointed"
        );
    }
    assert_eq!(joined_all, n as u64);
    // only the label of no tweet waits: none was read twice across the kill
    assert_eq!(early, 1, "labels waiting for a tweet");
    let detail = model_detail(&run.http, "sentiment").await;
    assert_eq!(detail["labels"]["joined"], n, "{}", detail["labels"]);

    // labels over HTTP: one more tweet waits, its label is posted
    let (_, extra) = &readings[0];
    let mut v: Value = serde_json::from_slice(extra).expect("json");
    v["id"] = Value::String("extra".into());
    produce(
        &bootstrap,
        &run.input,
        &[(
            Some("extra".into()),
            serde_json::to_vec(&v).expect("encodes"),
        )],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while readings_seen(&run.http, "sentiment").await < n as u64 + 1 {
        assert!(
            Instant::now() < deadline,
            "the extra tweet is not read within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |body: &'static str| {
        let url = format!("http://{}/v1/models/sentiment/labels", run.http);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("answers");
            (r.status().as_u16(), r.json::<Value>().await.expect("JSON"))
        }
    };
    // the batch that read it learned nothing, and still the API counts it
    let labels = model_detail(&run.http, "sentiment").await["labels"].clone();
    assert_eq!(
        (&labels["waiting"], &labels["window"]),
        (&Value::from(1), &Value::from("5000")),
        "the extra tweet waits for its label: {labels}"
    );
    let (status, body) = post(r#"{"id":"nobody-at-all","sentiment":"neutral"}"#).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post(r#"{"id":"extra","sentiment":"glad"}"#).await;
    assert!(
        status == 400 && body["error"].as_str().is_some_and(|e| e.contains("glad")),
        "{body}"
    );
    let (status, body) = post(r#"[{"id":"extra","sentiment":"positive"}]"#).await;
    assert_eq!((status, &body["joined"]), (200, &Value::from(1)), "{body}");
    let learned = model_detail(&run.http, "sentiment").await["model"]["readings_learned"].clone();
    assert_eq!(learned, n + 1, "the posted label is learned");
    let waiting = model_detail(&run.http, "sentiment").await["labels"]["waiting"].clone();
    assert_eq!(waiting, 0, "nothing waits once its label is learned");
    svc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labels_topic_not_partitioned_like_the_input_stops_start_up_naming_both() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let labels_topic = unique("sentiment.labels");
    // the labels topic exists with one partition; the input gets three
    create_topic(&bootstrap, &labels_topic, 1).await;
    let run = setup_table(dir.path(), &bootstrap, "sentiment", 3, "", |i, o, d| {
        format!(
            "{}labels_topic = \"{labels_topic}\"\n",
            model_table("sentiment", i, o, d, 500)
        )
    });
    let log = dir.path().join("refused.log");
    let mut svc = Service::start_logged(&run.config, &[], &log);
    let status = svc.exited(Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "start-up is refused");
    assert!(
        text.contains(&labels_topic)
            && text.contains(&run.input)
            && text.contains("as many partitions")
            && text.contains("it has 1 and the input 3"),
        "the error names both topics and their partitions:\n{text}"
    );
}

/// Labels that come before any tweet of their partition: the partition's
/// first commits carry the labels' offset and no input offset yet. Such a
/// commit once asked Kafka for input offset -1 and the service stopped
/// ("cannot build the offsets of the transaction"), as it did in the SIGKILL
/// test above when a restarted instance read a partition's labels before
/// its tweets. Here it commits them, and the tweets that follow are
/// predicted once each and joined with their labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_before_any_tweet_of_their_partition_are_committed_then_joined() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let labels_topic = unique("sentiment.labels");
    let run = setup_table(dir.path(), &bootstrap, "sentiment", 3, "", |i, o, d| {
        format!(
            "{}labels_topic = \"{labels_topic}\"\nlabel_id = \"id\"\nlabel_window = 5000\n",
            model_table("sentiment", i, o, d, 500)
        )
    });
    let n = 300;
    let (readings, labels) = tweets_and_labels(n);
    let keyed = |v: &[Keyed]| -> Vec<(Option<String>, Vec<u8>)> {
        v.iter()
            .map(|(k, b)| (Some(k.clone()), b.clone()))
            .collect()
    };
    let mut svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    produce(&bootstrap, &labels_topic, &keyed(&labels));
    // the labels alone committed in every partition, no input offset yet
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            svc.child.try_wait().expect("wait").is_none(),
            "the service stopped on a commit of labels alone"
        );
        let cks = checkpoints(&run);
        let labelled = cks
            .values()
            .filter(|c| c.labels_next_offset.is_some() && c.next_offset < 0)
            .count();
        if labelled == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "labels alone not checkpointed in 60 s: {:?}",
            cks.iter()
                .map(|(p, c)| (p, c.next_offset, c.labels_next_offset))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    produce(&bootstrap, &run.input, &keyed(&readings));
    let counts = outputs_per_offset(
        &bootstrap,
        &run.output,
        &run.dead,
        3,
        n,
        Duration::from_secs(60),
    );
    let input = read_input(&bootstrap, &run.input, 3);
    assert_eq!(input.len(), n);
    for m in &input {
        assert_eq!(
            counts.get(&(i64::from(m.partition), m.offset)),
            Some(&1),
            "partition {} offset {}: one output",
            m.partition,
            m.offset
        );
    }
    // every label, read before its tweet, joined once
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let joined: u64 = checkpoints(&run)
            .values()
            .filter_map(|c| c.pipeline.labels.as_ref().map(|l| l.joined))
            .sum();
        if joined == n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{joined} of {n} labels joined");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    svc.stop();
}
