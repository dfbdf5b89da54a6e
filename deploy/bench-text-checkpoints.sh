#!/usr/bin/env bash
# What a text model's checkpoints write per commit, by the rate of the
# stream. For each MODEL (default: tweets sentiment) a fresh service reads
# a fresh one-partition topic (one model of the whole stream): the 14,640
# airline tweets are published flat out and learned, then the tweets again
# at each of RATES tweets a second (default 5 50 500) for SECONDS_PER_RATE
# (20) each. Per rate it prints the commits, and the checkpoint bytes and
# the column page records (of 4,096 pages) per commit
# (`streamfit_checkpoint_bytes_total` and
# `streamfit_checkpoint_page_records_total` over `streamfit_commits_total`),
# beside the size of the whole model (its `GET
# /v1/models/{name}/snapshot`): about what every commit wrote before the
# columns were checkpointed in pages.
#
#   deploy/bench-text-checkpoints.sh   (MODELS, RATES, SECONDS_PER_RATE to change them)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
models="${MODELS:-tweets sentiment}"
rates="${RATES:-5 50 500}"
seconds="${SECONDS_PER_RATE:-20}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
log="$cache/bench-text-checkpoints.log"
tweets="$data/airline-tweets/tweets.jsonl"
n=$(wc -l < "$tweets")
bench_start bench-text-checkpoints

# wait_predicted HTTP MODEL N PID: waits (5 minutes at most) until MODEL
# has predicted N readings
wait_predicted() {
  local total=0
  for _ in $(seq 1 6000); do
    total=$(bench_metric "$1" streamfit_readings_predicted_total "$2")
    [ "$total" -ge "$3" ] && return 0
    kill -0 "$4" 2>/dev/null || { echo "bench-text-checkpoints: error: the service exited (log: $log)" >&2; return 1; }
    sleep 0.05
  done
  echo "bench-text-checkpoints: error: $2 predicted only $total of $3 tweets in 5 minutes (log: $log)" >&2
  return 1
}

printf '| model | tweets/s | tweets | commits | checkpoint bytes per commit | page records per commit | whole model bytes |\n| --- | --- | --- | --- | --- | --- | --- |\n'
for model in $models; do
  topic="bench.text.$run_id.$model"
  deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
    --create --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null
  http=$(bench_http)
  conf=$(bench_config "$model" "$topic" "text-$run_id" "$http")
  STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null || true' EXIT
  bench_wait_ready "$http" "$pid"
  "$bin/load-test" publish --data "$tweets" --topic "$topic" --bootstrap "127.0.0.1:$port" --quiet >/dev/null
  wait_predicted "$http" "$model" "$n" "$pid"
  sleep 1 # the last commit
  whole=$(curl -sf "http://$http/v1/models/$model/snapshot" | wc -c)
  done_so_far=$n
  for rate in $rates; do
    count=$((rate * seconds))
    [ "$count" -le "$n" ] || count=$n
    c0=$(bench_metric "$http" streamfit_commits_total "$model")
    b0=$(bench_metric "$http" streamfit_checkpoint_bytes_total "$model")
    p0=$(bench_metric "$http" streamfit_checkpoint_page_records_total "$model")
    "$bin/load-test" publish --data "$tweets" --topic "$topic" --bootstrap "127.0.0.1:$port" \
      --rate "$rate" --limit "$count" --quiet >/dev/null
    done_so_far=$((done_so_far + count))
    wait_predicted "$http" "$model" "$done_so_far" "$pid"
    sleep 1
    c1=$(bench_metric "$http" streamfit_commits_total "$model")
    b1=$(bench_metric "$http" streamfit_checkpoint_bytes_total "$model")
    p1=$(bench_metric "$http" streamfit_checkpoint_page_records_total "$model")
    python3 -c "
c = max($c1 - $c0, 1)
print(f'| $model | $rate | $count | {$c1 - $c0} | {($b1 - $b0) / c:,.0f} | {($p1 - $p0) / c:,.0f} | {$whole:,} |')"
  done
  kill -TERM "$pid"; wait "$pid" || true
  trap - EXIT
done
