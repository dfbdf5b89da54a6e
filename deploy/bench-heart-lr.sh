#!/usr/bin/env bash
# How the heart settings fare when chosen honestly: heart-v1 and heart as
# shipped in deploy/streamfit.toml, with AdaGrad's learning rate replaced by
# each of LRS (default 0.05 0.1 0.15 0.2 0.25 0.3 0.5) and the scaling's
# standard deviations by each of SDS (default 1 2), B = 1. Prints log loss
# and ROC AUC over the first 20% of the readings (the tuning window: 183
# patients), the last 80% (held out) and the whole stream, then for each
# model the setting the first 20% picks (lowest log loss) and its held-out
# figures beside the shipped setting's.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
"$root/deploy/own-target.sh"
data="${STREAMFIT_DATA:-$root/../shared/data}/heart-failure/heart.csv"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
config="$(mktemp --suffix .toml)"
out="$(mktemp)"
trap 'rm -f "$config" "$out"' EXIT
for lr in ${LRS:-0.05 0.1 0.15 0.2 0.25 0.3 0.5}; do
  for sds in ${SDS:-1 2}; do
    sed -E "s/(kind = \"adagrad\", learning_rate = )[0-9.]+/\\1$lr/; s/sds = [0-9.]+/sds = $sds/" deploy/streamfit.toml > "$config"
    for model in heart-v1 heart; do
      "$bin" eval --model "$model" --data "$data" --config "$config" --passes 1 --json |
        python3 -c "import json,sys; j=json.load(sys.stdin); j['lr']=$lr; j['sds']=$sds; print(json.dumps(j))" >> "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fig = lambda m: "%.4f / %.4f" % (m["log_loss"], m["roc_auc"])
print("| model | learning rate | sds | first 20% | last 80% | whole |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| %s | %s | %s | %s | %s | %s |" % (r["model"], r["lr"], r["sds"], fig(r["first_20pct"]), fig(r["last_80pct"]), fig(r)))
shipped = {"heart-v1": (0.2, 2), "heart": (0.2, 2)}
print()
for model in ("heart-v1", "heart"):
    mine = [r for r in rows if r["model"] == model]
    pick = min(mine, key=lambda r: r["first_20pct"]["log_loss"])
    ship = [r for r in mine if (r["lr"], r["sds"]) == shipped[model]]
    line = "%s: the first 20%% picks learning rate %s, sds %s: last 80%% %s, whole %s" % (model, pick["lr"], pick["sds"], fig(pick["last_80pct"]), fig(pick))
    if ship:
        line += "; shipped (0.2, 2): last 80%% %s, whole %s" % (fig(ship[0]["last_80pct"]), fig(ship[0]))
    print(line)
PY
