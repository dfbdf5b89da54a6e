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
print("| model | scored | MAE | RMSE | first 20%: MAE / RMSE | last 80%: MAE / RMSE | readings/s (JSON included) | readings/s (predict+learn only) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for m, rs in by.items():
    r = rs[0]
    if "mae" in r:
        a, b = r["first_20pct"], r["last_80pct"]
        print(f"| {m} | {r['scored']} | {f(r,'mae',3)} | {f(r,'rmse',3)} | {f(a,'mae',3)} / {f(a,'rmse',3)} | {f(b,'mae',3)} / {f(b,'rmse',3)} | {speed(rs)} |")
print()
print("| model | scored | log loss | accuracy | ROC AUC | first 20%: log loss / AUC | last 80%: log loss / AUC | readings/s (JSON included) | readings/s (predict+learn only) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for m, rs in by.items():
    r = rs[0]
    if "roc_auc" in r:
        a, b = r["first_20pct"], r["last_80pct"]
        print(f"| {m} | {r['scored']} | {f(r,'log_loss',4)} | {f(r,'accuracy',4)} | {f(r,'roc_auc',4)} | {f(a,'log_loss',4)} / {f(a,'roc_auc',4)} | {f(b,'log_loss',4)} / {f(b,'roc_auc',4)} | {speed(rs)} |")
print()
print("| model | scored | log loss | accuracy | macro-F1 | first 20%: accuracy / macro-F1 | last 80%: accuracy / macro-F1 | readings/s (JSON included) | readings/s (predict+learn only) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for m, rs in by.items():
    r = rs[0]
    if "macro_f1" in r:
        a, b = r["first_20pct"], r["last_80pct"]
        print(f"| {m} | {r['scored']} | {f(r,'log_loss',4)} | {f(r,'accuracy',4)} | {f(r,'macro_f1',4)} | {f(a,'accuracy',4)} / {f(a,'macro_f1',4)} | {f(b,'accuracy',4)} / {f(b,'macro_f1',4)} | {speed(rs)} |")
PY
rm -f "$out"
