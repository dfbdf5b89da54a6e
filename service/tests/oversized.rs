//! Readings of any size: a 2 MB reading on an input topic that allows it,
//! and one just over 1,000,000 bytes (more than the producer sends by
//! default), are dead-lettered truncated, with headers that say so, and
//! the stream goes on, across a restart, exactly once.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// A reading of about `bytes` bytes: a valid wait-time reading with a long
/// extra field.
fn huge(bytes: usize) -> Vec<u8> {
    let head = r#"{"ride":"soarin","ts":"2018-01-01T09:05:00","posted_wait":25.0,"note":""#;
    let pad = bytes - head.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad)).into_bytes()
}

/// Publishes readings of up to 3 MB.
fn publish(bootstrap: &str, topic: &str, readings: &[(Option<String>, Vec<u8>)]) {
    produce_with(
        bootstrap,
        topic,
        readings,
        &[("message.max.bytes", "3000000")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_readings_are_dead_lettered_truncated_and_the_stream_goes_on() {
    let bootstrap = bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = setup(dir.path(), &bootstrap, "waits-v1");
    // the input topic takes messages of up to 3 MB
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("admin");
    let topic = NewTopic::new(&run.input, 3, TopicReplication::Fixed(1))
        .set("max.message.bytes", "3000000");
    admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("created")
        .into_iter()
        .for_each(|r| {
            r.expect("topic created");
        });

    let real = waits(4_000);
    let (two_mb, just_over) = (huge(2_000_000), huge(1_000_100));
    let key = Some("soarin".to_owned());
    let mut first: Vec<(Option<String>, Vec<u8>)> = real[..1_000].to_vec();
    first.push((key.clone(), two_mb.clone()));
    first.extend_from_slice(&real[1_000..2_000]);
    first.push((key, just_over.clone()));
    first.extend_from_slice(&real[2_000..3_000]);

    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publish(&bootstrap, &run.input, &first);
    wait_for_outputs(&bootstrap, &run, first.len(), Duration::from_secs(120));
    let dead = read_topic(&bootstrap, &run.dead, 3, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "both oversized readings are dead-lettered");
    for (_, payload, headers) in &dead {
        let original: usize = headers["streamfit.original.bytes"]
            .parse()
            .expect("original size");
        let source = if original == two_mb.len() {
            &two_mb
        } else {
            &just_over
        };
        assert_eq!(original, source.len(), "{headers:?}");
        assert_eq!(headers["streamfit.truncated"], "true");
        assert!(
            headers["streamfit.error"].contains("bytes"),
            "the reason names the size: {headers:?}"
        );
        assert!(payload.len() < 1_000_000, "fits the producer's limit");
        assert!(
            source.starts_with(payload),
            "a truncated dead letter is the reading's first bytes"
        );
    }

    // the stream goes on across a restart
    svc.stop();
    let svc = Service::start(&run.config);
    wait_ready(&run.http).await;
    publish(&bootstrap, &run.input, &real[3_000..]);
    let n = first.len() + 1_000;
    wait_for_outputs(&bootstrap, &run, n, Duration::from_secs(120));
    svc.stop();
    verify(&bootstrap, &run, "waits-v1", n);
}
