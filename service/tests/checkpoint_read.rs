//! Reading a transactional topic to its end (how checkpoints are restored)
//! while another producer's transaction is open: the read waits for it and
//! sees every record committed after it. Asked with read_committed, Kafka
//! gives the last stable offset as the end, which the open transaction
//! holds back: a restore stopped there and missed newer checkpoints.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

fn txn_producer(bootstrap: &str, id: &str) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .create()
        .expect("producer");
    p.init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_to_the_end_waits_for_open_transactions_and_misses_no_commit() {
    let bootstrap = bootstrap();
    let topic = unique("ck-read");
    create_topic(&bootstrap, &topic, 1).await;
    // an open transaction first, a committed record after it
    let open = txn_producer(&bootstrap, &unique("open-txn"));
    open.begin_transaction().expect("begin");
    open.send(BaseRecord::to(&topic).key("a").payload("open"))
        .map_err(|(e, _)| e)
        .expect("queued");
    open.flush(Duration::from_secs(10)).expect("flushed");
    let other = txn_producer(&bootstrap, &unique("committed-txn"));
    other.begin_transaction().expect("begin");
    other
        .send(BaseRecord::to(&topic).key("b").payload("committed"))
        .map_err(|(e, _)| e)
        .expect("queued");
    other
        .commit_transaction(Duration::from_secs(10))
        .expect("committed");

    let props: BTreeMap<String, String> = [("bootstrap.servers".to_owned(), bootstrap.clone())]
        .into_iter()
        .collect();
    let (t, g) = (topic.clone(), unique("reader"));
    let started = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let r = streamfit::kafka::read_to_end(&props, &t, None, &g, Duration::from_secs(60), |m| {
            seen.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
        });
        (r.is_ok(), seen)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !reader.is_finished(),
        "the read ended while a transaction before the end was still open: it would miss the committed record after it"
    );
    open.abort_transaction(Duration::from_secs(10))
        .expect("aborted");
    let (ok, seen) = reader.join().expect("reader");
    eprintln!(
        "read ended {:.1} s after it started, saw {seen:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(ok, "the read completes once the open transaction ends");
    assert_eq!(
        seen,
        vec!["b".to_owned()],
        "the committed record, not the aborted one"
    );
}
