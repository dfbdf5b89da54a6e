//! A restart with a config that differs from the checkpointed state: a new
//! learning rate is taken over and the log says so (the model keeps what it
//! learned); features listed in another order stop the service with an
//! error that names the column, instead of restoring weights that would
//! stand for other features.

mod common;

use std::time::Duration;

use common::*;

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
    let svc = Service::start_logged(&run.config, &faster, &log);
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
    let mut svc = Service::start_logged(&reordered, &[], &log);
    let status = svc.exited(Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "a refused restore exits non-zero");
    assert!(
        text.contains("another order") && text.contains("column"),
        "the error names the difference:\n{text}"
    );
}
