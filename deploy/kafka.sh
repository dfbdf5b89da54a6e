#!/usr/bin/env bash
# The local Apache Kafka (KRaft) that the quickstart, the tests, CI and the
# load tests use: one node, or a cluster of three on loopback. Runs from plain
# jars fetched from Maven Central and cached outside the repo.
#
#   deploy/kafka.sh up        fetch the jars if needed, format storage on first
#                             start, start the broker(s), wait until they answer
#   deploy/kafka.sh status    exit 0 if every broker answers
#   deploy/kafka.sh down      stop the broker(s) (waits for them to exit)
#   deploy/kafka.sh restart   down then up (same data)
#   deploy/kafka.sh reset     down and delete the brokers' data
#   deploy/kafka.sh logs      follow the (first) broker's log
#   deploy/kafka.sh kill-node I   SIGKILL node I (1-based) of the cluster, for
#                             fault tests; `start-node I` starts it again
#   deploy/kafka.sh bootstrap print the bootstrap.servers list
#   deploy/kafka.sh tool CLASS ARGS...   run a Kafka command-line tool class,
#                             e.g. org.apache.kafka.tools.ConsumerPerformance
#   deploy/kafka.sh grant CONFIG --secure   add the ACLs a streamfit config
#                             needs for its `sasl.username` (deploy/kafka/acls.py
#                             prints them)
#
# --secure: one node with a SASL_SSL listener (SCRAM-SHA-512) instead of
# PLAINTEXT, on port 9192 unless STREAMFIT_KAFKA_PORT is set (so it runs
# beside the plaintext broker), data in <cache>/kafka-<port>-secure. On first
# start: a CA and a broker certificate (for 127.0.0.1 and localhost) in
# <cache>/tls (ca.pem is what clients trust), SCRAM users `admin` (super
# user; its password in <state>/admin.password, client settings for Kafka's
# tools in <state>/admin.properties and for librdkafka in
# <state>/admin.librdkafka) and `streamfit` (password
# STREAMFIT_KAFKA_SASL_PASSWORD, default "streamfit-local-only", reset on
# every `up` when it changed), StandardAuthorizer with
# allow.everyone.if.no.acl.found=false, and the ACLs of
# deploy/streamfit-secure.toml for `streamfit`; and, for that config's HTTPS
# API, bearer tokens in <cache>/http-tokens (lines `predict TOKEN`, `admin
# TOKEN`; the broker's certificate serves HTTPS too).
#
# Options (after the command): --brokers N (default 1, or
# STREAMFIT_KAFKA_BROKERS). With N brokers, node I listens on port + 2(I-1)
# and its controller on the port after it; every node is a broker and a
# controller (a static quorum of N voters); internal topics and created
# topics default to replication factor N (at most 3) with
# min.insync.replicas one less (at least 1). A cluster keeps its own data,
# apart from the single node's.
#
# Environment: STREAMFIT_KAFKA_PORT (default 9092; the first controller
# listens on port+1), STREAMFIT_CACHE (default ~/.cache/streamfit). Every
# command is idempotent: `up` on a running broker only checks it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="4.1.0"
port_env="${STREAMFIT_KAFKA_PORT:-}"
secure=0
cache="${STREAMFIT_CACHE:-$HOME/.cache/streamfit}"
libs="$cache/kafka-$version/libs"
brokers="${STREAMFIT_KAFKA_BROKERS:-1}"

command_="${1:-}"
[ $# -gt 0 ] && shift
node_arg=""
case "$command_" in kill-node|start-node|grant) node_arg="${1:-}"; [ $# -gt 0 ] && shift ;; esac
if [ "$command_" != tool ]; then
  while [ $# -gt 0 ]; do
    case "$1" in
      --brokers) brokers="${2:?--brokers takes a number}"; shift 2 ;;
      --brokers=*) brokers="${1#--brokers=}"; shift ;;
      --secure) secure=1; shift ;;
      *) echo "kafka: error: unknown option $1" >&2; exit 2 ;;
    esac
  done
fi
case "$brokers" in 1|2|3|4|5) ;; *) echo "kafka: error: --brokers should be 1 to 5, but is $brokers" >&2; exit 2 ;; esac
if [ "$secure" -eq 1 ]; then
  [ "$brokers" -eq 1 ] || { echo "kafka: error: --secure runs one node; drop --brokers" >&2; exit 2; }
  port="${port_env:-9192}"
