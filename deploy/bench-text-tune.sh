#!/usr/bin/env bash
# How the shipped text models' settings were chosen (issue 17): for MODEL
# (`tweets`, the default, or `sentiment`), word n-grams × length
# normalisation (`normalize`) × character n-grams (`chars`, none or
# [n, n], with `char_weight`) × AdaGrad learning rate (and, for sentiment,
# with and without `naive_bayes = 0.5`), one `eval` each (exact figures),
# chosen by the lowest log loss over the first 20% of the stream only; the
# last 80% and the whole stream printed beside, with each setting's speed
# (one pass: a rough guide; bench-eval.sh measures the shipped one). The
# 25 best settings are printed, then the best of each feature family.
# NGRAMS, NORMS, CHARS ("none 4 ..."), WEIGHTS, RATES change the grid.
# Release build; about 5 minutes for tweets on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source deploy/bench-lib.sh
model="${MODEL:-tweets}"
case "$model" in
  tweets) nbs=("") ;;
  sentiment) nbs=("" ", naive_bayes = 0.5") ;;
  *) echo "bench-text-tune: MODEL should be tweets or sentiment, not $model" >&2; exit 2 ;;
esac
var="$(echo "$model" | tr a-z A-Z)"
cargo build --release -q -p streamfit
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for ng in ${NGRAMS:-1 2}; do
  for norm in ${NORMS:-0 0.5 0.75 1}; do
    for ch in ${CHARS:-none 3 4 5}; do
      for w in $([ "$ch" = none ] && echo 1 || echo "${WEIGHTS:-0.15 0.3}"); do
        grams=""
        [ "$ch" = none ] || grams=", chars = [$ch, $ch], char_weight = $w"
        for lr in ${RATES:-0.2 0.3 0.4}; do
          for nb in "${nbs[@]}"; do
            env "STREAMFIT_MODEL_${var}__FEATURES=[ { kind = \"text\", field = \"text\", bits = 20, ngrams = $ng, sublinear = true, normalize = $norm$grams }, { kind = \"categorical\", field = \"airline\", max_values = 16 } ]" \
              "STREAMFIT_MODEL_${var}__LEARNER={ loss = { kind = \"logistic\" }, optimizer = { kind = \"adagrad\", learning_rate = $lr }$nb }" \
              "$bin/streamfit" eval --model "$model" --data "$data/airline-tweets/tweets.jsonl" --passes 1 --json \
              | python3 -c "import json, sys; r = json.load(sys.stdin); r.update(ng=$ng, norm=$norm, ch='$ch', w=$w, lr=$lr, nb='${nb:+0.5}'); print(json.dumps(r))" >> "$out"
          done
        done
      done
    done
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows.sort(key=lambda r: r["first_20pct"]["log_loss"])
multi = "macro_f1" in rows[0]
def part(m):
    if multi:
        return f"{m['log_loss']:.4f} / {m['accuracy']:.4f} / {m['macro_f1']:.4f}"
    return f"{m['log_loss']:.4f} / {m['roc_auc']:.4f}"
what = "log loss / accuracy / macro-F1" if multi else "log loss / AUC"
def setting(r):
    chars = "none" if r["ch"] == "none" else f"[{r['ch']}, {r['ch']}] × {r['w']}"
    nb = f" | {r['nb'] or '-'}" if multi else ""
    return f"| {r['ng']} | {r['norm']} | {chars} | {r['lr']}{nb}"
nbh = " | naive Bayes" if multi else ""
print(f"{len(rows)} settings; the 25 with the lowest first-20% log loss:\n")
print(f"| ngrams | normalize | chars × weight | learning rate{nbh} | first 20%: {what} | last 80% | whole | tweets/s (one pass) |")
print("|" + " --- |" * (8 + multi))
for r in rows[:25]:
    print(f"{setting(r)} | {part(r['first_20pct'])} | {part(r['last_80pct'])} | {part(r)} | {r['readings_per_second']:,.0f} |")
best = rows[0]
print(f"\nchosen (lowest first-20% log loss): {setting(best)} |")
print("\nthe best of each family (ngrams, with or without character n-grams):")
for ng in sorted({r["ng"] for r in rows}):
    for grams in (False, True):
        fam = [r for r in rows if r["ng"] == ng and (r["ch"] != "none") == grams]
        if fam:
            b = fam[0]
            print(f"{setting(b)} | first 20% {part(b['first_20pct'])} | whole {part(b)} | {b['readings_per_second']:,.0f}/s |")
PY
