#!/usr/bin/env bash
# How sensitive the heart figures are to the learning rate: heart-v1 and
# heart as shipped in deploy/streamfit.toml, with AdaGrad's learning rate
# replaced by each of LRS (default 0.1 0.15 0.2 0.25 0.3), B = 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamfit/target}"
data="${STREAMFIT_DATA:-$root/../shared/data}/heart-failure/heart.csv"
cargo build --release -q -p streamfit
bin="$CARGO_TARGET_DIR/release/streamfit"
config="$(mktemp --suffix .toml)"
trap 'rm -f "$config"' EXIT
echo "| learning rate | model | log loss | accuracy | ROC AUC |"
echo "| --- | --- | --- | --- | --- |"
for lr in ${LRS:-0.1 0.15 0.2 0.25 0.3}; do
  sed -E "s/(kind = \"adagrad\", learning_rate = )[0-9.]+/\\1$lr/" deploy/streamfit.toml > "$config"
  for model in heart-v1 heart; do
    "$bin" eval --model "$model" --data "$data" --config "$config" --json |
      python3 -c "import json,sys; j=json.load(sys.stdin); print(f\"| $lr | $model | {j['log_loss']:.4f} | {j['accuracy']:.4f} | {j['roc_auc']:.4f} |\")"
  done
done
