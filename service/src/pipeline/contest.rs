//! Challengers: other learners (or feature sets) that learn the same
//! readings as the model in shadow (`[[model.challenger]]`). Each is a
//! whole pipeline of its own, scored prequentially on the same readings as
//! the champion; their losses are compared over tumbling windows of
//! `promotion.window` labelled readings, and a challenger whose mean loss
//! over a window is below the champion's by `promotion.margin` takes over
//! at the end of the micro-batch: the two pipelines change places, so the
//! old champion goes on learning in shadow (and may take over again).
//! Manual promotion and rollback do the same on request. Every promotion
//! is recorded with the versions on both sides, and all of it (the
//! challengers' state, the windows, the record) is in the checkpoint.

use serde::{Deserialize, Serialize};

use models::drift::DriftDetector;

use super::{loss, Outcome, Pipeline, PipelineSnapshot};
use crate::config::{PromotionConfig, BASE_LEARNER};

/// Promotions kept on record (the oldest go first).
const KEPT: usize = 100;

/// The champion's and a challenger's losses over the current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Labelled readings scored by both in the current window.
    pub readings: u64,
    /// The champion's summed loss over them.
    pub champion_loss: f64,
    /// The challenger's summed loss over them.
    pub challenger_loss: f64,
    /// The last closed window's mean losses: (champion, challenger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<(f64, f64)>,
    /// Windows closed since the challenger started (or the last promotion).
    #[serde(default)]
    pub closed: u64,
}

impl Window {
    fn add(&mut self, champion: f64, challenger: f64) {
        self.readings += 1;
        self.champion_loss += champion;
        self.challenger_loss += challenger;
    }

    /// Closes the window when it is full: its mean losses.
    fn close_if_full(&mut self, size: u64) -> Option<(f64, f64)> {
        if self.readings < size {
            return None;
        }
        let n = self.readings as f64;
        let means = (self.champion_loss / n, self.challenger_loss / n);
        *self = Window {
            last: Some(means),
            closed: self.closed + 1,
            ..Window::default()
        };
        Some(means)
    }
}

/// One change of champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The learner that was champion (`base`: the model's own).
    pub from: String,
    /// The learner that took over.
    pub to: String,
    /// The version the old champion had reached.
    pub from_version: u64,
    /// The new champion's version (always above `from_version`).
    pub to_version: u64,
    /// Readings the partition had processed when it happened.
    pub at: u64,
    /// Event time of the last reading before it (Unix ms), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
    /// Wall-clock time it happened (Unix ms).
    pub time_ms: u64,
    /// `auto` (a window won by the margin), `manual` or `rollback`.
    pub by: String,
    /// The mean losses of the window that decided it (champion,
    /// challenger); absent for a manual one without a closed window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub losses: Option<(f64, f64)>,
}

/// One challenger as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// The learner's name.
    pub name: String,
    /// Its comparison with the champion.
    pub window: Window,
}

/// The challengers of one partition's model.
#[derive(Debug)]
pub(super) struct Contest {
    params: PromotionConfig,
    /// The challengers' pipelines (empty in the copies HTTP readers get).
    entrants: Vec<Pipeline>,
    /// What readers see: each challenger's window, in `entrants` order.
    pub(super) standings: Vec<Standing>,
    /// The promotions, newest last (the last [`KEPT`]).
    pub(super) promotions: Vec<Promotion>,
    /// Promotions ever.
    pub(super) promotions_total: u64,
    /// `promotion.after_drift`: a drift has opened the current windows.
    pub(super) armed: bool,
}

/// The challengers' state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContestSnapshot {
    /// Each challenger's pipeline (its `learner` names it).
    pub entrants: Vec<PipelineSnapshot>,
    /// Each challenger's window, in the same order.
    pub standings: Vec<Standing>,
    /// The promotions on record, newest last.
    pub promotions: Vec<Promotion>,
    /// Promotions ever.
    pub promotions_total: u64,
    /// `promotion.after_drift`: a drift has opened the current windows.
    #[serde(default)]
    pub armed: bool,
}

