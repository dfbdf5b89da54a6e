//! Every notebook in `notebooks/` runs top to bottom (nbclient, in the
//! virtual environment deploy/setup.sh makes) against the real binary on the
//! real broker, with the six shipped models fed real wait-time and clinical
//! readings and the airline tweets: a failing cell fails the suite, and the
//! plotting notebooks produce their plots.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn venv_python() -> PathBuf {
    let python = std::env::var("STREAMFIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/streamfit")
        })
        .join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run deploy/setup.sh (it installs notebooks/requirements.txt; these tests never skip)",
        python.display()
    );
    python
}

/// Outputs of `kind` ("error", or a MIME type such as "image/png") in an
/// executed notebook.
fn outputs(book: &Path, kind: &str) -> usize {
    let nb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(book).expect("executed notebook"))
            .expect("notebook JSON");
    nb["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .flat_map(|c| c["outputs"].as_array().cloned().unwrap_or_default())
        .filter(|o| {
            if kind == "error" {
                o["output_type"] == "error"
            } else {
                o["data"].get(kind).is_some()
            }
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notebook_runs_against_a_live_service() {
    let python = venv_python();
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let clinical = unique("nb.clinical");
    let texts = unique("nb.tweets");
    let run = setup_table(dir.path(), &bootstrap, "waits", 3, "", |input, _, dead| {
        [
            model_table("waits-v1", input, &unique("nb.waits-v1.out"), dead, 2_000),
            model_table("waits", input, &unique("nb.waits.out"), dead, 2_000),
            model_table("heart-v1", &clinical, &unique("nb.heart-v1.out"), dead, 50),
            model_table("heart", &clinical, &unique("nb.heart.out"), dead, 50),
            model_table("tweets", &texts, &unique("nb.tweets.out"), dead, 500),
            model_table("sentiment", &texts, &unique("nb.sentiment.out"), dead, 500),
        ]
        .concat()
    });
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    // a season of waits (the notebooks plot whatever the service has seen)
    for chunk in waits(60_000).chunks(30_000) {
        produce(&bootstrap, &run.input, chunk);
    }
    produce(&bootstrap, &clinical, &heart());
    // the tweets keyed by their id, as the quickstart publishes them
    let keyed: Vec<(Option<String>, Vec<u8>)> = tweets(usize::MAX)
        .into_iter()
        .map(|(_, json)| {
            let v: serde_json::Value = serde_json::from_slice(&json).expect("a tweet");
            (v["id"].as_str().map(str::to_owned), json)
        })
        .collect();
    produce(&bootstrap, &texts, &keyed);
    let caught_up = streamfit(&[
        "wait",
        "--config",
        run.config.to_str().expect("utf-8"),
        "--timeout",
        "600",
    ]);
    assert!(
        caught_up.status.success(),
        "{}",
        String::from_utf8_lossy(&caught_up.stderr)
    );

    let out = dir.path().join("executed");
    let notebooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebooks");
    let done = Command::new(&python)
        .arg(notebooks.join("run.py"))
        .arg("--out")
        .arg(&out)
        .env("STREAMFIT_NB_URL", format!("http://{}", run.http))
        .env("STREAMFIT_CONFIG", &run.config)
        .env("STREAMFIT_NB_BIN", env!("CARGO_BIN_EXE_streamfit"))
        .env("STREAMFIT_NB_WORK", dir.path())
        .output()
        .expect("the notebook runner starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(done.status.success(), "a notebook failed:\n{text}");
    let plots = [
        ("01-quickstart", 0),
        ("02-wait-times", 4),
        ("03-clinical", 4),
        ("04-replay-and-backfill", 1),
        ("05-text-sentiment", 3),
    ];
    for (name, want) in plots {
        let book = out.join(format!("{name}.ipynb"));
        assert_eq!(outputs(&book, "error"), 0, "{name} has an error output");
        assert!(
            outputs(&book, "image/png") >= want,
            "{name}: {} plots, expected {want}\n{text}",
            outputs(&book, "image/png")
        );
    }
    drop(svc);
}
