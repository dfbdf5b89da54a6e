//! `streamfit eval --horizon 60m`: how well a regression answers for a
//! time ahead. Each reading is predicted by the model and keyed state as
//! they were `horizon` earlier in event time (every reading at least that
//! much older learned, none newer), through the same read-only path as
//! `POST /v1/models/{name}/predict`, and scored beside persistence at the
//! same horizon: the key's last labelled value known then (any day; 0 when
//! none).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, ensure, Result};
use features::datasets::KeyedReading;
use models::metrics::{evaluate, MetricSet, Task};
use serde::Serialize;

use crate::config::{ModelConfig, TestThenTrain};
use crate::pipeline::{Input, LabelDelay, Pipeline};

/// How far ahead: a time (`90s`, `60m`, `2h`, `1d`) in milliseconds, and
/// as it was written; `0` is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    /// Milliseconds of event time (0: none).
    pub ms: i64,
    /// As written.
    pub text: String,
}

impl std::str::FromStr for Horizon {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ms = match s.parse::<LabelDelay>()? {
            LabelDelay::None => 0,
            LabelDelay::EventTime(ms) => ms,
            LabelDelay::Readings(_) => {
                return Err(format!(
                    "a horizon is a time ahead (90s, 60m, 2h, 1d), not a number of readings: {s:?}"
                ))
            }
        };
        Ok(Horizon {
            ms,
            text: s.to_owned(),
        })
    }
}

/// What is known of a reading without any state.
struct Known {
    /// Event time, Unix milliseconds (`i64::MIN`: none).
    time: i64,
    label: Option<f64>,
    key: Option<String>,
}

/// Model and persistence over one range of the scored readings.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    /// The model's figures.
    pub model: MetricSet,
    /// Persistence at the same horizon.
    pub persistence: MetricSet,
}

/// The figures of one horizon evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct HorizonReport {
    /// Model name.
    pub model: String,
    /// The horizon as given.
    pub horizon: String,
    /// Readings in the stream.
    pub readings: usize,
    /// Readings scored (labelled and valid).
    pub scored: usize,
    /// Readings rejected by the decoder or features.
    pub invalid: usize,
    /// Scored readings by what their prediction rested on: the baseline
    /// feature that had a value, or `none`.
    pub basis: HashMap<String, u64>,
    /// Wall seconds of the run.
    pub seconds: f64,
    /// Over all scored readings.
    pub all: Pair,
    /// Over the first 20% of the scored readings.
    pub first_20pct: Pair,
    /// Over the last 80%.
    pub last_80pct: Pair,
}

impl HorizonReport {
    /// The report as a few lines of text.
    pub fn to_text(&self) -> String {
        let f = |m: &MetricSet| {
            format!(
                "MAE {:.3}  RMSE {:.3}",
                m.mae.unwrap_or(f64::NAN),
                m.rmse.unwrap_or(f64::NAN)
            )
        };
        let mut basis: Vec<_> = self.basis.iter().collect();
        basis.sort();
        let mut s = format!(
            "model {}  horizon {}  scored {} of {} readings ({} invalid)  {:.1} s\n",
            self.model, self.horizon, self.scored, self.readings, self.invalid, self.seconds
        );
        for (name, p) in [
            ("all", &self.all),
            ("first 20%", &self.first_20pct),
            ("last 80%", &self.last_80pct),
        ] {
            s += &format!(
                "  {name:<10} model {}   persistence {}\n",
                f(&p.model),
                f(&p.persistence)
            );
        }
        s += &format!("  rested on: {basis:?}");
        s
    }
}

