//! Generated bad readings: everything a real topic ends up holding sooner
//! or later. Each case is labelled with its kind, for the failure messages.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The kinds of bad input generated, in rotation.
pub const KINDS: [&str; 14] = [
    "malformed JSON",
    "truncated reading",
    "wrong types",
    "missing fields",
    "unknown fields",
    "NaN and Inf",
    "absurd numbers",
    "empty message",
    "oversized message",
    "invalid UTF-8",
    "unseen category",
    "odd timestamp",
    "random bytes",
    "deep nesting",
];

const RIDES: [&str; 4] = ["soarin", "dinosaur", "navi_river", "slinky_dog"];

/// A generator of bad wait-time readings, reproducible from its seed.
pub struct BadReadings {
    rng: StdRng,
    i: usize,
    oversized: usize,
}

impl BadReadings {
    /// `oversized`: the size of the "oversized message" case, in bytes.
    pub fn new(seed: u64, oversized: usize) -> Self {
        BadReadings {
            rng: StdRng::seed_from_u64(seed),
            i: 0,
            oversized,
        }
    }

    fn valid(&mut self) -> String {
        let ride = RIDES[self.rng.random_range(0..RIDES.len())];
        let h = self.rng.random_range(7..23);
        let w = self.rng.random_range(0..24) * 5;
        format!(
            r#"{{"ride":"{ride}","ts":"2018-03-0{}T{h:02}:{:02}:00","posted_wait":{w}.0}}"#,
            self.rng.random_range(1..10),
            self.rng.random_range(0..60)
        )
    }
}

impl Iterator for BadReadings {
    /// (kind, Kafka key, bytes)
    type Item = (&'static str, Option<String>, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        let kind = KINDS[self.i % KINDS.len()];
        self.i += 1;
        let r = &mut self.rng;
        let ride = RIDES[r.random_range(0..RIDES.len())].to_owned();
        let bytes: Vec<u8> = match kind {
            "malformed JSON" => {
                let cases = [
                    "{", "}", "[]", "null", "\"soarin\"", "42", "{\"ride\":}",
                    "{\"ride\" \"soarin\"}", "{'ride':'soarin'}", "{\"ride\":\"soarin\",}",
                    "{\"ride\":\"soarin\"\"ts\":1}", "{\"posted_wait\":1e}", "{\"a\":tru}",
                    "{\"ride\":\"so\\qarin\"}", "{\"ride\":\"\\ud800\"}",
                ];
                cases[r.random_range(0..cases.len())].as_bytes().to_vec()
            }
            "truncated reading" => {
                let v = self.valid();
                let cut = self.rng.random_range(0..v.len());
                v.as_bytes()[..cut].to_vec()
            }
            "wrong types" => {
                let cases = [
                    format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":"thirty"}}"#),
                    format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":[30]}}"#),
                    format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":{{"v":30}}}}"#),
                    format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":true}}"#),
                    format!(r#"{{"ride":"{ride}","ts":["2018-03-01T10:00:00"],"posted_wait":30}}"#),
                    format!(r#"{{"ride":"{ride}","ts":{{"at":"2018-03-01T10:00:00"}},"posted_wait":30}}"#),
                ];
                cases[r.random_range(0..cases.len())].clone().into_bytes()
            }
            "missing fields" => {
                let cases = [
                    format!(r#"{{"ride":"{ride}","posted_wait":30}}"#),
                    format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00"}}"#),
                    r#"{"ts":"2018-03-01T10:00:00","posted_wait":30}"#.to_owned(),
                    "{}".to_owned(),
                    r#"{"ride":null,"ts":"2018-03-01T10:00:00","posted_wait":30}"#.to_owned(),
                    format!(r#"{{"ride":"{ride}","ts":null,"posted_wait":null}}"#),
                ];
                cases[r.random_range(0..cases.len())].clone().into_bytes()
            }
            "unknown fields" => format!(
                r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":30,"weather":"rain","x":[1,{{"y":null}}],"posted_wait_v2":1e400}}"#
            )
            .into_bytes(),
            "NaN and Inf" => {
                let v = ["NaN", "Infinity", "-Infinity", "\"NaN\"", "\"inf\"", "1e999", "-1e999"];
                format!(
                    r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":{}}}"#,
                    v[r.random_range(0..v.len())]
                )
                .into_bytes()
            }
            "absurd numbers" => {
                let v = ["1e308", "-1e308", "4.9e-324", "123456789012345678901234567890", "-0.0", "1e-320", "99999999"];
                format!(
                    r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":{}}}"#,
                    v[r.random_range(0..v.len())]
                )
                .into_bytes()
            }
            "empty message" => Vec::new(),
            "oversized message" => {
                let mut s = format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":30,"pad":""#);
                s.push_str(&"x".repeat(self.oversized));
                s.push_str("\"}");
                s.into_bytes()
            }
            "invalid UTF-8" => {
                let mut b = br#"{"ride":""#.to_vec();
                b.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
                b.extend_from_slice(br#"","ts":"2018-03-01T10:00:00","posted_wait":30}"#);
                b
            }
            "unseen category" => {
                if r.random_bool(0.1) {
                    r#"{"ride":7,"ts":"2018-03-01T10:00:00","posted_wait":30}"#.as_bytes().to_vec()
                } else {
                    format!(
                        r#"{{"ride":"new_ride_{}","ts":"2018-03-01T10:00:00","posted_wait":30}}"#,
                        r.random_range(0..1000)
                    )
                    .into_bytes()
                }
            }
            "odd timestamp" => {
                if r.random_bool(0.2) {
                    // Unix seconds or milliseconds, absurd ones included
                    let v = ["20180301", "1519898400", "1519898400000", "-1", "1e15", "0.5"];
                    let v = v[r.random_range(0..v.len())];
                    return Some((
                        kind,
                        Some(ride.clone()),
                        format!(r#"{{"ride":"{ride}","ts":{v},"posted_wait":30}}"#).into_bytes(),
                    ));
                }
                let ts = [
                    "2018-13-45T10:00:00", "yesterday", "", "2018-03-01", "2018-03-01T10:00",
                    "2018-03-01T10:00:00Z", "2018-03-01T10:00:00+05:30", "2018-03-01T10:00:00.123456789-08:00",
                    "2018-03-01 10:00:00", "20180301T100000", "2018-02-30T10:00:00", "2018-03-01T24:00:00",
                    "+002018-03-01T10:00:00", "2018-03-01T10:00:00+99:99",
                ];
                format!(
                    r#"{{"ride":"{ride}","ts":"{}","posted_wait":30}}"#,
                    ts[r.random_range(0..ts.len())]
                )
                .into_bytes()
            }
            "random bytes" => {
                let n = r.random_range(0..64);
                (0..n).map(|_| r.random::<u8>()).collect()
            }
            _ => {
                let depth = r.random_range(1..2000);
                let mut s = format!(r#"{{"ride":"{ride}","ts":"2018-03-01T10:00:00","posted_wait":30,"deep":"#);
                s.push_str(&"[".repeat(depth));
                s.push_str(&"]".repeat(depth));
                s.push('}');
                s.into_bytes()
            }
        };
        let key = (kind != "empty message").then_some(ride);
        Some((kind, key, bytes))
    }
}
