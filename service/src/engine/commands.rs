//! Promotions and rollbacks asked for over HTTP (`POST .../promote`,
//! `.../rollback`): queued on the [`ModelHandle`], carried out by the
//! model's loop between micro-batches on every partition it owns, each
//! changed partition checkpointed in the next transaction (its events
//! published in it), and the outcome per partition sent back to the
//! request.

use std::sync::Mutex;

use anyhow::Result;
use tokio::sync::oneshot;

use super::outputs::Outputs;
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
pub struct Command {
    /// What to do.
    pub action: Action,
    /// The answer, per owned partition.
    pub reply: oneshot::Sender<Outcomes>,
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
    /// Carries out the queued requests on every owned partition.
    pub(super) fn run_commands(&mut self) -> Result<()> {
        if self.replay.is_some() {
            return Ok(());
        }
        let commands = self.handle.commands.take();
        if commands.is_empty() {
            return Ok(());
        }
        if self.eos && !self.in_txn && self.in_flight.is_none() {
            self.begin()?;
        }
        // a commit in flight: the events wait for the next transaction
        let hold = self.eos && !self.in_txn;
        let mut owned: Vec<i32> = self.parts.keys().copied().collect();
        owned.sort_unstable();
        for c in commands {
            let mut outcomes = Vec::new();
            for &p in &owned {
                let Some(part) = self.parts.get_mut(&p) else {
                    continue;
                };
                let before = part.pipeline.event_counts();
                let r = match &c.action {
                    Action::Promote(name) => part.pipeline.promote(name.as_deref()),
                    Action::Rollback => part.pipeline.rollback(),
                };
                if r.is_ok() {
                    // checkpointed in the next commit, every key under a new epoch
                    part.dirty = true;
                    part.epoch = 0;
                    let out = Outputs {
                        producer: self.producer,
                        name: &self.handle.config.name,
                        task: part.pipeline.task(),
                        classes: part.pipeline.classes(),
                        input: &self.input,
                        output: &self.output,
                        dead: &self.dead,
                        events: self.events.as_deref(),
                        partition: p,
                        version: part.pipeline.version(),
                        seq: 0,
                        dead_limit: self.dead_limit,
                    };
                    let held = if hold { Some(&mut self.held) } else { None };
                    out.send_events(&mut self.buf, held, &part.pipeline, before)?;
                    self.handle.publish(p, &part.pipeline, part.processed_to);
                }
                outcomes.push((p, r));
            }
            let _ = c.reply.send(outcomes);
        }
        Ok(())
    }
}
