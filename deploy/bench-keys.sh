#!/usr/bin/env bash
# Keyed state at scale: a per-key model (one AdaGrad model per key on the
# hour and the last posted wait, as in service/tests/large_state.rs) over
# the 637,768 wait-time readings with their keys fanned out to 1,000,
# 10,000 and 100,000 keys (`load-test publish --keys N`), exactly once, on
# a fresh 3-partition topic per run. Per run it prints:
#
# - readings/s from the first prediction to the last;
# - checkpoint bytes per commit (streamfit_checkpoint_bytes_total over
#   streamfit_commits_total: the base records and the key records that
#   changed) and key records per commit;
# - RSS of the service once every reading is predicted;
# - restore time: a SIGTERM, then a restart until /readyz answers 200 (the
#   checkpoints of all 3 partitions read and assembled), and the keys the
#   restored model holds.
#
# The shipped models' memory: deploy/bench-memory.sh.
#
#   deploy/bench-keys.sh            ROUNDS=3 KEYS="1000 10000 100000" by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${ROUNDS:-3}"
keys_list="${KEYS:-1000 10000 100000}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
log="$cache/bench-keys.log"
bench_start bench-keys
n=637768

# keyed_config TOPIC RUN HTTP: a config with the per-key bench model
keyed_config() {
  local conf="$cache/bench-keyed-$2.toml"
  cat > "$conf" <<EOF
[kafka]
"bootstrap.servers" = "127.0.0.1:$port"
[service]
group_id = "bench-keys-$2"
http_addr = "$3"
[topics]
partitions = 3
[[model]]
name = "keyed"
task = "regression"
input_topic = "$1"
output_topic = "$1.predictions"
dead_letter_topic = "$1.dead"
key = "ride"
timestamp = "ts"
target = { field = "posted_wait", missing = [-999.0] }
per_key = true
features = [
  { kind = "hour_of_day" },
  { kind = "lag", field = "posted_wait", missing = [-999.0], reset = "daily", name = "lag1" },
]
EOF
  echo "$conf"
}

# wait_predicted HTTP MODEL N PID [COUNTER]: waits until MODEL predicted
# (or COUNTER says) N readings; prints the readings/s from the first to the last
wait_predicted() {
  local http="$1" model="$2" want="$3" pid="$4" counter="${5:-streamfit_readings_predicted_total}" start="" first=0 total=0 now
  for _ in $(seq 1 30000); do
    total=$(bench_metric "$http" "$counter" "$model")
    now=$(date +%s.%N)
    if [ -z "$start" ] && [ "$total" -gt 0 ]; then start=$now; first=$total; fi
    [ "$total" -ge "$want" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "bench-keys: error: the service exited (log: $log)" >&2; return 1; }
    sleep 0.02
  done
  [ "$total" -ge "$want" ] || { echo "bench-keys: error: $model predicted only $total of $want readings in 10 minutes (log: $log)" >&2; return 1; }
  python3 -c "print(round(($want - $first) / max($now - $start, 1e-9)))"
}

# one_run KEYS ROUND: prints "readings/s bytes/commit records/commit rss restore_s keys"
one_run() {
  local k="$1" round="$2" topic="bench.keys.$run_id.$2.$1" http conf pid
  deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
    --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null
  http=$(bench_http)
  conf=$(keyed_config "$topic" "$run_id-$round-$k" "$http")
  STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" &
  pid=$!
  bench_wait_ready "$http" "$pid"
  "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --keys "$k" \
    --bootstrap "127.0.0.1:$port" --quiet >/dev/null &
  local publisher=$!
  local rate
  rate=$(wait_predicted "$http" keyed "$n" "$pid") || { kill "$pid"; exit 1; }
  wait "$publisher" || true
  sleep 1 # the last commit
  local commits bytes records rss
  commits=$(bench_metric "$http" streamfit_commits_total keyed)
  bytes=$(bench_metric "$http" streamfit_checkpoint_bytes_total keyed)
  records=$(bench_metric "$http" streamfit_checkpoint_key_records_total keyed)
  rss=$(bench_rss_mb "$pid")
  kill -TERM "$pid"; wait "$pid" || true
  local t0 t1 held
  t0=$(date +%s.%N)
  STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" &
  pid=$!
  bench_wait_ready "$http" "$pid"
  t1=$(date +%s.%N)
  held=$(curl -sf "http://$http/v1/models/keyed" | python3 -c "import json, sys; print(sum(p['keys'] for p in json.load(sys.stdin)['partitions']))")
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c "print(f'$rate {$bytes / max($commits, 1):.0f} {$records / max($commits, 1):.0f} $rss {$t1 - $t0:.2f} $held')"
}

printf '| round | keys | readings/s | checkpoint bytes per commit | key records per commit | RSS MB | restart to ready s | keys restored |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n'
for r in $(seq 1 "$rounds"); do
  for k in $keys_list; do
    read -r rate bpc rpc rss restore held < <(one_run "$k" "$r") || true
    [ -n "${held:-}" ] || { echo "bench-keys: error: the run with $k keys failed (log: $log)" >&2; exit 1; }
    python3 -c "print(f'| $r | {$k:,} | {$rate:,} | {$bpc:,} | {$rpc:,} | $rss | $restore | {$held:,} |')"
  done
done
