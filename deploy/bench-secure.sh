#!/usr/bin/env bash
# What security costs, measured in one sitting (ROUNDS rounds, default 3,
# the two sides of each comparison alternating):
#
# - /predict on `waits` at 1,000 req/s (load-test predict, open-loop, 16
#   keep-alive connections, 10 s) while a publisher keeps the learning loop
#   busy with 20,000 readings/s: HTTPS with a bearer token (the service's
#   [http] TLS and tokens) beside plain HTTP without tokens;
# - end to end on Kafka: the 637,768 wait-time readings published to a fresh
#   3-partition topic, then a fresh service (`waits-v1`, exactly once)
#   consuming, predicting, learning, publishing and committing all of them:
#   on the SASL_SSL broker (deploy/kafka.sh up --secure) as the
#   least-privilege principal `streamfit`, beside the plaintext broker.
#   Readings/s is counted from the first reading consumed to the last.
#
#   deploy/bench-secure.sh            ROUNDS=3 by default
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds="${ROUNDS:-3}"
source deploy/bench-lib.sh
bench_start bench-secure
plain_port="$port"
secure_port="${STREAMFIT_KAFKA_SECURE_PORT:-9192}"
STREAMFIT_KAFKA_PORT="$secure_port" deploy/kafka.sh up --secure
secure_state="$cache/kafka-$secure_port-secure"
ca="$cache/tls/ca.pem"
run_id="$(date +%s)"
log="$cache/bench-secure.log"
results="$(mktemp)"
trap 'rm -f "$results"; [ -z "${pids:-}" ] || kill $pids 2>/dev/null || true' EXIT
n=637768

# ---------------------------------------------------------------- /predict
token="bench-secure-admin-token-$run_id"
topic="bench.secure.http.$run_id"
pids=""
declare -A http_of url_of
for mode in plain tls; do
  http=$(bench_http)
  conf=$(bench_config waits "$topic" "$run_id-http-$mode" "$http")
  env_tls=()
  if [ "$mode" = tls ]; then
    env_tls=(STREAMFIT_HTTP_TLS_CERT="$cache/tls/broker.pem" STREAMFIT_HTTP_TLS_KEY="$cache/tls/broker.key"
             STREAMFIT_HTTP_TOKENS="admin:$token")
    url="https://$http"
  else
    url="http://$http"
  fi
  env "${env_tls[@]}" STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" </dev/null &
  pid=$!; pids="$pids $pid"
  bench_wait_ready "$url" "$pid" --cacert "$ca"
  http_of[$mode]="$http"; url_of[$mode]="$url"
done
for i in $(seq 1 "$rounds"); do
  for mode in plain tls; do
    args=()
    [ "$mode" = tls ] && args=(--token "$token" --cacert "$ca")
    "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$plain_port" \
      --rate 20000 --limit 300000 --quiet >/dev/null &
    pub=$!
    sleep 1
    "$bin/load-test" predict --url "${url_of[$mode]}" --model waits --data "$data/wdw-waits-2018" \
      --rate 1000 --duration 10 --connections 16 --json --quiet "${args[@]}" \
      | python3 -c "import json, sys; r = json.load(sys.stdin); r.update(kind='predict', mode='$mode', round=$i); print(json.dumps(r))" >> "$results"
    wait "$pub"
  done
done
kill -TERM $pids; wait $pids 2>/dev/null || true
pids=""

# -------------------------------------------------------------- end to end
admin_props=()
while IFS='=' read -r k v; do
  [ "$k" = bootstrap.servers ] || admin_props+=(-X "$k=$v")
done < "$secure_state/admin.librdkafka"
secure_kafka="\"security.protocol\" = \"SASL_SSL\"
\"sasl.mechanisms\" = \"SCRAM-SHA-512\"
\"sasl.username\" = \"streamfit\"
\"sasl.password\" = \"${STREAMFIT_KAFKA_SASL_PASSWORD:-streamfit-local-only}\"
\"ssl.ca.location\" = \"$ca\""

