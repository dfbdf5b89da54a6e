"""How far below persistence can any model of these features take waits?

Builds, for every scored reading of the waits stream (BENCHMARKS.md's
order: the 14 files concatenated in file-name order, stable-sorted by `ts`;
closed rides' -999 neither scored nor learned), the features a model could
know at that moment, from earlier readings only:

  ride, minute of day, day of week, day of year; the ride's last three
  posted waits today and the minutes since the last; minutes since the
  ride's first reading today; the ride's mean and count of readings today;
  its mean at this hour and the next on earlier days; the park's level (the
  other rides' latest waits today over their usual at that hour); minutes
  since the ride's wait last changed today, that change, and the readings
  since it.

Then fits gradient-boosted trees (LightGBM) of the change from the last
posted wait (or from the usual wait at this hour, before the day's first)
on the first half of the stream, in hindsight, and scores the second half:
a batch model that has seen every reading of the first half at once, with
every loss from L1 to squared. `eval`'s `second_half` is the same window.

Run by deploy/bench-waits-ceiling.sh, which installs numpy and lightgbm into
a venv of its own. Prints one line per row of the README's table.
"""

import csv
import datetime
import math
import os
import sys

import lightgbm as lgb
import numpy as np

CLOSED = -999.0


def stream(data):
    """The scored readings in stream order: (ts, ride, posted_wait)."""
    rows = []
    for name in sorted(os.listdir(data)):
        if not name.endswith(".csv"):
            continue
        ride = name[:-4]
        with open(os.path.join(data, name), newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            for line in reader:
                if line[2] != "":
                    rows.append((line[1], ride, float(line[2])))
    rows.sort(key=lambda r: r[0])  # stable, as BENCHMARKS.md says
    return [r for r in rows if r[2] != CLOSED]


def features(rows):
    """One row of features a reading, from earlier readings only."""
    nan = math.nan
    rides = {r: i for i, r in enumerate(sorted({r[1] for r in rows}))}
    last = {}  # ride -> (date, lag1, minute, lag2, minute2, lag3)
    change = {}  # ride -> (date, minute of change, change, readings since)
    first = {}  # (ride, date) -> minute
    today = {}  # (ride, date) -> (sum, n)
    hour_today = {}  # (ride, hour, date) -> [sum, n]
    hour_past = {}  # (ride, hour) -> [sum of daily means, days]
    park = {}  # ride -> latest wait today over its usual at that hour
    day = None
    x, y = [], []

    def usual(ride, hour):
        s = hour_past.get((ride, hour))
        return s[0] / s[1] if s else nan

    for ts, ride, wait in rows:
        date, clock = ts[:10], ts[11:16]
        minute = int(clock[:2]) * 60 + int(clock[3:5])
        hour = minute // 60
        if date != day:
            for (r, h, d), (s, n) in list(hour_today.items()):
                acc = hour_past.setdefault((r, h), [0.0, 0])
                acc[0] += s / n
                acc[1] += 1
                del hour_today[(r, h, d)]
            day, park = date, {}
        prev = last.get(ride)
        if prev and prev[0] == date:
            _, lag1, m1, lag2, _, lag3 = prev
            gap = minute - m1
        else:
            lag1 = lag2 = lag3 = gap = nan
        ch = change.get(ride)
        if ch and ch[0] == date:
            since_change, last_change, readings_since = minute - ch[1], ch[2], ch[3]
        else:
            since_change = last_change = readings_since = nan
        f = first.get((ride, date))
        s, n = today.get((ride, date), (0.0, 0))
        here, next_hour = usual(ride, hour), usual(ride, (hour + 1) % 24)
        others = [v for k, v in park.items() if k != ride]
        level = sum(others) / len(others) if others else nan
        calendar = datetime.date.fromisoformat(date)
        x.append([
            rides[ride], minute, calendar.weekday(), calendar.timetuple().tm_yday, lag1, gap, lag2, lag3,
            minute - f if f is not None else nan, s / n if n else nan, n, here, next_hour,
            level, since_change, last_change, readings_since,
        ])
        y.append(wait)
        # learn the reading
        if prev and prev[0] == date:
            if wait != prev[1]:
                change[ride] = (date, minute, wait - prev[1], 0)
            elif ch and ch[0] == date:
                change[ride] = (date, ch[1], ch[2], ch[3] + 1)
            else:
                change[ride] = (date, first.get((ride, date), minute), 0.0, 1)
            last[ride] = (date, wait, minute, prev[1], prev[2], prev[3])
        else:
            change[ride] = (date, minute, 0.0, 0)
            last[ride] = (date, wait, minute, nan, nan, nan)
        first.setdefault((ride, date), minute)
        today[(ride, date)] = (s + wait, n + 1)
        acc = hour_today.setdefault((ride, hour, date), [0.0, 0])
        acc[0] += wait
        acc[1] += 1
        if here == here:
            park[ride] = wait - here
    return np.array(x, dtype=float), np.array(y, dtype=float)


def scores(y, p):
    e = y - p
    return abs(e).mean(), math.sqrt((e * e).mean())


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/wdw-waits-2018"
    x, y = features(stream(data))
    n = len(y)
    half = n // 2  # eval's second_half is the same window
    lag1 = np.nan_to_num(x[:, 4], nan=0.0)
    base = np.where(np.isnan(x[:, 4]), np.nan_to_num(x[:, 11], nan=0.0), x[:, 4])
    target = y - base
    test = slice(half, n)
    print(f"readings {n}, fitted on the first {half}, scored on the last {n - half}")
    mae, rmse = scores(y[test], lag1[test])
    print(f"persistence (lag1, else 0)\tMAE {mae:.3f}\tRMSE {rmse:.3f}")
    fits = [("l1", None)] + [("huber", a) for a in (1.0, 2.0, 3.0, 5.0, 10.0)] + [("l2", None)]
    for objective, alpha in fits:
        params = {
            "objective": objective, "learning_rate": 0.05, "num_leaves": 63,
            "min_data_in_leaf": 50, "seed": 1, "num_threads": 2, "verbose": -1,
        }
        if alpha:
            params["alpha"] = alpha
        train = lgb.Dataset(x[:half], target[:half], categorical_feature=[0])
        model = lgb.train(params, train, num_boost_round=600)
        p = base[test] + model.predict(x[test])
        name = objective + (f" delta {alpha:g}" if alpha else "")
        mae, rmse = scores(y[test], p)
        rmae, rrmse = scores(y[test], np.round(p / 5.0) * 5.0)
        print(f"trees, {name}\tMAE {mae:.3f}\tRMSE {rmse:.3f}\trounded to 5: MAE {rmae:.3f}\tRMSE {rrmse:.3f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
