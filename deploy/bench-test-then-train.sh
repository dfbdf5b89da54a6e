#!/usr/bin/env bash
# What predicting reading by reading costs (test_then_train = "reading", the
# default) against predicting each micro-batch with the model as it was
# before it ("batch"): the 637,768 wait-time readings on a fresh 3-partition
# topic, a fresh exactly-once service per run consuming it from the start
# until every reading is predicted, the two settings alternating in one
# sitting. MODEL (default waits), ROUNDS (default 3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${MODEL:-waits}"
rounds="${ROUNDS:-3}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
topic="bench.ttt.$run_id"
bench_start bench-test-then-train
deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
  --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null
"$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$port" --quiet
n=637768
upper="$(echo "$model" | tr 'a-z-' 'A-Z_')"

# run MODE ROUND: readings/s of a fresh service predicting the whole topic
run() {
  local mode="$1" round="$2" http conf
  http=$(bench_http)
  conf=$(bench_config "$model" "$topic" "$run_id-$round-$mode" "$http")
  env "STREAMFIT_MODEL_${upper}__TEST_THEN_TRAIN=$mode" STREAMFIT_SERVICE_INSTANCE_ID="ttt-$run_id-$round-$mode" \
    STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$cache/bench-test-then-train.log" &
  bench_predict_rate "$http" "$n" $! "$cache/bench-test-then-train.log" || exit 1
}

echo "| round | model | reading (readings/s) | batch (readings/s) | reading / batch |"
echo "| --- | --- | --- | --- | --- |"
for i in $(seq 1 "$rounds"); do
  r=$(run reading "$i")
  b=$(run batch "$i")
  python3 -c "r, b = int('$r'), int('$b'); print(f'| $i | $model | {r:,} | {b:,} | {r/b:.2f} |')"
done
