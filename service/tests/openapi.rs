//! The OpenAPI document at /openapi.json is true: every route of the
//! router is in it, and schemathesis (from PyPI, installed by
//! deploy/setup.sh) sends well over 1,000 generated requests to a live
//! service (admin token, a model that has learned) and finds no 5xx and no
//! answer that the document does not describe.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const ADMIN: &str = "admin-token-for-the-openapi-test";

#[test]
fn every_route_is_documented() {
    let doc: serde_json::Value =
        serde_json::from_str(streamfit::http::OPENAPI).expect("the document is JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs"),
    )
    .expect("router source");
    let routes: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    // `.route(` with the path on the next line (healthz) is found by hand
    assert!(routes.len() >= 8, "routes found: {routes:?}");
    assert!(paths.contains_key("/healthz"), "/healthz is missing");
    for r in routes {
        assert!(
            paths.contains_key(r),
            "route {r} is missing from openapi.json"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_undocumented_answer() {
    let venv = std::env::var("STREAMFIT_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/streamfit")
        })
        .join("venv/bin/schemathesis");
    assert!(
        venv.exists(),
        "{} is missing: run deploy/setup.sh (these tests never skip)",
        venv.display()
    );
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits");
    let tokens = format!("admin:{ADMIN}");
    // a challenger, so that promote and rollback answer more than 409
    let challenger = r#"[{ name = "fast", learner = { optimizer = { forgetting = 0.999 } } }]"#;
    let svc = Service::start_with(
        &run.config,
        &[
            ("STREAMFIT_HTTP_TOKENS", tokens.as_str()),
            ("STREAMFIT_MODEL_WAITS__CHALLENGER", challenger),
        ],
    );
    wait_ready(&run.http).await;
    produce(&bootstrap, &run.input, &waits(300));
    wait_for_outputs(&bootstrap, &run, 300, Duration::from_secs(60));

    let url = format!("http://{}/openapi.json", run.http);
    let auth = format!("Authorization: Bearer {ADMIN}");
    let out = Command::new(&venv)
        .args(["run", &url, "--checks", "all"])
        // a reading valid for the document (any object) is refused when it
        // lacks the model's fields: the document cannot know each model's
        // spec, so that check does not apply
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["-H", &auth, "--max-examples", "200", "--seed", "7"])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["--generation-deterministic"])
        .env("NO_COLOR", "1")
        // its cache of found crashes goes beside the test's files, not the repo
        .current_dir(dir.path())
        .output()
        .expect("schemathesis runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    svc.stop();
    eprintln!("{text}");
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    // how many requests it sent: "Test cases:" then "N generated, ..."
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let generated: u64 = lines
        .iter()
        .position(|l| l.starts_with("Test cases:"))
        .and_then(|i| {
            let same = lines[i].trim_start_matches("Test cases:").trim();
            let line = if same.is_empty() {
                lines.get(i + 1)?
            } else {
                &same
            };
            line.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no test case count in the output:\n{text}"));
    assert!(
        generated >= 1_000,
        "only {generated} generated requests:\n{text}"
    );
}
