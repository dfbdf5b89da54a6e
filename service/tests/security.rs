//! streamfit on a secured cluster (`deploy/kafka.sh up --secure`: SASL_SSL,
//! SCRAM-SHA-512, StandardAuthorizer with no ACL meaning no access), as the
//! least-privilege principal `streamfit` holding only the ACLs that
//! `deploy/kafka/acls.py` derives from the test's config; and the failures
//! a user meets first, each named: a wrong password, an untrusted CA, a
//! missing ACL.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `[kafka]` lines of the principal `streamfit` on the secured broker.
fn secure_lines(bootstrap: &str) -> String {
    let password = std::env::var("STREAMFIT_KAFKA_SASL_PASSWORD")
        .unwrap_or_else(|_| "streamfit-local-only".into());
    let ca = secure_state(bootstrap)
        .parent()
        .expect("cache")
        .join("tls/ca.pem");
    format!(
        "\"bootstrap.servers\" = \"{bootstrap}\"\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"streamfit\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n",
        ca.display()
    )
}

/// A run on the secured broker as `streamfit` (see [`setup_table`]).
fn secure_setup(dir: &Path, bootstrap: &str, model: &str, extra_models: &str) -> Run {
    let run = setup_table(dir, bootstrap, model, 3, "", |input, output, dead| {
        format!(
            "{}{extra_models}",
            model_table(model, input, output, dead, 500)
        )
    });
    let text = std::fs::read_to_string(&run.config).expect("config");
    let text = text.replace(
        &format!("\"bootstrap.servers\" = \"{bootstrap}\"\n"),
        &secure_lines(bootstrap),
    );
    std::fs::write(&run.config, text).expect("config");
    run
}

