#!/usr/bin/env bash
# The main job end to end: local Kafka up, the service running, the real
# wait-time and clinical readings flowing, predictions on the output
# topics, and a /predict call answering. The service keeps running
# afterwards; `deploy/quickstart.sh stop` stops it (and Kafka).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source deploy/bench-lib.sh
pidfile="$cache/streamfit.pid"
http="127.0.0.1:8080"

if [ "${1:-}" = "stop" ]; then
  [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null && echo "quickstart: streamfit stopped"
  rm -f "$pidfile"
  deploy/kafka.sh down
  exit 0
fi

[ -d "$data/wdw-waits-2018" ] || { echo "quickstart: error: no data at $data; set STREAMFIT_DATA to the shared/data folder" >&2; exit 1; }
deploy/setup.sh
deploy/kafka.sh up
echo "quickstart: building (release; the first build takes several minutes)"
cargo build --release -q -p streamfit -p streamfit-load-test

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "quickstart: streamfit already running (pid $(cat "$pidfile"))"
else
  "$bin/streamfit" run --config deploy/streamfit.toml > "$cache/streamfit.log" 2>&1 &
  echo $! > "$pidfile"
  echo "quickstart: streamfit started (pid $!, log $cache/streamfit.log)"
fi
for _ in $(seq 1 120); do
  curl -sf "http://$http/readyz" >/dev/null && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$cache/streamfit.log"; echo "quickstart: error: streamfit exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf "http://$http/readyz" >/dev/null || { echo "quickstart: error: streamfit not ready after 60 s (log: $cache/streamfit.log)" >&2; exit 1; }

# consumed MODEL: the model's consumed counter (0 if not answering)
consumed() {
  bench_metric "$http" streamfit_readings_consumed_total "$1"
}
models=(waits-v1 waits heart-v1 heart)
declare -A before
for m in "${models[@]}"; do before[$m]=$(consumed "$m"); done

"$bin/load-test" publish --data "$data/wdw-waits-2018" --topic waits.readings
"$bin/load-test" publish --data "$data/heart-failure/heart.csv" --topic clinical.readings
waits_n=637768
heart_n=$(( $(wc -l < "$data/heart-failure/heart.csv") - 1 ))

# every model has consumed every reading just published (counted from its
# consumed counter before publishing, so a service already running counts too)
echo "quickstart: waiting for the models to catch up"
caught_up=0
for i in $(seq 1 1200); do
  caught_up=1
  progress=()
  for m in "${models[@]}"; do
    want=$waits_n; [[ "$m" == heart* ]] && want=$heart_n
    got=$(( $(consumed "$m") - ${before[$m]} ))
    progress+=("$m $got/$want")
    [ "$got" -ge "$want" ] || caught_up=0
  done
  [ "$caught_up" -eq 1 ] && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$cache/streamfit.log"; echo "quickstart: error: streamfit exited" >&2; exit 1; }
  [ $((i % 10)) -eq 0 ] && echo "quickstart: consumed ${progress[*]}"
  sleep 0.5
done
[ "$caught_up" -eq 1 ] || { echo "quickstart: error: the models did not consume every reading within 10 minutes (${progress[*]}; log: $cache/streamfit.log)" >&2; exit 1; }
echo "quickstart: every model has consumed every reading (${progress[*]})"
curl -sf "http://$http/metrics" | grep -E '^streamfit_readings_(predicted|learned|dead_lettered)_total'

echo
echo "quickstart: POST /v1/models/waits/predict"
curl -sf -X POST "http://$http/v1/models/waits/predict" -H 'content-type: application/json' \
  -d '{"ride": "soarin", "ts": "2018-12-31T14:00:00", "posted_wait": -999}'
echo
echo "quickstart: POST /v1/models/heart/predict"
curl -sf -X POST "http://$http/v1/models/heart/predict" -H 'content-type: application/json' \
  -d '{"patient_id": "new", "age": 61, "sex": "M", "chest_pain_type": "ASY", "resting_bp": 140, "cholesterol": 0, "fasting_bs": 1, "resting_ecg": "ST", "max_hr": 110, "exercise_angina": "Y", "oldpeak": 2.0, "st_slope": "Flat"}'
echo
echo "quickstart: done; streamfit keeps serving on http://$http (stop: deploy/quickstart.sh stop)"
