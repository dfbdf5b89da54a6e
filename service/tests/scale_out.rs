//! Several instances in one consumer group, on the real broker with the
//! real binary: partitions move between instances with their checkpoints,
//! a SIGKILLed instance is replaced, every instance is restarted one at a
//! time, and afterwards every input offset has exactly one output and every
//! partition's model equals one uninterrupted pass over that partition.
//! Meanwhile `/predict` on every live instance answers every ride, with the
//! model of the partition that holds the ride (forwarded to its owner).
//! Also: two instances from one config (only `http_addr` differs) and two
//! deployments (different groups) on one cluster never fence each other.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use streamfit::routing::KeyPartitioner;

/// The tests of this file start several services each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RIDES: [&str; 14] = [
    "7_dwarfs_train",
    "alien_saucers",
    "dinosaur",
    "expedition_everest",
    "flight_of_passage",
    "kilimanjaro_safaris",
    "navi_river",
    "pirates_of_caribbean",
    "rock_n_rollercoaster",
    "slinky_dog",
    "soarin",
    "spaceship_earth",
    "splash_mountain",
    "toy_story_mania",
];

fn start(config: &Path, http: &str) -> Service {
    Service::start_with(config, &[("STREAMFIT_SERVICE_HTTP_ADDR", http)])
}

