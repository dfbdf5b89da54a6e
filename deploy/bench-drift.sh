#!/usr/bin/env bash
# The drift experiment (README, Drift and challengers): the real January
# 2018 waits, as they are and with every posted wait of three rides
# (soarin, pirates_of_caribbean, spaceship_earth) 30 minutes longer from
# 15 January on, through the model of deploy/forecast.toml, with and
# without its challenger. Prints when the drift was detected (labelled
# readings and hours after the first drifted one), when the challenger
# took over, and the mean absolute error before and after it did, beside
# the same model without a challenger. `eval --passes 1`: figures only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
data="${STREAMFIT_DATA:-$root/../shared/data}"
py="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}/venv/bin/python"
[ -x "$py" ] || { echo "bench-drift: $py is missing (pyarrow reads the predictions): run deploy/setup.sh" >&2; exit 1; }
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# January as the loader reads it (time order, rides in name order), as JSONL
"$py" - "$data/wdw-waits-2018" "$work" <<'PY'
import csv, glob, json, os, sys
src, out = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(os.path.join(src, "*.csv"))):
    ride = os.path.basename(f)[:-4]
    r = csv.reader(open(f)); next(r)
    for row in r:
        ts = row[1].replace(" ", "T")
        if ts < "2018-02-01":
            rows.append((ts, ride, float(row[2]) if row[2] else None))
rows.sort(key=lambda x: (x[0], x[1]))
with open(os.path.join(out, "plain.jsonl"), "w") as p, open(os.path.join(out, "drift.jsonl"), "w") as d:
    for ts, ride, w in rows:
        p.write(json.dumps({"ride": ride, "ts": ts, "posted_wait": w}) + "\n")
        if w is not None and w >= 0 and ts >= "2018-01-15" and ride in ("soarin", "pirates_of_caribbean", "spaceship_earth"):
            w += 30
        d.write(json.dumps({"ride": ride, "ts": ts, "posted_wait": w}) + "\n")
PY
run() { # stream, challenger (yes/no)
  local env=()
  [ "$2" = no ] && env=(STREAMFIT_MODEL_FORECAST__CHALLENGER='[]')
  env "${env[@]}" "$bin" eval --config deploy/forecast.toml --model forecast --data "$work/$1.jsonl" \
    --passes 1 --json --predictions-out "$work/$1-$2.arrow" > "$work/$1-$2.json" 2>/dev/null
}
for s in plain drift; do for c in no yes; do run "$s" "$c"; done; done
"$py" - "$work" <<'PY'
import json, sys, datetime
import pyarrow.ipc as ipc
w = sys.argv[1]
rep = lambda n: json.load(open(f"{w}/{n}.json"))
def preds(n):
    t = ipc.open_file(f"{w}/{n}.arrow").read_all().to_pydict()
    return [(p, k, t_, y, x) for p, k, t_, x, y in zip(t["position"], t["key"], t["event_time_ms"], t["prediction"], t["label"]) if y is not None and y >= 0]
hours = lambda a, b: (b - a) / 3.6e6
day = lambda ms: datetime.datetime.utcfromtimestamp(ms / 1000).strftime("%d %b %H:%M")
rides = ("soarin", "pirates_of_caribbean", "spaceship_earth")
alone, contest, calm = preds("drift-no"), preds("drift-yes"), preds("plain-no")
first = next(i for i, (p, k, t, y, x) in enumerate(alone) if k in rides and t >= 1515974400000)
t0 = alone[first][2]
for name in ("plain-no", "plain-yes", "drift-no", "drift-yes"):
    r = rep(name)
    print(f"{name:10} MAE {r['mae']:.3f}  RMSE {r['rmse']:.3f}  drifts {r['drifts']}  promotions {len(r.get('promotions') or [])}")
r = rep("drift-yes")
d = next(e for e in r["drift_events"] if e["at"] > first)
print(f"drift injected at labelled reading {first} ({day(t0)}); detected at {d['at']}: {d['at'] - first} labelled readings, {hours(t0, d['event_time']):.1f} h later ({day(d['event_time'])})")
pr = r["promotions"][0]
champ, chall = pr["losses"]
print(f"challenger {pr['to']} took over at reading {pr['at']} ({day(pr['event_time'])}), {hours(t0, pr['event_time']):.1f} h after the drift began; the window the drift opened: MAE {champ:.2f} (champion) against {chall:.2f} (challenger)")
mae = lambda rows: sum(abs(x - y) for *_, y, x in rows) / len(rows)
for label, lo, hi in (("injection to promotion", t0, pr["event_time"]), ("promotion to 31 January", pr["event_time"], 1e18)):
    n = [x for x in calm if lo <= x[2] < hi]
    a = [x for x in alone if lo <= x[2] < hi]
    c = [x for x in contest if lo <= x[2] < hi]
    ra = [x for x in a if x[1] in rides]
    rc = [x for x in c if x[1] in rides]
    rn = [x for x in n if x[1] in rides]
    print(f"{label}: MAE {mae(a):.2f} without a challenger, {mae(c):.2f} with, {mae(n):.2f} without the drift (the three drifted rides: {mae(ra):.2f}, {mae(rc):.2f}, {mae(rn):.2f}; {len(a)} readings)")
PY
