#!/usr/bin/env bash
# Readings/s with 1, 2 and 3 instances of one consumer group on one
# 6-partition topic, and the CPU each instance used. Per round and per
# instance count K: K fresh instances (one config, only http_addr differs)
# start in a fresh group on a fresh, empty 6-partition topic; once the group
# has formed (the 6 partitions spread over all K), the 637,768 wait-time
# readings are published flat out and the clock runs from the first
# prediction to the last (exactly once, the default). CPU seconds per
# instance are counted over that window only. On a 2-core machine that
# also runs the broker and the publisher this shows the cost of several
# instances, not a speed-up.
#
#   deploy/bench-scale.sh            MODEL=waits-v1 ROUNDS=3 by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${MODEL:-waits-v1}"
rounds="${ROUNDS:-3}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
log="$cache/bench-scale.log"
bench_start bench-scale
n=637768
ticks=$(getconf CLK_TCK)

# cpu_seconds PID: user + system CPU time of a process so far
cpu_seconds() {
  awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}

# owned HTTP: how many input partitions one instance owns for the model
owned() {
  curl -sf "http://$1/v1/models/$model" 2>/dev/null \
    | python3 -c "import json, sys; print(len(json.load(sys.stdin)['partitions']))" 2>/dev/null || echo 0
}

# one_run K ROUND: prints "readings/s cpu1 cpu2 ..."
one_run() {
  local k="$1" round="$2" conf https=() pids=() i topic="bench.scale.$run_id.$2.$1"
  deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
    --create --topic "$topic" --partitions 6 --replication-factor 1 >/dev/null
  conf=$(bench_config "$model" "$topic" "$run_id-$round-$k" "127.0.0.1:0")
  for i in $(seq 1 "$k"); do
    local h
    h=$(bench_http)
    while [[ " ${https[*]} " == *" $h "* ]]; do h=$(bench_http); done
    https+=("$h")
    STREAMFIT_SERVICE_HTTP_ADDR="$h" STREAMFIT_LOG=warn \
      "$bin/streamfit" run --config "$conf" 2>>"$log" &
    pids+=($!)
  done
  # the group forms: every instance owns partitions, all 6 owned
  local formed=0
  for _ in $(seq 1 1200); do
    local total=0 all=1 o
    for h in "${https[@]}"; do
      o=$(owned "$h"); total=$((total + o)); [ "$o" -gt 0 ] || all=0
    done
    if [ "$all" -eq 1 ] && [ "$total" -eq 6 ]; then formed=1; break; fi
    sleep 0.1
  done
  [ "$formed" -eq 1 ] || { echo "bench-scale: error: $k instance(s) did not share the 6 partitions within 120 s (log: $log)" >&2; kill "${pids[@]}"; exit 1; }
  local cpu0=()
  for p in "${pids[@]}"; do cpu0+=("$(cpu_seconds "$p")"); done
  "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$port" --quiet >/dev/null &
  local publisher=$!
  local start="" first=0 total=0 now
  for _ in $(seq 1 6000); do
    total=0
    for h in "${https[@]}"; do total=$((total + $(bench_metric "$h" streamfit_readings_predicted_total "$model"))); done
    now=$(date +%s.%N)
    if [ -z "$start" ] && [ "$total" -gt 0 ]; then start=$now; first=$total; fi
    [ "$total" -ge "$n" ] && break
    sleep 0.02
  done
  wait "$publisher" || true
  local cpus=() j=0
  for p in "${pids[@]}"; do
    cpus+=("$(python3 -c "print(f'{$(cpu_seconds "$p") - ${cpu0[$j]}:.2f}')")")
    j=$((j + 1))
  done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" || true; done
  [ "$total" -ge "$n" ] || { echo "bench-scale: error: $k instance(s) predicted only $total of $n readings in time (log: $log)" >&2; exit 1; }
  python3 -c "print(round(($n - $first) / ($now - $start)))" | tr '\n' ' '
  echo "${cpus[*]}"
}

printf '| round | instances | readings/s (all instances) | CPU s per instance while processing |\n| --- | --- | --- | --- |\n'
for r in $(seq 1 "$rounds"); do
  for k in 1 2 3; do
    read -r rate cpus < <(one_run "$k" "$r") || true
    [ -n "${rate:-}" ] || { echo "bench-scale: error: the run with $k instance(s) failed (log: $log)" >&2; exit 1; }
    python3 -c "print(f'| $r | $k | {int(\"$rate\"):,} | ' + ', '.join('$cpus'.split()) + ' |')"
  done
done
