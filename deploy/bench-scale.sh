#!/usr/bin/env bash
# Readings/s with 1, 2 and 3 instances of one consumer group on one
# 6-partition topic, and the CPU each instance used. The wait-time readings
# (637,768) are published to a fresh 6-partition topic first; then, per
# round and per instance count K, K fresh instances (one config, only
# http_addr differs) start together in a fresh group and consume the topic
# from the start, exactly once, until together they have predicted every
# reading. The time runs from the first prediction to the last, so it
# includes the group forming (the instances join within a second of each
# other and partitions move once). On a 2-core machine that also runs the
# broker this shows the cost of running several instances, not a speed-up.
#
#   deploy/bench-scale.sh            MODEL=waits-v1 ROUNDS=3 by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
data="${STREAMFIT_DATA:-$root/../shared/data}"
port="${STREAMFIT_KAFKA_PORT:-9092}"
model="${MODEL:-waits-v1}"
rounds="${ROUNDS:-3}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
topic="bench.scale.$run_id"
log="$cache/bench-scale.log"
deploy/kafka.sh up
echo "bench-scale: building the release binaries (a cold build takes 25-40 minutes on 2 cores)" >&2
cargo build --release -p streamfit -p streamfit-load-test
bin="$CARGO_TARGET_DIR/release"
deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
  --create --topic "$topic" --partitions 6 --replication-factor 1 >/dev/null
"$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$port" --quiet
n=637768
ticks=$(getconf CLK_TCK)

# cpu_seconds PID: user + system CPU time of a process so far
cpu_seconds() {
  awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}

# predicted HTTP: the model's predicted counter on one instance (0 if not answering)
predicted() {
  local c
  c=$(curl -sf "http://$1/metrics" 2>/dev/null | awk -v m="$model" '$1 == "streamfit_readings_predicted_total{model=\""m"\"}" {print $2}')
  echo "${c:-0}"
}

# one_run K ROUND: prints "readings/s cpu1 cpu2 ..."
one_run() {
  local k="$1" round="$2" conf https=() pids=() i
  conf=$(bench_config "$model" "$topic" "$run_id-$round-$k" "127.0.0.1:0")
  for i in $(seq 1 "$k"); do
    https+=("$(bench_http)")
    STREAMFIT_SERVICE_HTTP_ADDR="${https[-1]}" STREAMFIT_LOG=warn \
      "$bin/streamfit" run --config "$conf" 2>>"$log" &
    pids+=($!)
  done
  local start="" first=0 total=0 now
  for _ in $(seq 1 6000); do
    total=0
    for h in "${https[@]}"; do total=$((total + $(predicted "$h"))); done
    now=$(date +%s.%N)
    if [ -z "$start" ] && [ "$total" -gt 0 ]; then start=$now; first=$total; fi
    [ "$total" -ge "$n" ] && break
    sleep 0.05
  done
  local cpus=()
  for p in "${pids[@]}"; do cpus+=("$(cpu_seconds "$p")"); done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" || true; done
  [ "$total" -ge "$n" ] || { echo "bench-scale: error: $k instance(s) predicted only $total of $n readings in time (log: $log)" >&2; exit 1; }
  python3 -c "print(round(($n - $first) / ($now - $start)))" | tr '\n' ' '
  echo "${cpus[*]}"
}

printf '| round | instances | readings/s (all instances) | CPU s per instance (whole run, start-up included) |\n| --- | --- | --- | --- |\n'
for r in $(seq 1 "$rounds"); do
  for k in 1 2 3; do
    read -r rate cpus < <(one_run "$k" "$r")
    python3 -c "print(f'| $r | $k | {int(\"$rate\"):,} | ' + ', '.join('$cpus'.split()) + ' |')"
  done
done