/// Runs `deploy/kafka.sh ARGS` against the secured broker (its port).
fn kafka_sh(bootstrap: &str, args: &[&str]) {
    let port = bootstrap.rsplit(':').next().expect("port");
    let out = Command::new(repo().join("deploy/kafka.sh"))
        .args(args)
        .env("STREAMFIT_KAFKA_PORT", port)
        .output()
        .expect("deploy/kafka.sh runs");
    assert!(
        out.status.success(),
        "deploy/kafka.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grants the ACLs the config needs (deploy/kafka/acls.py) and nothing else.
fn grant(bootstrap: &str, config: &Path) {
    let config = config.to_str().expect("utf-8 path");
    kafka_sh(bootstrap, &["grant", config, "--secure"]);
}

/// Removes one ACL of the principal `streamfit`, as the super user.
fn revoke(bootstrap: &str, args: &[&str]) {
    let admin = secure_state(bootstrap).join("admin.properties");
    let mut all = vec![
        "tool",
        "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server",
        bootstrap,
        "--command-config",
        admin.to_str().expect("utf-8 path"),
        "--remove",
        "--force",
        "--allow-principal",
        "User:streamfit",
    ];
    all.extend_from_slice(args);
    kafka_sh(bootstrap, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_principal_runs_exactly_once_on_sasl_ssl() {
    let bootstrap = secure_bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = secure_setup(dir.path(), &bootstrap, "waits", "");
    grant(&bootstrap, &run.config);
    let n = 12_000;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // published as the super user, consumed, predicted, published,
    // checkpointed and committed as `streamfit`
    let publisher = publish_steadily(&bootstrap, &run.input, waits(n), 2_000);
    kill_mid_stream(svc, &run, 2_000, n).await;
    eprintln!("{} readings published at the kill", publisher.sent());
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publisher.join();
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(300));
    svc.stop();
    verify(&bootstrap, &run, "waits", n);

    // handed to another deployment as `streamfit`, with only the ACLs of
    // that deployment's config: `model import` writes its checkpoints and
    // moves its group's offsets in a transaction of its own
    let snap = dir.path().join("waits.snapshot.json");
    let export = |config: &Path, out: &Path| -> serde_json::Value {
        let (config, out_s) = (
            config.to_str().expect("utf-8"),
            out.to_str().expect("utf-8"),
        );
        streamfit_ok(&[
            "model", "export", "--model", "waits", "--config", config, "--out", out_s,
        ]);
        serde_json::from_slice(&std::fs::read(out).expect("exported")).expect("JSON")
    };
    let exported = export(&run.config, &snap);
    let config_b = with_group_id(&run.config, dir.path(), "b.toml", &unique("secure-import"));
    grant(&bootstrap, &config_b);
    let (cb, file) = (
        config_b.to_str().expect("utf-8"),
        snap.to_str().expect("utf-8"),
    );
    streamfit_ok(&[
        "model", "import", "--model", "waits", "--config", cb, "--file", file,
    ]);
    let imported = export(&config_b, &dir.path().join("b.snapshot.json"));
    let next = |v: &serde_json::Value| -> Vec<(i64, i64)> {
        let mut parts: Vec<(i64, i64)> = v["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|c| {
                (
                    c["partition"].as_i64().expect("partition"),
                    c["next_offset"].as_i64().expect("offset"),
                )
            })
            .collect();
        parts.sort();
        parts
    };
    assert_eq!(
        next(&imported),
        next(&exported),
        "the other deployment's group continues where the model is"
    );
    assert_eq!(
        next(&exported).iter().map(|(_, o)| o).sum::<i64>(),
        n as i64,
        "the exported model has learned every reading"
    );
}

/// Starts a service that must refuse to start; its exit status, the time
/// it took and its log.
async fn refused_start(config: &Path, env: &[(&str, &str)]) -> (i32, Duration, String) {
    let log = config.with_extension("log");
    let started = Instant::now();
    let mut svc = Service::start_logged(config, env, &log);
    let status = svc.exited(Duration::from_secs(45)).await;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).expect("log");
    (status.code().unwrap_or(-1), took, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_the_start_naming_authentication() {
    let bootstrap = secure_bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = secure_setup(dir.path(), &bootstrap, "waits", "");
    let (code, took, log) = refused_start(
        &run.config,
        &[("STREAMFIT_KAFKA_SASL_PASSWORD", "not-the-password")],
    )
    .await;
    assert_ne!(code, 0, "a wrong password exits non-zero: {log}");
    assert!(
        took < Duration::from_secs(30),
        "named within 30 s: {took:?}"
    );
    assert!(
        log.contains("Kafka authentication failed")
            && log.contains("invalid credentials")
            && log.contains("kafka.sasl.password"),
        "the error names authentication and what to fix: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_stops_the_start_naming_the_certificate() {
    let bootstrap = secure_bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = secure_setup(dir.path(), &bootstrap, "waits", "");
    // a CA of its own, which never signed the broker's certificate
    let (ca, _, _) = make_cert(dir.path());
    let (code, took, log) = refused_start(
        &run.config,
        &[(
            "STREAMFIT_KAFKA_SSL_CA_LOCATION",
            ca.to_str().expect("utf-8"),
        )],
    )
    .await;
    assert_ne!(code, 0, "an untrusted CA exits non-zero: {log}");
    assert!(
        took < Duration::from_secs(30),
        "named within 30 s: {took:?}: {log}"
    );
    assert!(
        log.contains("TLS with the Kafka broker")
            && log.contains("certificate verify failed")
            && log.contains("kafka.ssl.ca.location"),
        "the error names the certificate and what to fix: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_acl_stops_that_model_alone_and_readyz_names_it() {
    let bootstrap = secure_bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let (no_create, no_read) = (unique("ungranted.in"), unique("unreadable.in"));
    // `unreadable` holds every ACL but Read on its input topic; `ungranted`
    // holds none: it is added to the config after the grant
    let unreadable = format!(
        "[[model]]\nname = \"unreadable\"\ntask = \"regression\"\ninput_topic = \"{no_read}\"\ntimestamp = \"ts\"\ntarget = {{ field = \"posted_wait\", missing = [-999.0] }}\nfeatures = [{{ kind = \"hour_of_day\" }}]\n"
    );
    // `unwritable` holds every ACL but Write on its output topic
    let (no_write_in, no_write_out) = (unique("unwritable.in"), unique("unwritable.out"));
    let unwritable = format!(
        "[[model]]\nname = \"unwritable\"\ntask = \"regression\"\ninput_topic = \"{no_write_in}\"\noutput_topic = \"{no_write_out}\"\ntimestamp = \"ts\"\ntarget = {{ field = \"posted_wait\", missing = [-999.0] }}\nfeatures = [{{ kind = \"hour_of_day\" }}]\n"
    );
    let run = secure_setup(
        dir.path(),
        &bootstrap,
        "waits",
        &format!("{unreadable}{unwritable}"),
    );
    grant(&bootstrap, &run.config);
    revoke(
        &bootstrap,
        &["--operation", "Read", "--topic", no_read.as_str()],
    );
    revoke(
        &bootstrap,
        &["--operation", "Write", "--topic", no_write_out.as_str()],
    );
    let ungranted = unreadable
        .replace(&no_read, &no_create)
        .replace("\"unreadable\"", "\"ungranted\"");
    let mut text = std::fs::read_to_string(&run.config).expect("config");
    text.push_str(&ungranted);
    std::fs::write(&run.config, text).expect("config");
    create_topic(&bootstrap, &no_read, 3).await;
    create_topic(&bootstrap, &no_write_in, 3).await;
    create_topic(&bootstrap, &no_write_out, 3).await;
    produce(&bootstrap, &no_write_in, &waits(50));

    let log = dir.path().join("service.log");
    let svc = Service::start_logged(&run.config, &[], &log);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let r = client
            .get(format!("http://{}/readyz", run.http))
            .send()
            .await;
        if let Ok(r) = r {
            let status = r.status();
            let body: serde_json::Value = r.json().await.expect("JSON");
            let why = &body["waiting_for"];
            let stopped = |m: &str| why[m].as_str().is_some_and(|s| s.starts_with("stopped"));
            if stopped("ungranted") && stopped("unreadable") && stopped("unwritable") {
                assert_eq!(status, 503, "{body}");
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the three refusals in /readyz within 30 s (log: {})",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let why = &body["waiting_for"];
    let ungranted_why = why["ungranted"].as_str().expect("reason");
    assert!(
        ungranted_why.contains("not authorized to create (or describe) topic")
            && ungranted_why.contains(&no_create)
            && ungranted_why.contains("User:streamfit"),
        "{ungranted_why}"
    );
    let unreadable_why = why["unreadable"].as_str().expect("reason");
    assert!(
        unreadable_why.contains("not authorized to read topic")
            && unreadable_why.contains(&no_read),
        "{unreadable_why}"
    );
    let unwritable_why = why["unwritable"].as_str().expect("reason");
    assert!(
        unwritable_why.contains("not authorized to write to topic")
            && unwritable_why.contains(&no_write_out),
        "{unwritable_why}"
    );
    assert!(
        why.get("waits")
            .is_none_or(|w| !w.as_str().unwrap_or("").starts_with("stopped")),
        "the granted model runs on: {body}"
    );
    // and it does its work
    produce(&bootstrap, &run.input, &waits(500));
    wait_for_outputs(&bootstrap, &run, 500, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("not authorized to read topic") && text.contains(&no_read),
        "the log names the refusal too"
    );
    svc.stop();
}