/// The input partitions an instance owns for `model`.
async fn owned(http: &str, model: &str) -> BTreeSet<i64> {
    model_detail(http, model).await["partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["partition"].as_i64()).collect())
        .unwrap_or_default()
}

/// What the `/predict` prober saw.
#[derive(Default)]
struct Probes {
    answers: usize,
    by_routing: BTreeMap<String, usize>,
    failures: Vec<String>,
}

/// Asks every live instance for every ride until `stop`: each answer must
/// be 200, and an answer from a partition's owner must come from the
/// ride's partition.
fn probe(
    live: Arc<Mutex<BTreeSet<String>>>,
    partitions: i32,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Probes>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while !stop.load(Ordering::Relaxed) {
            let targets: Vec<String> = live.lock().expect("lock").iter().cloned().collect();
            for http in targets {
                for ride in RIDES {
                    let body = format!(r#"{{"ride":"{ride}","ts":"2018-07-01T14:00:00"}}"#);
                    let r = client
                        .post(format!("http://{http}/v1/models/waits/predict"))
                        .header("content-type", "application/json")
                        .body(body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let outcome = match r {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            let routing = v["routing"].as_str().unwrap_or("?").to_owned();
                            let want = KeyPartitioner::ConsistentRandom
                                .partition(ride.as_bytes(), partitions);
                            if matches!(routing.as_str(), "owner" | "forwarded")
                                && v["partition"].as_i64() != Some(i64::from(want))
                            {
                                Err(format!("{http} {ride}: answered by partition {} ({routing}), the ride lives on {want}", v["partition"]))
                            } else {
                                Ok(routing)
                            }
                        }
                        Ok(r) => Err(format!("{http} {ride}: {}", r.status())),
                        Err(e) => Err(format!("{http} {ride}: {e}")),
                    };
                    // an instance being stopped or started is not expected to answer
                    let still_live = live.lock().expect("lock").contains(&http);
                    let mut p = probes.lock().expect("lock");
                    match outcome {
                        Ok(routing) => {
                            p.answers += 1;
                            *p.by_routing.entry(routing).or_default() += 1;
                        }
                        Err(e) if still_live => p.failures.push(e),
                        Err(_) => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_scale_out_fail_over_and_restart_exactly_once() {
    let _serial = SERIAL.lock().await;
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let partitions = 6;
    let run = setup_with(dir.path(), &bootstrap, "waits", partitions, "");
    create_topic(&bootstrap, &run.input, partitions).await;
    let n = 30_000;
    let rate = 1_000;
    let readings = waits(n);
    let https: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let live = Arc::new(Mutex::new(BTreeSet::new()));
    let mut svcs: Vec<Option<Service>> = vec![None, None, None];

    // one instance, then the stream starts
    svcs[0] = Some(start(&run.config, &https[0]));
    wait_ready(&https[0]).await;
    live.lock().expect("lock").insert(https[0].clone());
    let publisher = publish_steadily(&bootstrap, &run.input, readings, rate);
    let stop = Arc::new(AtomicBool::new(false));
    let probes = Arc::new(Mutex::new(Probes::default()));
    let prober = probe(live.clone(), partitions, stop.clone(), probes.clone());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        owned(&https[0], "waits").await.len(),
        partitions as usize,
        "alone, the first instance owns every partition"
    );

    // two more join: partitions move to them with their checkpoints
    for i in 1..3 {
        svcs[i] = Some(start(&run.config, &https[i]));
        wait_ready(&https[i]).await;
        live.lock().expect("lock").insert(https[i].clone());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = Vec::new();
        for h in &https {
            all.push(owned(h, "waits").await);
        }
        let union: BTreeSet<i64> = all.iter().flatten().copied().collect();
        let spread = all.iter().all(|o| !o.is_empty());
        let total: usize = all.iter().map(BTreeSet::len).sum();
        if spread && total == partitions as usize && union.len() == partitions as usize {
            eprintln!(
                "after {:.1} s the partitions are spread: {all:?}",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not spread over the three instances: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // SIGKILL the second instance mid-stream, then replace it (same
    // address, so the same identity: it fences its zombie's transaction)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mine = metric(&https[1], "streamfit_readings_predicted_total", "waits").await;
    let published = publisher.sent();
    eprintln!("SIGKILL instance 1: it predicted {mine}, {published} of {n} published");
    assert!(
        mine > 0 && published < n,
        "the kill must land mid-stream: the instance predicted {mine}, {published} of {n} published"
    );
    live.lock().expect("lock").remove(&https[1]);
    if let Some(s) = svcs[1].take() {
        s.crash();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    svcs[1] = Some(start(&run.config, &https[1]));
    wait_ready(&https[1]).await;
    live.lock().expect("lock").insert(https[1].clone());

    // every instance restarted with SIGTERM, one at a time
    for i in 0..3 {
        live.lock().expect("lock").remove(&https[i]);
        if let Some(s) = svcs[i].take() {
            s.stop();
        }
        svcs[i] = Some(start(&run.config, &https[i]));
        wait_ready(&https[i]).await;
        live.lock().expect("lock").insert(https[i].clone());
        eprintln!(
            "instance {i} restarted after {:.1} s; {} of {n} published",
            started.elapsed().as_secs_f64(),
            publisher.sent()
        );
    }
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    stop.store(true, Ordering::Relaxed);
    prober.await.expect("prober");
    for s in svcs.iter_mut() {
        if let Some(s) = s.take() {
            s.stop();
        }
    }

    // the producers' partitioner is the one /predict routes by
    let input = read_input(&bootstrap, &run.input, partitions);
    for m in &input {
        let key = m.key.as_deref().expect("keyed by ride");
        assert_eq!(
            KeyPartitioner::ConsistentRandom.partition(key.as_bytes(), partitions),
            m.partition,
            "{key}"
        );
    }
    verify(&bootstrap, &run, "waits", n);
    let p = probes.lock().expect("lock");
    eprintln!(
        "/predict probes: {} answers, by routing {:?}",
        p.answers, p.by_routing
    );
    assert!(
        p.failures.is_empty(),
        "/predict failed on a live instance: {:?}",
        &p.failures[..p.failures.len().min(10)]
    );
    assert!(
        p.by_routing.get("forwarded").copied().unwrap_or(0) > 0,
        "some rides live on other instances: their answers are forwarded"
    );
}

/// The shipped config with its topics and group renamed for this test and
/// the broker's address; everything else as shipped (no `instance_id`).
fn shipped_config(dir: &Path, bootstrap: &str, tag: &str) -> (std::path::PathBuf, String) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml"),
    )
    .expect("shipped config");
    assert!(
        !text.contains("instance_id"),
        "the shipped config leaves instance_id to its default"
    );
    let prefix = unique(tag);
    let text = text
        .replace("127.0.0.1:9092", bootstrap)
        .replace(
            "group_id = \"streamfit\"",
            &format!("group_id = \"{prefix}\""),
        )
        .replace("waits.", &format!("{prefix}.waits."))
        .replace("clinical.", &format!("{prefix}.clinical."))
        .replace("_topic = \"waits", &format!("_topic = \"{prefix}.waits"))
        .replace("_topic = \"heart", &format!("_topic = \"{prefix}.heart"));
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).expect("config");
    (path, prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_from_the_shipped_config_share_the_partitions() {
    let _serial = SERIAL.lock().await;
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, prefix) = shipped_config(dir.path(), &bootstrap, "shipped");
    let https = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let mut a = start(&config, &https[0]);
    let mut b = start(&config, &https[1]);
    wait_ready(&https[0]).await;
    wait_ready(&https[1]).await;
    let input = format!("{prefix}.waits.readings");
    let n = 3_000;
    produce(&bootstrap, &input, &waits(n));
    let run = Run {
        config: config.clone(),
        partitions: 3,
        http: https[0].clone(),
        input,
        output: "waits-v1.predictions".replace("waits-v1", &format!("{prefix}.waits-v1")),
        dead: format!("{prefix}.waits.dead-letter"),
        group: format!("{prefix}.waits-v1"),
        model: "waits-v1".into(),
    };
    let parsed = streamfit::config::Config::load(&config).expect("config");
    let m = parsed.model("waits-v1").expect("model");
    assert_eq!(m.output_topic(), run.output, "output topic renamed");
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));
    // several commit intervals: a fenced instance would have exited by now
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, svc) in [("first", &mut a), ("second", &mut b)] {
        assert!(
            svc.child.try_wait().expect("wait").is_none(),
            "the {name} instance exited (fenced?)"
        );
    }
    for model in ["waits-v1", "waits", "heart-v1", "heart"] {
        let (x, y) = (owned(&https[0], model).await, owned(&https[1], model).await);
        assert!(
            !x.is_empty() && !y.is_empty() && x.is_disjoint(&y) && x.len() + y.len() == 3,
            "{model}: the instances share the 3 partitions, got {x:?} and {y:?}"
        );
    }
    a.stop();
    b.stop();
    verify(&bootstrap, &run, "waits-v1", n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_on_one_cluster_never_fence_each_other() {
    let _serial = SERIAL.lock().await;
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    // the same instance name in both: only the group tells them apart
    let service = "instance_id = \"node-1\"";
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).expect("dir");
    std::fs::create_dir_all(&db).expect("dir");
    let ra = setup_with(&da, &bootstrap, "waits-v1", 3, service);
    let rb = setup_with(&db, &bootstrap, "waits-v1", 3, service);
    let mut a = Service::start(&ra.config);
    let mut b = Service::start(&rb.config);
    wait_ready(&ra.http).await;
    wait_ready(&rb.http).await;
    let n = 3_000;
    produce(&bootstrap, &ra.input, &waits(n));
    produce(&bootstrap, &rb.input, &waits(n));
    wait_for_outputs(&bootstrap, &ra, n, Duration::from_secs(120));
    wait_for_outputs(&bootstrap, &rb, n, Duration::from_secs(120));
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, svc) in [("first", &mut a), ("second", &mut b)] {
        assert!(
            svc.child.try_wait().expect("wait").is_none(),
            "the {name} deployment exited (fenced?)"
        );
    }
    a.stop();
    b.stop();
    verify(&bootstrap, &ra, "waits-v1", n);
    verify(&bootstrap, &rb, "waits-v1", n);
}
