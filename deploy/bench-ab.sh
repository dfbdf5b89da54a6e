#!/usr/bin/env bash
# A/B of two streamfit binaries on the same readings, in one sitting:
# `streamfit eval --passes 1` of each model, the two binaries alternating
# ROUNDS times (default 8); prints each binary's median readings/s (with
# the range) and the ratio B/A, and checks that both scored the same
# figures to every digit. The machine's speed drifts within a session, so
# only a ratio measured this way says whether a change made it slower.
# Models whose `eval` reports it get a second line: the
# same for the model alone (`model_only_readings_per_second`).
#   deploy/bench-ab.sh OLD_BINARY NEW_BINARY [MODEL...]
# Default models: waits-v1 waits heart-v1 heart. Build the old binary from
# a worktree of the old commit (git worktree add /tmp/old <commit>; cd
# /tmp/old; CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p
# streamfit: a target dir of its own, see deploy/own-target.sh) and copy it
# out first;
# CONFIG_A (default deploy/streamfit.toml) is the config the old binary
# reads, when it does not know every shipped model.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
data="${STREAMFIT_DATA:-$root/../shared/data}"
a="${1:?usage: bench-ab.sh OLD_BINARY NEW_BINARY [MODEL...]}"
b="${2:?usage: bench-ab.sh OLD_BINARY NEW_BINARY [MODEL...]}"
shift 2
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(waits-v1 waits heart-v1 heart)
rounds="${ROUNDS:-8}"
out="$(mktemp)"
for model in "${models[@]}"; do
  case "$model" in
    waits*) src="$data/wdw-waits-2018" ;;
    heart*) src="$data/heart-failure/heart.csv" ;;
    *) src="$data/airline-tweets/tweets.jsonl" ;;
  esac
  for r in $(seq 1 "$rounds"); do
    for side in A B; do
      bin="$a"; config="${CONFIG_A:-deploy/streamfit.toml}"
      [ "$side" = B ] && bin="$b" && config=deploy/streamfit.toml
      printf '%s %s ' "$side" "$model" >> "$out"
      "$bin" eval --config "$config" --model "$model" --data "$src" --passes 1 --json >> "$out"
    done
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    side, model, js = line.split(" ", 2)
    by.setdefault(model, {}).setdefault(side, []).append(json.loads(js))
print(f"{sys.argv[2]} rounds, alternating; medians (range) of readings/s with JSON decoding")
def rates(sides, key, label, figures=""):
    rate = {s: [r[key] for r in rs] for s, rs in sides.items()}
    med = {s: statistics.median(v) for s, v in rate.items()}
    ratios = [b / a for a, b in zip(rate["A"], rate["B"])]
    print(f"{label}: A {med['A']:,.0f} ({min(rate['A']):,.0f}-{max(rate['A']):,.0f})  B {med['B']:,.0f} ({min(rate['B']):,.0f}-{max(rate['B']):,.0f})  B/A {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}){figures}")
for model, sides in by.items():
    keys = [k for k in ("mae", "rmse", "log_loss", "roc_auc", "accuracy", "macro_f1") if k in sides["A"][0]]
    same = all(sides["A"][0].get(k) == sides["B"][0].get(k) for k in keys)
    figures = ", ".join(f"{k} {sides['B'][0][k]:.4f}" for k in keys)
    rates(sides, "readings_per_second", model, f"  figures {'identical' if same else 'DIFFER'}: {figures}")
    if all("model_only_readings_per_second" in r for rs in sides.values() for r in rs):
        rates(sides, "model_only_readings_per_second", f"{model}, the model alone")
PY
rm -f "$out"
