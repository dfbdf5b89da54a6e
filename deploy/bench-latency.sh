#!/usr/bin/env bash
# Latency on real Kafka, against a running service for the `waits` model:
#  - reading to prediction: `load-test e2e` publishes readings at 10,000/s
#    and times each until its prediction is readable (read_committed) on the
#    output topic; exactly once (the default) and at least once;
#  - /predict: `load-test predict` at 1,000 req/s (open-loop: a request on a
#    busy connection is timed from when it was due, one on a free connection
#    from when the client woke to send it; the client's timer lateness is
#    printed apart) and flat out, while a publisher keeps the learning loop
#    busy with 20,000 readings/s;
#  - the commit's own round trips (exactly once): the service's
#    streamfit_commit_seconds (a whole commit), streamfit_commit_offsets_seconds
#    (send_offsets_to_transaction) and streamfit_commit_end_seconds
#    (commit_transaction: the outputs' flush and the transaction's end),
#    scraped from /metrics around each reading-to-prediction round; the
#    quantiles are interpolated within the histogram's buckets (as
#    Prometheus's histogram_quantile does), the mean is exact.
# STREAMFIT_SERVICE_COMMIT_INTERVAL_MS sets the commit interval (100 ms default).
# Three rounds each; prints the rows and the medians.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
data="${STREAMFIT_DATA:-$root/../shared/data}"
port="${STREAMFIT_KAFKA_PORT:-9092}"
rounds="${ROUNDS:-3}"
source deploy/bench-lib.sh
deploy/kafka.sh up
cargo build --release -q -p streamfit -p streamfit-load-test
bin="$CARGO_TARGET_DIR/release"
run_id="$(date +%s)"
results="$(mktemp)"
trap 'rm -f "$results" "$results.before" "$results.after"' EXIT

# commit_times BEFORE AFTER ROUND: one JSON row per commit histogram of
# `waits`, from the difference of two /metrics pages
commit_times() {
  python3 - "$@" <<'PY'
import json, re, sys
before, after, rnd = sys.argv[1], sys.argv[2], int(sys.argv[3])
def page(path):
    h = {}
    for line in open(path):
        m = re.match(r'(streamfit_commit\w*_seconds)_(bucket|sum|count)\{model="waits"(?:,le="([^"]+)")?\} (\S+)', line)
        if m:
            name, part, le, v = m.groups()
            h.setdefault(name, {"buckets": []})
            if part == "bucket":
                h[name]["buckets"].append((float(le), float(v)))
            else:
                h[name][part] = float(v)
    return h
a, b = page(after), page(before)
for name, ha in a.items():
    hb = b.get(name, {"buckets": [(le, 0.0) for le, _ in ha["buckets"]], "sum": 0.0, "count": 0.0})
    count = ha["count"] - hb["count"]
    cum = [(le, x - y) for (le, x), (_, y) in zip(ha["buckets"], hb["buckets"])]
    def q(p):
        rank, lo, below = p * count, 0.0, 0.0
        for le, c in cum:
            if c >= rank:
                if le == float("inf"):
                    return lo
                return lo + (le - lo) * (rank - below) / max(c - below, 1e-12)
            lo, below = le, c
        return lo
    if count > 0:
        print(json.dumps(dict(kind="commit", round=rnd, histogram=name, count=int(count),
                              mean_ms=1e3 * (ha["sum"] - hb["sum"]) / count, p50_ms=1e3 * q(0.5), p99_ms=1e3 * q(0.99))))
PY
}

start_service() {
  local eos="$1" topic="$2" http="$3" conf
  conf=$(bench_config waits "$topic" "$run_id-$eos" "$http")
  STREAMFIT_SERVICE_EXACTLY_ONCE="$eos" STREAMFIT_SERVICE_INSTANCE_ID="lat-$run_id-$eos" \
    STREAMFIT_LOG=warn "$bin/streamfit" run --config "$conf" 2>>"$cache/bench.log" &
  svc=$!
  bench_wait_ready "$http" "$svc"
}

