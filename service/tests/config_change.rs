//! A restart with a config that differs from the checkpointed state: a new
//! learning rate is taken over and the log says so (the model keeps what it
//! learned); features listed in another order stop the service with an
//! error that names the column, instead of restoring weights that would
//! stand for other features.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts the binary with its log in a file.
fn start_logged(config: &std::path::Path, env: &[(&str, &str)], log: &std::path::Path) -> Service {
    let file = std::fs::File::create(log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_streamfit"))
        .args(["run", "--config"])
        .arg(config)
        .env("STREAMFIT_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("the streamfit binary starts");
    Service { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_at_restart_is_migrated_or_refused_by_name() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits-v1");
    let n = 2_000;
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    produce(&bootstrap, &run.input, &waits(n));
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));
    let seen = readings_seen(&run.http, "waits-v1").await;
    // the live count follows every batch, learned from or not (it lagged
    // behind the predicted counter after a tail of unlabelled readings)
    let predicted = metric(&run.http, "streamfit_readings_predicted_total", "waits-v1").await;
    assert_eq!(
        seen, predicted,
        "readings_seen equals the readings predicted"
    );
    svc.stop();

    // a new learning rate: the restored model goes on with it
    let log = dir.path().join("migrated.log");
    let faster = [(
        "STREAMFIT_MODEL_WAITS_V1__LEARNER",
        r#"{ optimizer = { kind = "adagrad", learning_rate = 0.3 } }"#,
    )];
    let svc = start_logged(&run.config, &faster, &log);
    wait_ready(&run.http).await;
    assert_eq!(
        readings_seen(&run.http, "waits-v1").await,
        seen,
        "the checkpointed model, not a fresh one"
    );
    svc.stop();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("learner settings changed since the checkpoint") && text.contains("migrated"),
        "the log says the learner was migrated:\n{text}"
    );

    // the same features in another order: refused, naming the column
    let config = std::fs::read_to_string(&run.config).expect("config");
    let (hour, dow) = (
        "  { kind = \"hour_of_day\" },",
        "  { kind = \"day_of_week\" },",
    );
    assert!(config.contains(hour) && config.contains(dow), "{config}");
    let swapped = config
        .replace(hour, "@HOUR@")
        .replace(dow, hour)
        .replace("@HOUR@", dow);
    let reordered = dir.path().join("reordered.toml");
    std::fs::write(&reordered, swapped).expect("config");
    let log = dir.path().join("refused.log");
    let mut svc = start_logged(&reordered, &[], &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = svc.child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the service still runs 60 s after being started against a checkpoint it cannot restore"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "a refused restore exits non-zero");
    assert!(
        text.contains("another order") && text.contains("column"),
        "the error names the difference:\n{text}"
    );
}