else
  port="${port_env:-9092}"
fi
tls="$cache/tls"
sasl_password="${STREAMFIT_KAFKA_SASL_PASSWORD:-streamfit-local-only}"

say() { printf 'kafka: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# the state of node I: the single node keeps the layout it always had
node_state() {
  if [ "$secure" -eq 1 ]; then echo "$cache/kafka-$port-secure"
  elif [ "$brokers" -eq 1 ]; then echo "$cache/kafka-$port"
  else echo "$cache/kafka-$port-x$brokers/node-$1"; fi
}
node_port() { echo $((port + 2 * ($1 - 1))); }
node_controller_port() { echo $((port + 2 * ($1 - 1) + 1)); }
replication() { if [ "$brokers" -ge 3 ]; then echo 3; else echo "$brokers"; fi; }
min_isr() { local r; r="$(replication)"; if [ "$r" -gt 1 ]; then echo $((r - 1)); else echo 1; fi; }
voters() {
  local i out=""
  for i in $(seq 1 "$brokers"); do out="$out${out:+,}$i@127.0.0.1:$(node_controller_port "$i")"; done
  echo "$out"
}
bootstrap_servers() {
  local i out=""
  for i in $(seq 1 "$brokers"); do out="$out${out:+,}127.0.0.1:$(node_port "$i")"; done
  echo "$out"
}

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
  local state; state="$(node_state 1)"
  mkdir -p "$state"
  java -Xmx512m -cp "$(classpath)" \
       -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
       -Dkafka.logs.file="$state/tools.log" "$@"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  local pidfile; pidfile="$(node_state "$1")/kafka.pid"
  if [ -f "$pidfile" ]; then
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; return 0; fi
  fi
  return 1
}

# writes node I's config and formats its storage on first start
prepare_node() {
  local i="$1" state data
  state="$(node_state "$i")"; data="$state/data"
  mkdir -p "$state"
  sed -e "s|@NODE_ID@|$i|g" -e "s|@PORT@|$(node_port "$i")|g" \
      -e "s|@CONTROLLER_PORT@|$(node_controller_port "$i")|g" -e "s|@VOTERS@|$(voters)|g" \
      -e "s|@DATA_DIR@|$data|g" -e "s|@REPLICATION@|$(replication)|g" -e "s|@MIN_ISR@|$(min_isr)|g" \
      "$here/kafka/server.properties.in" > "$state/server.properties"
  local scram=()
  if [ "$secure" -eq 1 ]; then
    make_tls
    [ -f "$state/admin.password" ] || random_secret > "$state/admin.password"
    sed -e "s|@PORT@|$(node_port "$i")|g" -e "s|@CONTROLLER_PORT@|$(node_controller_port "$i")|g" \
        -e "s|@TLS_DIR@|$tls|g" -e "s|@STORE_PASSWORD@|$(cat "$tls/store.password")|g" \
        -e "s|@ADMIN_PASSWORD@|$(cat "$state/admin.password")|g" \
        "$here/kafka/secure.properties.in" >> "$state/server.properties"
    chmod 600 "$state/server.properties" "$state/admin.password"
    scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$state/admin.password")]"
           --add-scram "SCRAM-SHA-512=[name=streamfit,password=$sasl_password]")
  fi
  if [ ! -f "$data/meta.properties" ]; then
    say "formatting storage of node $i in $data"
    tool kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" "${scram[@]}" >/dev/null
    [ "$secure" -eq 0 ] || printf '%s' "$sasl_password" > "$state/streamfit.password"
  fi
}

random_secret() { openssl rand -hex 16; }

