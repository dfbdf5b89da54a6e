//! Output encoding and production: prediction messages (the contract in
//! DESIGN.md), dead letters with their headers, outputs held while a commit
//! is in flight, and the queue-full retry of a send.

use anyhow::{Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::Message;
use serde::Serialize;
use std::time::Duration;

use crate::kafka::ProducerCtx;
use crate::pipeline::{Input, Outcome};

#[derive(Serialize)]
struct Source<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct PredictionMessage<'a> {
    model: &'a str,
    model_version: u64,
    key: Option<&'a str>,
    prediction: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<i64>,
    source: Source<'a>,
}

/// An output produced while a commit was in flight, sent once the next
/// transaction opens.
pub(super) struct Held {
    pub(super) dead: bool,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) seq: usize,
}

/// Outputs held beyond this wait for the commit in flight (backpressure
/// while the broker is away).
pub(super) const MAX_HELD: usize = 500_000;

/// Everything needed to produce one batch's outcomes.
pub(super) struct Outputs<'a> {
    pub(super) producer: &'a BaseProducer<ProducerCtx>,
    pub(super) name: &'a str,
    pub(super) classification: bool,
    pub(super) input: &'a str,
    pub(super) output: &'a str,
    pub(super) dead: &'a str,
    pub(super) partition: i32,
    pub(super) version: u64,
    pub(super) seq: usize,
}

impl Outputs<'_> {
    /// Produces one output, or holds it when `held` is given.
    fn emit(
        &self,
        held: Option<&mut Vec<Held>>,
        dead: bool,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        if let Some(held) = held {
            held.push(Held {
                dead,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers,
                seq: self.seq,
            });
            return Ok(());
        }
        let topic = if dead { self.dead } else { self.output };
        let mut record = BaseRecord::with_opaque_to(topic, self.seq).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        send(self.producer, record)
    }

    pub(super) fn send(
        &self,
        buf: &mut Vec<u8>,
        held: Option<&mut Vec<Held>>,
        msg: &BorrowedMessage<'_>,
        input: &Input<'_>,
        outcome: &Outcome<'_>,
    ) -> Result<()> {
        match outcome {
            Outcome::Predicted(p) => {
                buf.clear();
                let (prediction, probability) = if self.classification {
                    (
                        if p.prediction >= 0.5 { 1.0 } else { 0.0 },
                        Some(p.prediction),
                    )
                } else {
                    (p.prediction, None)
                };
                serde_json::to_writer(
                    &mut *buf,
                    &PredictionMessage {
                        model: self.name,
                        model_version: self.version,
                        key: p.key.as_deref(),
                        prediction,
                        probability,
                        label: p.label,
                        event_time: p.event_time,
                        source: Source {
                            topic: self.input,
                            partition: self.partition,
                            offset: msg.offset(),
                        },
                    },
                )?;
                self.emit(held, false, msg.key(), buf.as_slice(), None)
            }
            Outcome::Invalid(e) => {
                let offset = msg.offset().to_string();
                let part = self.partition.to_string();
                let reason = e.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "streamfit.error",
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "streamfit.field",
                        value: e.field(),
                    })
                    .insert(Header {
                        key: "streamfit.model",
                        value: Some(self.name),
                    })
                    .insert(Header {
                        key: "streamfit.source.topic",
                        value: Some(self.input),
                    })
                    .insert(Header {
                        key: "streamfit.source.partition",
                        value: Some(part.as_str()),
                    })
                    .insert(Header {
                        key: "streamfit.source.offset",
                        value: Some(offset.as_str()),
                    });
                self.emit(held, true, msg.key(), input.bytes, Some(headers))?;
                tracing::debug!(model = %self.name, partition = self.partition, offset = msg.offset(), error = %e, "dead-lettered");
                Ok(())
            }
        }
    }
}

pub(super) fn send<'r>(
    producer: &BaseProducer<ProducerCtx>,
    mut record: BaseRecord<'r, [u8], [u8], usize>,
) -> Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e).context("cannot queue an output message"),
        }
    }
}
