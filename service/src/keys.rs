//! The keys of a partition's state: which changed since the last
//! checkpoint (so a checkpoint writes only those), and, when the model caps
//! its keys (`max_keys`), which was used least recently (so it is the one
//! evicted).
//!
//! Recency is counted in readings, not wall time: the same readings evict
//! the same keys, so a partition restored from its checkpoint and fed the
//! same readings ends in the same state as one that never stopped.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use features::extract::FxHasher;

use serde::{Deserialize, Serialize};

/// Which key was used when: a reading clock and each key's last tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recency {
    /// Ticks so far (keyed readings seen while the cap is on).
    pub clock: u64,
    /// Each key's last tick.
    pub last: imbl::HashMap<String, u64>,
    /// Keys by last tick, oldest first (rebuilt from `last` when restored).
    #[serde(skip)]
    order: imbl::OrdMap<u64, String>,
}

impl Recency {
    /// Records a use of `key`; returns the key to evict if that takes the
    /// keys past `max_keys`.
    pub fn touch(&mut self, key: &str, max_keys: usize) -> Option<String> {
        self.clock += 1;
        let tick = self.clock;
        match self.last.get_mut(key) {
            Some(t) => {
                let old = std::mem::replace(t, tick);
                self.order.remove(&old);
            }
            None => {
                self.last.insert(key.to_owned(), tick);
            }
        }
        self.order.insert(tick, key.to_owned());
        if self.last.len() <= max_keys {
            return None;
        }
        let (oldest, victim) = self.order.get_min().map(|(t, k)| (*t, k.clone()))?;
        self.order.remove(&oldest);
        self.last.remove(&victim);
        Some(victim)
    }

    /// Sets a key's last tick (restoring a checkpoint).
    pub fn set(&mut self, key: &str, tick: Option<u64>) {
        if let Some(old) = self.last.remove(key) {
            self.order.remove(&old);
        }
        if let Some(t) = tick {
            self.last.insert(key.to_owned(), t);
            self.order.insert(t, key.to_owned());
        }
    }

    /// Rebuilds the order from the ticks (after deserialising).
    pub fn reindex(&mut self) {
        self.order = self.last.iter().map(|(k, t)| (*t, k.clone())).collect();
    }

    /// Takes every key's tick out (a checkpoint writes them with the keys).
    pub fn take_ticks(&mut self) -> imbl::HashMap<String, u64> {
        self.order = imbl::OrdMap::new();
        std::mem::take(&mut self.last)
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// The keys touched since the last checkpoint (noted once per keyed
/// reading: hashed with the extractor's fast hasher, as its key lookups).
#[derive(Debug, Clone, Default)]
pub struct Changed {
    keys: HashSet<String, BuildHasherDefault<FxHasher>>,
}

impl Changed {
    /// Notes that `key`'s state may have changed.
    pub fn note(&mut self, key: &str) {
        if !self.keys.contains(key) {
            self.keys.insert(key.to_owned());
        }
    }

    /// The keys noted since the last call, sorted (checkpoints are written
    /// in a stable order).
    pub fn take(&mut self) -> Vec<String> {
        let mut keys: Vec<String> = self.keys.drain().collect();
        keys.sort_unstable();
        keys
    }

    /// Number of keys noted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key was noted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_key_is_evicted_past_the_cap() {
        let mut r = Recency::default();
        assert_eq!(r.touch("a", 2), None);
        assert_eq!(r.touch("b", 2), None);
        assert_eq!(r.touch("a", 2), None, "a used again: b is now the oldest");
        assert_eq!(r.touch("c", 2), Some("b".to_owned()));
        assert_eq!(r.len(), 2);
        assert_eq!(r.touch("d", 2), Some("a".to_owned()));
        // taken out and put back (a checkpoint and its restore), the same
        // uses evict the same keys
        let mut copy = r.clone();
        let ticks = copy.take_ticks();
        assert!(copy.is_empty());
        for (k, t) in ticks.iter() {
            copy.set(k, Some(*t));
        }
        assert_eq!(copy.touch("e", 2), r.touch("e", 2));
        let json = serde_json::to_string(&r).expect("encodes");
        let mut back: Recency = serde_json::from_str(&json).expect("decodes");
        back.reindex();
        assert_eq!(back.touch("f", 2), r.touch("f", 2));
    }

    #[test]
    fn changed_keys_come_out_once_and_sorted() {
        let mut c = Changed::default();
        for k in ["b", "a", "b"] {
            c.note(k);
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c.take(), ["a", "b"]);
        assert!(c.is_empty());
    }
}
