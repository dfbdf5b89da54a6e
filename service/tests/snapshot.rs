//! Model export and import on the real broker: a model exported from one
//! consumer group (over HTTP and from its checkpoints) and imported into
//! another continues there without a gap; the predictions of the whole run
//! export to an Arrow IPC file.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_model_continues_in_another_group() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let (first, later) = (6_000, 1_000);
    let readings = waits(first + later);
    create_topic(&bootstrap, &run.input, 3).await;
    produce(&bootstrap, &run.input, &readings[..first]);

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    wait_for_outputs(&bootstrap, &run, first, Duration::from_secs(120));
    let http = get_json(&run.http, "/v1/models/waits/snapshot").await;
    assert_eq!(http["format_version"], 1, "{}", http["format_version"]);
    let next: i64 = http["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|c| c["next_offset"].as_i64().expect("offset"))
        .sum();
    assert_eq!(next, first as i64, "the live snapshot covers every reading");
    svc.stop();

    // the committed checkpoints: the same model as the live one at the end
    let file = dir.path().join("waits.snapshot.json");
    let config = run.config.to_str().expect("utf-8");
    let out = file.to_str().expect("utf-8");
    streamfit_ok(&[
        "model", "export", "--model", "waits", "--config", config, "--out", out,
    ]);
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("written")).expect("json");
    let by_partition = |v: &serde_json::Value| {
        let mut parts = v["partitions"].as_array().expect("partitions").clone();
        parts.sort_by_key(|c| c["partition"].as_i64());
        parts
    };
    assert_eq!(
        by_partition(&exported),
        by_partition(&http),
        "export equals the live snapshot"
    );

    // another group (another deployment) imports it and continues
    let group_b = unique("import-group");
    let config_b = with_group_id(&run.config, dir.path(), "b.toml", &group_b);
    // nothing to export from a deployment that never ran: said as such
    let never = streamfit(&[
        "model",
        "export",
        "--model",
        "waits",
        "--config",
        config_b.to_str().expect("utf-8"),
    ]);
    let why = String::from_utf8_lossy(&never.stderr);
    assert!(
        !never.status.success()
            && why.contains("has no committed checkpoint")
            && why.contains("run the service"),
        "{why}"
    );
    let run_b = Run {
        config: config_b.clone(),
        partitions: run.partitions,
        group: format!("{group_b}.waits"),
        model: "waits".into(),
        http: run.http.clone(),
        input: run.input.clone(),
        output: run.output.clone(),
        dead: run.dead.clone(),
    };
    let cb = config_b.to_str().expect("utf-8");
    streamfit_ok(&[
        "model", "import", "--model", "waits", "--config", cb, "--file", out,
    ]);

    let svc = Service::start(&config_b);
    wait_ready(&run.http).await;
    assert_eq!(
        readings_seen(&run.http, "waits").await,
        first as u64,
        "the imported model, not a fresh one"
    );
    // no import into a group that is running
    let refused = streamfit(&[
        "model", "import", "--model", "waits", "--config", cb, "--file", out,
    ]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("has a running member") && why.contains("answers at http://"),
        "{why}"
    );

    produce(&bootstrap, &run.input, &readings[first..]);
    wait_for_outputs(&bootstrap, &run_b, first + later, Duration::from_secs(120));
    svc.stop();
    // one output per reading over both deployments; the final model equals
    // one pass over every reading
    verify(&bootstrap, &run_b, "waits", first + later);

    // every committed prediction, to Arrow IPC
    let arrow_file = dir.path().join("predictions.arrow");
    let af = arrow_file.to_str().expect("utf-8");
    streamfit_ok(&[
        "predictions",
        "export",
        "--model",
        "waits",
        "--config",
        cb,
        "--out",
        af,
    ]);
    let reader = arrow::ipc::reader::FileReader::try_new(
        std::fs::File::open(&arrow_file).expect("written"),
        None,
    )
    .expect("an Arrow IPC file");
    let mut rows = 0;
    let mut seen = std::collections::HashSet::new();
    for batch in reader {
        let batch = batch.expect("a batch");
        let part = batch
            .column_by_name("partition")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::Int32Array>()
                    .cloned()
            })
            .expect("partition column");
        let offset = batch
            .column_by_name("offset")
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .cloned()
            })
            .expect("offset column");
        for i in 0..batch.num_rows() {
            seen.insert((part.value(i), offset.value(i)));
        }
        rows += batch.num_rows();
    }
    assert_eq!(rows, first + later, "one row per prediction");
    assert_eq!(seen.len(), first + later, "each reading once");
}
