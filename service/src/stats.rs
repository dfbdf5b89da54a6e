//! Live counters of a model, shared by its worker and the HTTP API, and
//! their Prometheus text rendering.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histograms, in seconds.
pub const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram over [`BUCKETS`] (then +Inf), with the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines with `labels`
    /// (`model="m"` and any others) inside the braces.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let sum = self.micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cum}"
        );
    }
}

/// Counters of one model.
#[derive(Debug, Default)]
pub struct ModelStats {
    /// Readings consumed.
    pub consumed: AtomicU64,
    /// Readings predicted.
    pub predicted: AtomicU64,
    /// Readings learned from.
    pub learned: AtomicU64,
    /// Readings sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Time to predict, learn and publish each micro-batch.
    pub batch: Histogram,
    /// Exactly once: each commit, from the committer taking it to the
    /// broker's answer (checkpoints, offsets and the transaction's end).
    pub commit: Histogram,
    /// Exactly once: `send_offsets_to_transaction`, the round trips that
    /// add the consumed offsets to the transaction.
    pub commit_offsets: Histogram,
    /// Exactly once: `commit_transaction`, the outputs' flush and the
    /// transaction's end (markers written on every partition).
    pub commit_end: Histogram,
    /// Commits: transactions (exactly once) or offset commits (at least once).
    pub commits: AtomicU64,
    /// Transactions aborted and rolled back.
    pub aborts: AtomicU64,
    /// Times the loop gave its Kafka clients up (a call stuck in librdkafka)
    /// and started new ones.
    pub client_restarts: AtomicU64,
    /// Keys evicted to keep within `max_keys`.
    pub key_evictions: AtomicU64,
    /// Bytes of checkpoint records written (base and key records).
    pub checkpoint_bytes: AtomicU64,
    /// Key records written (changed keys, or every key of a new epoch).
    pub checkpoint_keys: AtomicU64,
    /// Column page records written (pages that learning changed, or every
    /// page of a new epoch or a restored model).
    pub checkpoint_pages: AtomicU64,
}

/// One model's figures for the Prometheus page.
pub struct Exposed<'a> {
    /// Model name.
    pub name: &'a str,
    /// Its counters.
    pub stats: &'a ModelStats,
    /// Consumer lag (-1 unknown).
    pub lag: i64,
    /// Model version.
    pub version: u64,
    /// Drifts signalled, when the model has a detector.
    pub drifts: Option<u64>,
    /// Challengers promoted (automatically or by hand), when the model has
    /// challengers.
    pub promotions: Option<u64>,
}

/// Picks one of a model's histograms.
type HistogramOf = fn(&ModelStats) -> &Histogram;

