#!/usr/bin/env bash
# The local single-node Apache Kafka (KRaft) that the quickstart, the tests,
# CI and the load tests use. Runs from plain jars fetched from Maven Central
# and cached outside the repo.
#
#   deploy/kafka.sh up        fetch the jars if needed, format storage on first
#                             start, start the broker, wait until it answers
#   deploy/kafka.sh status    exit 0 if the broker answers on the port
#   deploy/kafka.sh down      stop the broker (waits for it to exit)
#   deploy/kafka.sh restart   down then up (same data)
#   deploy/kafka.sh reset     down and delete the broker's data
#   deploy/kafka.sh logs      follow the broker log
#   deploy/kafka.sh tool CLASS ARGS...   run a Kafka command-line tool class,
#                             e.g. org.apache.kafka.tools.ConsumerPerformance
#
# Environment: STREAMFIT_KAFKA_PORT (default 9092; the controller listens on
# port+1), STREAMFIT_CACHE (default ~/.cache/streamfit). Every command is
# idempotent: `up` on a running broker only checks it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="4.1.0"
port="${STREAMFIT_KAFKA_PORT:-9092}"
controller_port=$((port + 1))
cache="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}"
libs="$cache/kafka-$version/libs"
state="$cache/kafka-$port"
data="$state/data"
log="$state/kafka.log"
pidfile="$state/kafka.pid"

say() { printf 'kafka: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  command -v mvn >/dev/null || die "mvn is not installed; install Maven (apt-get install maven) and retry"
  command -v java >/dev/null || die "java is not installed; install a JDK 17 (apt-get install openjdk-17-jre-headless) and retry"
  say "fetching Apache Kafka $version jars from Maven Central into $libs"
  mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
      -Dkafka.version="$version" -DoutputDirectory="$libs" \
    || die "mvn could not fetch the Kafka jars (see the output above)"
  touch "$libs/.complete"
}

classpath() { printf '%s/*' "$libs"; }

tool() {
  fetch
  java -Xmx512m -cp "$(classpath)" \
       -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
       -Dkafka.logs.file="$state/tools.log" "$@"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

running_pid() {
  if [ -f "$pidfile" ]; then
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; return 0; fi
  fi
  return 1
}

up() {
  fetch
  mkdir -p "$state"
  if running_pid >/dev/null && answers; then say "already running on 127.0.0.1:$port"; return; fi
  if answers; then die "port $port is taken by another process; set STREAMFIT_KAFKA_PORT to a free port"; fi
  sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$controller_port|g" -e "s|@DATA_DIR@|$data|g" \
      "$here/kafka/server.properties.in" > "$state/server.properties"
  if [ ! -f "$data/meta.properties" ]; then
    say "formatting storage in $data"
    local id; id="$(tool kafka.tools.StorageTool random-uuid | tail -n 1)"
    tool kafka.tools.StorageTool format -t "$id" -c "$state/server.properties" >/dev/null
  fi
  say "starting broker on 127.0.0.1:$port (log: $log)"
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -cp "$(classpath)" \
       -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
       -Dkafka.logs.file="$log" \
       kafka.Kafka "$state/server.properties" > "$state/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  local deadline=$((SECONDS + 90))
  until answers && grep -q "Kafka Server started" "$log" 2>/dev/null; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$state/stdout.log" "$log" >&2 2>/dev/null || true
      die "the broker exited during start-up (logs above, in $state)"
    fi
    [ $SECONDS -lt $deadline ] || die "the broker did not answer within 90 s (log: $log)"
    sleep 0.5
  done
  say "ready on 127.0.0.1:$port"
}

down() {
  local pid
  if pid="$(running_pid)"; then
    say "stopping broker (pid $pid)"
    kill "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then say "broker did not stop in 60 s; killing it"; kill -9 "$pid" 2>/dev/null || true; fi
      sleep 0.5
    done
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) down; up ;;
  reset) down; rm -rf "$data"; say "data deleted" ;;
  status) if answers; then say "running on 127.0.0.1:$port"; else say "not running on 127.0.0.1:$port"; exit 1; fi ;;
  logs) exec tail -F "$log" ;;
  fetch) fetch ;;
  tool) shift; tool "$@" ;;
  *) echo "usage: deploy/kafka.sh up|down|restart|reset|status|logs|fetch|tool CLASS ARGS..." >&2; exit 2 ;;
esac