for eos in true false; do
  topic="bench.lat.$run_id.$eos"
  http=$(bench_http)
  start_service "$eos" "$topic" "$http"
  for i in $(seq 1 "$rounds"); do
    curl -sf "http://$http/metrics" > "$results.before"
    "$bin/load-test" e2e --data "$data/wdw-waits-2018" --topic "$topic" --output-topic "$topic.waits.predictions" \
      --bootstrap "127.0.0.1:$port" --rate 10000 --count 100000 --json --quiet \
      | python3 -c "import json, sys; r = json.load(sys.stdin); r.update(kind='e2e', eos='$eos', round=$i); print(json.dumps(r))" >> "$results"
    if [ "$eos" = true ]; then
      curl -sf "http://$http/metrics" > "$results.after"
      commit_times "$results.before" "$results.after" "$i" >> "$results"
    fi
  done
  if [ "$eos" = true ]; then
    for i in $(seq 1 "$rounds"); do
      for rate in 1000 0; do
        # keep the learning loop busy for longer than the HTTP run
        "$bin/load-test" publish --data "$data/wdw-waits-2018" --topic "$topic" --bootstrap "127.0.0.1:$port" \
          --rate 20000 --limit 300000 --quiet >/dev/null &
        pub=$!
        sleep 1
        "$bin/load-test" predict --url "http://$http" --model waits --data "$data/wdw-waits-2018" \
          --rate "$rate" --duration 10 --connections 16 --json --quiet \
          | python3 -c "import json, sys; r = json.load(sys.stdin); r.update(kind='predict', round=$i); print(json.dumps(r))" >> "$results"
        wait "$pub"
      done
    done
  fi
  kill -TERM "$svc"; wait "$svc" || true
done

python3 - "$results" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
print("Reading to prediction at 10,000 readings/s (100,000 readings per round, read_committed):\n")
print("| round | mode | published/s | predicted | missing | p50 ms | p90 ms | p99 ms | max ms |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in (r for r in rows if r["kind"] == "e2e"):
    mode = "exactly once" if r["eos"] == "true" else "at least once"
    print(f'| {r["round"]} | {mode} | {r["published_per_second"]:,.0f} | {r["predicted"]:,} | {r["missing"]} | {r["p50_ms"]:.1f} | {r["p90_ms"]:.1f} | {r["p99_ms"]:.1f} | {r["max_ms"]:.1f} |')
print("\n/predict on `waits` (16 keep-alive connections, one reading per request) while the service learns from 20,000 readings/s:\n")
print("| round | target req/s | answered req/s | errors | p50 ms | p90 ms | p99 ms | max ms | client timer late p50 / p99 ms | learned readings/s meanwhile |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in (r for r in rows if r["kind"] == "predict"):
    target = f'{r["target_rate"]:,}' if r["target_rate"] else "flat out"
    print(f'| {r["round"]} | {target} | {r["requests_per_second"]:,.0f} | {r["errors"]} | {r["p50_ms"]:.2f} | {r["p90_ms"]:.2f} | {r["p99_ms"]:.2f} | {r["max_ms"]:.2f} | {r.get("late_p50_ms", 0):.2f} / {r.get("late_p99_ms", 0):.2f} | {r["learned_per_second"]:,.0f} |')
steps = (("streamfit_commit_seconds", "whole commit"), ("streamfit_commit_offsets_seconds", "send_offsets_to_transaction"), ("streamfit_commit_end_seconds", "commit_transaction"))
print("\nThe commit's own round trips during the exactly-once rounds (from the service's histograms; p50/p99 interpolated within buckets):\n")
print("| round | step | commits | mean ms | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- |")
for r in (r for r in rows if r["kind"] == "commit"):
    label = dict(steps)[r["histogram"]]
    print(f'| {r["round"]} | {label} | {r["count"]:,} | {r["mean_ms"]:.1f} | {r["p50_ms"]:.1f} | {r["p99_ms"]:.1f} |')
print("\nMedians:\n")
for eos, mode in (("true", "exactly once"), ("false", "at least once")):
    e = [r for r in rows if r["kind"] == "e2e" and r["eos"] == eos]
    if e:
        print(f'- reading to prediction, {mode}: p50 {st.median(r["p50_ms"] for r in e):.1f} ms, p99 {st.median(r["p99_ms"] for r in e):.1f} ms')
for name, label in steps:
    c = [r for r in rows if r["kind"] == "commit" and r["histogram"] == name]
    if c:
        print(f'- {label}: mean {st.median(r["mean_ms"] for r in c):.1f} ms, p50 {st.median(r["p50_ms"] for r in c):.1f} ms, p99 {st.median(r["p99_ms"] for r in c):.1f} ms ({st.median(r["count"] for r in c):,.0f} commits a round)')
for target, label in ((1000, "at 1,000 req/s"), (0, "flat out")):
    p = [r for r in rows if r["kind"] == "predict" and r["target_rate"] == target]
    if p:
        print(f'- /predict {label}: {st.median(r["requests_per_second"] for r in p):,.0f} req/s, p50 {st.median(r["p50_ms"] for r in p):.2f} ms, p99 {st.median(r["p99_ms"] for r in p):.2f} ms, learning {st.median(r["learned_per_second"] for r in p):,.0f} readings/s')
PY
