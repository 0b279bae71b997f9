#!/usr/bin/env bash
# Makes sure a 3-node RabbitMQ cluster runs on this machine beside the usual broker, for the
# cluster tests and for trying tidings against replicated streams:
#
#   node                    AMQP 0-9-1        stream protocol   Erlang distribution
#   tidings-1@localhost     127.0.0.1:5673    127.0.0.1:5553    25673
#   tidings-2@localhost     127.0.0.1:5674    127.0.0.1:5554    25674
#   tidings-3@localhost     127.0.0.1:5675    127.0.0.1:5555    25675
#
# Management is off. The nodes keep their data, logs and Erlang cookie under one directory
# ($TIDINGS_CLUSTER_DIR, default /tmp/tidings-rabbitmq-cluster), run as the calling user with
# that directory as HOME, and never read /etc/rabbitmq: the machine's own broker (rabbit@...
# on 5672) is neither touched nor reachable with their cookie. Running it again does only
# what is missing: it starts a node that is down, starts the application of a node that was
# stopped with `rabbitmqctl stop_app`, and joins a node that is not in the cluster yet.
#
#   bash scripts/ensure-rabbitmq-cluster.sh          # start or repair, then print the URLs
#   bash scripts/ensure-rabbitmq-cluster.sh stop     # stop the three nodes (only them)
#   bash scripts/ensure-rabbitmq-cluster.sh urls     # the amqp.urls value for tidings
#   bash scripts/ensure-rabbitmq-cluster.sh ctl 2 stop_app   # rabbitmqctl on node 2
#   bash scripts/ensure-rabbitmq-cluster.sh reset    # stop, forget all data, start afresh
set -euo pipefail

BASE=${TIDINGS_CLUSTER_DIR:-/tmp/tidings-rabbitmq-cluster}
NODES=(1 2 3)
AMQP_PORT0=5672
STREAM_PORT0=5552
DIST_PORT0=25672

log() { echo "ensure-rabbitmq-cluster: $*" >&2; }

node_name() { echo "tidings-$1@localhost"; }

# The broker's own scripts, not Debian's wrapper (which switches to the rabbitmq user and
# its cookie, the cookie of the machine's broker).
sbin() {
    if [ -x "/usr/lib/rabbitmq/bin/$1" ]; then
        echo "/usr/lib/rabbitmq/bin/$1"
    else
        command -v "$1"
    fi
}

# Runs a RabbitMQ command as node $1 sees it: its environment, its cookie.
with_node() {
    local n=$1
    shift
    local dir="$BASE/node$n"
    env HOME="$BASE" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_USE_LONGNAME=false \
        RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        RABBITMQ_NODE_PORT=$((AMQP_PORT0 + n)) \
        RABBITMQ_DIST_PORT=$((DIST_PORT0 + n)) \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} +S 2:1 +sbwt none +sbwtdcpu none +sbwtdio none" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        ERL_CRASH_DUMP="$BASE/erl_crash.dump" \
        "$@"
}

# Runs "$@" silently; shows what it printed only when it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        echo "$out" >&2
        return 1
    fi
}

ctl() {
    local n=$1
    shift
    with_node "$n" "$(sbin rabbitmqctl)" -n "$(node_name "$n")" "$@"
}

reachable() {
    python3 - "$1" <<'PY'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2).close()
except OSError:
    sys.exit(1)
PY
}

prepare() {
    mkdir -p "$BASE"
    if [ ! -s "$BASE/.erlang.cookie" ]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(20).upper(), end="")' \
            >"$BASE/.erlang.cookie")
    fi
    chmod 400 "$BASE/.erlang.cookie"
    : >"$BASE/rabbitmq-env.conf"
    echo "[rabbitmq_stream]." >"$BASE/enabled_plugins"
    for n in "${NODES[@]}"; do
        local dir="$BASE/node$n"
        mkdir -p "$dir/mnesia" "$dir/log"
        [ -f "$dir/advanced.config" ] || echo "[]." >"$dir/advanced.config"
        cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$((AMQP_PORT0 + n))
stream.listeners.tcp.1 = 127.0.0.1:$((STREAM_PORT0 + n))
# What the stream protocol tells clients to connect to for this node's leaders and replicas.
stream.advertised_host = 127.0.0.1
stream.advertised_port = $((STREAM_PORT0 + n))
log.file.level = warning
log.console = false
EOF
    done
}

diag() {
    local n=$1
    shift
    with_node "$n" "$(sbin rabbitmq-diagnostics)" -n "$(node_name "$n")" -q "$@"
}

# The node's Erlang VM answers (its application may be stopped).
running() { diag "$1" ping >/dev/null 2>&1; }

app_running() { diag "$1" check_running >/dev/null 2>&1; }

