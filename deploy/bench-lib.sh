# Shared by the benchmark scripts: `source deploy/bench-lib.sh` after setting
# root, cache and port.

# bench_config MODEL INPUT_TOPIC RUN HTTP_ADDR: writes a config holding only
# MODEL from deploy/streamfit.toml, reading INPUT_TOPIC (outputs go to
# INPUT_TOPIC.MODEL.predictions and .dead) in consumer group bench-RUN with
# HTTP on HTTP_ADDR, and prints its path.
bench_config() {
  local model="$1" topic="$2" run="$3" http="$4" conf="$cache/bench-$1-$3.toml"
  python3 - "$model" "$topic" "$http" "$port" "$run" > "$conf" <<'PY'
import sys, re
model, topic, http, port, run = sys.argv[1:]
text = open("deploy/streamfit.toml").read()
tables = text.split("[[model]]")
body = next(t for t in tables[1:] if re.search(r'^name = "%s"$' % re.escape(model), t, re.M))
body = re.sub(r'^input_topic = .*$', f'input_topic = "{topic}"', body, flags=re.M)
body = re.sub(r'^output_topic = .*$', f'output_topic = "{topic}.{model}.predictions"', body, flags=re.M)
body = re.sub(r'^dead_letter_topic = .*$', f'dead_letter_topic = "{topic}.{model}.dead"', body, flags=re.M)
print(f'[kafka]\n"bootstrap.servers" = "127.0.0.1:{port}"\n[service]\ngroup_id = "bench-{run}"\nhttp_addr = "{http}"\n[topics]\npartitions = 3\n[[model]]{body}')
PY
  echo "$conf"
}

# bench_http: a random loopback address for a benchmark service
bench_http() {
  echo "127.0.0.1:$((18000 + RANDOM % 1000))"
}

# bench_wait_ready HTTP_ADDR PID: waits (at most 60 s) for /readyz to answer 200
bench_wait_ready() {
  local http="$1" pid="$2"
  for _ in $(seq 1 600); do
    curl -sf "http://$http/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "bench: error: the service exited before it was ready (log: $cache/bench.log)" >&2; return 1; }
    sleep 0.1
  done
  echo "bench: error: the service on $http was not ready within 60 s (log: $cache/bench.log)" >&2
  return 1
}
