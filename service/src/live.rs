//! [`Live`]: the models HTTP reads. Model state belongs to an input
//! partition (DESIGN.md: a partition's state moves with the partition), so a
//! model is one pipeline per partition this instance owns. The worker swaps
//! a new `Live` in after each micro-batch; readers never wait on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use models::metrics::{MetricSet, Prequential};

use crate::pipeline::Pipeline;

/// One model's live pipelines, by input partition.
#[derive(Debug, Clone)]
pub struct Live {
    fresh: Arc<Pipeline>,
    partitions: BTreeMap<i32, Arc<Pipeline>>,
    /// Next offset each partition's pipeline learns (-1: not known).
    offsets: BTreeMap<i32, i64>,
    /// When each partition's pipeline was swapped in (ms since the epoch).
    updated_ms: BTreeMap<i32, u64>,
    /// Readings each partition has processed, kept current after every
    /// micro-batch even when the batch learned nothing and its pipeline was
    /// not copied again (unlabelled readings).
    seen: BTreeMap<i32, u64>,
    /// Readings each partition holds waiting for their label (a model with
    /// `labels_topic`), kept current the same way: a batch of unlabelled
    /// readings adds to them without learning anything.
    labels_waiting: BTreeMap<i32, usize>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Live {
    /// No partition yet: reads are answered by a fresh pipeline.
    pub fn new(fresh: Pipeline) -> Live {
        Live {
            fresh: Arc::new(fresh),
            partitions: BTreeMap::new(),
            offsets: BTreeMap::new(),
            updated_ms: BTreeMap::new(),
            seen: BTreeMap::new(),
            labels_waiting: BTreeMap::new(),
        }
    }

    /// A copy with `partition`'s pipeline replaced by a readers' copy of
    /// `pipeline`, which has learned every reading before `next_offset`.
    pub fn with(&self, partition: i32, pipeline: &Pipeline, next_offset: i64) -> Live {
        let mut next = self.clone();
        next.seen.insert(partition, pipeline.seen());
        if let Some(w) = pipeline.labels_waiting() {
            next.labels_waiting.insert(partition, w);
        }
        next.partitions
            .insert(partition, Arc::new(pipeline.clone()));
        next.offsets.insert(partition, next_offset);
        next.updated_ms.insert(partition, now_ms());
        next
    }

    /// A copy in which `partition` has processed `seen` readings, up to
    /// `next_offset`, its model unchanged (a batch that learned nothing),
    /// and holds `labels_waiting` readings waiting for their label.
    pub fn with_progress(
        &self,
        partition: i32,
        seen: u64,
        labels_waiting: Option<usize>,
        next_offset: i64,
    ) -> Live {
        let mut next = self.clone();
        if next.partitions.contains_key(&partition) {
            next.seen.insert(partition, seen);
            next.offsets.insert(partition, next_offset);
            if let Some(w) = labels_waiting {
                next.labels_waiting.insert(partition, w);
            }
        }
        next
    }

    /// Readings `partition` has processed (0 if not owned).
    pub fn seen_of(&self, partition: i32) -> u64 {
        self.seen.get(&partition).copied().unwrap_or(0)
    }

    /// Readings `partition` holds waiting for their label (`None`: not
    /// owned, or the model has no labels topic).
    pub fn labels_waiting_of(&self, partition: i32) -> Option<usize> {
        self.labels_waiting.get(&partition).copied()
    }

    /// The next offset `partition`'s pipeline learns (-1: not known).
    pub fn next_offset(&self, partition: i32) -> i64 {
        self.offsets.get(&partition).copied().unwrap_or(-1)
    }

    /// A copy without the given partitions (revoked, or rolled back).
    pub fn without(&self, partitions: &[i32]) -> Live {
        let mut next = self.clone();
        for p in partitions {
            next.partitions.remove(p);
            next.offsets.remove(p);
            next.updated_ms.remove(p);
            next.seen.remove(p);
            next.labels_waiting.remove(p);
        }
        next
    }

    /// How long ago `partition`'s pipeline was swapped in, in ms.
    pub fn age_ms(&self, partition: i32) -> Option<u64> {
        self.updated_ms
            .get(&partition)
            .map(|&t| now_ms().saturating_sub(t))
    }

    /// `partition`'s pipeline, if this instance owns the partition.
    pub fn partition(&self, partition: i32) -> Option<&Pipeline> {
        self.partitions.get(&partition).map(Arc::as_ref)
    }

    /// The pipelines by partition.
    pub fn partitions(&self) -> impl Iterator<Item = (i32, &Pipeline)> {
        self.partitions.iter().map(|(p, m)| (*p, m.as_ref()))
    }

    /// The pipeline that answers for `key`: the partition's whose state holds
    /// the key (its readings arrive there), else the one that has seen the
    /// most readings, else a fresh one.
    pub fn route(&self, key: Option<&str>) -> (Option<i32>, &Pipeline) {
        key.and_then(|k| self.holder(k))
            .and_then(|p| self.partitions.get(&p).map(|m| (Some(p), m.as_ref())))
            .unwrap_or_else(|| self.primary())
    }

    /// The partition whose state holds `key` (its readings arrive there).
    pub fn holder(&self, key: &str) -> Option<i32> {
        self.partitions
            .iter()
            .find(|(_, m)| m.knows_key(key))
            .map(|(p, _)| *p)
    }

    /// The partition pipeline that has seen the most readings, or the fresh one.
    pub fn primary(&self) -> (Option<i32>, &Pipeline) {
        self.partitions
            .iter()
            .max_by_key(|(p, m)| (m.seen(), std::cmp::Reverse(**p)))
            .map_or((None, self.fresh.as_ref()), |(p, m)| (Some(*p), m.as_ref()))
    }

    /// Sum of the partitions' versions: goes up with every learned batch.
    pub fn version(&self) -> u64 {
        self.partitions.values().map(|m| m.version()).sum()
    }

    /// Readings processed, over all partitions.
    pub fn seen(&self) -> u64 {
        self.seen.values().sum()
    }

    /// Readings learned, over all partitions.
    pub fn learned(&self) -> u64 {
        self.partitions.values().map(|m| m.learned()).sum()
    }

    /// Learning steps refused, over all partitions.
    pub fn learn_errors(&self) -> u64 {
        self.partitions.values().map(|m| m.learn_errors()).sum()
    }

    /// Drifts signalled by the partitions' detectors, all time (from their
    /// checkpoints); `None` when the model has no detector.
    pub fn drifts(&self) -> Option<u64> {
        self.partitions
            .values()
            .map(|m| m.drift().map(|d| d.count))
            .reduce(|a, b| Some(a? + b?))
            .flatten()
    }

    /// Champion changes in the partitions, all time (from their checkpoints).
    pub fn promotions(&self) -> u64 {
        self.partitions.values().map(|m| m.promotions_total()).sum()
    }

    /// A multiclass model's classes over all partitions, in the order
    /// its metrics' `class_f1` use: each
    /// partition numbers the classes it learns in its own order of
    /// appearance, so this is the primary partition's classes, then those
    /// only other partitions have learned, by partition (declared classes:
    /// the declared list, as every partition has it).
    pub fn classes(&self) -> Vec<String> {
        let mut all = self.primary().1.classes().to_vec();
        for m in self.partitions.values() {
            for c in m.classes() {
                if !all.contains(c) {
                    all.push(c.clone());
                }
            }
        }
        all
    }

    /// Per class number of `pipeline`, its number in `classes` (those of
    /// [`Live::classes`]).
    fn class_numbers(classes: &[String], pipeline: &Pipeline) -> Vec<u32> {
        pipeline
            .classes()
            .iter()
            .map(|c| classes.iter().position(|x| x == c).unwrap_or(0) as u32)
            .collect()
    }

    /// Live metrics over all partitions: cumulative and rolling (a
    /// multiclass model's classes numbered as [`Live::classes`]).
    pub fn metrics(&self) -> (MetricSet, MetricSet) {
        let classes = self.classes();
        let mut all: Option<Prequential> = None;
        for m in self.partitions.values() {
            all.get_or_insert_with(|| m.prequential().empty_like())
                .merge_classes(m.prequential(), &Self::class_numbers(&classes, m));
        }
        all.map_or_else(|| self.fresh.metrics(), |a| (a.cumulative(), a.rolling()))
    }

    /// One partition's metrics, cumulative and rolling, its classes
    /// numbered as [`Live::classes`].
    pub fn metrics_of(&self, pipeline: &Pipeline) -> (MetricSet, MetricSet) {
        let classes = self.classes();
        let mut m = pipeline.prequential().empty_like();
        m.merge_classes(
            pipeline.prequential(),
            &Self::class_numbers(&classes, pipeline),
        );
        (m.cumulative(), m.rolling())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let config = crate::config::Config::load(&path).expect("config");
        Pipeline::new(config.model("waits-v1").expect("model")).expect("pipeline")
    }

    /// The shipped `sentiment` model with its classes learned, not declared.
    fn learned_classes() -> Pipeline {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let env = [(
            "STREAMFIT_MODEL_SENTIMENT__TARGET".to_owned(),
            r#"{ field = "sentiment" }"#.to_owned(),
        )];
        let config = crate::config::Config::parse(&text, env.into_iter()).expect("valid");
        Pipeline::new(config.model("sentiment").expect("model")).expect("pipeline")
    }

    /// Feeds `p` `n` tweets of each (class, words) in turn, one at a time;
    /// gives each scored reading's (predicted, label) class names (none
    /// predicted while no class was known).
    fn moods(p: &mut Pipeline, moods: &[(&str, &str, usize)]) -> Vec<(Option<String>, String)> {
        let mut named = Vec::new();
        for &(class, words, n) in moods {
            for i in 0..n {
                let json =
                    format!(r#"{{"text":"{words} {i}","airline":"United","sentiment":"{class}"}}"#);
                let input = crate::pipeline::Input {
                    key: None,
                    bytes: json.as_bytes(),
                };
                let mut out = Vec::new();
                p.process(std::slice::from_ref(&input), &mut out);
                for o in &out {
                    if let crate::pipeline::Outcome::Predicted(x) = o {
                        let name = |k: f64| p.classes()[k as usize].clone();
                        let predicted = (!x.prediction.is_nan()).then(|| name(x.prediction));
                        named.push((predicted, name(x.label.expect("label"))));
                    }
                }
            }
        }
        named
    }

    #[test]
    fn partitions_that_learned_their_classes_in_another_order_merge_by_name() {
        let (mut p0, mut p1) = (learned_classes(), learned_classes());
        let a = moods(
            &mut p0,
            &[
                ("negative", "late lost awful", 30),
                ("neutral", "what time boarding", 10),
                ("positive", "great thanks lovely", 5),
            ],
        );
        let b = moods(
            &mut p1,
            &[
                ("positive", "great thanks lovely", 30),
                ("neutral", "what time boarding", 5),
                ("negative", "late lost awful", 10),
            ],
        );
        assert_eq!(p0.classes(), ["negative", "neutral", "positive"]);
        assert_eq!(p1.classes(), ["positive", "neutral", "negative"]);
        let live = Live::new(learned_classes())
            .with(0, &p0, 45)
            .with(1, &p1, 45);
        let classes = live.classes();
        assert_eq!(classes, p0.classes(), "the busiest partition's, first");
        let number = |c: &str| classes.iter().position(|x| x == c).expect("class") as u32;
        let scores = |named: &[(Option<String>, String)]| -> Vec<models::metrics::ClassScore> {
            named
                .iter()
                .map(|(p, l)| models::metrics::ClassScore {
                    predicted: p
                        .as_deref()
                        .map_or(models::metrics::ClassScore::NO_CLASS, number),
                    label: number(l),
                    p_label: 0.5,
                })
                .collect()
        };
        let want = models::metrics::evaluate_classes(&scores(&[a.clone(), b.clone()].concat()));
        let (got, _) = live.metrics();
        assert_eq!(got.class_f1, want.class_f1);
        assert_eq!(got.macro_f1, want.macro_f1);
        assert_eq!(got.accuracy, want.accuracy);
        // merged by number, partition 1's positive would count as negative
        let mut by_number = p0.prequential().clone();
        by_number.merge(p1.prequential());
        assert_ne!(by_number.cumulative().class_f1, want.class_f1);
        // one partition's metrics, numbered as `classes`
        let one = models::metrics::evaluate_classes(&scores(&b));
        assert_eq!(live.metrics_of(&p1).0.class_f1, one.class_f1);
        assert_ne!(p1.metrics().0.class_f1, one.class_f1);
    }

    #[test]
    fn readings_seen_and_waiting_follow_every_batch_without_copying_the_model() {
        let live = Live::new(pipeline()).with(0, &pipeline(), 10);
        assert_eq!(live.seen(), 0);
        let live = live
            .with_progress(0, 7, Some(2), 17)
            .with_progress(3, 5, Some(4), 5);
        assert_eq!(live.seen(), 7, "a partition not owned is not counted");
        assert_eq!(live.seen_of(0), 7);
        assert_eq!(live.next_offset(0), 17);
        assert_eq!(
            live.labels_waiting_of(0),
            Some(2),
            "readings waiting for labels"
        );
        assert_eq!(live.labels_waiting_of(3), None);
        let live = live.without(&[0]);
        assert_eq!((live.seen(), live.labels_waiting_of(0)), (0, None));
    }
}
