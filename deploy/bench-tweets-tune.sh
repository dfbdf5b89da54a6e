#!/usr/bin/env bash
# How the shipped `tweets` settings were chosen (issue 17): word n-grams 1
# and 2 × length normalisation (`normalize` 0, 0.5, 0.75, 1) × AdaGrad
# learning rate 0.2 to 0.8, one `eval` each (exact figures), chosen by the
# lowest log loss over the first 20% of the stream only; the last 80% and
# the whole stream printed beside, and each setting's speed (one pass, a
# rough guide: bench-eval.sh measures the shipped one). NGRAMS, NORMS, RATES
# to change the grid. Release build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
data="${STREAMFIT_DATA:-$root/../shared/data}"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for ng in ${NGRAMS:-1 2}; do
  for norm in ${NORMS:-0 0.5 0.75 1}; do
    for lr in ${RATES:-0.2 0.3 0.4 0.5 0.6 0.8}; do
      STREAMFIT_MODEL_TWEETS__FEATURES="[ { kind = \"text\", field = \"text\", bits = 20, ngrams = $ng, sublinear = true, normalize = $norm }, { kind = \"categorical\", field = \"airline\", max_values = 16 } ]" \
      STREAMFIT_MODEL_TWEETS__LEARNER="{ loss = { kind = \"logistic\" }, optimizer = { kind = \"adagrad\", learning_rate = $lr } }" \
        "$bin" eval --model tweets --data "$data/airline-tweets/tweets.jsonl" --passes 1 --json \
        | python3 -c "import json, sys; r = json.load(sys.stdin); r.update(ng=$ng, norm=$norm, lr=$lr); print(json.dumps(r))" >> "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows.sort(key=lambda r: r["first_20pct"]["log_loss"])
print("| ngrams | normalize | learning rate | first 20%: log loss / AUC | last 80%: log loss / AUC | whole: log loss / AUC | tweets/s (one pass) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    part = lambda m: f"{m['log_loss']:.4f} / {m['roc_auc']:.4f}"
    print(f"| {r['ng']} | {r['norm']} | {r['lr']} | {part(r['first_20pct'])} | {part(r['last_80pct'])} | {part(r)} | {r['readings_per_second']:,.0f} |")
best = rows[0]
print(f"\nlowest first-20% log loss: ngrams {best['ng']}, normalize {best['norm']}, learning rate {best['lr']}")
for ng in sorted({r['ng'] for r in rows}):
    b = min((r for r in rows if r['ng'] == ng), key=lambda r: r["first_20pct"]["log_loss"])
    print(f"  with ngrams {ng}: normalize {b['norm']}, learning rate {b['lr']} (first 20% {b['first_20pct']['log_loss']:.4f}, whole {b['log_loss']:.4f} / {b['roc_auc']:.4f})")
PY
