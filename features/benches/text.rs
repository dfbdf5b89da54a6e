//! Tokenise and hash one tweet (the `text` feature's first half): the
//! 14,640 airline tweets of `../shared/data/airline-tweets`, unigrams and
//! bigrams into 2^20 signed columns, HTML entities decoded, links replaced.
//!
//! cargo bench -p streamfit-features --bench text

// criterion's macros generate public functions without docs
#![allow(missing_docs)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use features::text::{TextHasher, TextOptions};

fn tweets() -> Vec<String> {
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
            v["text"].as_str().expect("a text field").to_owned()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tweets = tweets();
    let mut group = c.benchmark_group("text");
    group.throughput(Throughput::Elements(tweets.len() as u64));
    for (name, options) in [
        ("unigrams+bigrams, 2^20", TextOptions::default()),
        (
            "unigrams, 2^18, sublinear",
            TextOptions {
                ngrams: 1,
                bits: 18,
                sublinear: true,
                ..TextOptions::default()
            },
        ),
    ] {
        let mut hasher = TextHasher::new(options).expect("valid options");
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut columns = 0;
                for t in &tweets {
                    hasher.hash(t, &mut out);
                    columns += out.len();
                }
                columns
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
