//! A strict, allocation-free ISO 8601 timestamp parser and calendar maths.
//!
//! Accepted: `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `T` or a space, optionally
//! followed by `Z` or an offset `+HH:MM`, `+HHMM` or `+HH`. Time features use
//! the wall-clock time as written (the reading's local time); the offset is
//! kept for converting to an instant. A JSON number is taken as Unix time in
//! seconds, or milliseconds when it is larger than 10^11, in UTC.

/// A parsed timestamp: the wall-clock fields and the UTC offset, if given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timestamp {
    /// Days since 1970-01-01 of the wall-clock date.
    pub days: i64,
    /// Seconds since midnight of the wall-clock time.
    pub seconds: f64,
    /// UTC offset in minutes, if the timestamp had one.
    pub offset_minutes: Option<i32>,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `sin(2πt)` and `cos(2πt)` of `t` in turns, to within 2 ulp.
///
/// The cyclical time features need one of these per reading and harmonic;
/// libm's `sin` and `cos` cost about 50 ns together on this kind of
/// machine, a fifth of decoding and extracting a reading. Working in turns
/// makes the range reduction exact (subtract the nearest quarter turn);
/// the kernels on [-π/4, π/4] are FreeBSD msun's `__kernel_sin` and
/// `__kernel_cos` minimax polynomials (error below 1 ulp). Only
/// additions and multiplications, so the result is the same on every
/// machine.
pub fn sin_cos_turns(t: f64) -> (f64, f64) {
    // 1.5 * 2^52: adding and subtracting it rounds to the nearest integer
    // (ties to even) with plain arithmetic, for |x| < 2^51
    const ROUND: f64 = 6_755_399_441_055_744.0;
    if !t.is_finite() || t.abs() >= 1e15 {
        let x = t * std::f64::consts::TAU;
        return (x.sin(), x.cos());
    }
    let r = t - ((t + ROUND) - ROUND); // in [-1/2, 1/2], exact
    let q = (r * 4.0 + ROUND) - ROUND; // the nearest quarter turn, -2..=2
    let x = (r - q * 0.25) * std::f64::consts::TAU; // in [-π/4, π/4]
    let (s, c) = (kernel_sin(x), kernel_cos(x));
    match (q as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

// the constants as msun publishes them (each is the f64 it rounds to)
#[allow(clippy::excessive_precision)]
fn kernel_sin(x: f64) -> f64 {
    const S1: f64 = -1.666_666_666_666_663_24e-1;
    const S2: f64 = 8.333_333_333_322_489_46e-3;
    const S3: f64 = -1.984_126_982_985_794_93e-4;
    const S4: f64 = 2.755_731_370_707_006_77e-6;
    const S5: f64 = -2.505_076_025_340_686_34e-8;
    const S6: f64 = 1.589_690_995_211_550_10e-10;
    let z = x * x;
    let v = z * x;
    let r = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    x + v * (S1 + z * r)
}

// the constants as msun publishes them (each is the f64 it rounds to)
#[allow(clippy::excessive_precision)]
fn kernel_cos(x: f64) -> f64 {
    const C1: f64 = 4.166_666_666_666_660_19e-2;
    const C2: f64 = -1.388_888_888_887_410_96e-3;
    const C3: f64 = 2.480_158_728_947_672_94e-5;
    const C4: f64 = -2.755_731_435_139_066_33e-7;
    const C5: f64 = 2.087_572_321_298_174_83e-9;
    const C6: f64 = -1.135_964_755_778_819_48e-11;
    let z = x * x;
    let w = z * z;
    let r = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + z * r)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let s = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

impl Timestamp {
    /// Parses an ISO 8601 timestamp; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Timestamp> {
        Self::parse_bytes(s.as_bytes())
    }

    /// [`Timestamp::parse`] of text given as bytes (any bytes: what is not
    /// a timestamp gives `None`).
    pub fn parse_bytes(b: &[u8]) -> Option<Timestamp> {
        let year = i64::from(digits(b, 0, 4)?);
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let days = days_from_civil(year, month, day);
        if b.len() == 10 {
            return Some(Timestamp {
                days,
                seconds: 0.0,
                offset_minutes: None,
            });
        }
        if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
            return None;
        }
        let hour = digits(b, 11, 2)?;
        let minute = digits(b, 14, 2)?;
        let mut i = 16;
        let mut second = 0.0;
        if b.get(i) == Some(&b':') {
            second = f64::from(digits(b, i + 1, 2)?);
            i += 3;
            if matches!(b.get(i), Some(b'.' | b',')) {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
                if end == start || end - start > 9 {
                    return None;
                }
                let frac = digits(b, start, end - start)?;
                second += f64::from(frac) / 10f64.powi((end - start) as i32);
                i = end;
            }
        }
        if hour > 23 || minute > 59 || second >= 61.0 {
            return None;
        }
        let offset_minutes = match b.get(i) {
            None => None,
            Some(b'Z' | b'z') if i + 1 == b.len() => Some(0),
            Some(&sign @ (b'+' | b'-')) => {
                let oh = digits(b, i + 1, 2)?;
                let rest = &b[i + 3..];
                let om = match rest {
                    [] => 0,
                    [b':', _, _] => digits(rest, 1, 2)?,
                    [_, _] => digits(rest, 0, 2)?,
                    _ => return None,
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                let total = (oh * 60 + om) as i32;
                Some(if sign == b'-' { -total } else { total })
            }
            _ => return None,
        };
        Some(Timestamp {
            days,
            seconds: f64::from(hour * 3600 + minute * 60) + second,
            offset_minutes,
        })
    }

    /// A timestamp from Unix time in seconds (or milliseconds above 10^11), UTC.
    pub fn from_unix(v: f64) -> Option<Timestamp> {
        if !v.is_finite() || v.abs() > 1e15 {
            return None;
        }
        let secs = if v.abs() > 1e11 { v / 1000.0 } else { v };
        let days = (secs / 86_400.0).floor();
        Some(Timestamp {
            days: days as i64,
            seconds: secs - days * 86_400.0,
            offset_minutes: Some(0),
        })
    }

    /// Hours since midnight, fractional.
    pub fn hour_of_day(&self) -> f64 {
        self.seconds / 3600.0
    }

    /// Day of week, Monday = 0.
    pub fn weekday(&self) -> usize {
        // 1970-01-01 was a Thursday (3)
        (self.days + 3).rem_euclid(7) as usize
    }

    /// Day of year, 1 = January 1st.
    pub fn day_of_year(&self) -> u32 {
        let (y, _, _) = civil_from_days(self.days);
        (self.days - days_from_civil(y, 1, 1) + 1) as u32
    }

    /// Milliseconds since the Unix epoch (the wall time taken as UTC when no offset is given).
    pub fn unix_millis(&self) -> i64 {
        let local = self.days as f64 * 86_400_000.0 + self.seconds * 1000.0;
        let offset = f64::from(self.offset_minutes.unwrap_or(0)) * 60_000.0;
        (local - offset).round() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_cos_turns_matches_libm_within_two_ulp() {
        let mut worst: f64 = 0.0;
        for i in 0..=200_000 {
            // hours of the day and their harmonics, and some negative turns
            let t = f64::from(i) / 50_000.0 * 3.0 - 1.0;
            let (s, c) = sin_cos_turns(t);
            // the reference in extended precision: reduce first, then libm
            let x = (t - t.round()) * std::f64::consts::TAU;
            let (rs, rc) = x.sin_cos();
            worst = worst.max((s - rs).abs()).max((c - rc).abs());
        }
        assert!(worst <= 4.0 * f64::EPSILON, "worst error {worst:e}");
        assert_eq!(sin_cos_turns(0.0), (0.0, 1.0));
        assert_eq!(sin_cos_turns(0.25).0, 1.0);
        assert_eq!(sin_cos_turns(0.5).1, -1.0);
        let (s, c) = sin_cos_turns(f64::NAN);
        assert!(s.is_nan() && c.is_nan());
    }

    #[test]
    fn parses_the_benchmark_format_and_variants() {
        let t = Timestamp::parse("2018-01-01T09:05:00").expect("parses");
        assert_eq!(t.days, days_from_civil(2018, 1, 1));
        assert_eq!(t.hour_of_day(), 9.0 + 5.0 / 60.0);
        assert_eq!(t.weekday(), 0, "2018-01-01 was a Monday");
        assert_eq!(t.day_of_year(), 1);
        let u = Timestamp::parse("2018-12-31 23:59:59.5+01:00").expect("parses");
        assert_eq!(u.day_of_year(), 365);
        assert_eq!(u.offset_minutes, Some(60));
        assert_eq!(
            Timestamp::parse("2018-03-01T00:00Z")
                .expect("parses")
                .offset_minutes,
            Some(0)
        );
        assert_eq!(Timestamp::parse("2018-03-01").expect("parses").seconds, 0.0);
        assert_eq!(
            Timestamp::parse("2018-03-01T10:00:00-0530")
                .expect("parses")
                .offset_minutes,
            Some(-330)
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for s in [
            "",
            "2018",
            "2018-13-01T00:00:00",
            "2018-02-29T00:00:00",
            "2018-01-01X00:00",
            "2018-01-01T24:00:00",
            "01/06/2018 10:00",
            "2018-01-01T10:00:00+",
            "2018-01-01T10:00:00Zjunk",
            "２018-01-01",
        ] {
            assert!(Timestamp::parse(s).is_none(), "{s:?}");
        }
        assert!(Timestamp::parse("2020-02-29T00:00:00").is_some());
    }

    #[test]
    fn unix_times_round_trip() {
        let t = Timestamp::from_unix(1_514_797_500.0).expect("valid");
        assert_eq!(t, Timestamp::parse("2018-01-01T09:05:00Z").expect("parses"));
        assert_eq!(t.unix_millis(), 1_514_797_500_000);
        assert_eq!(Timestamp::from_unix(1_514_797_500_000.0), Some(t));
        for d in [-1000, 0, 17_532, 400_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
