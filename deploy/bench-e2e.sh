#!/usr/bin/env bash
# End-to-end throughput on real Kafka, beside the raw consume rate of the
# same topic measured in the same run with Kafka's own ConsumerPerformance
# tool. The wait-time readings (637,768) are published to a fresh topic
# first; then, for each MODEL (default: waits-v1 waits), a fresh service
# consumes the topic from the start until it has predicted every reading
# (consume, decode, features, predict, learn, produce predictions, commit),
# once exactly once (transactions with checkpoints, the default) and once at
# least once (`exactly_once = false`), to show what the transactions cost;
# then `streamfit replay` backfills the model from the same topic.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
models="${MODELS:-waits-v1 waits}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
topic="bench.waits.$run_id"
bench_start bench-e2e
deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
  --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null
"$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$port" --quiet
n=637768

raw() {
  deploy/kafka.sh tool org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "127.0.0.1:$port" \
    --topic "$topic" --messages "$n" --group "perf-$run_id-$1" --timeout 60000 2>/dev/null | tail -n 1 | awk -F', *' '{print $6}'
}

service() {
  local model="$1" round="$2" eos="$3" http conf
  http=$(bench_http)
  conf=$(bench_config "$model" "$topic" "$run_id-$round-$eos" "$http")
  STREAMFIT_SERVICE_EXACTLY_ONCE="$eos" STREAMFIT_SERVICE_INSTANCE_ID="bench-$run_id-$round-$eos" \
    STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$cache/bench-e2e.log" &
  bench_predict_rate "$http" "$n" $! "$cache/bench-e2e.log" || exit 1
}

# backfill: `streamfit replay` trains the model from the whole topic (no
# predictions published), then hands over offsets and checkpoints
replay() {
  local model="$1" round="$2" conf
  conf=$(bench_config "$model" "$topic" "$run_id-$round-replay" "127.0.0.1:0")
  STREAMFIT_LOG=warn "$bin/streamfit" replay --config "$conf" --model "$model" --from earliest --json 2>>"$cache/bench-e2e.log" \
    | python3 -c "import json, sys; print(round(json.load(sys.stdin)['readings_per_second']))"
}

printf '| run | raw consume (msg/s, ConsumerPerformance) | model | exactly once (readings/s) | at least once (readings/s) | replay (readings/s) | exactly once / raw | at least once / raw | replay / raw |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for i in 1 2 3; do
  for model in $models; do
    r=$(raw "$i-$model")
    e=$(service "$model" "$i" true)
    a=$(service "$model" "$i" false)
    b=$(replay "$model" "$i")
    python3 -c "r, e, a, b = float('$r'), int('$e'), int('$a'), int('$b'); print(f'| $i | {r:,.0f} | $model | {e:,} | {a:,} | {b:,} | {e/r:.0%} | {a/r:.0%} | {b/r:.0%} |')"
  done
done
