//! Per-key records: a partition's keyed state (each key's own model, lags
//! and last use) is written one record per key, apart from the rest of the
//! checkpoint (the base), so that a commit writes only the keys that
//! changed since the last one.
//!
//! Every record carries the *epoch* of the base it belongs to. A partition
//! whose state does not follow from its last checkpoint (a first
//! checkpoint, a model swapped in) writes every key under a new epoch; a
//! restore takes the base and only the key records of the base's epoch,
//! the newest of each key, so records of an older state are never mixed in.
//! An evicted key's record is a tombstone, which compaction removes.

use std::sync::Arc;

use anyhow::{Context, Result};
use features::{KeyMap, KeyState};
use models::LinearModel;
use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineSnapshot;

/// The record key of `key` in the partition whose base is keyed `base`.
pub fn record_key(base: &str, key: &str) -> String {
    format!("{base}/k/{key}")
}

/// What the key record of a key holds (written).
#[derive(Serialize)]
struct Out<'a> {
    epoch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    used: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a LinearModel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    features: Option<&'a KeyState>,
}

/// What the key record of a key holds (read).
#[derive(Debug, Deserialize)]
pub struct KeyRecord {
    /// The epoch of the base this record belongs to.
    pub epoch: u64,
    #[serde(default)]
    used: Option<u64>,
    #[serde(default)]
    model: Option<LinearModel>,
    #[serde(default)]
    features: Option<KeyState>,
}

impl KeyRecord {
    /// Decodes a key record's value.
    pub fn decode(bytes: &[u8]) -> Result<KeyRecord> {
        serde_json::from_slice(bytes).context("a key record of the checkpoint does not decode")
    }
}

/// A pipeline snapshot taken apart: the base (no keyed state) and each
/// key's state.
pub struct Split {
    /// The snapshot without its keyed state.
    pub base: PipelineSnapshot,
    features: KeyMap,
    models: imbl::OrdMap<String, Arc<LinearModel>>,
    used: imbl::HashMap<String, u64>,
}

/// Takes the keyed state out of `snap`.
pub fn split(mut snap: PipelineSnapshot) -> Split {
    let features = snap.features.take_keys();
    let models = snap
        .model
        .model
        .dense_mut()
        .map(|m| m.take_key_models())
        .unwrap_or_default();
    let used = snap.recency.take_ticks();
    Split {
        base: snap,
        features,
        models,
        used,
    }
}

impl Split {
    /// Every key with state, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .features
            .keys()
            .chain(self.models.keys())
            .chain(self.used.keys())
            .cloned()
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Encodes `key`'s record of `epoch` into `buf`; false (and `buf` empty)
    /// when the key has no state any more: its record is a tombstone.
    pub fn encode(&self, key: &str, epoch: u64, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        let out = Out {
            epoch,
            used: self.used.get(key).copied(),
            model: self.models.get(key).map(Arc::as_ref),
            features: self.features.get(key).map(Arc::as_ref),
        };
        if out.used.is_none() && out.model.is_none() && out.features.is_none() {
            return Ok(false);
        }
        serde_json::to_writer(&mut *buf, &out)
            .with_context(|| format!("cannot encode the checkpoint of key {key:?}"))?;
        Ok(true)
    }
}

/// Puts `key`'s state from its record back into a base snapshot.
pub fn rebuild(base: &mut PipelineSnapshot, key: &str, record: KeyRecord) {
    base.features.set_key(key, record.features);
    if let Some(m) = base.model.model.dense_mut() {
        m.set_key_model(key, record.model);
    }
    if record.used.is_some() {
        base.recency.set(key, record.used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Input, Pipeline};

    fn learned(max_keys: Option<usize>) -> Pipeline {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let config = crate::config::Config::parse(&text, std::iter::empty()).expect("valid");
        let mut m = config.model("waits").expect("waits").clone();
        m.max_keys = max_keys;
        let mut p = Pipeline::new(&m).expect("pipeline");
        let readings: Vec<(String, String)> = (0..60)
            .map(|i| {
                let ride = format!("ride-{}", i % 7);
                let json = format!(
                    r#"{{"ride":"{ride}","ts":"2018-06-01T{:02}:{:02}:00","posted_wait":{}}}"#,
                    8 + i / 60,
                    i % 60,
                    5 * (i % 9)
                );
                (ride, json)
            })
            .collect();
        let inputs: Vec<Input<'_>> = readings
            .iter()
            .map(|(k, r)| Input {
                key: Some(k.as_str()),
                bytes: r.as_bytes(),
            })
            .collect();
        let mut out = Vec::new();
        let stats = p.process(&inputs, &mut out);
        assert!(stats.learned > 0 && stats.evicted > 0, "{stats:?}");
        p
    }

    #[test]
    fn a_snapshot_taken_apart_and_rebuilt_is_the_same_snapshot() {
        let mut p = learned(Some(5));
        let snap = p.snapshot();
        assert!(snap.model.model.key_count() > 0 && snap.features.key_count() > 0);
        let parts = split(snap.clone());
        assert_eq!(parts.base.model.model.key_count(), 0);
        assert_eq!(parts.base.features.key_count(), 0);
        let keys = parts.keys();
        assert_eq!(keys.len(), 5, "capped at 5 of 7 rides: {keys:?}");
        assert_eq!(p.take_changed().len(), 7, "every ride changed");
        let mut back = parts.base.clone();
        let mut buf = Vec::new();
        for k in &keys {
            assert!(parts.encode(k, 9, &mut buf).expect("encodes"));
            let r = KeyRecord::decode(&buf).expect("decodes");
            assert_eq!(r.epoch, 9);
            rebuild(&mut back, k, r);
        }
        // as data (scratch buffers are not state)
        let json = |s: &PipelineSnapshot| serde_json::to_value(s).expect("encodes");
        assert!(json(&back) == json(&snap), "rebuilt as it was");
        // an evicted key has no state: its record is a tombstone
        let gone = (0..7)
            .map(|i| format!("ride-{i}"))
            .find(|k| !keys.contains(k))
            .expect("an evicted ride");
        assert!(!parts.encode(&gone, 9, &mut buf).expect("encodes"));
    }
}