# the CA and the broker's certificate (127.0.0.1 and localhost), made once
make_tls() {
  [ -f "$tls/broker.p12" ] && return
  command -v openssl >/dev/null || die "openssl is not installed; install it (apt-get install openssl) and retry"
  say "making a CA and a broker certificate in $tls"
  mkdir -p "$tls"
  local pw; pw="$(random_secret)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=streamfit local CA" \
      -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$tls/broker.key" -out "$tls/broker.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$tls/broker.ext"
  openssl x509 -req -in "$tls/broker.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
      -days 3650 -extfile "$tls/broker.ext" -out "$tls/broker.pem" 2>/dev/null
  openssl pkcs12 -export -in "$tls/broker.pem" -inkey "$tls/broker.key" -certfile "$tls/ca.pem" \
      -name broker -passout "pass:$pw" -out "$tls/broker.p12.tmp"
  printf '%s' "$pw" > "$tls/store.password"
  chmod 600 "$tls"/*.key "$tls/store.password"
  mv "$tls/broker.p12.tmp" "$tls/broker.p12"
}

# client settings for the super user, for Kafka's tools and for librdkafka
write_admin_clients() {
  local state pw; state="$(node_state 1)"; pw="$(cat "$state/admin.password")"
  cat > "$state/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$pw";
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
PROPS
  cat > "$state/admin.librdkafka" <<PROPS
bootstrap.servers=$(bootstrap_servers)
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=admin
sasl.password=$pw
ssl.ca.location=$tls/ca.pem
PROPS
  chmod 600 "$state/admin.properties" "$state/admin.librdkafka"
}

# the secure node's users and ACLs after a start: the streamfit user's
# password follows STREAMFIT_KAFKA_SASL_PASSWORD, the shipped secure config
# gets its ACLs once
secure_after_up() {
  local state; state="$(node_state 1)"
  write_admin_clients
  if [ "$(cat "$state/streamfit.password" 2>/dev/null)" != "$sasl_password" ]; then
    say "setting the password of user streamfit"
    tool kafka.admin.ConfigCommand --bootstrap-server "$(bootstrap_servers)" --command-config "$state/admin.properties" \
        --alter --entity-type users --entity-name streamfit \
        --add-config "SCRAM-SHA-512=[password=$sasl_password]" >/dev/null
    printf '%s' "$sasl_password" > "$state/streamfit.password"
  fi
  if [ ! -f "$state/.granted" ]; then
    grant "$here/streamfit-secure.toml"
    touch "$state/.granted"
  fi
  if [ ! -f "$cache/http-tokens" ]; then
    printf '# bearer tokens of deploy/streamfit-secure.toml, made by deploy/kafka.sh up --secure\npredict %s\nadmin %s\n' \
      "$(random_secret)$(random_secret)" "$(random_secret)$(random_secret)" > "$cache/http-tokens"
    chmod 600 "$cache/http-tokens"
  fi
  say "SASL_SSL: CA $tls/ca.pem; admin client settings in $state/admin.properties (Kafka tools, --command-config) and $state/admin.librdkafka"
}

# adds the ACLs the streamfit config $1 needs
grant() {
  local config="$1" state args
  [ "$secure" -eq 1 ] || die "grant works on the secure broker: add --secure"
  [ -f "$config" ] || die "grant takes a streamfit config file, but $config does not exist"
  state="$(node_state 1)"
  [ -f "$state/admin.properties" ] || die "the secure broker has not started yet: deploy/kafka.sh up --secure"
  say "adding the ACLs of $config"
  python3 "$here/kafka/acls.py" "$config" | while read -r args; do
    # shellcheck disable=SC2086
    tool org.apache.kafka.tools.AclCommand --bootstrap-server "$(bootstrap_servers)" \
        --command-config "$state/admin.properties" --add --force $args >/dev/null </dev/null \
      || die "AclCommand failed adding: $args"
  done
}

# moves node I's logs of its previous start to kafka.log.1 and stdout.log.1
# (one start back): a log from before this start must not count as started,
# and a test that restarts the broker and then fails needs the log of the
# start before the last
set_log_aside() {
  local f state
  state="$(node_state "$1")"
  for f in kafka.log stdout.log; do
    [ ! -f "$state/$f" ] || mv -f "$state/$f" "$state/$f.1"
  done
}

# starts node I in the background
start_node() {
  local i="$1" state p
  state="$(node_state "$i")"; p="$(node_port "$i")"
  if running_pid "$i" >/dev/null; then return; fi
  if answers "$p"; then die "port $p is taken by another process; set STREAMFIT_KAFKA_PORT to a free port"; fi
  say "starting node $i on 127.0.0.1:$p (log: $state/kafka.log)"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -cp "$(classpath)" \
       -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
       -Dkafka.logs.file="$state/kafka.log" \
       kafka.Kafka "$state/server.properties" > "$state/stdout.log" 2>&1 &
  echo $! > "$state/kafka.pid"
}

# waits until node I answers and has logged its start since it was started
wait_node() {
  local i="$1" state p deadline=$((SECONDS + 120))
  state="$(node_state "$i")"; p="$(node_port "$i")"
  until answers "$p" && grep -q "Kafka Server started" "$state/kafka.log" 2>/dev/null; do
    if ! running_pid "$i" >/dev/null; then
      tail -n 30 "$state/stdout.log" "$state/kafka.log" >&2 2>/dev/null || true
      die "node $i exited during start-up (logs above, in $state)"
    fi
    [ $SECONDS -lt $deadline ] || die "node $i did not answer within 120 s (log: $state/kafka.log)"
    sleep 0.5
  done
}

up() {
  fetch
  local i all_up=1
  for i in $(seq 1 "$brokers"); do
    if ! { running_pid "$i" >/dev/null && answers "$(node_port "$i")"; }; then all_up=0; fi
  done
  if [ "$all_up" -eq 1 ]; then
    [ "$secure" -eq 0 ] || secure_after_up
    say "already running on $(bootstrap_servers)"; return
  fi
  # one cluster id for every node, kept beside the first node's data
  local id_file; id_file="$(node_state 1)/cluster.id"
  mkdir -p "$(node_state 1)"
  if [ ! -f "$id_file" ]; then
    if [ -f "$(node_state 1)/data/meta.properties" ]; then
      sed -n 's/^cluster.id=//p' "$(node_state 1)/data/meta.properties" > "$id_file"
    else
      tool kafka.tools.StorageTool random-uuid | tail -n 1 > "$id_file"
    fi
  fi
  cluster_id="$(cat "$id_file")"
  for i in $(seq 1 "$brokers"); do prepare_node "$i"; done
  for i in $(seq 1 "$brokers"); do
    running_pid "$i" >/dev/null || set_log_aside "$i"
    start_node "$i"
  done
  for i in $(seq 1 "$brokers"); do wait_node "$i"; done
  [ "$secure" -eq 0 ] || secure_after_up
  say "ready on $(bootstrap_servers)"
}

stop_node() {
  local i="$1" signal="${2:-TERM}" pid
  if pid="$(running_pid "$i")"; then
    say "stopping node $i (pid $pid, SIG$signal)"
    kill -s "$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then say "node $i did not stop in 60 s; killing it"; kill -9 "$pid" 2>/dev/null || true; fi
      sleep 0.2
    done
  fi
  rm -f "$(node_state "$i")/kafka.pid"
}

down() {
  # every node at once: stopped one by one, the last ones lose the
  # controller quorum their controlled shutdown waits for
  local i pid
  for i in $(seq 1 "$brokers"); do
    if pid="$(running_pid "$i")"; then say "stopping node $i (pid $pid)"; kill "$pid" 2>/dev/null || true; fi
  done
  for i in $(seq 1 "$brokers"); do stop_node "$i"; done
}

check_node_arg() {
  case "$node_arg" in ''|*[!0-9]*) die "$command_ takes a node number from 1 to $brokers" ;; esac
  [ "$node_arg" -ge 1 ] && [ "$node_arg" -le "$brokers" ] || die "$command_ takes a node number from 1 to $brokers, but got $node_arg"
}

status() {
  local i ok=0
  for i in $(seq 1 "$brokers"); do
    if answers "$(node_port "$i")"; then say "node $i running on 127.0.0.1:$(node_port "$i")"; else say "node $i not running on 127.0.0.1:$(node_port "$i")"; ok=1; fi
  done
  return $ok
}

case "$command_" in
  up) up ;;
  down) down ;;
  restart) down; up ;;
  reset)
    down
    for i in $(seq 1 "$brokers"); do rm -rf "$(node_state "$i")/data"; done
    rm -f "$(node_state 1)/cluster.id" "$(node_state 1)/.granted" "$(node_state 1)/streamfit.password"
    say "data deleted" ;;
  status) status ;;
  logs) exec tail -F "$(node_state 1)/kafka.log" ;;
  kill-node) check_node_arg; stop_node "$node_arg" KILL ;;
  start-node)
    check_node_arg
    fetch
    running_pid "$node_arg" >/dev/null || set_log_aside "$node_arg"
    start_node "$node_arg"; wait_node "$node_arg"; say "node $node_arg ready" ;;
  bootstrap) bootstrap_servers ;;
  fetch) fetch ;;
  tool) tool "$@" ;;
  grant) grant "$node_arg" ;;
  *) echo "usage: deploy/kafka.sh up|down|restart|reset|status|logs|kill-node I|start-node I|bootstrap|fetch|grant CONFIG|tool CLASS ARGS... [--brokers N] [--secure]" >&2; exit 2 ;;
esac
