//! How far hashed text and the sparse learners get on the airline tweets
//! before they are a feature kind of the service (issue 17): prequential
//! (predict, then learn, one tweet at a time, in time order) binary
//! `negative` and three-class `sentiment`. Settings are chosen on the first
//! 20% of the stream; the last 80% is reported beside the whole.
//!
//! cargo run --release -p streamfit-features --example tweets

use std::path::Path;
use std::time::Instant;

use features::text::{TextHasher, TextOptions};
use models::metrics::roc_auc;
use models::sparse::{SparseLogistic, SparseParams, SparseSoftmax};

struct Tweet {
    text: String,
    negative: f64,
    class: usize,
}

const CLASSES: [&str; 3] = ["negative", "neutral", "positive"];

fn load() -> Vec<Tweet> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/airline-tweets/tweets.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared data sits beside the repo)",
            path.display()
        )
    });
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let s = v["sentiment"].as_str().expect("sentiment");
            Tweet {
                text: v["text"].as_str().expect("text").to_owned(),
                negative: v["negative"].as_f64().expect("negative"),
                class: CLASSES.iter().position(|c| *c == s).expect("a known class"),
            }
        })
        .collect()
}

fn log_loss(p: f64, y: f64) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

/// (log loss, AUC) of binary predictions.
fn binary_scores(p: &[f64], y: &[f64]) -> (f64, f64) {
    let ll = p.iter().zip(y).map(|(&p, &y)| log_loss(p, y)).sum::<f64>() / p.len() as f64;
    (ll, roc_auc(p, y).unwrap_or(f64::NAN))
}

/// (accuracy, macro-F1, log loss) of class probabilities.
fn multi_scores(p: &[Vec<f64>], y: &[usize]) -> (f64, f64, f64) {
    let k = CLASSES.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut ll = 0.0;
    for (probs, &truth) in p.iter().zip(y) {
        let best = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |x| x.0);
        confusion[truth][best] += 1;
        ll -= probs[truth].clamp(1e-15, 1.0).ln();
    }
    let n = y.len() as f64;
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let f1: f64 = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
            let actual: usize = confusion[c].iter().sum();
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (predicted as f64 + actual as f64)
            }
        })
        .sum::<f64>()
        / k as f64;
    (correct as f64 / n, f1, ll / n)
}

#[derive(Clone, Debug)]
struct Setting {
    ngrams: usize,
    sublinear: bool,
    learning_rate: f64,
}

fn hasher(s: &Setting) -> TextHasher {
    TextHasher::new(TextOptions {
        ngrams: s.ngrams,
        sublinear: s.sublinear,
        ..TextOptions::default()
    })
    .expect("valid")
}

fn run_binary(tweets: &[Tweet], s: &Setting) -> Vec<f64> {
    let mut h = hasher(s);
    let mut m = SparseLogistic::new(SparseParams {
        learning_rate: s.learning_rate,
        ..SparseParams::default()
    })
    .expect("valid");
    let mut x = Vec::new();
    tweets
        .iter()
        .map(|t| {
            h.hash(&t.text, &mut x);
            let p = m.predict(&x);
            m.learn(&x, t.negative);
            p
        })
        .collect()
}

fn run_multi(tweets: &[Tweet], s: &Setting) -> Vec<Vec<f64>> {
    let mut h = hasher(s);
    let mut m = SparseSoftmax::new(
        3,
        SparseParams {
            learning_rate: s.learning_rate,
            ..SparseParams::default()
        },
    )
    .expect("valid");
    let (mut x, mut p, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    tweets
        .iter()
        .map(|t| {
            h.hash(&t.text, &mut x);
            m.predict(&x, &mut p);
            m.learn(&x, t.class, &mut scratch).expect("known class");
            p.clone()
        })
        .collect()
}

fn main() {
    let tweets = load();
    let cut = tweets.len() / 5;
    let tune = &tweets[..cut];
    let mut grid = Vec::new();
    for ngrams in [1, 2] {
        for sublinear in [false, true] {
            for learning_rate in [0.05, 0.1, 0.2, 0.4] {
                grid.push(Setting {
                    ngrams,
                    sublinear,
                    learning_rate,
                });
            }
        }
    }
    // binary: the lowest log loss on the first 20%
    let y: Vec<f64> = tune.iter().map(|t| t.negative).collect();
    let best = grid
        .iter()
        .min_by(|a, b| {
            let la = binary_scores(&run_binary(tune, a), &y).0;
            let lb = binary_scores(&run_binary(tune, b), &y).0;
            la.total_cmp(&lb)
        })
        .expect("a setting")
        .clone();
    let started = Instant::now();
    let p = run_binary(&tweets, &best);
    let secs = started.elapsed().as_secs_f64();
    let all_y: Vec<f64> = tweets.iter().map(|t| t.negative).collect();
    let (ll, auc) = binary_scores(&p, &all_y);
    let (ll80, auc80) = binary_scores(&p[cut..], &all_y[cut..]);
    println!("negative (binary), chosen on the first {cut} tweets: {best:?}");
    println!("  whole: log loss {ll:.4}, AUC {auc:.4}; last 80%: log loss {ll80:.4}, AUC {auc80:.4}; {:.0} tweets/s (hash, predict, learn; decoding not included)", tweets.len() as f64 / secs);

    // three classes: the lowest log loss on the first 20%
    let y: Vec<usize> = tune.iter().map(|t| t.class).collect();
    let best = grid
        .iter()
        .min_by(|a, b| {
            let la = multi_scores(&run_multi(tune, a), &y).2;
            let lb = multi_scores(&run_multi(tune, b), &y).2;
            la.total_cmp(&lb)
        })
        .expect("a setting")
        .clone();
    let p = run_multi(&tweets, &best);
    let all_y: Vec<usize> = tweets.iter().map(|t| t.class).collect();
    let (acc, f1, ll) = multi_scores(&p, &all_y);
    let (acc80, f180, ll80) = multi_scores(&p[cut..], &all_y[cut..]);
    println!("sentiment (3 classes, softmax), chosen on the first {cut} tweets: {best:?}");
    println!("  whole: accuracy {acc:.4}, macro-F1 {f1:.4}, log loss {ll:.4}; last 80%: accuracy {acc80:.4}, macro-F1 {f180:.4}, log loss {ll80:.4}");
}
