//! Waiting for a producer's outputs to be acknowledged without rust-rdkafka's
//! 100 ms slices: its `BaseProducer::flush` (which its `commit_transaction`
//! calls first) polls in slices of up to 100 ms and a slice does not end at
//! the last delivery report, so every flush with anything outstanding, and
//! so every exactly-once commit, took at least 100 ms.

use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// The longest a poll waits before the queue is looked at again.
const SLICE: Duration = Duration::from_millis(1);

/// Serves delivery reports until nothing is queued, in flight or
/// unreported, or `timeout` has passed (then `KafkaError::Flush`).
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    while producer.in_flight_count() > 0 {
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(SLICE);
    }
    Ok(())
}

/// Commits the open transaction: its outputs flushed here first, so that
/// the commit's own flush finds nothing to wait for. Each of the two waits
/// at most `timeout`.
pub fn commit_transaction<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    flush(producer, timeout)?;
    producer.commit_transaction(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext};

    fn producer() -> BaseProducer<DefaultProducerContext> {
        // no broker at all: messages stay queued
        ClientConfig::new()
            .set("message.timeout.ms", "60000")
            .create()
            .expect("producer")
    }

    #[test]
    fn with_no_message_outstanding_the_flush_serves_what_waits_and_ends() {
        // a client event (here: no bootstrap.servers) counts as outstanding
        // until a poll serves it
        let p = producer();
        assert!(flush(&p, Duration::from_secs(5)).is_ok());
        assert_eq!(p.in_flight_count(), 0);
    }

    #[test]
    fn an_undelivered_message_times_the_flush_out() {
        let p = producer();
        p.send(BaseRecord::<(), [u8]>::to("t").payload(&b"x"[..]))
            .map_err(|(e, _)| e)
            .expect("queued");
        let started = Instant::now();
        let r = flush(&p, Duration::from_millis(50));
        assert!(
            matches!(
                r,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
            ),
            "{r:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(p.in_flight_count(), 1, "the message is still queued");
    }
}
