//! Which instance answers for a key: the key's partition (computed with the
//! producers' partitioner) and the group member that owns that partition.
//!
//! Discovery goes through Kafka, like Kafka Streams' `application.server`:
//! every instance's consumer carries its HTTP URL in its `client.id`
//! (`<prefix>|<instance>|<url>`), and the group's member list (DescribeGroups)
//! pairs each member's client id with its current assignment. A refresher
//! keeps a [`Directory`] per model; `/predict` reads it without waiting on
//! Kafka and forwards a reading whose partition another instance owns.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Separates the parts of a member's client id.
const SEP: char = '|';

/// The `client.id` an instance's consumer announces itself with.
pub fn client_id(user: Option<&str>, instance: &str, url: &str) -> String {
    format!("{}{SEP}{instance}{SEP}{url}", user.unwrap_or("streamfit"))
}

/// The instance name and URL from a member's client id, if it is ours.
pub fn parse_client_id(id: &str) -> Option<(&str, &str)> {
    let mut parts = id.rsplitn(3, SEP);
    let url = parts.next()?;
    let instance = parts.next()?;
    parts.next()?;
    (url.starts_with("http://") || url.starts_with("https://")).then_some((instance, url))
}

/// The partitions of `topic` in a member's assignment (Kafka's consumer
/// protocol `Assignment`: version, then topics with their partitions).
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Result<Vec<i32>> {
    let mut r = Reader(assignment);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let name_len = r.i16()?;
        let name = r.bytes(name_len.max(0) as usize)?;
        let n = r.i32()?;
        for _ in 0..n.max(0) {
            let p = r.i32()?;
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("member assignment is truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// How producers spread keys over partitions (`service.key_partitioner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPartitioner {
    /// librdkafka's default (`consistent_random`): CRC-32 of the key.
    ConsistentRandom,
    /// The Java client's default (`murmur2_random` in librdkafka).
    Murmur2Random,
}

impl KeyPartitioner {
    /// The partition a key lands on among `partitions`.
    pub fn partition(self, key: &[u8], partitions: i32) -> i32 {
        if partitions <= 0 {
            return 0;
        }
        let h = match self {
            KeyPartitioner::ConsistentRandom => u64::from(crc32(key)),
            KeyPartitioner::Murmur2Random => u64::from(murmur2(key) & 0x7fff_ffff),
        };
        (h % partitions as u64) as i32
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE, as zlib and librdkafka compute it).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java producer hashes keys.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// One group member that owns partitions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Owner {
    /// The instance's name (`service.instance_id` or its default).
    pub instance: String,
    /// Its HTTP API.
    pub url: String,
}

/// Who owns which partition of one model's input topic.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Partitions of the input topic (0 while unknown).
    pub partitions: i32,
    /// Owner by partition.
    pub owners: BTreeMap<i32, Owner>,
}

impl Directory {
    /// Reads the group's members and the topic's partition count.
    pub fn read<C: rdkafka::consumer::ConsumerContext>(
        client: &BaseConsumer<C>,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Directory> {
        let partitions = crate::kafka::partition_ids(client, topic, timeout)
            .with_context(|| format!("cannot read the partitions of {topic}"))?
            .len() as i32;
        let groups = client
            .fetch_group_list(Some(group), timeout)
            .with_context(|| format!("cannot describe consumer group {group}"))?;
        let mut owners = BTreeMap::new();
        for g in groups.groups() {
            for m in g.members() {
                let Some((instance, url)) = parse_client_id(m.client_id()) else {
                    continue;
                };
                let Some(assignment) = m.assignment() else {
                    continue;
                };
                let Ok(parts) = assigned_partitions(assignment, topic) else {
                    tracing::debug!(member = m.id(), "member assignment does not parse");
                    continue;
                };
                for p in parts {
                    owners.insert(
                        p,
                        Owner {
                            instance: instance.to_owned(),
                            url: url.to_owned(),
                        },
                    );
                }
            }
        }
        Ok(Directory { partitions, owners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        // the standard check value of CRC-32/ISO-HDLC
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // values from Kafka's UtilsTest.testMurmur2
        let cases: [(&[u8], i32); 3] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
        ];
        for (key, want) in cases {
            assert_eq!(
                murmur2(key) as i32,
                want,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn client_ids_round_trip_and_foreign_ones_are_ignored() {
        let id = client_id(Some("a|b"), "host-8080", "http://127.0.0.1:8080");
        assert_eq!(
            parse_client_id(&id),
            Some(("host-8080", "http://127.0.0.1:8080"))
        );
        assert_eq!(parse_client_id("rdkafka"), None);
        assert_eq!(parse_client_id("x|y|not-a-url"), None);
    }

    #[test]
    fn assignments_parse_and_truncation_is_an_error() {
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (topic, parts) in [("other", vec![0i32]), ("in", vec![1, 4])] {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        assert_eq!(assigned_partitions(&b, "in").expect("parses"), vec![1, 4]);
        assert!(assigned_partitions(&b[..9], "in").is_err());
    }

    #[test]
    fn keys_spread_over_every_partition() {
        for kp in [
            KeyPartitioner::ConsistentRandom,
            KeyPartitioner::Murmur2Random,
        ] {
            let mut seen = [false; 6];
            for i in 0..100 {
                let p = kp.partition(format!("key-{i}").as_bytes(), 6);
                seen[p as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "{kp:?}");
        }
    }
}
