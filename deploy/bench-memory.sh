#!/usr/bin/env bash
# Memory of one instance running the four shipped models (deploy/streamfit.toml,
# exactly once) on fresh topics: RSS once ready (no readings yet), then after
# all the real readings (637,768 wait times and 918 heart records, published
# flat out) are consumed. Each variant runs on its own fresh topics:
#
# - default: streamfit's defaults;
# - prefetch 8 MB: the consumers' queued.max.messages.kbytes = 8192
#   (librdkafka's default lets each consumer prefetch 64 MB);
# - no trim: service.memory_trim_interval_ms = 0 (streamfit gives freed
#   memory back to the system every 10 s by default);
# - 2 arenas: MALLOC_ARENA_MAX=2 (glibc's default allows 8 per core);
# - producer 32 MB: queue.buffering.max.kbytes = 32768 (outputs waiting in
#   librdkafka for their transaction; streamfit's default lets 1,000,000
#   messages or 1 GB wait);
# - fetch 8 MB: fetch.max.bytes = 8388608 with the 8 MB prefetch (a fetch
#   response, 50 MB by default, is one allocation kept until its last
#   message is done with);
# - fetch 8 MB + 2 arenas;
# - queued 10k: queued.min.messages = 10000 (librdkafka keeps up to 100,000
#   fetched messages per partition queued by default, each an op of its
#   own: heaptrack put the peak there, 152 MB for two consumers);
# - fetch small: every fetch and prefetch limit small at once
#   (queued.min.messages 1000, queued.max.messages.kbytes 1024,
#   max.partition.fetch.bytes 256 KB, fetch.max.bytes 1 MB).
#
#   deploy/bench-memory.sh            ROUNDS=1 by default; ONLY="default no-trim"
#                                     runs only the variants whose name starts so
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${ROUNDS:-1}"
source deploy/bench-lib.sh
run_id="$(date +%s)"
log="$cache/bench-memory.log"
bench_start bench-memory
n=637768
heart_n=$(python3 -c "print(sum(1 for _ in open('$data/heart-failure/heart.csv')) - 1)")

# one_run NAME KAFKA_LINES ENV ROUND: prints "idle_rss rss_after rss_settled
# seconds": RSS when ready, 2 s after every reading is consumed and 15 s
# after (past a memory trim), and the seconds from the start of publishing
# to every reading consumed; ENV is VAR=value settings for the service
one_run() {
  local name="$1" extra="$2" envs="$3" tag="$run_id-$1-$4"
  local tw="bench.memory.$tag.waits" th="bench.memory.$tag.heart" http conf pid
  for t in "$tw" "$th"; do
    deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
      --create --topic "$t" --partitions 3 --replication-factor 1 >/dev/null </dev/null
  done
  http=$(bench_http)
  conf="$cache/bench-memory-$tag.toml"
  python3 - "$tw" "$th" "$http" "$port" "$tag" "$extra" > "$conf" <<'PY'
import re, sys
tw, th, http, port, run, extra = sys.argv[1:]
extra = extra.replace("\\n", "\n")
text = open("deploy/streamfit.toml").read()
text = text.replace('"waits.readings"', f'"{tw}"').replace('"clinical.readings"', f'"{th}"')
text = re.sub(r'^output_topic = "(.*)"$', lambda m: f'output_topic = "{run}.{m.group(1)}"', text, flags=re.M)
text = re.sub(r'^dead_letter_topic = "(.*)"$', lambda m: f'dead_letter_topic = "{run}.{m.group(1)}"', text, flags=re.M)
text = re.sub(r'^group_id = .*$', f'group_id = "bench-memory-{run}"', text, flags=re.M)
text = re.sub(r'^http_addr = .*$', f'http_addr = "{http}"', text, flags=re.M)
text = re.sub(r'^"bootstrap.servers" = .*$', f'"bootstrap.servers" = "127.0.0.1:{port}"' + ("\n" + extra if extra else ""), text, flags=re.M)
print(text)
PY
  # shellcheck disable=SC2086
  env $envs STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" </dev/null &
  pid=$!
  bench_wait_ready "$http" "$pid"
  sleep 2
  local idle t0
  idle=$(bench_rss_mb "$pid")
  t0=$(date +%s.%N)
  "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$tw" --bootstrap "127.0.0.1:$port" --quiet >/dev/null </dev/null
  "$bin/load-test" publish --data "$data/heart-failure/heart.csv" --topic "$th" --bootstrap "127.0.0.1:$port" --quiet >/dev/null </dev/null
  local m want done=0
  for _ in $(seq 1 6000); do
    done=1
    for m in waits-v1 waits heart-v1 heart; do
      want=$n; [[ "$m" == heart* ]] && want=$heart_n
      [ "$(bench_metric "$http" streamfit_readings_consumed_total "$m")" -ge "$want" ] || { done=0; break; }
    done
    [ "$done" -eq 1 ] && break
    kill -0 "$pid" 2>/dev/null || { echo "bench-memory: error: the service exited (log: $log)" >&2; exit 1; }
    sleep 0.1
  done
  [ "$done" -eq 1 ] || { echo "bench-memory: error: not every reading was consumed within 10 minutes (log: $log)" >&2; kill "$pid"; exit 1; }
  local secs
  secs=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  sleep 2
  local after
  after=$(bench_rss_mb "$pid")
  sleep 13
  echo "$idle $after $(bench_rss_mb "$pid") $secs"
  kill -TERM "$pid"; wait "$pid" || true
}

printf '| round | variant | RSS MB when ready | RSS MB 2 s after all readings | 15 s after | s to publish and consume all |\n| --- | --- | --- | --- | --- | --- |\n'
variants=(
  'default||'
  'prefetch-8MB|"queued.max.messages.kbytes" = "8192"|'
  'no-trim||STREAMFIT_SERVICE_MEMORY_TRIM_INTERVAL_MS=0'
  '2-arenas||MALLOC_ARENA_MAX=2'
  'producer-32MB|"queue.buffering.max.kbytes" = "32768"|'
  'fetch-8MB|"fetch.max.bytes" = "8388608"\n"queued.max.messages.kbytes" = "8192"|'
  'fetch-8MB-2-arenas|"fetch.max.bytes" = "8388608"\n"queued.max.messages.kbytes" = "8192"|MALLOC_ARENA_MAX=2'
  'queued-10k|"queued.min.messages" = "10000"|'
  'fetch-small|"queued.min.messages" = "1000"\n"queued.max.messages.kbytes" = "1024"\n"max.partition.fetch.bytes" = "262144"\n"fetch.max.bytes" = "1048576"|'
)
for r in $(seq 1 "$rounds"); do
  for v in "${variants[@]}"; do
    IFS='|' read -r name extra envs <<< "$v"
    picked=0
    [ -z "${ONLY:-}" ] && picked=1
    for o in ${ONLY:-}; do [[ "$name" == "$o"* ]] && picked=1; done
    [ "$picked" -eq 1 ] || continue
    read -r idle after settled secs < <(one_run "$name" "$extra" "$envs" "$r") || true
    [ -n "${secs:-}" ] || { echo "bench-memory: error: the $name run failed (log: $log)" >&2; exit 1; }
    echo "| $r | $name | $idle | $after | $settled | $secs |"
  done
done
