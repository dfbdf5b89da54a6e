//! Column page records: a sparse model's columns (hashed text and
//! categories: up to millions of weights) are written one record per page
//! of columns ([`models::pages`]), apart from the base, so that a commit
//! writes only the pages learning changed since the last one, not the
//! whole model.
//!
//! Like key records ([`super::keyed`]), every page record carries the epoch
//! of the base it belongs to: a new epoch (a first checkpoint, a model
//! swapped in) writes every page, and so does the first commit of a model
//! restored from a checkpoint; a restore takes the base and the pages of
//! its epoch, the newest of each, and refuses a checkpoint whose pages
//! were not all found.

use anyhow::{bail, Context, Result};
use features::extract::FastMap;
use models::pages::{page_of, ColumnPage, SparseColumns, PAGES};
use serde::{Deserialize, Serialize};

use crate::pipeline::PipelineSnapshot;

/// The record key of page `page` in the partition whose base is keyed
/// `base`.
pub fn record_key(base: &str, page: u32) -> String {
    format!("{base}/c/{page}")
}

/// What a page record holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageRecord {
    /// The epoch of the base this record belongs to.
    pub epoch: u64,
    /// The page's columns.
    pub page: ColumnPage,
    /// Per `idf` text feature (in spec order): the document frequencies of
    /// the page's columns, sorted by column; absent without `idf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub df: Vec<Vec<(u32, u64)>>,
}

impl PageRecord {
    /// Decodes a page record's value.
    pub fn decode(bytes: &[u8]) -> Result<PageRecord> {
        serde_json::from_slice(bytes)
            .context("a column page record of the checkpoint does not decode")
    }
}

/// A sparse model's columns taken out of a snapshot, with the document
/// frequencies of its `idf` text features, indexed by page.
pub struct Pages {
    columns: SparseColumns,
    doc_freqs: Vec<FastMap<u32, u64>>,
    by_page: Vec<Vec<u32>>,
}

impl Pages {
    /// Takes the sparse columns out of `snap`'s model (none: not sparse),
    /// and the document frequencies out of its features. The index is
    /// built here: call it on the thread that encodes.
    pub fn take(snap: &mut PipelineSnapshot) -> Option<Pages> {
        let columns = snap.model.model.sparse_mut()?.take_columns();
        let doc_freqs = snap.features.take_doc_freqs();
        let mut by_page = columns.by_page();
        if doc_freqs.iter().any(|d| !d.is_empty()) {
            for &c in doc_freqs.iter().flat_map(|d| d.keys()) {
                by_page[page_of(c) as usize].push(c);
            }
            for p in &mut by_page {
                p.sort_unstable();
                p.dedup();
            }
        }
        Some(Pages {
            columns,
            doc_freqs,
            by_page,
        })
    }

    /// Pages holding a column, ascending.
    pub fn non_empty(&self) -> Vec<u32> {
        (0..PAGES as u32)
            .filter(|&p| !self.by_page[p as usize].is_empty())
            .collect()
    }

    /// Encodes page `page`'s record of `epoch` into `buf`; false (and `buf`
    /// empty) when the page holds no column: its record is a tombstone.
    pub fn encode(&self, page: u32, epoch: u64, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        let Some(columns) = self.by_page.get(page as usize) else {
            bail!("page {page} is not one of the {PAGES} pages");
        };
        if columns.is_empty() {
            return Ok(false);
        }
        let df: Vec<Vec<(u32, u64)>> = self
            .doc_freqs
            .iter()
            .map(|d| {
                columns
                    .iter()
                    .filter_map(|c| d.get(c).map(|&n| (*c, n)))
                    .collect()
            })
            .collect();
        let record = PageRecord {
            epoch,
            page: self.columns.page(columns),
            df: if df.iter().all(Vec::is_empty) {
                Vec::new()
            } else {
                df
            },
        };
        serde_json::to_writer(&mut *buf, &record)
            .with_context(|| format!("cannot encode column page {page} of the checkpoint"))?;
        Ok(true)
    }
}

