# Shared by the benchmark scripts and the quickstart: `source
# deploy/bench-lib.sh` from the repository root (after `cd "$root"`). Sets
# cache, CARGO_TARGET_DIR, data, port and bin from the environment.
#
# BENCH_KAFKA: extra lines for the [kafka] table of every config that
# bench_config writes, e.g. BENCH_KAFKA='"fetch.max.bytes" = "1048576"'.

cache="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
"$(dirname "${BASH_SOURCE[0]}")/own-target.sh"
data="${STREAMFIT_DATA:-$PWD/../shared/data}"
port="${STREAMFIT_KAFKA_PORT:-9092}"
bin="$CARGO_TARGET_DIR/release"

# bench_start NAME: the local Kafka up and the release binaries built
bench_start() {
  deploy/kafka.sh up
  echo "$1: building the release binaries (a cold build takes 25-40 minutes on 2 cores)" >&2
  cargo build --release -q -p streamfit -p streamfit-load-test
}

# bench_metric HTTP NAME MODEL: a counter of MODEL from /metrics (0 if absent
# or not answering)
bench_metric() {
  local c
  c=$(curl -sf "http://$1/metrics" 2>/dev/null | awk -v m="$2{model=\"$3\"}" '$1 == m {print $2}')
  echo "${c:-0}"
}

# bench_rss_mb PID: resident set size in MB
bench_rss_mb() {
  awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"
}

# bench_config MODEL INPUT_TOPIC RUN HTTP_ADDR: writes a config holding only
# MODEL from deploy/streamfit.toml, reading INPUT_TOPIC (outputs go to
# INPUT_TOPIC.MODEL.predictions and .dead) in consumer group bench-RUN with
# HTTP on HTTP_ADDR, and prints its path.
bench_config() {
  local model="$1" topic="$2" run="$3" http="$4" conf="$cache/bench-$1-$3.toml"
  python3 - "$model" "$topic" "$http" "$port" "$run" "${BENCH_KAFKA:-}" > "$conf" <<'PY'
import sys, re
model, topic, http, port, run, extra = sys.argv[1:]
text = open("deploy/streamfit.toml").read()
tables = text.split("[[model]]")
body = next(t for t in tables[1:] if re.search(r'^name = "%s"$' % re.escape(model), t, re.M))
body = re.sub(r'^input_topic = .*$', f'input_topic = "{topic}"', body, flags=re.M)
body = re.sub(r'^output_topic = .*$', f'output_topic = "{topic}.{model}.predictions"', body, flags=re.M)
body = re.sub(r'^dead_letter_topic = .*$', f'dead_letter_topic = "{topic}.{model}.dead"', body, flags=re.M)
extra = extra + "\n" if extra else ""
print(f'[kafka]\n"bootstrap.servers" = "127.0.0.1:{port}"\n{extra}[service]\ngroup_id = "bench-{run}"\nhttp_addr = "{http}"\n[topics]\npartitions = 3\n[[model]]{body}')
PY
  echo "$conf"
}

# bench_http: a random loopback address for a benchmark service
bench_http() {
  echo "127.0.0.1:$((18000 + RANDOM % 1000))"
}

# bench_wait_ready HTTP_ADDR_OR_URL PID [CURL ARGS...]: waits (at most 60 s)
# for /readyz to answer 200 (an address is served over http://; give an
# https:// URL and --cacert for HTTPS)
bench_wait_ready() {
  local url="$1" pid="$2"; shift 2
  [[ "$url" == *://* ]] || url="http://$url"
  for _ in $(seq 1 600); do
    curl -sf "$@" "$url/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "bench: error: the service exited before it was ready (log: $cache/bench*.log)" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: error: the service on $url was not ready within 60 s (log: $cache/bench*.log)" >&2
  return 1
}

# bench_predict_rate HTTP N PID LOG: polls the service PID serving on HTTP
# until it has predicted N readings (2 minutes at most), stops it, and
# prints its readings/s from its first prediction to its last
bench_predict_rate() {
  local http="$1" n="$2" pid="$3" log="$4" start="" now count=0 first=0
  for _ in $(seq 1 2400); do
    count=$(curl -sf "http://$http/metrics" 2>/dev/null | awk '/^streamfit_readings_predicted_total/ {print $2}')
    count=${count:-0}
    now=$(date +%s.%N)
    if [ -z "$start" ] && [ "$count" -gt 0 ]; then start=$now; first=$count; fi
    [ "$count" -ge "$n" ] && break
    sleep 0.05
  done
  kill -TERM "$pid"; wait "$pid" || true
  [ "$count" -ge "$n" ] || { echo "bench: error: the service predicted only $count of $n readings in time (log: $log)" >&2; return 1; }
  python3 -c "print(round(($n - $first) / ($now - $start)))"
}
