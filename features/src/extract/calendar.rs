//! Time columns: hour of day, day of week and day of year from a reading's
//! timestamp, and the memo that spares parsing a timestamp seen just before.

use std::f64::consts::TAU;

use crate::time::{sin_cos_turns, Timestamp};

use super::steps::Step;

/// The cyclical day of year, `sin` and `cos` of `2π·doy/365.25`.
fn day_of_year_sin_cos(doy: usize) -> (f64, f64) {
    (TAU * doy as f64 / 365.25).sin_cos()
}

/// [`day_of_year_sin_cos`] of every day of the year (index 1 to 366),
/// computed once for the process: a transcendental call per reading saved.
static DAY_OF_YEAR: std::sync::LazyLock<Vec<(f64, f64)>> =
    std::sync::LazyLock::new(|| (0..=366).map(day_of_year_sin_cos).collect());

/// The columns of a time step (hour of day, day of week, day of year) for
/// `ts` into `out` (the step's width).
pub(super) fn time_columns(step: &Step, ts: Option<Timestamp>, out: &mut [f64]) {
    match step {
        Step::Hour { harmonics } => {
            let h = ts.map(|t| t.hour_of_day()).unwrap_or(0.0);
            for (k, pair) in out.chunks_exact_mut(2).take(*harmonics).enumerate() {
                let (sin, cos) = sin_cos_turns((k + 1) as f64 * h / 24.0);
                pair[0] = sin;
                pair[1] = cos;
            }
        }
        Step::Weekday => {
            out.fill(0.0);
            if let Some(t) = ts {
                out[t.weekday()] = 1.0;
            }
        }
        Step::DayOfYear => {
            // always 1 to 366; no fallback to sin_cos here, because the
            // compiler hoists such a call (it has no side effects) and pays
            // for it on every reading
            let doy = ts.map_or(1, |t| t.day_of_year()).min(366) as usize;
            let (sin, cos) = DAY_OF_YEAR[doy];
            out[0] = sin;
            out[1] = cos;
        }
        _ => {}
    }
}

/// The last timestamp text an extractor parsed and the time columns it
/// gave. Readings polled together share a timestamp (two in three
/// consecutive wait-time readings do), and comparing twenty bytes and
/// copying a few columns costs a fraction of parsing the text and
/// evaluating its cyclical features again.
#[derive(Debug, Clone, Default)]
pub(super) struct TimeMemo {
    pub(super) text: Vec<u8>,
    /// `None` when nothing is memoised.
    pub(super) ts: Option<Timestamp>,
    /// The time steps' columns, in step order.
    pub(super) cols: Vec<f64>,
}

pub(super) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
