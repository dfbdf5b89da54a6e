//! What the dashboard draws: per model, a sample of its counters, lag and
//! rolling metrics every second (the last half hour), and its most recent
//! predictions beside their labels. The server's sampler fills the samples;
//! the model's loop notes the last predictions of each micro-batch.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use models::MetricSet;
use serde::Serialize;

use crate::live::Live;
use crate::pipeline::Outcome;
use crate::stats::ModelStats;

/// Samples kept: 30 minutes at one a second.
pub const SAMPLES: usize = 1_800;
/// Recent predictions kept.
pub const RECENT: usize = 50;
/// Predictions noted per micro-batch (its last ones).
const PER_BATCH: usize = 10;

/// One sample of a model's standing.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When, ms since the Unix epoch.
    pub t_ms: u64,
    /// Readings processed (predicted or dead-lettered), by the live model.
    pub readings_seen: u64,
    /// Readings learned from.
    pub readings_learned: u64,
    /// Predictions made (the counter of /metrics).
    pub readings_predicted: u64,
    /// Readings sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Readings predicted per second since the previous sample.
    pub readings_per_second: f64,
    /// Consumer lag, summed over the partitions (-1: not known).
    pub lag: i64,
    /// The model's version.
    pub version: u64,
    /// Rolling prequential metrics.
    pub rolling: MetricSet,
}

/// A recent prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Recent {
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// The reading's key.
    pub key: Option<String>,
    /// The prediction (the probability of class 1 for a classifier; a
    /// multiclass model's class number, in its partition's numbering).
    pub prediction: f64,
    /// The label, when the reading had one.
    pub label: Option<f64>,
    /// The reading's event time, ms since the Unix epoch.
    pub event_time_ms: Option<i64>,
    /// Multiclass: the predicted class's name (each partition numbers the
    /// classes it learns in its own order of appearance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_class: Option<String>,
    /// Multiclass: the label's class name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_class: Option<String>,
}

/// A model's history.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    recent: Mutex<VecDeque<Recent>>,
}

impl History {
    /// Takes a sample at `now_ms` of the live model, its counters and its lag.
    pub fn sample(&self, now_ms: u64, live: &Live, stats: &ModelStats, lag: i64) {
        let predicted = stats.predicted.load(Ordering::Relaxed);
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        let rate = samples.back().map_or(0.0, |prev| {
            let dt = now_ms.saturating_sub(prev.t_ms) as f64 / 1e3;
            if dt > 0.0 {
                predicted.saturating_sub(prev.readings_predicted) as f64 / dt
            } else {
                0.0
            }
        });
        let (_, rolling) = live.metrics();
        samples.push_back(Sample {
            t_ms: now_ms,
            readings_seen: live.seen(),
            readings_learned: live.learned(),
            readings_predicted: predicted,
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            readings_per_second: rate,
            lag,
            version: live.version(),
            rolling,
        });
        while samples.len() > SAMPLES {
            samples.pop_front();
        }
    }

    /// Samples taken after `since_ms`, oldest first.
    pub fn samples_since(&self, since_ms: u64) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.iter().filter(|x| x.t_ms > since_ms).cloned().collect())
            .unwrap_or_default()
    }

    /// Notes predictions (the newest last).
    pub fn note(&self, predictions: impl IntoIterator<Item = Recent>) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.extend(predictions);
            while recent.len() > RECENT {
                recent.pop_front();
            }
        }
    }

    /// Notes the last predictions of a micro-batch of `partition` (the
    /// readings' offsets in order, beside their outcomes); `classes`: a
    /// multiclass model's, in the partition's numbering (else empty).
    pub fn note_batch(
        &self,
        partition: i32,
        offsets: impl Iterator<Item = i64>,
        outcomes: &[Outcome<'_>],
        classes: &[String],
    ) {
        let name = |k: f64| features::extract::class_name(classes, k).map(str::to_owned);
        let skip = outcomes.len().saturating_sub(PER_BATCH);
        self.note(
            offsets
                .zip(outcomes)
                .skip(skip)
                .filter_map(|(offset, o)| match o {
                    Outcome::Predicted(p) => Some(Recent {
                        partition,
                        offset,
                        key: p.key.as_deref().map(str::to_owned),
                        prediction: p.prediction,
                        label: p.label,
                        event_time_ms: p.event_time,
                        prediction_class: name(p.prediction),
                        label_class: p.label.and_then(name),
                    }),
                    Outcome::Invalid(_) => None,
                }),
        );
    }

    /// The recent predictions, newest first.
    pub fn recent(&self) -> Vec<Recent> {
        self.recent
            .lock()
            .map(|r| r.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Live {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let config = crate::config::Config::load(&path).expect("config");
        let p = crate::pipeline::Pipeline::new(config.model("waits-v1").expect("model"))
            .expect("pipeline");
        Live::new(p.clone()).with(0, &p, 0)
    }

    #[test]
    fn the_rate_is_predictions_per_second_between_samples_and_old_samples_go() {
        let (h, stats, live) = (History::default(), ModelStats::default(), live());
        h.sample(1_000, &live, &stats, 5);
        stats.predicted.store(500, Ordering::Relaxed);
        h.sample(1_500, &live, &stats, 0);
        let s = h.samples_since(0);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].readings_per_second, 0.0);
        assert_eq!(s[1].readings_per_second, 1_000.0);
        assert_eq!(h.samples_since(1_000).len(), 1);
        for i in 0..SAMPLES as u64 + 10 {
            h.sample(2_000 + i, &live, &stats, 0);
        }
        assert_eq!(h.samples_since(0).len(), SAMPLES);
    }

    #[test]
    fn recent_predictions_are_bounded_and_newest_first() {
        let h = History::default();
        h.note((0..RECENT as i64 + 5).map(|o| Recent {
            partition: 0,
            offset: o,
            key: None,
            prediction: 1.0,
            label: Some(2.0),
            event_time_ms: None,
            prediction_class: None,
            label_class: None,
        }));
        let r = h.recent();
        assert_eq!(r.len(), RECENT);
        assert_eq!(r[0].offset, RECENT as i64 + 4);
    }
}