/// Why a promotion or rollback asked for could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The model has no challengers.
    NoChallengers,
    /// No challenger of that name (the names there are).
    Unknown(String, Vec<String>),
    /// Nothing to roll back.
    NothingToRollBack,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoChallengers => write!(
                f,
                "the model has no challengers (`[[model.challenger]]` in its config)"
            ),
            Refused::Unknown(name, names) => write!(
                f,
                "no challenger named {name:?}; the challengers are {}",
                names.join(", ")
            ),
            Refused::NothingToRollBack => write!(f, "no promotion to roll back"),
        }
    }
}

impl Contest {
    pub(super) fn new(params: PromotionConfig, entrants: Vec<Pipeline>) -> Contest {
        let standings = entrants
            .iter()
            .map(|e| Standing {
                name: e.learner_name.clone(),
                window: Window::default(),
            })
            .collect();
        Contest {
            params,
            entrants,
            standings,
            promotions: Vec::new(),
            promotions_total: 0,
            armed: false,
        }
    }

    /// A copy for readers: the standings and record, no pipelines.
    pub(super) fn summary(&self) -> Contest {
        Contest {
            params: self.params,
            entrants: Vec::new(),
            standings: self.standings.clone(),
            promotions: self.promotions.clone(),
            promotions_total: self.promotions_total,
            armed: self.armed,
        }
    }

    pub(super) fn set_label_delay(&mut self, delay: super::LabelDelay) {
        for e in &mut self.entrants {
            e.set_label_delay(delay);
        }
    }

    pub(super) fn snapshot(&self) -> ContestSnapshot {
        ContestSnapshot {
            entrants: self.entrants.iter().map(Pipeline::snapshot).collect(),
            standings: self.standings.clone(),
            promotions: self.promotions.clone(),
            promotions_total: self.promotions_total,
            armed: self.armed,
        }
    }

    /// Index of the challenger named `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.entrants.iter().position(|e| e.learner_name == name)
    }

    fn names(&self) -> Vec<String> {
        self.entrants
            .iter()
            .map(|e| e.learner_name.clone())
            .collect()
    }
}

/// Processes a batch with the champion and its challengers. With
/// `test_then_train = "reading"` the batch is cut where a window may
/// close, so that a promotion takes effect right after the reading that
/// decided it, wherever micro-batches begin; with `"batch"`, at the end
/// of the batch. Each pipeline's version moves once per batch it learned.
pub(super) fn process<'a>(
    champion: &mut Pipeline,
    batch: &[super::Input<'a>],
    out: &mut Vec<Outcome<'a>>,
) -> super::BatchStats {
    out.clear();
    let learned_before: Vec<u64> = champion.contest.as_ref().map_or_else(Vec::new, |c| {
        c.entrants.iter().map(Pipeline::learned).collect()
    });
    let mut stats = super::BatchStats::default();
    let mut segment = Vec::new();
    let mut pos = 0;
    while pos < batch.len() {
        let len = if champion.per_reading {
            champion
                .contest
                .as_ref()
                .map_or(batch.len(), |c| c.readings_before_a_decision())
                .max(1)
        } else {
            batch.len()
        };
        let end = (pos + len).min(batch.len());
        let part = &batch[pos..end];
        let scored = champion.drift.as_ref().map_or(0, DriftDetector::scored);
        let s = champion.process_own(part, &mut segment);
        stats.predicted += s.predicted;
        stats.learned += s.learned;
        stats.invalid += s.invalid;
        stats.evicted += s.evicted;
        run(champion, part, &segment, scored);
        out.append(&mut segment);
        pos = end;
    }
    if stats.learned > 0 {
        champion.version += 1;
    }
    if let Some(c) = champion.contest.as_mut() {
        // the challengers are in the same slots whatever changed places
        for (e, before) in c.entrants.iter_mut().zip(learned_before) {
            if e.learned() != before {
                e.version += 1;
            }
        }
    }
    stats
}

