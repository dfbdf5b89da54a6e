//! Positions in a topic: where a replay or backfill starts ([`From`]) and
//! stops ([`To`]), parsed from the command line or an HTTP body and
//! resolved to offsets per partition. A leaf: used by the engine's backfill
//! and by the replay driver.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::kafka::Logs;
use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub enum From {
    /// The first offset still in the topic.
    Earliest,
    /// The end of each partition: nothing from the topic (a backfill from a
    /// file only).
    Latest,
    /// The first reading at or after this time (Unix ms), per partition.
    Time(i64),
    /// Explicit offsets; partitions not listed are not replayed.
    Offsets(BTreeMap<i32, i64>),
}

/// Where a replay stops.
#[derive(Debug, Clone, PartialEq)]
pub enum To {
    /// The end of each partition when the replay starts.
    Latest,
    /// Before the first reading at or after this time (Unix ms).
    Time(i64),
}

/// Where a consumer group continues, in words: `partition 0 offset 120,
/// partition 1 offset 7` (`its group's offsets` when none are given).
pub fn in_words(next: &BTreeMap<i32, i64>) -> String {
    if next.is_empty() {
        return "its group's offsets".to_owned();
    }
    next.iter()
        .map(|(p, offset)| format!("partition {p} offset {offset}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `--from`: `earliest`, a timestamp, or `PARTITION:OFFSET,...`.
pub fn parse_from(s: &str) -> Result<From> {
    parse_from_as(s, "--from")
}

/// Parses a start given as `name` (`--from` on the command line, `from` in
/// an HTTP body).
pub fn parse_from_as(s: &str, name: &str) -> Result<From> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("earliest") {
        return Ok(From::Earliest);
    }
    if s.eq_ignore_ascii_case("latest") {
        return Ok(From::Latest);
    }
    if s.contains(':') && !s.contains('-') && !s.contains('T') {
        let mut offsets = BTreeMap::new();
        for part in s.split(',') {
            let (p, o) = part
                .split_once(':')
                .with_context(|| format!("`{name}` {part:?} should be PARTITION:OFFSET"))?;
            let p: i32 = p
                .trim()
                .parse()
                .with_context(|| format!("`{name}` {part:?}: the partition should be a number"))?;
            let o: i64 = o
                .trim()
                .parse()
                .with_context(|| format!("`{name}` {part:?}: the offset should be a number"))?;
            if p < 0 || o < 0 {
                bail!("`{name}` {part:?}: partition and offset should not be negative");
            }
            offsets.insert(p, o);
        }
        return Ok(From::Offsets(offsets));
    }
    parse_time(s, name).map(From::Time)
}

/// Parses `--to`: `latest` or a timestamp.
pub fn parse_to(s: &str) -> Result<To> {
    if s.trim().eq_ignore_ascii_case("latest") {
        return Ok(To::Latest);
    }
    parse_time(s.trim(), "--to").map(To::Time)
}

/// A timestamp as Unix milliseconds: ISO 8601 (UTC unless it has an
/// offset) or a number of Unix milliseconds.
pub fn parse_time(s: &str, flag: &str) -> Result<i64> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = features::time::Timestamp::parse(s).with_context(|| {
        format!("`{flag}` should be earliest/latest, an ISO 8601 time such as 2018-06-01T00:00:00Z, Unix milliseconds, or PARTITION:OFFSET,...; got {s:?}")
    })?;
    let offset = i64::from(t.offset_minutes.unwrap_or(0));
    Ok(t.days * 86_400_000 + (t.seconds * 1000.0).round() as i64 - offset * 60_000)
}

/// Resolves start and end offsets per partition of `topic`.
pub fn resolve(
    consumer: &BaseConsumer<Logs>,
    topic: &str,
    from: &From,
    to: &To,
) -> Result<(BTreeMap<i32, i64>, BTreeMap<i32, i64>)> {
    let timeout = Duration::from_secs(30);
    let partitions = crate::kafka::partition_ids(consumer, topic, timeout)
        .with_context(|| format!("cannot read the metadata of {topic}"))?;
    if partitions.is_empty() {
        bail!("topic {topic} does not exist or has no partitions");
    }
    let mut marks = BTreeMap::new();
    for &p in &partitions {
        let w = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("cannot read the offsets of {topic}/{p}"))?;
        marks.insert(p, w);
    }
    let at_time = |ms: i64| -> Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ms))
                .context("cannot build the time lookup")?;
        }
        let found = consumer
            .offsets_for_times(tpl, timeout)
            .with_context(|| format!("cannot look up offsets by time in {topic}"))?;
        let mut out = BTreeMap::new();
        for e in found.elements_for_topic(topic) {
            let high = marks.get(&e.partition()).map_or(0, |w| w.1);
            // no reading at or after the time: the partition's end
            let o = match e.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => high,
            };
            out.insert(e.partition(), o);
        }
        Ok(out)
    };
    let start = match from {
        From::Earliest => marks.iter().map(|(&p, w)| (p, w.0)).collect(),
        From::Latest => marks.iter().map(|(&p, w)| (p, w.1)).collect(),
        From::Time(ms) => at_time(*ms)?,
        From::Offsets(o) => {
            for (p, off) in o {
                let Some(&(lo, hi)) = marks.get(p) else {
                    bail!("`--from`: {topic} has no partition {p} (it has {partitions:?})");
                };
                if *off < lo || *off > hi {
                    bail!("`--from`: offset {off} of {topic}/{p} is outside what the partition holds ({lo}..{hi})");
                }
            }
            o.clone()
        }
    };
    let end = match to {
        To::Latest => marks.iter().map(|(&p, w)| (p, w.1)).collect(),
        To::Time(ms) => at_time(*ms)?,
    };
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_starts_and_ends() {
        assert_eq!(parse_from("earliest").expect("ok"), From::Earliest);
        assert_eq!(
            parse_from("0:10, 2:7").expect("ok"),
            From::Offsets([(0, 10), (2, 7)].into_iter().collect())
        );
        assert_eq!(
            parse_from("2018-01-01T00:00:00Z").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(
            parse_from("2018-01-01T01:00:00+01:00").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(
            parse_from("1514764800000").expect("ok"),
            From::Time(1_514_764_800_000)
        );
        assert_eq!(parse_to("latest").expect("ok"), To::Latest);
        let e = parse_from("yesterday").expect_err("not a time");
        assert!(format!("{e:#}").contains("`--from`"), "{e:#}");
        assert!(parse_from("0:x").is_err());
    }
}
