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
use crate::render::{basis, render, Basis, Rendered};

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
    #[serde(flatten)]
    rendered: Rendered<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    basis: Option<Basis<'a>>,
    source: Source<'a>,
}

/// Which of the model's topics an output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dest {
    /// Predictions.
    Output,
    /// Dead letters.
    Dead,
    /// Drift and promotion events.
    Events,
}

/// An output produced while a commit was in flight, sent once the next
/// transaction opens.
pub(super) struct Held {
    pub(super) to: Dest,
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
    pub(super) task: models::Task,
    /// Multiclass: the classes' names, in their numbers' order.
    pub(super) classes: &'a [String],
    /// Regression with baselines: their names, in order of preference.
    pub(super) baselines: &'a [String],
    pub(super) input: &'a str,
    pub(super) output: &'a str,
    pub(super) dead: &'a str,
    /// The events topic, when the model has events to tell.
    pub(super) events: Option<&'a str>,
    pub(super) partition: i32,
    pub(super) version: u64,
    pub(super) seq: usize,
    /// The largest key plus payload a dead letter may have.
    pub(super) dead_limit: usize,
}

/// The [`Outputs`] of a batch of partition `partition`, built from the
/// worker's topics and producer and the partition's `pipeline`. A macro
/// rather than a method: its callers hold the partition's state mutably
/// from `self.parts`, and a method would borrow the whole worker.
macro_rules! outputs {
    ($worker:expr, $pipeline:expr, input: $input:expr, partition: $partition:expr, version: $version:expr, seq: $seq:expr) => {
        $crate::engine::outputs::Outputs {
            producer: $worker.producer,
            name: &$worker.handle.config.name,
            task: $pipeline.task(),
            classes: $pipeline.classes(),
            baselines: $worker.handle.config.baseline_names(),
            input: $input,
            output: &$worker.output,
            dead: &$worker.dead,
            events: $worker.events.as_deref(),
            partition: $partition,
            version: $version,
            seq: $seq,
            dead_limit: $worker.dead_limit,
        }
    };
}
pub(super) use outputs;

impl Outputs<'_> {
    /// Produces one output, or holds it when `held` is given.
    fn emit(
        &self,
        held: Option<&mut Vec<Held>>,
        to: Dest,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        // events are not outputs of a reading: at least once, they must not
        // count towards a batch's acknowledgements (0 is no batch's number)
        let seq = if to == Dest::Events { 0 } else { self.seq };
        if let Some(held) = held {
            held.push(Held {
                to,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers,
                seq,
            });
            return Ok(());
        }
        let topic = match to {
            Dest::Output => self.output,
            Dest::Dead => self.dead,
            Dest::Events => self.events.unwrap_or(self.dead),
        };
        let mut record = BaseRecord::with_opaque_to(topic, seq).payload(payload);
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
                serde_json::to_writer(
                    &mut *buf,
                    &PredictionMessage {
                        model: self.name,
                        model_version: self.version,
                        key: p.key.as_deref(),
                        rendered: render(self.task, self.classes, p),
                        event_time: p.event_time,
                        basis: basis(self.baselines, p),
                        source: Source {
                            topic: self.input,
                            partition: self.partition,
                            offset: msg.offset(),
                        },
                    },
                )?;
                self.emit(held, Dest::Output, msg.key(), buf.as_slice(), None)
            }
            Outcome::Invalid(e) => {
                let offset = msg.offset().to_string();
                let part = self.partition.to_string();
                let reason = e.to_string();
                let fit = fit_dead_letter(msg.key(), input.bytes, self.dead_limit);
                let original = input.bytes.len().to_string();
                let original_key = msg.key().map_or(0, <[u8]>::len).to_string();
                let mut headers = OwnedHeaders::new()
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
                if fit.truncated {
                    headers = headers
                        .insert(Header {
                            key: "streamfit.truncated",
                            value: Some("true"),
                        })
                        .insert(Header {
                            key: "streamfit.original.bytes",
                            value: Some(original.as_str()),
                        })
                        .insert(Header {
                            key: "streamfit.original.key.bytes",
                            value: Some(original_key.as_str()),
                        });
                    tracing::warn!(model = %self.name, partition = self.partition, offset = msg.offset(), bytes = input.bytes.len(), kept = fit.payload.len(), "dead letter truncated to fit the producer's message.max.bytes");
                }
                self.emit(held, Dest::Dead, fit.key, fit.payload, Some(headers))?;
                tracing::debug!(model = %self.name, partition = self.partition, offset = msg.offset(), error = %e, "dead-lettered");
                Ok(())
            }
        }
    }
}