impl Contest {
    /// Readings that can pass before any window may promote: a lower bound
    /// (every reading labelled and predicted by all).
    fn readings_before_a_decision(&self) -> usize {
        let p = self.params;
        if !p.auto || (p.after_drift && !self.armed) {
            // unarmed, a drift arms a fresh window of `window` readings
            return p.window as usize;
        }
        self.standings
            .iter()
            .map(|s| p.window.saturating_sub(s.window.readings) as usize)
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// Runs the champion's challengers on the batch it has just processed
/// (`out`: the champion's outcomes; its detector had scored `scored`
/// losses before the batch), scores them on the same readings and
/// promotes one that won its window by the margin.
fn run<'a>(champion: &mut Pipeline, batch: &[super::Input<'a>], out: &[Outcome<'a>], scored: u64) {
    let Some(mut c) = champion.contest.take() else {
        return;
    };
    let task = champion.task;
    let PromotionConfig {
        window: size,
        margin,
        auto,
        after_drift,
    } = c.params;
    // the labelled readings of this batch (counted from 1) at which the
    // champion's detector signalled
    let drifts: Vec<u64> = champion
        .drift
        .as_ref()
        .map(|d| {
            d.events
                .iter()
                .filter(|e| e.at > scored)
                .map(|e| e.at - scored)
                .collect()
        })
        .unwrap_or_default();
    let mut scratch = Vec::with_capacity(batch.len());
    let losses: Vec<Vec<Option<f64>>> = c
        .entrants
        .iter_mut()
        .map(|e| {
            e.process_own(batch, &mut scratch);
            let l = scored_losses(task, out, &scratch);
            scratch.clear();
            l
        })
        .collect();
    // the champion's losses on the readings every learner predicted
    let mine: Vec<Option<f64>> = out
        .iter()
        .map(|o| match o {
            Outcome::Predicted(p) => p
                .label
                .map(|y| loss(task, p.prediction, &p.probabilities, y)),
            Outcome::Invalid(_) => None,
        })
        .collect();
    // the challenger that won a window by the most, with that window's means
    let mut best: Option<(usize, (f64, f64))> = None;
    let mut labelled = 0;
    for (i, m) in mine.iter().enumerate() {
        let Some(champ_loss) = *m else { continue };
        labelled += 1;
        if after_drift && drifts.contains(&labelled) {
            // a drift opens one window, from this reading on
            c.armed = true;
            for s in &mut c.standings {
                s.window = Window {
                    last: s.window.last,
                    closed: s.window.closed,
                    ..Window::default()
                };
            }
        }
        let mut closed = false;
        for (j, l) in losses.iter().enumerate() {
            let Some(theirs) = l[i].filter(|x| x.is_finite()) else {
                continue;
            };
            let w = &mut c.standings[j].window;
            w.add(champ_loss, theirs);
            if let Some((champ, chall)) = w.close_if_full(size) {
                closed = true;
                let wins = chall < champ * (1.0 - margin);
                let better = best.is_none_or(|(_, (bc, bl))| chall / champ < bl / bc);
                if wins && better && auto && (!after_drift || c.armed) {
                    best = Some((j, (champ, chall)));
                }
            }
        }
        if closed && after_drift {
            // the window the drift opened is decided
            c.armed = false;
        }
    }
    if let Some((j, losses)) = best {
        let event_time = out.iter().rev().find_map(|o| match o {
            Outcome::Predicted(p) => p.event_time,
            Outcome::Invalid(_) => None,
        });
        swap(champion, &mut c, j, "auto", Some(losses), event_time);
    }
    champion.contest = Some(c);
}

/// A challenger's loss on each reading of the batch that both it and the
/// champion predicted with a label (else `None`).
fn scored_losses(
    task: models::metrics::Task,
    mine: &[Outcome<'_>],
    theirs: &[Outcome<'_>],
) -> Vec<Option<f64>> {
    mine.iter()
        .zip(theirs)
        .map(|(a, b)| match (a, b) {
            (Outcome::Predicted(a), Outcome::Predicted(b)) => a
                .label
                .map(|y| loss(task, b.prediction, &b.probabilities, y)),
            _ => None,
        })
        .collect()
}

/// Makes challenger `j` the champion: the pipelines change places (the
/// drift detector stays with the champion's role), the new champion's
/// version goes past the old one's, the windows start afresh, and the
/// promotion is recorded.
fn swap(
    champion: &mut Pipeline,
    c: &mut Contest,
    j: usize,
    by: &str,
    losses: Option<(f64, f64)>,
    event_time: Option<i64>,
) {
    let from_version = champion.version;
    let e = &mut c.entrants[j];
    std::mem::swap(champion, e);
    std::mem::swap(&mut champion.drift, &mut e.drift);
    champion.raise_version_past(from_version);
    let p = Promotion {
        from: e.learner_name.clone(),
        to: champion.learner_name.clone(),
        from_version,
        to_version: champion.version,
        at: champion.seen,
        event_time,
        time_ms: crate::live::now_ms(),
        by: by.to_owned(),
        losses,
    };
    tracing::warn!(model = %champion.name, from = %p.from, to = %p.to, by, from_version, to_version = p.to_version, losses = ?losses, "the model's champion changed");
    c.standings[j].name = e.learner_name.clone();
    for s in &mut c.standings {
        s.window = Window::default();
    }
    if c.promotions.len() == KEPT {
        c.promotions.remove(0);
    }
    c.promotions.push(p);
    c.promotions_total += 1;
}

impl Pipeline {
    /// The name of the learner that is champion: `base` (the model's own)
    /// or a challenger's.
    pub fn champion(&self) -> &str {
        &self.learner_name
    }

    /// The challengers' standings (empty without challengers).
    pub fn standings(&self) -> &[Standing] {
        self.contest.as_ref().map_or(&[], |c| &c.standings)
    }

    /// The promotions on record, newest last.
    pub fn promotions(&self) -> &[Promotion] {
        self.contest.as_ref().map_or(&[], |c| &c.promotions)
    }

    /// Promotions ever (kept in the checkpoints).
    pub fn promotions_total(&self) -> u64 {
        self.contest.as_ref().map_or(0, |c| c.promotions_total)
    }

    /// Makes the challenger `name` the champion now (`None`: the one with
    /// the lowest mean loss in its last closed window, else the first).
    pub fn promote(&mut self, name: Option<&str>) -> Result<Promotion, Refused> {
        let Some(mut c) = self.contest.take() else {
            return Err(Refused::NoChallengers);
        };
        let found = match name {
            Some(n) => c
                .find(n)
                .ok_or_else(|| Refused::Unknown(n.to_owned(), c.names())),
            None => Ok(c
                .standings
                .iter()
                .enumerate()
                .filter_map(|(j, s)| s.window.last.map(|(a, b)| (j, b / a)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(j, _)| j)),
        };
        let result = found.map(|j| {
            let losses = c.standings[j].window.last;
            swap(self, &mut c, j, "manual", losses, None);
            c.promotions.last().cloned()
        });
        self.contest = Some(c);
        result.and_then(|p| p.ok_or(Refused::NoChallengers))
    }

    /// Gives the champion's place back to the learner the last promotion
    /// took it from.
    pub fn rollback(&mut self) -> Result<Promotion, Refused> {
        let Some(mut c) = self.contest.take() else {
            return Err(Refused::NoChallengers);
        };
        let found = c
            .promotions
            .last()
            .ok_or(Refused::NothingToRollBack)
            .and_then(|p| c.find(&p.from).ok_or(Refused::NothingToRollBack));
        let result = found.map(|j| {
            swap(self, &mut c, j, "rollback", None, None);
            c.promotions.last().cloned()
        });
        self.contest = Some(c);
        result.and_then(|p| p.ok_or(Refused::NothingToRollBack))
    }

    /// Restores the challengers from a checkpoint: the champion's learner
    /// first (the pipeline built from the config's learner of that name
    /// takes the champion's place), then each challenger by name. A
    /// challenger the config no longer has is dropped, a new one starts
    /// afresh, one that cannot be restored (its features changed) starts
    /// afresh too; the log says which.
    pub(super) fn restore_champion(&mut self, champion: &str) {
        if champion == self.learner_name {
            return;
        }
        let Some(mut c) = self.contest.take() else {
            tracing::warn!(model = %self.name, checkpoint_champion = champion, "the checkpoint's champion is a challenger the config no longer has; the model's own learner takes over its state");
            return;
        };
        match c.find(champion) {
            Some(j) => {
                let e = &mut c.entrants[j];
                std::mem::swap(self, e);
                std::mem::swap(&mut self.drift, &mut e.drift);
                c.standings[j].name = e.learner_name.clone();
            }
            None => {
                tracing::warn!(model = %self.name, checkpoint_champion = champion, "the checkpoint's champion is a challenger the config no longer has; the model's own learner takes over its state")
            }
        }
        self.contest = Some(c);
    }

    /// Restores the challengers' state (after the champion's).
    pub(super) fn restore_contest(&mut self, snap: Option<ContestSnapshot>) {
        let (Some(c), Some(snap)) = (self.contest.as_mut(), snap) else {
            return;
        };
        c.promotions = snap.promotions;
        c.promotions_total = snap.promotions_total;
        c.armed = snap.armed;
        for (s, window) in snap.entrants.into_iter().zip(snap.standings) {
            let name = s.learner.clone().unwrap_or_else(|| BASE_LEARNER.to_owned());
            let Some(j) = c.find(&name) else {
                tracing::warn!(model = %self.name, challenger = %name, "the checkpoint has a challenger the config no longer has; dropped");
                continue;
            };
            match c.entrants[j].restore(s) {
                Ok(()) => c.standings[j].window = window.window,
                // a refused restore leaves the challenger as it was: fresh
                Err(e) => {
                    tracing::warn!(model = %self.name, challenger = %name, error = %format!("{e:#}"), "a challenger's checkpoint does not fit its config; it starts afresh")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Input;

    /// waits-v1 learning slowly, with a challenger learning fast and a
    /// drift detector; `promotion` as given (a TOML inline table).
    fn config(promotion: &str) -> crate::config::ModelConfig {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let env = [
            (
                "STREAMFIT_MODEL_WAITS_V1__LEARNER",
                "{ optimizer = { kind = \"adagrad\", learning_rate = 0.01 } }",
            ),
            (
                "STREAMFIT_MODEL_WAITS_V1__CHALLENGER",
                "[{ name = \"fast\", learner = { optimizer = { learning_rate = 1.0 } } }]",
            ),
            (
                "STREAMFIT_MODEL_WAITS_V1__DRIFT",
                "{ kind = \"page_hinkley\" }",
            ),
            ("STREAMFIT_MODEL_WAITS_V1__PROMOTION", promotion),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = crate::config::Config::parse(&text, env.into_iter()).expect("valid");
        c.model("waits-v1").expect("model").clone()
    }

    /// Two rides every 5 minutes; from reading `shift` on, soarin's posted
    /// waits are 30 minutes longer.
    fn readings(n: usize, shift: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let ride = if i % 2 == 0 { "soarin" } else { "dinosaur" };
                let minutes = (i / 2) * 5;
                let (day, rest) = (1 + minutes / (12 * 60), minutes % (12 * 60));
                let base = if ride == "soarin" { 40.0 } else { 20.0 };
                let noise = ((i * 7919) % 11) as f64 - 5.0;
                let wait = base + noise + if ride == "soarin" && i >= shift { 30.0 } else { 0.0 };
                format!(
                    r#"{{"ride":"{ride}","ts":"2018-03-{day:02}T{:02}:{:02}:00","posted_wait":{wait}}}"#,
                    8 + rest / 60,
                    rest % 60
                )
            })
            .collect()
    }

    fn inputs(readings: &[String]) -> Vec<Input<'_>> {
        readings
            .iter()
            .map(|r| Input {
                key: None,
                bytes: r.as_bytes(),
            })
            .collect()
    }

    /// Every prediction, in batches of `size`.
    fn run_in(p: &mut Pipeline, readings: &[String], size: usize) -> Vec<f64> {
        let inputs = inputs(readings);
        let mut out = Vec::new();
        let mut predictions = Vec::new();
        for chunk in inputs.chunks(size) {
            p.process(chunk, &mut out);
            predictions.extend(out.iter().map(|o| match o {
                Outcome::Predicted(p) => p.prediction,
                Outcome::Invalid(e) => panic!("valid reading refused: {e}"),
            }));
        }
        predictions
    }

    #[test]
    fn a_faster_challenger_takes_over_when_it_wins_a_window_by_the_margin() {
        let c = config("{ window = 200, margin = 0.05 }");
        let mut p = Pipeline::new(&c).expect("pipeline");
        assert_eq!(p.champion(), BASE_LEARNER);
        let r = readings(4000, 2000);
        run_in(&mut p, &r, 1);
        assert_eq!(p.champion(), "fast", "{:?}", p.promotions());
        let first = &p.promotions()[0];
        assert_eq!(
            (first.from.as_str(), first.to.as_str(), first.by.as_str()),
            ("base", "fast", "auto")
        );
        assert!(first.to_version > first.from_version);
        let (champ, chall) = first.losses.expect("the deciding window's losses");
        assert!(
            chall < champ * 0.95,
            "won by the margin: {champ} vs {chall}"
        );
        assert_eq!(first.at % 200, 0, "decided when a window closed: {first:?}");
        assert_eq!(p.promotions_total(), p.promotions().len() as u64);
        // the old champion learns on in shadow, under its own name
        assert_eq!(p.standings()[0].name, BASE_LEARNER);
    }

    #[test]
    fn a_promotion_takes_effect_after_the_reading_that_decided_it_wherever_batches_begin() {
        let c = config("{ window = 150, margin = 0.02 }");
        let r = readings(3000, 1500);
        let mut one = Pipeline::new(&c).expect("pipeline");
        let want = run_in(&mut one, &r, 1);
        assert!(!one.promotions().is_empty(), "the test needs a promotion");
        for size in [7, 256, 997] {
            let mut p = Pipeline::new(&c).expect("pipeline");
            let got = run_in(&mut p, &r, size);
            assert_eq!(got, want, "batches of {size}: the same predictions");
            let at = |p: &Pipeline| {
                p.promotions()
                    .iter()
                    .map(|x| (x.at, x.to.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(at(&p), at(&one), "batches of {size}: the same promotions");
            assert_eq!(p.snapshot().model, one.snapshot().model);
        }
    }

    #[test]
    fn after_drift_a_better_challenger_waits_for_the_detector() {
        let r = readings(3000, 100_000);
        let mut free = Pipeline::new(&config("{ window = 200 }")).expect("pipeline");
        run_in(&mut free, &r, 64);
        assert!(
            !free.promotions().is_empty(),
            "the fast learner wins on its own"
        );
        let mut gated =
            Pipeline::new(&config("{ window = 200, after_drift = true }")).expect("pipeline");
        run_in(&mut gated, &r, 64);
        assert_eq!(gated.drift().map(|d| d.count), Some(0), "a steady stream");
        assert!(gated.promotions().is_empty(), "no drift, no promotion");
        assert_eq!(gated.champion(), BASE_LEARNER);
    }

    #[test]
    fn the_checkpoint_keeps_the_champion_the_challengers_and_the_record() {
        let c = config("{ window = 200, margin = 0.05 }");
        let r = readings(5000, 2000);
        let mut p = Pipeline::new(&c).expect("pipeline");
        run_in(&mut p, &r[..3000], 100);
        assert_eq!(p.champion(), "fast");
        let snap = p.snapshot();
        let json = serde_json::to_string(&snap).expect("encodes");
        let mut q = Pipeline::new(&c).expect("pipeline");
        q.restore(serde_json::from_str(&json).expect("decodes"))
            .expect("restores");
        assert_eq!(q.champion(), "fast");
        assert_eq!(q.version(), p.version());
        assert_eq!(q.standings(), p.standings());
        assert_eq!(q.promotions(), p.promotions());
        let again = serde_json::to_string(&q.snapshot()).expect("encodes");
        assert!(again == json, "restored as written");
        // and both go on alike
        assert_eq!(
            run_in(&mut q, &r[3000..], 100),
            run_in(&mut p, &r[3000..], 100)
        );
        // the same state, but for the wall-clock time of the promotions made since
        let unclocked = |p: &Pipeline| {
            let mut s = p.snapshot();
            if let Some(c) = s.contest.as_mut() {
                c.promotions.iter_mut().for_each(|x| x.time_ms = 0);
            }
            s
        };
        let text = |s: PipelineSnapshot| serde_json::to_string(&s).expect("encodes");
        assert!(text(unclocked(&q)) == text(unclocked(&p)), "the same state");
    }

    #[test]
    fn a_challenger_with_its_own_features_keeps_them_through_a_promotion_and_a_restore() {
        let mut c = config("{ auto = false }");
        // the challenger without the lag of the wait: fewer columns
        let mut features = c.features.clone();
        features.retain(|f| !format!("{f:?}").contains("lag1"));
        assert!(features.len() < c.features.len());
        c.challenger[0].features = Some(features);
        let mut p = Pipeline::new(&c).expect("pipeline");
        let width = p.extractor().width();
        run_in(&mut p, &readings(600, 100_000), 50);
        assert!(p.promote(Some("fast")).is_ok());
        assert!(
            p.extractor().width() < width,
            "the champion now reads the challenger's features"
        );
        let mut q = Pipeline::new(&c).expect("pipeline");
        q.restore(p.snapshot()).expect("restores");
        assert_eq!(
            (q.champion(), q.extractor().width()),
            ("fast", p.extractor().width())
        );
        let r = readings(700, 100_000);
        assert_eq!(run_in(&mut q, &r[600..], 10), run_in(&mut p, &r[600..], 10));
    }

    #[test]
    fn people_promote_and_roll_back_by_name_and_mistakes_are_named() {
        let c = config("{ auto = false }");
        let mut p = Pipeline::new(&c).expect("pipeline");
        run_in(&mut p, &readings(500, 1000), 50);
        assert!(
            p.promotions().is_empty(),
            "auto = false promotes nothing by itself"
        );
        match p.promote(Some("nope")) {
            Err(Refused::Unknown(name, names)) => {
                assert_eq!((name.as_str(), names), ("nope", vec!["fast".to_owned()]))
            }
            other => panic!("unknown challenger: {other:?}"),
        }
        assert_eq!(p.rollback(), Err(Refused::NothingToRollBack));
        let v = p.version();
        let up = p.promote(Some("fast")).expect("promoted");
        assert_eq!((up.by.as_str(), p.champion()), ("manual", "fast"));
        assert!(p.version() > v);
        let back = p.rollback().expect("rolled back");
        assert_eq!(
            (back.from.as_str(), back.to.as_str(), back.by.as_str()),
            ("fast", "base", "rollback")
        );
        assert_eq!(p.champion(), BASE_LEARNER);
        assert_eq!(p.promotions_total(), 2);
        let mut plain = crate::config::Config::parse(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml"),
            )
            .expect("config"),
            std::iter::empty(),
        )
        .expect("valid")
        .model("waits-v1")
        .expect("model")
        .clone();
        plain.challenger.clear();
        let mut lone = Pipeline::new(&plain).expect("pipeline");
        assert_eq!(lone.promote(None), Err(Refused::NoChallengers));
    }
}
