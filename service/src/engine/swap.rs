//! A live backfill's turn in the loop: between live micro-batches the
//! shadow model ([`super::backfill`]) is started when HTTP asked for one,
//! advanced by a slice of time, and swapped in for every partition at once
//! when it has caught up with the live model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::backfill::{self, Shadow};
use super::state::Worker;

/// The longest a live backfill learns between two live micro-batches.
const BACKFILL_SLICE: Duration = Duration::from_millis(20);

impl<'c> Worker<'c> {
    /// Where the live model stands: the next offset it learns, per owned
    /// partition (-1 while not known).
    pub(super) fn live_positions(&self) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .map(|(p, x)| {
                let at = if x.processed_to >= 0 {
                    x.processed_to
                } else {
                    self.committed.get(p).map_or(-1, |c| c.next_offset)
                };
                (*p, at)
            })
            .collect()
    }

    /// Starts a backfill asked for over HTTP, advances a running one by a
    /// slice of time, and swaps it in once it has caught up.
    pub(super) fn backfill_step(&mut self) -> Result<()> {
        let slot = &self.handle.backfill;
        let lock = |slot: &'c std::sync::Mutex<backfill::Slot>| {
            slot.lock()
                .map_err(|_| anyhow::anyhow!("the backfill status lock is poisoned"))
        };
        let fail = |message: String| -> Result<()> {
            tracing::warn!(model = %self.handle.config.name, error = %message, "backfill failed");
            let mut s = lock(slot)?;
            if let Some(st) = s.status.as_mut() {
                st.state = backfill::State::Failed;
                st.error = Some(message);
            }
            Ok(())
        };
        if self.shadow.is_none() {
            let (from, label) = {
                let mut s = lock(slot)?;
                let Some(from) = s.request.take() else {
                    return Ok(());
                };
                let label = s.status.as_ref().map(|st| st.from.clone());
                (from, label.unwrap_or_default())
            };
            let live = self.live_positions();
            let owned: Vec<i32> = live.keys().copied().collect();
            if owned.is_empty() {
                return fail("this instance owns no partition of the input topic yet; try again once /readyz answers 200".into());
            }
            match Shadow::start(
                self.config,
                &self.handle.config,
                &self.group,
                &self.input,
                &owned,
                &from,
                label,
            ) {
                Ok(s) => {
                    tracing::info!(model = %self.handle.config.name, partitions = ?owned, "backfill started");
                    self.shadow = Some(s);
                }
                Err(e) => return fail(format!("{e:#}")),
            }
        }
        let live = self.live_positions();
        let Some(shadow) = self.shadow.as_mut() else {
            return Ok(());
        };
        if !shadow.partitions().eq(live.keys().copied()) {
            self.shadow = None;
            return fail("the partition assignment changed during the backfill (an instance joined or left the group); start it again".into());
        }
        let caught_up = match shadow.step(&live, BACKFILL_SLICE) {
            Ok(c) => c,
            Err(e) => {
                self.shadow = None;
                return fail(format!("{e:#}"));
            }
        };
        let status = shadow.status(&live);
        if !caught_up {
            lock(slot)?.status = Some(status);
            return Ok(());
        }
        let Some(shadow) = self.shadow.take() else {
            return Ok(());
        };
        let live_seen: u64 = shadow
            .partitions()
            .filter_map(|p| self.parts.get(&p))
            .map(|x| x.pipeline.seen())
            .sum();
        let force = lock(slot)?.force;
        if shadow.seen() < live_seen && !force {
            return fail(format!(
                "the backfilled model knows {} readings, fewer than the live model's {live_seen} (its history reaches further back than `from`, or retention deleted readings it learned): it was not swapped in; ask again with \"force\": true to swap it in all the same",
                shadow.seen()
            ));
        }
        if self.eos && !self.in_txn && self.in_flight.is_none() {
            // the swapped-in models are checkpointed in the next commit (or
            // in the one after the commit in flight)
            self.begin()?;
        }
        let mut next = (**self.handle.live.load()).clone();
        for (p, mut pipeline) in shadow.into_pipelines() {
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            // versions only go up, whatever the shadow's count of batches
            pipeline.raise_version_past(part.pipeline.version());
            part.pipeline = pipeline;
            part.dirty = true;
            // its keyed state does not follow from the last checkpoint's:
            // the next one writes every key under a new epoch
            part.epoch = 0;
            next = next.with(p, &part.pipeline, part.processed_to);
        }
        // one store: HTTP sees every partition's new model at once
        self.handle.live.store(Arc::new(next));
        let mut status = status;
        status.state = backfill::State::Swapped;
        tracing::info!(model = %self.handle.config.name, readings = status.readings, seconds = status.seconds, "backfill caught up and swapped in");
        lock(slot)?.status = Some(status);
        Ok(())
    }
}
