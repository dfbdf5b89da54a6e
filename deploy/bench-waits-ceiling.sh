#!/usr/bin/env bash
# Is MAE < 4.0 with RMSE < 8.5 on waits within reach of these readings at
# all (issue 19, item 1)? Gradient-boosted trees fitted in hindsight on the
# first half of the stream with every feature the issue proposes (and a
# few more), scored on the second half, beside `waits` and persistence on
# the same half. See deploy/waits_ceiling.py. Installs numpy and lightgbm
# into a venv of its own ($cache/venv-ceiling; the suite does not need
# them). Takes about three minutes on 2 cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source deploy/bench-lib.sh
venv="$cache/venv-ceiling"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q numpy==2.4.6 lightgbm==4.7.0
cargo build --release -q -p streamfit
"$bin/streamfit" eval --model waits --data "$data/wdw-waits-2018" --passes 1 --json \
  | python3 -c 'import json, sys; h = json.load(sys.stdin)["second_half"]; print("waits (eval, second_half)\tMAE %.3f\tRMSE %.3f" % (h["mae"], h["rmse"]))'
"$venv/bin/python" deploy/waits_ceiling.py "$data/wdw-waits-2018"