impl Outputs<'_> {
    /// Produces the drift and promotion events `pipeline` signalled since
    /// it had `before` of each (see [`crate::pipeline::Pipeline::event_counts`]),
    /// keyed by the model's name; nothing without an events topic.
    pub(super) fn send_events(
        &self,
        buf: &mut Vec<u8>,
        mut held: Option<&mut Vec<Held>>,
        pipeline: &crate::pipeline::Pipeline,
        before: (u64, u64),
    ) -> Result<()> {
        if self.events.is_none() {
            return Ok(());
        }
        for event in pipeline.events_since(before) {
            buf.clear();
            serde_json::to_writer(
                &mut *buf,
                &EventMessage {
                    model: self.name,
                    partition: self.partition,
                    event,
                },
            )?;
            let key = Some(self.name.as_bytes());
            self.emit(held.as_deref_mut(), Dest::Events, key, buf.as_slice(), None)?;
        }
        Ok(())
    }
}

/// A message of the events topic.
#[derive(Serialize)]
struct EventMessage<'a> {
    model: &'a str,
    /// The input partition whose model signalled it.
    partition: i32,
    #[serde(flatten)]
    event: crate::pipeline::ModelEvent,
}

/// Room left in a produced message for the dead letter's headers and the
/// record's framing.
const DEAD_LETTER_SLACK: usize = 16 * 1024;

/// The broker's default `max.message.bytes` of a topic (1 MiB + batch overhead).
const TOPIC_DEFAULT_MAX: usize = 1_048_588;

/// The largest key plus payload of a dead letter: what the producer
/// (`message.max.bytes`, librdkafka's default 1,000,000) and a topic with
/// the broker's default limit accept, less room for the headers.
pub(super) fn dead_letter_limit(kafka: &std::collections::BTreeMap<String, String>) -> usize {
    let producer_max = kafka
        .get("message.max.bytes")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1_000_000);
    producer_max
        .min(TOPIC_DEFAULT_MAX)
        .saturating_sub(DEAD_LETTER_SLACK)
}

/// A dead letter's key and payload, cut to fit `limit` bytes together.
#[derive(Debug, PartialEq)]
pub(super) struct Fit<'a> {
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: &'a [u8],
    pub(super) truncated: bool,
}

/// Keeps the original bytes when they fit; else the payload's first bytes
/// (and the key only if it leaves room for some payload).
pub(super) fn fit_dead_letter<'a>(
    key: Option<&'a [u8]>,
    payload: &'a [u8],
    limit: usize,
) -> Fit<'a> {
    let key_len = key.map_or(0, <[u8]>::len);
    if key_len + payload.len() <= limit {
        return Fit {
            key,
            payload,
            truncated: false,
        };
    }
    let key = key.filter(|k| k.len() <= limit / 2);
    let room = limit - key.map_or(0, <[u8]>::len);
    Fit {
        key,
        payload: &payload[..payload.len().min(room)],
        truncated: true,
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
            Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::State), _)) => {
                // the transaction failed: only new clients can go on
                return Err(anyhow::Error::new(super::state::ProducerFailed {
                    error: e.to_string(),
                }));
            }
            Err((e, _)) => return Err(e).context("cannot queue an output message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_fit_the_limit_and_say_when_cut() {
        let big = vec![b'x'; 2_000_000];
        let f = fit_dead_letter(Some(b"ride"), &big, 1_000);
        assert!(f.truncated);
        assert_eq!(f.key, Some(&b"ride"[..]));
        assert_eq!(f.payload.len(), 996);
        let f = fit_dead_letter(Some(b"ok"), b"{}", 1_000);
        assert_eq!(
            f,
            Fit {
                key: Some(&b"ok"[..]),
                payload: &b"{}"[..],
                truncated: false
            }
        );
        // a key too large to keep is dropped, the payload keeps the room
        let key = vec![b'k'; 800];
        let f = fit_dead_letter(Some(&key), &big, 1_000);
        assert!(f.truncated && f.key.is_none() && f.payload.len() == 1_000);
        for limit in [0, 1, 7, 1_000] {
            let f = fit_dead_letter(Some(&key), &big, limit);
            assert!(f.key.map_or(0, <[u8]>::len) + f.payload.len() <= limit);
        }
    }

    #[test]
    fn the_limit_follows_the_producer_and_the_topic_default() {
        let mut kafka = std::collections::BTreeMap::new();
        assert_eq!(dead_letter_limit(&kafka), 1_000_000 - DEAD_LETTER_SLACK);
        kafka.insert("message.max.bytes".to_owned(), "4000000".to_owned());
        assert_eq!(
            dead_letter_limit(&kafka),
            TOPIC_DEFAULT_MAX - DEAD_LETTER_SLACK
        );
        kafka.insert("message.max.bytes".to_owned(), "500000".to_owned());
        assert_eq!(dead_letter_limit(&kafka), 500_000 - DEAD_LETTER_SLACK);
    }
}