/// Puts page `page`'s columns from its record back into a base snapshot.
pub fn rebuild(base: &mut PipelineSnapshot, page: u32, record: PageRecord) -> Result<()> {
    let Some(model) = base.model.model.sparse_mut() else {
        bail!("the checkpoint has column page {page} but its model has no sparse columns");
    };
    model
        .put_page(record.page)
        .with_context(|| format!("column page {page} does not fit the checkpoint's model"))?;
    for (feature, counts) in record.df.into_iter().enumerate() {
        base.features.put_doc_freqs(feature, counts).map_err(|e| {
            anyhow::anyhow!("column page {page} does not fit the checkpoint's features: {e}")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Input, Pipeline};

    /// The shipped `sentiment` pipeline after 300 made-up tweets.
    fn learned() -> Pipeline {
        learned_with("")
    }

    /// The shipped `sentiment` pipeline with `text` (`, idf = true`) added
    /// to its text feature's options, after 300 made-up tweets.
    fn learned_with(text_options: &str) -> Pipeline {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/streamfit.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let text = text.replace(
            "char_weight = 0.3 }",
            &format!("char_weight = 0.3{text_options} }}"),
        );
        let config = crate::config::Config::parse(&text, std::iter::empty()).expect("valid");
        let m = config.model("sentiment").expect("sentiment").clone();
        let mut p = Pipeline::new(&m).expect("pipeline");
        let words = [
            "late", "great", "crew", "bag", "lost", "thanks", "delayed", "ok",
        ];
        let labels = ["negative", "positive", "neutral"];
        let readings: Vec<String> = (0..300)
            .map(|i| {
                format!(
                    r#"{{"text":"@united {} {} flight {i}","airline":"United","sentiment":"{}"}}"#,
                    words[i % 8],
                    words[(i / 8) % 8],
                    labels[i % 3]
                )
            })
            .collect();
        let inputs: Vec<Input<'_>> = readings
            .iter()
            .map(|r| Input {
                key: None,
                bytes: r.as_bytes(),
            })
            .collect();
        let mut out = Vec::new();
        let stats = p.process(&inputs, &mut out);
        assert_eq!(stats.learned, 300, "{stats:?}");
        p
    }

    #[test]
    fn a_text_snapshot_taken_apart_in_pages_and_rebuilt_is_the_same_snapshot() {
        let mut p = learned();
        let changed = p.take_changed_pages();
        assert!(
            !changed.is_empty() && changed.len() < PAGES,
            "{}",
            changed.len()
        );
        assert!(p.take_changed_pages().is_empty(), "taken");

        let snap = p.snapshot();
        let mut base = snap.clone();
        let pages = Pages::take(&mut base).expect("a sparse model");
        let listed = pages.non_empty();
        assert_eq!(
            listed, changed,
            "the pages learned are the pages with columns"
        );
        let mut back = base.clone();
        let mut buf = Vec::new();
        for &page in &listed {
            assert!(pages.encode(page, 7, &mut buf).expect("encodes"));
            let r = PageRecord::decode(&buf).expect("decodes");
            assert_eq!(r.epoch, 7);
            rebuild(&mut back, page, r).expect("fits");
        }
        let json = |s: &PipelineSnapshot| serde_json::to_value(s).expect("encodes");
        assert!(json(&base) != json(&snap), "the base holds no columns");
        assert!(json(&back) == json(&snap), "rebuilt as it was");
        // a page with no column is a tombstone
        let empty = (0..PAGES as u32)
            .find(|p| !listed.contains(p))
            .expect("an empty page");
        assert!(!pages.encode(empty, 7, &mut buf).expect("encodes"));
        assert!(pages.encode(PAGES as u32, 7, &mut buf).is_err());
    }

    #[test]
    fn document_frequencies_are_written_in_the_pages_of_their_columns_not_the_base() {
        let mut p = learned_with(", idf = true");
        let changed = p.take_changed_pages();
        let snap = p.snapshot();
        let json = |s: &PipelineSnapshot| serde_json::to_value(s).expect("encodes");
        let df_of = |s: &PipelineSnapshot| json(s)["features"]["doc_freq"][0]["df"].clone();
        let counted = df_of(&snap).as_object().map_or(0, |m| m.len());
        assert!(counted > 100, "{counted} columns counted");

        let mut base = snap.clone();
        let pages = Pages::take(&mut base).expect("a sparse model");
        assert_eq!(df_of(&base), serde_json::json!({}), "none left in the base");
        assert_eq!(
            json(&base)["features"]["doc_freq"][0]["docs"],
            300,
            "the documents counted stay in the base"
        );
        let listed = pages.non_empty();
        assert_eq!(listed, changed, "the pages counted are the pages written");
        let mut back = base.clone();
        let mut buf = Vec::new();
        let mut in_pages = 0;
        for &page in &listed {
            assert!(pages.encode(page, 3, &mut buf).expect("encodes"));
            let r = PageRecord::decode(&buf).expect("decodes");
            in_pages += r.df.iter().map(Vec::len).sum::<usize>();
            rebuild(&mut back, page, r).expect("fits");
        }
        assert_eq!(in_pages, counted, "each column's count in its page once");
        assert!(json(&back) == json(&snap), "rebuilt as it was");

        // a reading of the stream, labelled or not, is a document counted:
        // the pages of its columns only; a prediction over HTTP, none
        let unlabelled = br#"{"text":"@united lost my bag again","airline":"United"}"#;
        p.predict_one(unlabelled, None).expect("predicts");
        assert!(
            p.take_changed_pages().is_empty(),
            "a prediction changes no page"
        );
        let mut out = Vec::new();
        let reading = Input {
            key: None,
            bytes: unlabelled,
        };
        p.process(&[reading], &mut out);
        let now = p.take_changed_pages();
        assert!(!now.is_empty() && now.len() < 40, "{} pages", now.len());

        // a page record of a model without `idf` features cannot be put back
        let mut plain = learned().snapshot();
        let r = PageRecord {
            epoch: 3,
            page: ColumnPage::default(),
            df: vec![vec![(1, 2)]],
        };
        let e = format!(
            "{:#}",
            rebuild(&mut plain, 0, r).expect_err("no idf feature")
        );
        assert!(e.contains("does not fit") && e.contains("idf"), "{e}");
    }

    #[test]
    fn a_restore_takes_the_pages_of_its_epoch_as_of_its_offset_and_refuses_lost_ones() {
        use super::super::{assemble, Checkpoint, Versions, FORMAT_VERSION};
        use std::collections::HashMap;
        let snap = learned().snapshot();
        let mut base = snap.clone();
        let pages = Pages::take(&mut base).expect("a sparse model");
        let listed = pages.non_empty();
        let ck = Checkpoint {
            format_version: FORMAT_VERSION,
            model: "sentiment".into(),
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            next_offset: 100,
            labels_next_offset: None,
            pipeline: base,
            epoch: 5,
            keys: 0,
            pages: listed.len() as u64,
        };
        let value = serde_json::to_vec(&ck).expect("encodes");
        let record = |page: u32, epoch: u64| {
            let mut buf = Vec::new();
            assert!(pages.encode(page, epoch, &mut buf).expect("encodes"));
            buf
        };
        let all = |skip: Option<u32>| -> HashMap<u32, Versions> {
            listed
                .iter()
                .filter(|&&p| Some(p) != skip)
                .map(|&p| {
                    let mut v = Versions::default();
                    v.push(90, Some(record(p, 5)));
                    (p, v)
                })
                .collect()
        };
        let json = |s: &crate::pipeline::PipelineSnapshot| serde_json::to_value(s).expect("json");
        let back = assemble(&value, None, HashMap::new(), all(None)).expect("whole");
        assert!(json(&back.pipeline) == json(&snap), "the model rebuilt");

        // a page of a transaction whose base was not read (offset 200) is
        // passed over for the one before it
        let mut half = all(None);
        let first = listed[0];
        if let Some(v) = half.get_mut(&first) {
            v.push(200, Some(b"{not this".to_vec()));
        }
        let back = assemble(&value, None, HashMap::new(), half).expect("as of 100");
        assert!(json(&back.pipeline) == json(&snap));

        // a page lost, or only of an older epoch, refuses the checkpoint
        let e = format!(
            "{:#}",
            assemble(&value, None, HashMap::new(), all(Some(first))).expect_err("lost")
        );
        assert!(
            e.contains("column pages") && e.contains("lost records"),
            "{e}"
        );
        let mut old = all(None);
        let mut v = Versions::default();
        v.push(90, Some(record(first, 4)));
        old.insert(first, v);
        assert!(assemble(&value, None, HashMap::new(), old).is_err());
    }
}
