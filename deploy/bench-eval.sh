#!/usr/bin/env bash
# Accuracy and speed of every shipped model under the prequential protocol
# of BENCHMARKS.md: `streamfit eval` run RUNS times (default 3) per model,
# each timing PASSES passes (default 3) and reporting their median; release
# build; the medians of the runs printed as the README's markdown table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
data="${STREAMFIT_DATA:-$root/../shared/data}"
runs="${RUNS:-3}"
batch="${BATCH:-1}"
passes="${PASSES:-3}"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
out="$(mktemp)"
for model in waits-v1 waits heart-v1 heart; do
  case "$model" in waits*) src="$data/wdw-waits-2018" ;; *) src="$data/heart-failure/heart.csv" ;; esac
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
print("| model | scored | MAE | RMSE | MAE last 20% | RMSE last 20% | readings/s (JSON included) | readings/s (predict+learn only) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for m, rs in by.items():
    if "mae" in rs[0]:
        print(f"| {m} | {rs[0]['scored']} | {rs[0]['mae']:.3f} | {rs[0]['rmse']:.3f} | {rs[0]['last_20pct']['mae']:.3f} | {rs[0]['last_20pct']['rmse']:.3f} | {med(rs, lambda r: r['readings_per_second']):,.0f} | {med(rs, lambda r: r['model_only_readings_per_second']):,.0f} |")
print()
print("| model | scored | log loss | accuracy | ROC AUC | log loss last 20% | readings/s (JSON included) | readings/s (predict+learn only) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for m, rs in by.items():
    if "log_loss" in rs[0]:
        print(f"| {m} | {rs[0]['scored']} | {rs[0]['log_loss']:.4f} | {rs[0]['accuracy']:.4f} | {rs[0]['roc_auc']:.4f} | {rs[0]['last_20pct']['log_loss']:.4f} | {med(rs, lambda r: r['readings_per_second']):,.0f} | {med(rs, lambda r: r['model_only_readings_per_second']):,.0f} |")
PY
rm -f "$out"
