//! A checkpoint topic that is not compacted is refused at start with an
//! error that names the topic and its cleanup policy: retention would
//! delete checkpoints that the group's committed offsets rely on.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_topic_that_is_not_compacted_is_refused_at_start() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "heart");
    // an existing topic with the default policy (delete)
    let topic = unique("not-compacted");
    create_topic(&bootstrap, &topic, 1).await;
    let log = dir.path().join("refused.log");
    let mut svc = Service::start_logged(
        &run.config,
        &[("STREAMFIT_SERVICE_CHECKPOINT_TOPIC", &topic)],
        &log,
    );
    let status = svc.exited(Duration::from_secs(60)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "refused with a non-zero exit");
    assert!(
        text.contains(&topic) && text.contains("cleanup.policy=delete"),
        "the error names the topic and its policy:\n{text}"
    );
}
