#!/usr/bin/env bash
# What a label delay costs: `streamfit eval --label-delay D` of every
# wait-time and clinical model at D = 0, 100 and 10,000 readings (DELAYS to
# change them; a time such as 30m works too), each reading predicted and
# scored on arrival, its label revealed to the learner D readings later.
# Prints the README's table: the figures over the whole stream and over
# the held-out last 80%, and how many labels were learned before the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
data="${STREAMFIT_DATA:-$root/../shared/data}"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
out="$(mktemp)"
for model in ${MODELS:-waits-v1 waits heart-v1 heart}; do
  case "$model" in
    waits*) src="$data/wdw-waits-2018" ;;
    heart*) src="$data/heart-failure/heart.csv" ;;
    *) src="$data/airline-tweets/tweets.jsonl" ;;
  esac
  for delay in ${DELAYS:-0 100 10000}; do
    "$bin" eval --model "$model" --data "$src" --passes 1 --label-delay "$delay" --json >> "$out"
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | label delay | labels learned | whole stream | last 80% |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    keys = [k for k in ("mae", "rmse", "log_loss", "roc_auc", "accuracy", "macro_f1") if k in r][:2]
    fig = lambda m: " / ".join("%s %.4f" % (k.replace("_", " "), m[k]) for k in keys)
    print("| %s | %s | %d of %d | %s | %s |" % (r["model"], r.get("label_delay", "none"), r["learned"], r["scored"], fig(r), fig(r["last_80pct"])))
PY
rm -f "$out"
