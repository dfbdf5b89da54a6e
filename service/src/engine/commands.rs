//! What people ask of a model's loop over HTTP: promotions and rollbacks
//! (`POST .../promote`, `.../rollback`) and labels (`POST .../labels`).
//! Queued on the [`super::ModelHandle`], carried out by the loop between
//! micro-batches on the partitions it owns, each changed partition
//! checkpointed in the next transaction (its events published in it), and
//! the outcome sent back to the request.

use std::sync::Mutex;

use anyhow::Result;
use tokio::sync::oneshot;

use super::outputs::outputs;
use super::state::Worker;
use crate::pipeline::{Promotion, Refused};

/// What a person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make this challenger the champion (`None`: the one that did best in
    /// its last window).
    Promote(Option<String>),
    /// Give the champion's place back to the one the last promotion took it from.
    Rollback,
}

/// Each owned partition's outcome.
pub type Outcomes = Vec<(i32, Result<Promotion, Refused>)>;

/// A request and where its answer goes.
pub enum Command {
    /// A change of champion; the answer per owned partition.
    Champion {
        /// What to do.
        action: Action,
        /// The answer, per owned partition.
        reply: oneshot::Sender<Outcomes>,
    },
    /// Labels (each a label message's JSON); the answer per label: the
    /// partition whose reading it joined, or why it did not.
    Labels {
        /// The label messages.
        labels: Vec<Vec<u8>>,
        /// The answer, per label.
        reply: oneshot::Sender<Vec<Result<i32, String>>>,
    },
}

/// The queue of requests a model's loop has not taken yet.
#[derive(Default)]
pub struct Queue(Mutex<Vec<Command>>);

impl Queue {
    /// Queues a request; the loop takes it between micro-batches.
    pub fn push(&self, c: Command) {
        if let Ok(mut q) = self.0.lock() {
            q.push(c);
        }
    }

    fn take(&self) -> Vec<Command> {
        self.0
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

impl Worker<'_> {
    /// After partition `p`'s pipeline changed by request: opens a
    /// transaction for it (unless one is open, or a commit is in flight:
    /// then its events are held for the next), publishes the events it
    /// signalled since `before`, and shows HTTP readers the new state.
    fn publish_change(&mut self, p: i32, before: (u64, u64)) -> Result<()> {
        let hold = self.ready_to_produce()?;
        let Some(part) = self.parts.get(&p) else {
            return Ok(());
        };
        let version = part.pipeline.version();
        let out = outputs!(self, part.pipeline,
            input: &self.input, partition: p, version: version, seq: 0);
        let held = if hold { Some(&mut self.held) } else { None };
        out.send_events(&mut self.buf, held, &part.pipeline, before)?;
        self.handle.publish(p, &part.pipeline, part.processed_to);
        Ok(())
    }

    /// Carries out the queued requests on every owned partition.
    pub(super) fn run_commands(&mut self) -> Result<()> {
        if self.replay.is_some() {
            return Ok(());
        }
        let commands = self.handle.commands.take();
        if commands.is_empty() {
            return Ok(());
        }
        let mut owned: Vec<i32> = self.parts.keys().copied().collect();
        owned.sort_unstable();
        for c in commands {
            let (action, reply) = match c {
                Command::Champion { action, reply } => (action, reply),
                Command::Labels { labels, reply } => {
                    let answers = self.join_labels(&owned, &labels)?;
                    let _ = reply.send(answers);
                    continue;
                }
            };
            let mut outcomes = Vec::new();
            for &p in &owned {
                let Some(part) = self.parts.get_mut(&p) else {
                    continue;
                };
                let before = part.pipeline.event_counts();
                let r = match &action {
                    Action::Promote(name) => part.pipeline.promote(name.as_deref()),
                    Action::Rollback => part.pipeline.rollback(),
                };
                if r.is_ok() {
                    // checkpointed in the next commit, every key under a new epoch
                    part.dirty = true;
                    part.epoch = 0;
                    self.publish_change(p, before)?;
                }
                outcomes.push((p, r));
            }
            let _ = reply.send(outcomes);
        }
        Ok(())
    }

    /// Joins labels sent over HTTP with the readings waiting for them in
    /// the owned partitions; a label whose reading waits in none is refused.
    fn join_labels(
        &mut self,
        owned: &[i32],
        labels: &[Vec<u8>],
    ) -> Result<Vec<Result<i32, String>>> {
        let mut answers = Vec::with_capacity(labels.len());
        for bytes in labels {
            let id = crate::pipeline::label_id_of(&self.handle.config, bytes);
            let Some(id) = id else {
                answers.push(Err(format!(
                    "a label should be a JSON object with the reading's `{}` and `{}`",
                    self.handle.config.label_id.as_deref().unwrap_or("id"),
                    self.handle.config.target.field
                )));
                continue;
            };
            let found = owned.iter().copied().find(|p| {
                self.parts
                    .get(p)
                    .is_some_and(|x| x.pipeline.awaits_label(&id))
            });
            let Some(p) = found else {
                answers.push(Err(format!("no reading with id {id:?} waits for a label on this instance (not arrived yet, labelled already, dropped after `label_window`, or in a partition another instance owns)")));
                continue;
            };
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            let mut results = Vec::with_capacity(1);
            let input = [crate::pipeline::Input { key: None, bytes }];
            let before = part.pipeline.event_counts();
            let stats = part.pipeline.apply_labels(&input, &mut results);
            match results.pop() {
                Some(Ok(())) => {}
                // the reading waits here: the label itself is wrong
                Some(Err(e)) => {
                    answers.push(Err(e.to_string()));
                    continue;
                }
                None => {
                    answers.push(Err("the label was not taken".into()));
                    continue;
                }
            }
            part.dirty = true;
            answers.push(Ok(p));
            self.handle
                .stats
                .learned
                .fetch_add(stats.learned as u64, std::sync::atomic::Ordering::Relaxed);
            // checkpointed with the next commit, learned or still waiting its turn
            self.publish_change(p, before)?;
        }
        Ok(answers)
    }
}
