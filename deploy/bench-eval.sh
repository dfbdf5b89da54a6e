#!/usr/bin/env bash
# Accuracy and speed of every shipped model under the prequential protocol
# of BENCHMARKS.md: `streamfit eval` run RUNS times (default 3) per model,
# each timing PASSES passes (default 3) and reporting their median; release
# build; the medians of the runs printed as the README's markdown tables,
# with each model's figures over the whole stream, over its first 20% (the
# window hyper-parameters are chosen on) and over the last 80% (held out).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
data="${STREAMFIT_DATA:-$root/../shared/data}"
runs="${RUNS:-3}"
batch="${BATCH:-1}"
passes="${PASSES:-3}"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
out="$(mktemp)"
for model in ${MODELS:-waits-v1 waits heart-v1 heart tweets sentiment}; do
  case "$model" in
    waits*) src="$data/wdw-waits-2018" ;;
    heart*) src="$data/heart-failure/heart.csv" ;;
    *) src="$data/airline-tweets/tweets.jsonl" ;;
  esac
  for _ in $(seq 1 "$runs"); do
    "$bin" eval --model "$model" --data "$src" --batch "$batch" --passes "$passes" --json >> "$out"
  done
done
python3 - "$out" "$(nproc)" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["model"], []).append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
print(f"Medians of {len(next(iter(by.values())))} runs (each the median of {rows[0]['passes']} timed passes), B = {rows[0]['batch']}, {sys.argv[2]} cores.\n")
speed = lambda rs: f"{med(rs, lambda r: r['readings_per_second']):,.0f} | {med(rs, lambda r: r['model_only_readings_per_second']):,.0f}"
f = lambda m, k, d: f"{m[k]:.{d}f}" if m.get(k) is not None else "n/a"
# one table per kind of model: (the key that marks it, its headline
# metrics, the two shown for the first 20% and the last 80%, decimals)
tables = [
    ("mae", [("MAE", "mae"), ("RMSE", "rmse")], [("MAE", "mae"), ("RMSE", "rmse")], 3),
    ("roc_auc", [("log loss", "log_loss"), ("accuracy", "accuracy"), ("ROC AUC", "roc_auc")], [("log loss", "log_loss"), ("AUC", "roc_auc")], 4),
    ("macro_f1", [("log loss", "log_loss"), ("accuracy", "accuracy"), ("macro-F1", "macro_f1")], [("accuracy", "accuracy"), ("macro-F1", "macro_f1")], 4),
]
for mark, head, parts, d in tables:
    rows = [(m, rs) for m, rs in by.items() if mark in rs[0]]
    if not rows:
        continue
    part = " / ".join(n for n, _ in parts)
    cols = ["model", "scored"] + [n for n, _ in head] + [f"first 20%: {part}", f"last 80%: {part}", "readings/s (JSON included)", "readings/s (predict+learn only)"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for m, rs in rows:
        r = rs[0]
        cells = [m, str(r["scored"])] + [f(r, k, d) for _, k in head]
        cells += [" / ".join(f(r[w], k, d) for _, k in parts) for w in ("first_20pct", "last_80pct")]
        print("| " + " | ".join(cells) + f" | {speed(rs)} |")
    print()
PY
rm -f "$out"
