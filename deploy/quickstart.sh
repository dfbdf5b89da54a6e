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
  # the service commits its last batches on SIGTERM: Kafka stays up until it has exited
  if [ -f "$pidfile" ] && pid="$(cat "$pidfile")" && kill -TERM "$pid" 2>/dev/null; then
    echo "quickstart: stopping streamfit (pid $pid)"
    for i in $(seq 1 600); do
      kill -0 "$pid" 2>/dev/null || break
      [ $((i % 20)) -eq 0 ] && echo "quickstart: streamfit is still finishing its batches ($((i / 10)) s)"
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "quickstart: error: streamfit (pid $pid) did not exit within 60 s of SIGTERM; Kafka left running (log: $cache/streamfit.log)" >&2
      exit 1
    fi
    echo "quickstart: streamfit stopped"
  fi
  rm -f "$pidfile"
  deploy/kafka.sh down
  exit 0
fi

[ -d "$data/wdw-waits-2018" ] || { echo "quickstart: error: no data at $data; set STREAMFIT_DATA to the shared/data folder" >&2; exit 1; }
deploy/setup.sh
deploy/kafka.sh up
echo "quickstart: building (release; a first build on 2 cores takes 25-40 minutes, cargo shows its progress)"
cargo build --release -p streamfit -p streamfit-load-test

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

# predicted MODEL: the model's predicted counter (0 if not answering)
predicted() {
  bench_metric "$http" streamfit_readings_predicted_total "$1"
}
models=(waits-v1 waits heart-v1 heart tweets sentiment)
declare -A before
for m in "${models[@]}"; do before[$m]=$(predicted "$m"); done

"$bin/load-test" publish --data "$data/wdw-waits-2018" --topic waits.readings
"$bin/load-test" publish --data "$data/heart-failure/heart.csv" --topic clinical.readings
"$bin/load-test" publish --data "$data/airline-tweets/tweets.jsonl" --topic tweets.readings --key-field id
waits_n=637768
heart_n=$(( $(wc -l < "$data/heart-failure/heart.csv") - 1 ))
tweets_n=$(wc -l < "$data/airline-tweets/tweets.jsonl")

# caught up: the consumer groups' lag 0 on every partition (every
# prediction committed) and each predicted counter up by what was just
# published (counted from before publishing, so a service already running
# counts too)
echo "quickstart: waiting for every model to catch up"
want=()
for m in "${models[@]}"; do
  n=$waits_n; [[ "$m" == heart* ]] && n=$heart_n
  [[ "$m" == tweets || "$m" == sentiment ]] && n=$tweets_n
  want+=(--predicted "$m=$(( ${before[$m]} + n ))")
done
"$bin/streamfit" wait --config deploy/streamfit.toml "${want[@]}" --timeout 900 --pid "$(cat "$pidfile")" \
  || { echo "quickstart: error: the models did not catch up (log: $cache/streamfit.log)" >&2; exit 1; }
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
echo "quickstart: POST /v1/models/sentiment/predict"
curl -sf -X POST "http://$http/v1/models/sentiment/predict" -H 'content-type: application/json' \
  -d '{"airline": "United", "text": "@united thanks for the quick rebooking, great crew!"}'
echo
echo
echo "quickstart: done; streamfit keeps serving on http://$http (stop: deploy/quickstart.sh stop)"
echo "quickstart: the live dashboard: http://$http/"
echo "quickstart: the notebooks: $cache/venv/bin/jupyter lab notebooks/   (deploy/setup.sh installed them; see notebooks/README.md)"