one_e2e() {  # MODE ROUND
  local mode="$1" i="$2" topic="bench.secure.e2e.$run_id.$1.$2" http conf kport pid
  http=$(bench_http)
  if [ "$mode" = sasl_ssl ]; then
    kport="$secure_port"
    conf=$(port="$secure_port" BENCH_KAFKA="$secure_kafka" bench_config waits-v1 "$topic" "$run_id-e2e-$mode-$i" "$http")
    STREAMFIT_KAFKA_PORT="$secure_port" deploy/kafka.sh grant "$conf" --secure 2>>"$log"
    deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$kport" \
      --command-config "$secure_state/admin.properties" --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null </dev/null
    "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$kport" \
      "${admin_props[@]}" --quiet >/dev/null </dev/null
  else
    kport="$plain_port"
    conf=$(bench_config waits-v1 "$topic" "$run_id-e2e-$mode-$i" "$http")
    deploy/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$kport" \
      --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null </dev/null
    "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$kport" --quiet >/dev/null </dev/null
  fi
  STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$log" </dev/null &
  pid=$!
  local t0="" c
  for _ in $(seq 1 12000); do
    c=$(bench_metric "$http" streamfit_readings_consumed_total waits-v1)
    [ -z "$t0" ] && [ "$c" -gt 0 ] && t0=$(date +%s.%N)
    [ "$c" -ge "$n" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "bench-secure: error: the $mode service exited (log: $log)" >&2; exit 1; }
    sleep 0.05
  done
  [ "$c" -ge "$n" ] || { echo "bench-secure: error: $mode consumed $c of $n readings in 10 minutes" >&2; kill "$pid"; exit 1; }
  local t1; t1=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c "import json; print(json.dumps(dict(kind='e2e', mode='$mode', round=$i, rate=$n / ($t1 - $t0))))" >> "$results"
}
for i in $(seq 1 "$rounds"); do
  for mode in plaintext sasl_ssl; do one_e2e "$mode" "$i"; done
done

python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    return f"{st.median(xs):,.2f} ({min(xs):,.2f}–{max(xs):,.2f})"
def medi(xs):
    return f"{st.median(xs):,.0f} ({min(xs):,.0f}–{max(xs):,.0f})"
print("/predict on `waits` at 1,000 req/s (16 connections, 10 s per round) while the service learns 20,000 readings/s:\n")
print("| round | HTTP | req/s | errors | p50 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- | --- |")
for r in (r for r in rows if r["kind"] == "predict"):
    print(f'| {r["round"]} | {r["mode"]} | {r["requests_per_second"]:,.0f} | {r["errors"]} | {r["p50_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["max_ms"]:.2f} |')
print("\nmedian (range):\n\n| HTTP | p50 ms | p99 ms |\n| --- | --- | --- |")
for m, label in (("plain", "plain HTTP, no tokens"), ("tls", "HTTPS + bearer token")):
    xs = [r for r in rows if r["kind"] == "predict" and r["mode"] == m]
    print(f'| {label} | {med([r["p50_ms"] for r in xs])} | {med([r["p99_ms"] for r in xs])} |')
print("\nEnd to end, `waits-v1` exactly once over 637,768 readings (readings/s from the first consumed to the last):\n")
print("| round | broker | readings/s |\n| --- | --- | --- |")
for r in (r for r in rows if r["kind"] == "e2e"):
    print(f'| {r["round"]} | {r["mode"]} | {r["rate"]:,.0f} |')
print("\nmedian (range):\n\n| broker | readings/s |\n| --- | --- |")
for m in ("plaintext", "sasl_ssl"):
    xs = [r["rate"] for r in rows if r["kind"] == "e2e" and r["mode"] == m]
    print(f"| {m} | {medi(xs)} |")
PY