start_node() {
    local n=$1
    if running "$n"; then
        if ! app_running "$n"; then
            log "starting the application of $(node_name "$n")"
            quiet ctl "$n" start_app
        fi
        return
    fi
    if reachable $((AMQP_PORT0 + n)); then
        log "port $((AMQP_PORT0 + n)) is taken by something else than $(node_name "$n")"
        exit 1
    fi
    log "starting $(node_name "$n")"
    with_node "$n" "$(sbin rabbitmq-server)" -detached >/dev/null 2>&1 || true
}

await_node() {
    local n=$1
    local deadline=$((SECONDS + 120))
    until running "$n"; do
        if [ $SECONDS -ge $deadline ]; then
            log "$(node_name "$n") did not start; see $BASE/node$n/log"
            exit 1
        fi
        sleep 1
    done
    quiet ctl "$n" await_startup --timeout 120
}

running_with() {
    # Whether node $1 counts every other argument among the running nodes of its cluster:
    # status 0 yes, 1 no, 2 it could not say (not answering, or not booted yet).
    local n=$1 out
    shift
    out=$(ctl "$n" cluster_status --formatter json 2>/dev/null) || return 2
    python3 -c '
import json, sys
try:
    status = json.loads(sys.argv[1])
except ValueError:
    sys.exit(2)
sys.exit(0 if set(sys.argv[2:]) <= set(status.get("running_nodes", [])) else 1)
' "$out" "$@"
}

in_cluster() {
    # Asks again while the node cannot say: only a clear "no" leads to a join (a reset).
    local answer
    for _ in $(seq 1 30); do
        answer=0
        running_with "$1" "$(node_name 1)" || answer=$?
        [ "$answer" -ne 2 ] && return "$answer"
        sleep 2
    done
    log "$(node_name "$1") does not say whether it is clustered; see $BASE/node$1/log"
    exit 1
}

# Every port answers and node 1 sees all three running: nothing to do (one CLI call).
healthy() {
    for n in "${NODES[@]}"; do
        reachable $((AMQP_PORT0 + n)) && reachable $((STREAM_PORT0 + n)) || return 1
    done
    [ -s "$BASE/.erlang.cookie" ] || return 1
    running_with 1 "$(node_name 1)" "$(node_name 2)" "$(node_name 3)"
}

join() {
    local n=$1
    in_cluster "$n" && return
    log "joining $(node_name "$n") to $(node_name 1)"
    quiet ctl "$n" stop_app
    quiet ctl "$n" reset
    quiet ctl "$n" join_cluster "$(node_name 1)"
    quiet ctl "$n" start_app
    quiet ctl "$n" await_startup --timeout 120
}

urls() {
    local out=()
    for n in "${NODES[@]}"; do
        out+=("\"amqp://guest:guest@127.0.0.1:$((AMQP_PORT0 + n))/\"")
    done
    local IFS=,
    echo "[${out[*]}]"
}

stop_all() {
    for n in "${NODES[@]}"; do
        if running "$n"; then
            log "stopping $(node_name "$n")"
            quiet ctl "$n" stop || true
        fi
    done
}

stop_everything() {
    # Every node, even one whose application does not start any more (its VM still answers).
    stop_all
    for n in "${NODES[@]}"; do
        local pid_file="$BASE/node$n/pid"
        if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
            kill "$(cat "$pid_file")" 2>/dev/null || true
        fi
    done
}

case "${1:-ensure}" in
stop)
    stop_all
    exit 0
    ;;
reset)
    # For a cluster RabbitMQ cannot bring back by itself (a node whose application fails to
    # start after a crash): its data, users and streams are lost.
    stop_everything
    rm -rf "${BASE:?}/node1" "${BASE:?}/node2" "${BASE:?}/node3"
    ;;
urls)
    urls
    exit 0
    ;;
ctl)
    [ $# -ge 3 ] && [[ " ${NODES[*]} " == *" $2 "* ]] || { echo "usage: $0 ctl N COMMAND..." >&2; exit 2; }
    n=$2
    shift 2
    ctl "$n" "$@"
    exit 0
    ;;
ensure) ;;
*)
    echo "usage: $0 [ensure|stop|reset|urls|ctl N COMMAND...]" >&2
    exit 2
    ;;
esac

if [ -z "$(sbin rabbitmq-server 2>/dev/null || true)" ]; then
    # The machine's broker comes from the same package; ensure-rabbitmq.sh installs it.
    bash "$(dirname "$0")/ensure-rabbitmq.sh"
fi
if healthy; then
    log "cluster is up; amqp.urls = $(urls)"
    exit 0
fi
prepare
for n in "${NODES[@]}"; do
    start_node "$n"
done
for n in "${NODES[@]}"; do
    await_node "$n"
done
for n in "${NODES[@]:1}"; do
    join "$n"
done
for n in "${NODES[@]}"; do
    port=$((STREAM_PORT0 + n))
    for _ in $(seq 1 30); do
        reachable "$port" && break
        sleep 1
    done
    reachable "$port" || { log "the stream protocol did not come up on 127.0.0.1:$port"; exit 1; }
done
log "cluster of $(node_name 1), $(node_name 2), $(node_name 3) is up; amqp.urls = $(urls)"
