//! How a prediction reads in JSON, the same on the output topic and from
//! `/predict`: `prediction` (the value; class 0 or 1 with its `probability`; or
//! the class's name with `probabilities` per class) and the `label` as the
//! reading gave it.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use models::Task;

use crate::pipeline::Prediction;

/// A predicted or given value: a number, a class's name, or nothing (a
/// multiclass model that knows no class yet).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value<'a> {
    /// A number.
    Num(f64),
    /// Class 0 or 1 of a binary model.
    Int(u8),
    /// A class of a multiclass model.
    Class(&'a str),
    /// No class known yet.
    None,
}

/// Each class's probability, written as an object in class order.
#[derive(Debug, Clone, Copy)]
pub struct ClassProbs<'a> {
    classes: &'a [String],
    probs: &'a [f64],
}

impl Serialize for ClassProbs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.probs.len()))?;
        for (c, p) in self.classes.iter().zip(self.probs) {
            m.serialize_entry(c, p)?;
        }
        m.end()
    }
}

/// The JSON fields of one prediction.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rendered<'a> {
    /// The value, class 0/1, or the class's name.
    pub prediction: Value<'a>,
    /// Binary: the probability of class 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Multiclass: each class's probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<ClassProbs<'a>>,
    /// The reading's label, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Value<'a>>,
}

/// What a regression with a baseline rests on: the baseline feature that
/// had a value for this reading (`lag1`: the key's last value today;
/// `profile`: its usual value at this time of day on earlier days) and that
/// value, or `null` and 0 when none had one (the model's features alone).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Basis<'a> {
    /// The baseline feature used, if any had a value.
    pub baseline: Option<&'a str>,
    /// Its value (0 when none).
    pub baseline_value: f64,
}

/// The basis of `p` made by a model whose baselines, in order of
/// preference, are `names`; `None` for a model without a baseline.
pub fn basis<'a>(names: &'a [String], p: &Prediction<'_>) -> Option<Basis<'a>> {
    if names.is_empty() {
        return None;
    }
    Some(match p.basis {
        Some((j, value)) => Basis {
            baseline: names.get(j).map(String::as_str),
            baseline_value: value,
        },
        None => Basis {
            baseline: None,
            baseline_value: 0.0,
        },
    })
}

fn class(classes: &[String], v: f64) -> Value<'_> {
    features::extract::class_name(classes, v).map_or(Value::None, Value::Class)
}

/// Renders `p` made by a model of `task` whose classes are `classes`.
pub fn render<'a>(task: Task, classes: &'a [String], p: &'a Prediction<'_>) -> Rendered<'a> {
    match task {
        Task::Regression => Rendered {
            prediction: Value::Num(p.prediction),
            probability: None,
            probabilities: None,
            label: p.label.map(Value::Num),
        },
        Task::Classification => Rendered {
            prediction: Value::Int(u8::from(p.prediction >= 0.5)),
            probability: Some(p.prediction),
            probabilities: None,
            label: p.label.map(Value::Num),
        },
        Task::Multiclass => Rendered {
            prediction: class(classes, p.prediction),
            probability: None,
            probabilities: Some(ClassProbs {
                classes,
                probs: &p.probabilities,
            }),
            label: p.label.map(|l| class(classes, l)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(
        prediction: f64,
        probabilities: Vec<f64>,
        label: Option<f64>,
    ) -> Prediction<'static> {
        Prediction {
            key: None,
            prediction,
            probabilities,
            label,
            event_time: None,
            basis: None,
        }
    }

    #[test]
    fn a_basis_names_the_baseline_used_or_null() {
        let names = ["lag1".to_owned(), "profile".into()];
        let mut p = prediction(30.0, vec![], None);
        assert_eq!(basis(&[], &p), None, "no baseline, no basis");
        assert_eq!(
            serde_json::to_value(basis(&names, &p)).expect("json"),
            serde_json::json!({ "baseline": null, "baseline_value": 0.0 })
        );
        p.basis = Some((1, 61.5));
        assert_eq!(
            serde_json::to_value(basis(&names, &p)).expect("json"),
            serde_json::json!({ "baseline": "profile", "baseline_value": 61.5 })
        );
    }

    #[test]
    fn each_task_reads_as_its_contract_says() {
        let classes = ["negative".to_owned(), "neutral".into(), "positive".into()];
        let json = |task, p: &Prediction<'_>| {
            serde_json::to_value(render(task, &classes, p)).expect("json")
        };
        assert_eq!(
            json(Task::Regression, &prediction(42.5, vec![], Some(40.0))),
            serde_json::json!({ "prediction": 42.5, "label": 40.0 })
        );
        assert_eq!(
            json(Task::Classification, &prediction(0.75, vec![], None)),
            serde_json::json!({ "prediction": 1, "probability": 0.75 })
        );
        assert_eq!(
            json(
                Task::Multiclass,
                &prediction(2.0, vec![0.1, 0.2, 0.7], Some(0.0))
            ),
            serde_json::json!({
                "prediction": "positive",
                "probabilities": { "negative": 0.1, "neutral": 0.2, "positive": 0.7 },
                "label": "negative"
            })
        );
        assert_eq!(
            json(Task::Multiclass, &prediction(f64::NAN, vec![], None)),
            serde_json::json!({ "prediction": null, "probabilities": {} }),
            "no class known yet"
        );
    }
}
