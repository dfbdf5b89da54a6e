//! The extractor's keyed and learned state, what a checkpoint carries: per
//! key the history of its lags, running means and profiles; learned
//! vocabularies and classes; and online document frequencies.

use std::collections::VecDeque;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use models::pages::PageSet;

use super::hash::{FastMap, FxHasher};

/// Keyed state by key: a persistent map of shared pointers, so that a clone
/// of the state copies no key's history and an update afterwards copies
/// only the keys it touches.
pub type KeyMap = imbl::GenericHashMap<
    String,
    Arc<KeyState>,
    BuildHasherDefault<FxHasher>,
    imbl::shared_ptr::ArcK,
>;

/// The keyed and learned state of an extractor: what a checkpoint carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureState {
    pub(super) keys: KeyMap,
    /// Learned vocabularies, one per `max_values` categorical, in spec order.
    pub(super) vocab: Vec<Vec<String>>,
    /// Multiclass: the classes, in their numbers' order (declared, or
    /// learned in order of appearance).
    #[serde(default)]
    pub(super) classes: Vec<String>,
    /// Per `text` feature with `idf`: documents and document frequencies.
    #[serde(default)]
    pub(super) doc_freq: Vec<DocFreq>,
}

/// Documents seen and, per column, how many had it: an online IDF.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocFreq {
    pub(super) docs: u64,
    pub(super) df: FastMap<u32, u64>,
    /// The pages ([`models::pages`]) of the columns counted since they were
    /// last taken: bookkeeping for incremental checkpoints, not state (all
    /// pages once read back, equal whatever it holds).
    #[serde(skip)]
    pub(super) changed: PageSet,
}

impl DocFreq {
    /// No document yet, and no page to write (one read back has all).
    pub(super) fn fresh() -> DocFreq {
        DocFreq {
            changed: PageSet::none(),
            ..DocFreq::default()
        }
    }

    /// The IDF of a column of a document being scored, the document
    /// counted: ln((1 + N) / (1 + df)) + 1, as scikit-learn's smooth IDF.
    pub(super) fn idf(&self, column: u32) -> f64 {
        let n = (self.docs + 1) as f64;
        let df = (self.df.get(&column).copied().unwrap_or(0) + 1) as f64;
        ((1.0 + n) / (1.0 + df)).ln() + 1.0
    }
}

impl FeatureState {
    /// Number of keys with state.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The state of `key`.
    pub fn key(&self, key: &str) -> Option<&KeyState> {
        self.keys.get(key).map(Arc::as_ref)
    }

    /// Sets (restoring a checkpoint) or removes `key`'s state.
    pub fn set_key(&mut self, key: &str, state: Option<KeyState>) {
        match state {
            Some(s) => {
                self.keys.insert(key.to_owned(), Arc::new(s));
            }
            None => {
                self.keys.remove(key);
            }
        }
    }

    /// Multiclass: the classes, numbered in this order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Per `idf` text feature, in spec order: its document frequencies by
    /// column, taken out (a checkpoint writes them in the column pages of
    /// the model, apart from the rest), leaving the documents counted.
    pub fn take_doc_freqs(&mut self) -> Vec<FastMap<u32, u64>> {
        self.doc_freq
            .iter_mut()
            .map(|d| std::mem::take(&mut d.df))
            .collect()
    }

    /// Puts the document frequencies of `idf` feature `feature` (in spec
    /// order) back, as [`FeatureState::take_doc_freqs`] took them out; an
    /// error if there is no such feature.
    pub fn put_doc_freqs(
        &mut self,
        feature: usize,
        counts: impl IntoIterator<Item = (u32, u64)>,
    ) -> Result<(), String> {
        let n = self.doc_freq.len();
        let d = self.doc_freq.get_mut(feature).ok_or_else(|| {
            format!("document frequencies of `idf` feature {feature}, but the spec has {n}")
        })?;
        d.df.extend(counts);
        Ok(())
    }

    /// The pages of the columns whose document frequencies changed since
    /// the last call, ascending (all of them the first time after a
    /// restore; none without `idf`).
    pub fn take_changed_pages(&mut self) -> Vec<u32> {
        let mut pages: Vec<u32> = self
            .doc_freq
            .iter_mut()
            .flat_map(|d| d.changed.take())
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Takes every key's state out (a checkpoint writes them apart from
    /// the rest), leaving none.
    pub fn take_keys(&mut self) -> KeyMap {
        std::mem::take(&mut self.keys)
    }
}

/// One key's state: the history of each lag and running-mean feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    /// Per lag or running-mean feature: the history.
    pub(super) hist: Vec<History>,
}

/// One lag, running-mean or profile feature's history for one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct History {
    pub(super) day: i64,
    /// Latest valid values, newest last (lags).
    pub(super) recent: VecDeque<f64>,
    /// Values and their mean (running means; 0 for a lag).
    pub(super) count: f64,
    pub(super) mean: f64,
    /// Profiles: per slot of the day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) slots: Vec<ProfileSlot>,
}

/// One slot of the day of a profile: the mean over earlier days, and the
/// values of the current day (`History::day`), folded in when a later day
/// begins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ProfileSlot {
    /// The mean over earlier days (of each day's mean in this slot).
    pub(super) mean: f64,
    /// Days folded into `mean`.
    pub(super) days: u32,
    /// The current day's values in this slot: sum and count.
    pub(super) sum: f64,
    pub(super) n: u32,
}

impl ProfileSlot {
    /// The weight the next day gets: `weight`, or 1/n while that is more.
    pub(super) fn next_weight(&self, weight: f64) -> f64 {
        weight.max(1.0 / f64::from(self.days + 1))
    }

    /// The mean with the current day folded in (as the next day sees it).
    pub(super) fn folded(&self, weight: f64) -> Option<f64> {
        match (self.n, self.days) {
            (0, 0) => None,
            (0, _) => Some(self.mean),
            (n, _) => {
                let day_mean = self.sum / f64::from(n);
                Some(self.mean + self.next_weight(weight) * (day_mean - self.mean))
            }
        }
    }

    /// Folds the current day into the mean.
    pub(super) fn fold(&mut self, weight: f64) {
        if let Some(m) = self.folded(weight).filter(|_| self.n > 0) {
            self.mean = m;
            self.days += 1;
            self.sum = 0.0;
            self.n = 0;
        }
    }
}
