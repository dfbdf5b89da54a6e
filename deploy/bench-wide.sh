#!/usr/bin/env bash
# Wide readings (issue 19): `streamfit eval` over a generated clinical-style
# stream of 200,000 readings of 20 fields (4 numeric, 16 categorical with 2
# to 13 string values each; the label drawn from a fixed logistic model of
# them, seed 19), with the values declared (`wide-declared`) and learned
# (`wide-learned`, max_values = 16) in deploy/wide.toml, beside heart-v1 on
# the real records: readings/s through JSON decoding, features, predict and
# learn, and per field. RUNS runs (default 3), each the median of 3 timed
# passes; prints the medians with their range. Release build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
data="${STREAMFIT_DATA:-$root/../shared/data}"
runs="${RUNS:-3}"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$work/wide.jsonl" <<'PY'
import json, math, random, sys
rng = random.Random(19)
weights = [[rng.gauss(0, 0.6) for _ in range(2 + k % 12)] for k in range(16)]
with open(sys.argv[1], "w") as f:
    for i in range(200_000):
        r = {"id": f"p{i}"}
        n = [round(rng.gauss(50 + 10 * k, 10 + k), 1) for k in range(4)]
        c = [rng.randrange(2 + k % 12) for k in range(16)]
        z = 0.04 * (n[0] - 50) - 0.03 * (n[2] - 70) + sum(weights[k][v] for k, v in enumerate(c))
        r["y"] = int(rng.random() < 1 / (1 + math.exp(-z)))
        r.update({f"n{k}": n[k] for k in range(4)})
        r.update({f"c{k}": f"v{c[k]}" for k in range(16)})
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
PY
out="$work/runs.jsonl"
for _ in $(seq 1 "$runs"); do
  "$bin" eval --model heart-v1 --data "$data/heart-failure/heart.csv" --json >> "$out"
  for m in wide-declared wide-learned; do
    "$bin" eval --config deploy/wide.toml --model "$m" --data "$work/wide.jsonl" --json >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fields = {"heart-v1": 11, "wide-declared": 20, "wide-learned": 20}
print("| model | readings | log loss | ROC AUC | first 20%: log loss / AUC | last 80%: log loss / AUC | readings/s (JSON included) | ns a reading | ns a field |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for m in fields:
    rs = [r for r in rows if r["model"] == m]
    rate = [r["readings_per_second"] for r in rs]
    ns = [1e9 / x for x in rate]
    r = rs[0]
    part = lambda p: f'{r[p]["log_loss"]:.4f} / {r[p]["roc_auc"]:.4f}'
    print(f'| {m} | {r["scored"]:,} | {r["log_loss"]:.4f} | {r["roc_auc"]:.4f} | {part("first_20pct")} | {part("last_80pct")} '
          f'| {st.median(rate):,.0f} ({min(rate):,.0f}–{max(rate):,.0f}) | {st.median(ns):,.0f} | {st.median(ns) / fields[m]:.0f} |')
PY