/// Runs the horizon protocol over `readings` (in stream order).
pub fn run(
    config: &ModelConfig,
    readings: &[KeyedReading],
    horizon: &Horizon,
) -> Result<HorizonReport> {
    let horizon_ms = horizon.ms;
    ensure!(
        horizon_ms > 0,
        "`--horizon` should be a time > 0, but is {:?}",
        horizon.text
    );
    ensure!(
        config.timestamp.is_some(),
        "`--horizon` needs event times: model {} names no `timestamp` field",
        config.name
    );
    if config.model_task() != Task::Regression {
        bail!(
            "`--horizon` scores regressions (beside persistence); model {} is a {} model (`task`)",
            config.name,
            format!("{:?}", config.model_task()).to_lowercase()
        );
    }
    let mut each = config.clone();
    each.test_then_train = TestThenTrain::Reading;
    let mut pipeline = Pipeline::new(&each)?;
    let names: Vec<String> = config
        .baseline
        .as_ref()
        .map(|b| b.names().to_vec())
        .unwrap_or_default();
    let inputs: Vec<Input<'_>> = readings.iter().map(Input::from).collect();
    // event time, label and key of each reading, from a model that knows
    // nothing (`None`: the features refuse the reading)
    let fresh = Pipeline::new(&each)?;
    let known: Vec<Option<Known>> = inputs
        .iter()
        .map(|i| {
            fresh.predict_one(i.bytes, i.key).ok().map(|p| Known {
                time: p.event_time.unwrap_or(i64::MIN),
                label: p.label,
                key: p.key.map(|k| k.into_owned()),
            })
        })
        .collect();
    if let Some(i) = known
        .iter()
        .position(|k| k.as_ref().is_some_and(|k| k.time == i64::MIN))
    {
        bail!("reading {i} has no event time: `--horizon` needs one on every reading");
    }
    let start = Instant::now();
    let (mut preds, mut persist, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    let mut basis: HashMap<String, u64> = HashMap::new();
    let mut last: HashMap<String, f64> = HashMap::new();
    let (mut learned, mut invalid) = (0, 0);
    let mut outcomes = Vec::with_capacity(1);
    for (p, input) in inputs.iter().enumerate() {
        let Some(this) = &known[p] else {
            invalid += 1;
            continue;
        };
        // learn every earlier reading at least `horizon` older
        while learned < p {
            match &known[learned] {
                Some(k) if k.time > this.time - horizon_ms => break,
                Some(Known {
                    label: Some(y),
                    key: Some(key),
                    ..
                }) => {
                    last.insert(key.clone(), *y);
                }
                _ => {}
            }
            // a reading the features refuse was counted when it was predicted
            pipeline.process(&inputs[learned..=learned], &mut outcomes);
            learned += 1;
        }
        let Some(y) = this.label else { continue };
        let Ok(r) = pipeline.predict_one(input.bytes, input.key) else {
            invalid += 1;
            continue;
        };
        preds.push(r.prediction);
        labels.push(y);
        persist.push(
            this.key
                .as_ref()
                .and_then(|k| last.get(k))
                .copied()
                .unwrap_or(0.0),
        );
        let on = match r.basis {
            Some((j, _)) => names.get(j).cloned().unwrap_or_default(),
            None => "none".to_owned(),
        };
        *basis.entry(on).or_default() += 1;
    }
    let n = preds.len();
    let fifth = n / 5;
    let pair = |r: std::ops::Range<usize>| Pair {
        model: evaluate(Task::Regression, &preds[r.clone()], &labels[r.clone()]),
        persistence: evaluate(Task::Regression, &persist[r.clone()], &labels[r]),
    };
    Ok(HorizonReport {
        model: config.name.clone(),
        horizon: horizon.text.clone(),
        readings: readings.len(),
        scored: n,
        invalid,
        basis,
        seconds: start.elapsed().as_secs_f64(),
        all: pair(0..n),
        first_20pct: pair(0..fifth),
        last_80pct: pair(fifth..n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::Config;

    fn config() -> ModelConfig {
        let text = r#"
            [kafka]
            "bootstrap.servers" = "127.0.0.1:9092"
            [[model]]
            name = "w"
            task = "regression"
            input_topic = "w.in"
            output_topic = "w.out"
            key = "ride"
            timestamp = "ts"
            target = { field = "wait" }
            baseline = ["lag1", "usual"]
            features = [
              { kind = "lag", field = "wait", reset = "daily", name = "lag1" },
              { kind = "profile", field = "wait", name = "usual" },
            ]
        "#;
        let c = Config::parse(text, std::iter::empty()).expect("valid");
        c.model("w").expect("model").clone()
    }

    fn h(s: &str) -> Horizon {
        s.parse().expect("a horizon")
    }

    fn reading(day: u32, minute: u32, wait: f64) -> KeyedReading {
        let json = format!(
            r#"{{"ride": "a", "ts": "2018-01-{day:02}T{:02}:{:02}:00", "wait": {wait}}}"#,
            9 + minute / 60,
            minute % 60
        );
        KeyedReading {
            key: Some("a".into()),
            json: json.into_bytes(),
        }
    }

    #[test]
    fn readings_inside_the_horizon_are_not_known_when_predicting() {
        // day 1: 10 every 10 minutes for two hours, then 100 from 11:00
        let mut rs: Vec<KeyedReading> = (0..12).map(|i| reading(1, i * 10, 10.0)).collect();
        rs.extend((12..18).map(|i| reading(1, i * 10, 100.0)));
        let r = run(&config(), &rs, &h("60m")).expect("runs");
        assert_eq!(r.scored, 18);
        // persistence at 60 minutes: 0 for the first hour (nothing known),
        // then 10 until an hour after the first 100
        let at_horizon = |k: usize| if k < 6 { 0.0_f64 } else { 10.0 };
        let mae: f64 = rs
            .iter()
            .enumerate()
            .map(|(k, _)| (at_horizon(k) - if k < 12 { 10.0 } else { 100.0 }).abs())
            .sum::<f64>()
            / 18.0;
        assert!((r.all.persistence.mae.expect("mae") - mae).abs() < 1e-9);
        // the first six readings had nothing known: no basis; the rest lag1
        assert_eq!(r.basis.get("none"), Some(&6));
        assert_eq!(r.basis.get("lag1"), Some(&12));
        // the same stream with no horizon in between: the model's error on
        // the 100s is far smaller (it sees the jump through lag1)
        let none = run(&config(), &rs, &h("1s")).expect("runs");
        assert!(none.all.model.mae < r.all.model.mae);
    }

    #[test]
    fn a_day_ahead_rests_on_the_profile_of_earlier_days() {
        // days 1 and 2 at 9:00-10:00, then day 3 predicted a day ahead
        let mut rs = Vec::new();
        for day in 1..=3 {
            rs.extend((0..6).map(|i| reading(day, i * 10, f64::from(day) * 10.0)));
        }
        let r = run(&config(), &rs, &h("1d")).expect("runs");
        assert_eq!(r.basis.get("usual"), Some(&12), "{:?}", r.basis);
        assert_eq!(r.basis.get("none"), Some(&6));
        assert_eq!(r.basis.get("lag1"), None);
    }

    #[test]
    fn a_classifier_or_a_stream_without_times_is_refused() {
        let mut c = config();
        c.timestamp = None;
        let e = run(&c, &[reading(1, 0, 1.0)], &h("1m")).expect_err("refused");
        assert!(format!("{e:#}").contains("needs event times"), "{e:#}");
        let mut c = config();
        c.task = crate::config::TaskName::Classification;
        c.baseline = None;
        let e = run(&c, &[reading(1, 0, 1.0)], &h("1m")).expect_err("refused");
        assert!(format!("{e:#}").contains("scores regressions"), "{e:#}");
    }

    #[test]
    fn a_horizon_is_a_time_ahead() {
        assert_eq!(h("60m").ms, 3_600_000);
        assert_eq!(h("1d").ms, 86_400_000);
        assert_eq!(h("0").ms, 0);
        let e = "100".parse::<Horizon>().expect_err("refused");
        assert!(e.contains("not a number of readings"), "{e}");
        assert!("soon".parse::<Horizon>().is_err());
    }
}
