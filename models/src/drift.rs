//! Drift detection on a model's stream of prequential losses: the
//! Page-Hinkley test (Page 1954; as in River and MOA). It watches the loss
//! of each prediction, scored before the model learns the reading, and
//! signals when the losses' mean has risen by more than chance allows:
//! the stream changed and the model is now worse than it was.
//!
//! m_t = Σ (x_i - mean_i - delta·s_i) over the readings since the last
//! reset, M_t = min m; drift when m_t - M_t > threshold·s_t (after
//! `min_readings`), where s is the losses' standard deviation since the
//! last reset: `delta` and `threshold` are in standard deviations, so the
//! same settings mean the same on a loss in minutes or in nats. Then it
//! starts afresh. Plain data: it is checkpointed with the model.

use serde::{Deserialize, Serialize};

use crate::error::{check, ModelError};

/// A drift detector's settings, as written in a model's config:
/// `drift = { kind = "page_hinkley", delta = 0.005, threshold = 50.0 }`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriftParams {
    /// The Page-Hinkley test on the losses' mean.
    PageHinkley {
        /// The rise of the mean loss tolerated as noise, per reading, in
        /// standard deviations of the loss.
        #[serde(default = "delta")]
        delta: f64,
        /// How far the cumulative deviation must climb to signal drift, in
        /// standard deviations of the loss.
        #[serde(default = "threshold")]
        threshold: f64,
        /// Readings since the last reset before drift may be signalled.
        #[serde(default = "min_readings")]
        min_readings: u64,
    },
}

fn delta() -> f64 {
    0.25
}
fn threshold() -> f64 {
    50.0
}
fn min_readings() -> u64 {
    30
}

impl DriftParams {
    /// Checks every setting, naming the one at fault.
    pub fn validate(&self) -> Result<(), ModelError> {
        match *self {
            DriftParams::PageHinkley {
                delta, threshold, ..
            } => {
                check(
                    delta.is_finite() && delta >= 0.0,
                    "drift.delta",
                    "a finite number >= 0",
                    delta,
                )?;
                check(
                    threshold.is_finite() && threshold > 0.0,
                    "drift.threshold",
                    "a finite number > 0",
                    threshold,
                )
            }
        }
    }
}

/// One drift signalled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    /// Labelled readings scored when it was signalled (the model's count).
    pub at: u64,
    /// The event time of the reading that signalled it (Unix ms), if any.
    pub event_time: Option<i64>,
    /// The mean loss since the previous reset, when it was signalled.
    pub mean_loss: f64,
}

/// The Page-Hinkley detector's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftDetector {
    params: DriftParams,
    n: u64,
    mean: f64,
    /// Sum of squared deviations from the mean (Welford).
    #[serde(default)]
    m2: f64,
    sum: f64,
    min: f64,
    scored: u64,
    /// Drifts signalled, all time.
    pub count: u64,
    /// The latest ones, newest last (at most [`DriftDetector::KEPT`]).
    pub events: Vec<DriftEvent>,
}

impl DriftDetector {
    /// Events kept.
    pub const KEPT: usize = 20;

    /// A fresh detector (the settings checked).
    pub fn new(params: DriftParams) -> Result<DriftDetector, ModelError> {
        params.validate()?;
        Ok(DriftDetector {
            params,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            sum: 0.0,
            min: 0.0,
            scored: 0,
            count: 0,
            events: Vec::new(),
        })
    }

    /// Losses scored, all time (a drift's `at` counts the same).
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// The settings.
    pub fn params(&self) -> &DriftParams {
        &self.params
    }

    /// Watches one prediction's loss; the drift, if it signals one.
    pub fn update(&mut self, loss: f64, event_time: Option<i64>) -> Option<DriftEvent> {
        if !loss.is_finite() {
            return None;
        }
        self.scored += 1;
        let DriftParams::PageHinkley {
            delta,
            threshold,
            min_readings,
        } = self.params;
        self.n += 1;
        let step = loss - self.mean;
        self.mean += step / self.n as f64;
        self.m2 += step * (loss - self.mean);
        let sd = if self.n > 1 {
            (self.m2 / (self.n - 1) as f64).sqrt()
        } else {
            0.0
        };
        self.sum += loss - self.mean - delta * sd;
        self.min = self.min.min(self.sum);
        if self.n < min_readings || sd == 0.0 || self.sum - self.min <= threshold * sd {
            return None;
        }
        let event = DriftEvent {
            at: self.scored,
            event_time,
            mean_loss: self.mean,
        };
        self.count += 1;
        if self.events.len() == Self::KEPT {
            self.events.remove(0);
        }
        self.events.push(event);
        self.n = 0;
        self.mean = 0.0;
        self.m2 = 0.0;
        self.sum = 0.0;
        self.min = 0.0;
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn detector() -> DriftDetector {
        DriftDetector::new(DriftParams::PageHinkley {
            delta: 0.25,
            threshold: 50.0,
            min_readings: 30,
        })
        .expect("valid")
    }

    #[test]
    fn a_rise_in_the_loss_is_signalled_soon_and_noise_is_not() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut d = detector();
        // 200,000 readings of noisy but steady loss: no alarm
        for _ in 0..200_000 {
            let loss: f64 = rng.random_range(0.0..2.0);
            assert!(
                d.update(loss, None).is_none(),
                "a false alarm at {}",
                d.scored
            );
        }
        // the mean loss rises from 1 to 2: signalled within a few hundred
        let mut when = None;
        for i in 0..2_000 {
            let loss: f64 = rng.random_range(1.0..3.0);
            if d.update(loss, Some(i)).is_some() {
                when = Some(i);
                break;
            }
        }
        let when = when.expect("the rise is signalled");
        // a rise of 1.7 standard deviations: about 50 / (1.7 - 0.25) readings
        assert!(when < 60, "signalled {when} readings after the change");
        assert_eq!(d.count, 1);
        assert_eq!(d.events[0].event_time, Some(when));
        assert!(d.events[0].mean_loss > 1.0);
    }

    #[test]
    fn settings_are_checked_and_round_trip() {
        let e = DriftDetector::new(DriftParams::PageHinkley {
            delta: 0.0,
            threshold: 0.0,
            min_readings: 1,
        })
        .expect_err("threshold 0");
        assert!(e.to_string().contains("`drift.threshold`"), "{e}");
        let p: DriftParams =
            serde_json::from_str(r#"{"kind": "page_hinkley", "threshold": 20.0}"#).expect("parses");
        assert_eq!(
            p,
            DriftParams::PageHinkley {
                delta: 0.25,
                threshold: 20.0,
                min_readings: 30
            }
        );
    }
}
