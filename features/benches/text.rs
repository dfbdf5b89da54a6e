//! Tokenise and hash one tweet (the `text` feature's first half): the
//! 14,640 airline tweets of `../shared/data/airline-tweets`, words (and
//! word pairs, and the shipped `tweets` model's 4-grams of characters) into
//! signed hashed columns, HTML entities decoded, links replaced.
//!
//! cargo bench -p streamfit-features --bench text

// criterion's macros generate public functions without docs
#![allow(missing_docs)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use features::text::{CharGrams, TextHasher, TextOptions};

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
    let sublinear = |ngrams| TextOptions {
        ngrams,
        sublinear: true,
        ..TextOptions::default()
    };
    let four = Some(CharGrams {
        min: 4,
        max: 4,
        weight: 0.3,
    });
    for (name, options, chars) in [
        ("unigrams+bigrams, 2^20", TextOptions::default(), None),
        (
            "unigrams, 2^18, sublinear",
            TextOptions {
                bits: 18,
                ..sublinear(1)
            },
            None,
        ),
        (
            "unigrams, 2^20, sublinear (tweets, fast)",
            sublinear(1),
            None,
        ),
        (
            "unigrams+bigrams+4-grams of characters, 2^20, sublinear (tweets)",
            sublinear(2),
            four,
        ),
    ] {
        let mut hasher = TextHasher::new(options).expect("valid options");
        if let Some(grams) = chars {
            hasher = hasher.with_chars(grams).expect("valid grams");
        }
        let mut out = Vec::new();
        // what the setting makes of the stream, printed once: columns a
        // tweet and distinct columns over all of them
        let mut distinct = std::collections::HashSet::new();
        let mut columns = 0;
        for t in &tweets {
            hasher.hash(t, &mut out);
            columns += out.len();
            distinct.extend(out.iter().map(|(c, _)| *c));
        }
        eprintln!(
            "{name}: {:.1} columns a tweet, {} distinct columns over {} tweets",
            columns as f64 / tweets.len() as f64,
            distinct.len(),
            tweets.len()
        );
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