/// Renders Prometheus text exposition for the given models.
pub fn render(models: &[Exposed<'_>]) -> String {
    let mut out = String::new();
    let counters = [
        (
            "streamfit_readings_consumed_total",
            "Readings consumed from the input topic.",
            0,
        ),
        (
            "streamfit_readings_predicted_total",
            "Readings predicted.",
            1,
        ),
        (
            "streamfit_readings_learned_total",
            "Readings learned from.",
            2,
        ),
        (
            "streamfit_readings_dead_lettered_total",
            "Readings sent to the dead-letter topic.",
            3,
        ),
        (
            "streamfit_commits_total",
            "Transactions (or offset commits, at least once) committed.",
            4,
        ),
        (
            "streamfit_aborts_total",
            "Transactions aborted and rolled back to the last checkpoint.",
            5,
        ),
        (
            "streamfit_client_restarts_total",
            "Kafka clients given up (a transactional call stuck in librdkafka) and started anew.",
            6,
        ),
        (
            "streamfit_key_evictions_total",
            "Keys evicted (least recently used) to keep within max_keys; they fall back to the shared model.",
            7,
        ),
        (
            "streamfit_checkpoint_bytes_total",
            "Bytes of checkpoint records written in committed and aborted transactions.",
            8,
        ),
        (
            "streamfit_checkpoint_key_records_total",
            "Per-key checkpoint records written (keys that changed, or every key of a new epoch).",
            9,
        ),
        (
            "streamfit_checkpoint_page_records_total",
            "Sparse column page records written (pages that learning changed, or every page of a new epoch or a restored model).",
            10,
        ),
    ];
    for (name, help, which) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for m in models {
            let v = match which {
                0 => &m.stats.consumed,
                1 => &m.stats.predicted,
                2 => &m.stats.learned,
                3 => &m.stats.dead_lettered,
                4 => &m.stats.commits,
                5 => &m.stats.aborts,
                6 => &m.stats.client_restarts,
                7 => &m.stats.key_evictions,
                8 => &m.stats.checkpoint_bytes,
                9 => &m.stats.checkpoint_keys,
                _ => &m.stats.checkpoint_pages,
            };
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\"}} {}",
                m.name,
                v.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# HELP streamfit_consumer_lag Messages behind the end of the input topic.\n# TYPE streamfit_consumer_lag gauge");
    for m in models {
        let _ = writeln!(
            out,
            "streamfit_consumer_lag{{model=\"{}\"}} {}",
            m.name, m.lag
        );
    }
    let _ = writeln!(out, "# HELP streamfit_model_version Micro-batches learned by the live model.\n# TYPE streamfit_model_version gauge");
    for m in models {
        let _ = writeln!(
            out,
            "streamfit_model_version{{model=\"{}\"}} {}",
            m.name, m.version
        );
    }
    let _ = writeln!(out, "# HELP streamfit_drifts Drifts signalled by the detectors of the partitions this instance holds (all time, kept in their checkpoints).\n# TYPE streamfit_drifts gauge");
    for m in models {
        if let Some(d) = m.drifts {
            let _ = writeln!(out, "streamfit_drifts{{model=\"{}\"}} {d}", m.name);
        }
    }
    let _ = writeln!(out, "# HELP streamfit_promotions Champion changes (promotions and rollbacks) in the partitions this instance holds (all time, kept in their checkpoints).\n# TYPE streamfit_promotions gauge");
    for m in models {
        if let Some(n) = m.promotions {
            let _ = writeln!(out, "streamfit_promotions{{model=\"{}\"}} {n}", m.name);
        }
    }
    let histograms: [(&str, &str, HistogramOf); 4] = [
        (
            "streamfit_batch_seconds",
            "Time to predict, learn and publish one micro-batch.",
            |s| &s.batch,
        ),
        (
            "streamfit_commit_seconds",
            "Exactly once: one commit, from the committer taking it to the broker's answer (checkpoints, offsets, end of transaction).",
            |s| &s.commit,
        ),
        (
            "streamfit_commit_offsets_seconds",
            "Exactly once: send_offsets_to_transaction, the round trips adding the consumed offsets to the transaction.",
            |s| &s.commit_offsets,
        ),
        (
            "streamfit_commit_end_seconds",
            "Exactly once: commit_transaction, flushing the outputs and ending the transaction.",
            |s| &s.commit_end,
        ),
    ];
    for (name, help, of) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for m in models {
            of(m.stats).render(&mut out, name, &format!("model=\"{}\"", m.name));
        }
    }
    if let Some(rss) = crate::memory::resident_bytes() {
        let name = "process_resident_memory_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Resident memory size in bytes.\n# TYPE {name} gauge\n{name} {rss}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let s = ModelStats::default();
        s.batch.observe(0.0001);
        s.batch.observe(0.003);
        s.batch.observe(5.0);
        s.commit_end.observe(0.04);
        let text = render(&[Exposed {
            name: "m",
            stats: &s,
            lag: 3,
            version: 7,
            drifts: None,
            promotions: None,
        }]);
        assert!(
            text.contains("streamfit_batch_seconds_bucket{model=\"m\",le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(text.contains("streamfit_batch_seconds_bucket{model=\"m\",le=\"0.005\"} 2"));
        assert!(text.contains("streamfit_batch_seconds_bucket{model=\"m\",le=\"+Inf\"} 3"));
        assert!(text.contains("streamfit_batch_seconds_count{model=\"m\"} 3"));
        assert!(text.contains("streamfit_commit_end_seconds_bucket{model=\"m\",le=\"0.03\"} 0"));
        assert!(text.contains("streamfit_commit_end_seconds_bucket{model=\"m\",le=\"0.05\"} 1"));
        assert!(text.contains("streamfit_commit_seconds_count{model=\"m\"} 0"));
        assert!(text.contains("streamfit_consumer_lag{model=\"m\"} 3"));
        assert!(text.contains("streamfit_model_version{model=\"m\"} 7"));
    }
}
